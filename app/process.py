"""The orchestrator: starts everything in dependency order and stops it in reverse (mopidy's ``_app/process.py``).

the servers (MongoDB, RabbitMQ, Redis when leases need it: waited for up to ``startup_wait_seconds``,
runtime/check.py) -> the mode (``STANDALONE=auto``: the erxes emulation only where no erxes is found,
runtime/detect.py) -> storage -> broker (with the standalone emulation) -> the pipeline's lanes
(customer/conversation, actors/router.py) -> supervisor -> the kinds (runtime/kinds.py: each enabled kind sets up
its procedures, routes, GraphQL fields and listener; the supervisor then starts a listener per integration, by its
kind) -> procedures on the broker -> web (the same procedures over HTTP, /ready, /metrics) -> lease keeper (joins
the nodes in Redis; the supervisor then listens to the mailboxes whose leases it takes: ``docs/scaling.md``) ->
registration in Redis (``service:<kind>`` for each kind). Stopping releases the leases once every mailbox and the
pipeline stopped, and removes ``service:imap`` when it still points at this process.
``GET /health`` answers ``ok`` once all of it runs.
(Named ``process`` rather than ``supervisor`` so it is not confused with ``actors/supervisor.py``.)
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import pykka
import redis

from actors.interrupt import interrupt
from actors.lease_keeper import LeaseKeeperActor
from actors.router import start_pipeline
from actors.supervisor import SupervisorActor
from actors.web import WebActor
from runtime.broker.amqp import AmqpBroker
from runtime.check import servers, wait_for_servers
from runtime.config import Config
from runtime.detect import Mode, decide
from runtime.erxes import ErxesClient
from runtime.fence import Fence
from runtime.fence import install as install_fence
from runtime.kinds import Kind, KindConflict, Registry, Services, load_kinds
from runtime.leases import Leases, SoleOwner, Timings
from runtime.registry import Registration, queue_actions, redis_client, service_address
from runtime.serving import erxes_transport, per_tenant, serve, start_broker
from runtime.storage import Storage
from runtime.tenants import Tenants, TenantStorage, start_tenants
from web.app import WebDeps, make_app
from web.ops import Probe, ReadinessWatch
from web.rpc import http_procedures
from web.schema import build_schema

__all__ = ["Runtime"]

logger = logging.getLogger(__name__)

ASK_TIMEOUT = 30.0
HTTP_RPC_WORKERS = 16  # like the AMQP broker's worker pool
REGISTRATION_WAIT = 2.0  # how long start() waits for the Redis registration before going on without it


@dataclass
class Runtime:
    config: Config
    imap_factory: Callable[..., Any] | None = None  # the IMAP kind's connect, unless a test hands another
    storage: Storage | TenantStorage | None = None
    tenants: Tenants | None = None
    broker: AmqpBroker | None = None
    supervisor: Any = None
    web: Any = None
    web_port: int | None = None
    registration: Registration | None = None  # service:imap's (the first kind's)
    registrations: list[Registration] = field(default_factory=list)  # one per kind
    kinds: Registry | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _actors: list[pykka.ActorRef[Any]] = field(default_factory=list)
    _redis: redis.Redis | None = None
    _rpc_executor: concurrent.futures.ThreadPoolExecutor | None = None
    _probe: Probe | None = None
    _watch: ReadinessWatch | None = None
    ownership: Leases | SoleOwner | None = None
    _fence_before: Fence | None = None
    mode: Mode | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def start(self) -> None:
        fence = Fence.from_config(self.config)  # the OAuth2 token refresh deep in the IMAP settings uses it too
        self._fence_before = install_fence(fence)
        wait_for_servers(servers(self.config), bound=self.config.startup_wait_seconds)
        self._redis = redis_client(self.config, timeout=2.0)
        self.mode = decide(self.config, redis_client=self._redis)  # ConfigError: STANDALONE=true beside erxes
        logger.info("%s", self.mode.describe())
        self.config = dataclasses.replace(self.config, standalone=self.mode.standalone)
        self.tenants = start_tenants(self.config)
        self.storage = self.tenants.facade()
        self.broker = start_broker(self.config, self.tenants, marker=True)
        erxes = ErxesClient(erxes_transport(self.config, self.broker, self._redis),
                            customer_service=self.config.customer_service,
                            timeout=self.config.rpc_timeout, send_idempotency_keys=self.config.standalone)
        pipeline, lanes = start_pipeline(storage=self.storage, erxes=erxes, lanes=self.config.pipeline_lanes)
        for ref in lanes:
            self._spawn(ref)
        self.ownership = start_ownership(self.config, saas=self.tenants.saas)
        self.kinds = Registry()
        self.supervisor = self._spawn(SupervisorActor.start(
            storage=self.storage, listeners=self.kinds.listeners, tenants=self.tenants.known,
            max_delay=self.config.restart_max_delay_seconds, ownership=self.ownership,
            interrupt=interrupt,
            drain=pipeline.drain)).proxy()
        services = Services(config=self.config, tenants=self.tenants, storage=self.storage, broker=self.broker,
                            erxes=erxes, fence=fence, supervisor=self.supervisor, ownership=self.ownership,
                            pipeline=pipeline, timeout=ASK_TIMEOUT,
                            extra={"imap_factory": self.imap_factory} if self.imap_factory else {})
        kinds = load_kinds(self.config.kinds)
        for kind in kinds:  # before start_all: the supervisor reads the listeners the kinds registered
            self.kinds.setup(kind, services)
        logger.info("Kinds: %s", ", ".join(k.name for k in kinds))
        # Not awaited: with a thousand integrations spawning every mailbox takes a while, and serving (health,
        # procedures, registration) must not wait for it or time out on it. The supervisor logs how many started.
        self.supervisor.start_all()
        names: dict[str, list[str]] = {}
        base_rpc: dict[str, Any] = {}
        kind_rpc: dict[str, dict[str, Any]] = {}
        for kind in kinds:
            rpc_table = per_tenant(self.tenants, self.kinds.procedures_of(kind.name))
            names[kind.name] = serve(self.broker, rpc_table,
                                     per_tenant(self.tenants, self.kinds.procedures_of(kind.name, plain=True)))
            prefix = http_prefix(kind)
            if prefix == "" and base_rpc:
                raise KindConflict("the HTTP address", "/rpc", next(iter(base_rpc.values()))[0].partition(":")[0],
                                   kind.name)
            (base_rpc if prefix == "" else kind_rpc.setdefault(prefix, {})).update(http_procedures(rpc_table))
            base_rpc.update({full: (full, handler) for full, handler in rpc_table.items()})  # /rpc/<kind>:<name>
        self._rpc_executor = concurrent.futures.ThreadPoolExecutor(HTTP_RPC_WORKERS, thread_name_prefix="http-rpc")
        self._probe = Probe(storage=self.tenants.base, broker=self.broker, redis_client=self._redis,
                            node=self.ownership.status, integrations=lambda: [
                                self.tenants.storage(s) for s in self.tenants.known()],
                            redis_required=self.config.leases == "redis", mode=self.mode.report())
        queries, mutations = self.kinds.graphql_fields()
        app = make_app(self.config, deps=WebDeps(
            ready=lambda: self.ready, rpc=base_rpc, tenants=self.tenants,
            rpc_executor=self._rpc_executor, probe=self._probe, storage=self.storage, supervisor=self.supervisor,
            ownership=self.ownership,
            routes=self.kinds.route_builders(), schema=build_schema(queries, mutations), kind_rpc=kind_rpc,
            extra=services.extra))
        web = self._spawn(WebActor.start(app, port=self.config.port, host=self.config.bind_address))
        self.web_port = web.proxy().port.get(timeout=ASK_TIMEOUT)
        node_id = self.config.node_id or f"{socket.gethostname()}:{self.web_port}"  # the port is bound: it names it
        if isinstance(self.ownership, Leases):
            self._spawn(LeaseKeeperActor.start(leases=self.ownership, supervisor=self.supervisor, node_id=node_id))
        else:
            self.ownership.node_id = node_id
        self.registrations = [start_registration(self.config, self._redis, self.web_port, names[kind.name], kind=kind)
                              for kind in kinds]
        self.registration = self.registrations[0] if self.registrations else None
        self._ready.set()
        self._watch = ReadinessWatch(self._probe, ready=lambda: self.ready)
        self._watch.start()
        logger.info("imap-runtime is serving (HTTP %s:%d, %s)", self.config.bind_address, self.web_port,
                    "standalone: the erxes emulation runs here" if self.config.standalone else "erxes mode")

    def stop(self) -> None:
        self._ready.clear()
        if self._watch is not None:
            self._watch.stop()
        for registration in self.registrations:
            registration.stop(deregister=True)  # service:<kind>, when it still points at us
        for ref in reversed(self._actors):
            try:
                ref.stop(timeout=15)
            except (pykka.ActorDeadError, pykka.Timeout):
                logger.warning("%s did not stop in time", ref)
        self._actors.clear()
        if self._rpc_executor is not None:
            self._rpc_executor.shutdown(wait=False, cancel_futures=True)
        if self._probe is not None:
            self._probe.close()
        if self._redis is not None:
            self._redis.close()
        if self.broker is not None:
            self.broker.stop()
        stop_remaining_actors()
        if isinstance(self.ownership, Leases):
            self.ownership.leave()  # every mailbox and the pipeline stopped: others may take over at once
        if self.tenants is not None:
            self.tenants.close()
        install_fence(self._fence_before)

    def _spawn(self, ref: pykka.ActorRef[Any]) -> pykka.ActorRef[Any]:
        self._actors.append(ref)
        return ref

def start_ownership(config: Config, *, saas: bool) -> Leases | SoleOwner:
    """Leases in Redis (several nodes may run), or ``LEASES=off``: this process listens to every mailbox."""
    if config.leases == "off":
        logger.info("LEASES=off: this process listens to every mailbox; never run a second node so")
        return SoleOwner()
    client = redis_client(config, timeout=min(2.0, config.lease_seconds / 10))
    return Leases(client, timings=Timings.from_lease(config.lease_seconds), suffix=config.message_broker_prefix,
                  saas=saas, interrupt=interrupt)


def http_prefix(kind: Kind) -> str:
    """Where ``service:<kind>``'s HTTP address points below ours: ``""`` for imap, else ``/<kind>``."""
    return f"/{kind.name}" if kind.http_prefix is None else kind.http_prefix


def start_registration(config: Config, redis_conn: redis.Redis, port: int, names: list[str], *,
                       kind: Kind) -> Registration:
    """Register ``kind`` (``service:<kind>``, its config document, its queue names) in Redis in the background;
    wait briefly so a reachable Redis has the keys once we serve."""
    registration = Registration(redis_conn, address=service_address(config, port) + http_prefix(kind),
                                config_doc=kind.service_config(config),
                                actions=queue_actions(names, config.message_broker_prefix),
                                where=f"Redis at {config.redis_host}:{config.redis_port}", service=kind.name)
    registration.start()
    registration.wait(REGISTRATION_WAIT)
    return registration


def stop_remaining_actors() -> None:
    alive = pykka.ActorRegistry.get_all()
    if alive:
        logger.error("Bug: %d actor(s) still alive at shutdown: %s", len(alive), alive)
        pykka.ActorRegistry.stop_all(timeout=5)
