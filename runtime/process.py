"""The orchestrator: starts everything in dependency order and stops it in reverse (mopidy's ``_app/process.py``).

storage -> broker (with the standalone emulation) -> conversation/customer -> supervisor + mailboxes ->
procedures on the broker -> queue names in Redis -> web. ``GET /health`` answers ``ok`` once all of it runs.
(Named ``process`` rather than ``supervisor`` so it is not confused with ``actors/supervisor.py``.)
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import pykka
import redis

from actors.conversation import ConversationActor
from actors.customer import CustomerActor
from actors.mailbox import MailboxActor
from actors.supervisor import SupervisorActor
from actors.web import WebActor
from runtime.broker.amqp import AmqpBroker
from runtime.config import Config
from runtime.erxes import ErxesClient
from runtime.imap import connect
from runtime.procedures import SERVICE, ImapProcedures
from runtime.standalone import Standalone
from runtime.storage import Storage
from web.app import WebDeps, make_app

__all__ = ["Runtime"]

logger = logging.getLogger(__name__)

ASK_TIMEOUT = 30.0


@dataclass
class Runtime:
    config: Config
    imap_factory: Callable[..., Any] = connect
    storage: Storage | None = None
    broker: AmqpBroker | None = None
    supervisor: Any = None
    web: Any = None
    web_port: int | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _actors: list[pykka.ActorRef[Any]] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def start(self) -> None:
        self.storage = start_storage(self.config)
        self.broker = start_broker(self.config, self.storage)
        erxes = ErxesClient(self.broker, customer_service=self.config.customer_service,
                            timeout=self.config.rpc_timeout, send_idempotency_keys=self.config.standalone)
        conversations = self._spawn(ConversationActor.start(storage=self.storage, erxes=erxes))
        customers = self._spawn(CustomerActor.start(storage=self.storage, erxes=erxes,
                                                    conversations=conversations.proxy()))
        self.supervisor = self._spawn(SupervisorActor.start(
            storage=self.storage, mailbox_factory=self._mailbox_factory(customers.proxy()),
            max_delay=self.config.restart_max_delay_seconds)).proxy()
        count = self.supervisor.start_all().get(timeout=ASK_TIMEOUT)
        logger.info("Started %d mailbox(es)", count)
        procedures = ImapProcedures(storage=self.storage, supervisor=self.supervisor, timeout=ASK_TIMEOUT)
        names = serve(self.broker, procedures.rpc_procedures(), procedures.plain_procedures())
        register_queue_names(self.config, [n + self.config.message_broker_prefix for n in names])
        app = make_app(self.config, deps=WebDeps(ready=lambda: self.ready))
        web = self._spawn(WebActor.start(app, port=self.config.port))
        self.web_port = web.proxy().port.get(timeout=ASK_TIMEOUT)
        self._ready.set()
        logger.info("imap-runtime is serving (HTTP port %d, standalone=%s)", self.web_port, self.config.standalone)

    def stop(self) -> None:
        self._ready.clear()
        for ref in reversed(self._actors):
            try:
                ref.stop(timeout=15)
            except (pykka.ActorDeadError, pykka.Timeout):
                logger.warning("%s did not stop in time", ref)
        self._actors.clear()
        if self.broker is not None:
            self.broker.stop()
        stop_remaining_actors()
        if self.storage is not None:
            self.storage.close()

    def _spawn(self, ref: pykka.ActorRef[Any]) -> pykka.ActorRef[Any]:
        self._actors.append(ref)
        return ref

    def _mailbox_factory(self, pipeline: Any) -> Callable[..., pykka.ActorRef[Any]]:
        def start_mailbox(doc: dict[str, Any], *, supervisor: Any, generation: int) -> pykka.ActorRef[Any]:
            return MailboxActor.start(doc, supervisor=supervisor, generation=generation, config=self.config,
                                      storage=self.storage, pipeline=pipeline, imap_factory=self.imap_factory)
        return start_mailbox


def start_storage(config: Config) -> Storage:
    storage = Storage(config.mongo_url, database=config.mongo_database)
    storage.ping()
    storage.ensure_indexes()
    logger.info("MongoDB ready (database %s)", config.mongo_database)
    return storage


def start_broker(config: Config, storage: Storage) -> AmqpBroker:
    broker = AmqpBroker(config.rabbitmq_url, prefix=config.message_broker_prefix, rpc_timeout=config.rpc_timeout)
    if config.standalone:
        emulation = Standalone(storage.db, customer_service=config.customer_service)
        emulation.ensure_indexes()
        serve(broker, emulation.rpc_procedures(), emulation.plain_procedures())
        logger.info("Standalone mode: serving the core/contacts and inbox procedures we call")
    broker.start()
    return broker


def serve(broker: AmqpBroker, rpc: dict[str, Callable[..., Any]], plain: dict[str, Callable[..., Any]]) -> list[str]:
    for name, handler in rpc.items():
        broker.serve_rpc(name, handler)
    for name, handler in plain.items():
        broker.consume(name, handler)
    return [*rpc, *plain]


def register_queue_names(config: Config, names: list[str]) -> None:
    """erxes senders refuse to publish to an action missing from ``service:queuenames:<service>``."""
    client = redis.Redis(host=config.redis_host, port=config.redis_port, password=config.redis_password or None,
                         socket_timeout=5, socket_connect_timeout=5)
    try:
        client.sadd(f"service:queuenames:{SERVICE}", *names)
    except redis.RedisError as exc:
        logger.warning("Could not register our queue names in Redis (%s): erxes senders may refuse them", exc)
    finally:
        client.close()


def stop_remaining_actors() -> None:
    alive = pykka.ActorRegistry.get_all()
    if alive:
        logger.error("Bug: %d actor(s) still alive at shutdown: %s", len(alive), alive)
        pykka.ActorRegistry.stop_all(timeout=5)
