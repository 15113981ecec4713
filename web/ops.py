"""Operations routes: ``GET /ready`` (readiness, for load balancers and orchestrators) and ``GET /metrics``.

``/ready`` answers JSON ``{"mongo": "ok"|<error>, "rabbitmq": ..., "redis": ..., "mailboxes": {<state>: n},
"mailboxHealth": {"healthy": n, "degraded": n, "unHealthy": n, "unHealthyInboxes": [id...], "degradedInboxes":
[...]}, "node": {"id", "leases", "nodes", "target"}, "mode": {"standalone", "setting", "reason"}, "serving": bool,
"missing": [<one line each>, only when not ready]}`` (``node``: this node's id and the leases it holds, see
``docs/scaling.md``; ``mode``: whether the erxes emulation runs and why, runtime/detect.py) with HTTP 200 only while
the runtime serves and MongoDB, RabbitMQ and, with leases in Redis (``LEASES=redis``: without Redis no mailbox is
listened to), Redis answer; else 503, and ``missing`` names what is missing. ``mailboxes`` counts
``imap_integrations.state``, ``mailboxHealth`` their health as erxes's ``getStatus`` shows it
(:func:`mailbox_health`; both null when MongoDB does not answer). A sick mailbox never makes the node unready: it is
the mailbox's fault, not the node's. ``/metrics`` is the Prometheus text format (:mod:`runtime.metrics`).

:class:`ReadinessWatch` asks the same questions every few seconds and logs what is missing: a WARNING when it
changes, repeated at most once a minute while it lasts, and an INFO line once all is back.

Every check blocks for at most the :class:`Probe`'s timeout and runs on the probe's own small executor, never on
the IOLoop, so a slow MongoDB delays the answer but not the server, and busy RPC handlers cannot starve it.
(``GET /health`` stays the erxes-compatible liveness check in :mod:`web.app`.)
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
import time
from typing import Any, Callable

import pymongo
import redis
import tornado.ioloop
import tornado.web
from pymongo.errors import PyMongoError

from runtime import metrics
from runtime.errors import StorageError

__all__ = ["MetricsHandler", "Probe", "ReadinessWatch", "ReadyHandler", "ops_routes"]

logger = logging.getLogger(__name__)

OK = "ok"
NAMED_AT_MOST = 20  # inbox ids /ready names per health, beside the counts


class Probe:
    """Checks of the runtime's dependencies. Each method blocks up to ``timeout`` seconds: call it off the IOLoop,
    on :attr:`executor`. ``broker`` needs a ``connected`` property; ``redis_client`` should have short timeouts."""

    def __init__(self, *, storage: Any, broker: Any, redis_client: redis.Redis | None, timeout: float = 2.0,
                 workers: int = 4, node: Callable[[], dict[str, Any]] | None = None,
                 integrations: Callable[[], list[Any]] | None = None, redis_required: bool = False,
                 mode: dict[str, Any] | None = None) -> None:
        self.node = node or (lambda: {})
        self.redis_required = redis_required  # leases live in Redis: without it no mailbox is listened to
        self.mode = mode  # this node's id and leases (no I/O: runtime.leases keeps them)
        self._storage = storage
        # the storages whose imap_integrations to count (every tenant's with VERSION=saas)
        self._integrations = integrations or (lambda: [storage])
        self._broker = broker
        self._redis = redis_client
        self._timeout = timeout
        self.executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="ops-check")

    def mongo(self) -> str:
        try:
            with pymongo.timeout(self._timeout):
                self._storage.ping()
        except StorageError as exc:  # its cause: pymongo's own words, as they were before the wrapping
            return _short(exc.__cause__ or exc)
        return OK

    def rabbitmq(self) -> str:
        # Our own connection's state is the truth here: a fresh test connection could succeed while ours is down.
        return OK if self._broker is not None and self._broker.connected else "not connected"

    def redis(self) -> str:
        if self._redis is None:
            return "not configured"
        try:
            self._redis.ping()
        except redis.RedisError as exc:
            return _short(exc)
        return OK

    def mailbox_states(self) -> dict[str, int] | None:
        """Integrations by state, from ``imap_integrations.state`` of every tenant; None when MongoDB does not
        answer."""
        report = self.mailbox_report()
        return None if report is None else report[0]

    def mailbox_report(self) -> tuple[dict[str, int], dict[str, Any]] | None:
        """Integrations by state and by health, in one pass over every tenant's ``imap_integrations``; None when
        MongoDB does not answer. Health (issue 14): ``unHealthy`` as erxes's ``getStatus`` says it, ``degraded``
        when healthy with a reason in ``error`` (a skipped folder, a retry after a blip), else ``healthy``; the
        inbox ids of the first few unhealthy and degraded ones beside the counts (the reasons stay in
        ``getStatus`` and the log: this route answers without a login)."""
        states = {state: 0 for state in metrics.MAILBOX_STATES}
        health: dict[str, Any] = {name: 0 for name in metrics.MAILBOX_HEALTH}
        named: dict[str, list[str]] = {"unHealthy": [], "degraded": []}
        try:
            with pymongo.timeout(self._timeout):
                for storage in self._integrations():
                    for doc in storage.integration_health():
                        state = doc.get("state")
                        if state in states:
                            states[state] += 1
                        name = mailbox_health(doc)
                        health[name] += 1
                        if name in named and len(named[name]) < NAMED_AT_MOST:
                            named[name].append(str(doc.get("inboxId")))
        except PyMongoError as exc:
            logger.debug("cannot count mailboxes by state: %s", exc)
            return None
        health["unHealthyInboxes"], health["degradedInboxes"] = named["unHealthy"], named["degraded"]
        return states, health

    def missing(self, *, serving: bool, mongo: str, rabbitmq: str, redis_state: str) -> list[str]:
        """What keeps the runtime from serving, one line each (empty: ready)."""
        out = [] if serving else ["not serving yet (starting or stopping)"]
        if mongo != OK:
            out.append(f"MongoDB: {mongo}")
        if rabbitmq != OK:
            out.append(f"RabbitMQ: {rabbitmq}")
        if self.redis_required and redis_state != OK:
            out.append(f"Redis (the leases live there: no mailbox is listened to): {redis_state}")
        return out

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def mailbox_health(doc: dict[str, Any]) -> str:
    """``healthy``, ``degraded`` (healthy, with a reason in ``error``) or ``unHealthy``, of an integration."""
    if doc.get("healthStatus") == "unHealthy":
        return "unHealthy"
    return "degraded" if doc.get("error") else "healthy"


class ReadinessWatch:
    """Logs what keeps the runtime from being ready, at a bounded rate (see the module docstring)."""

    def __init__(self, probe: Probe | None, *, ready: Callable[[], bool], every: float = 5.0,
                 repeat: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._probe = probe
        self._ready = ready
        self._every = every
        self._repeat = repeat
        self._clock = clock
        self._last: list[str] = []
        self._logged_at = 0.0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> list[str]:
        """One round: ask, log when due; returns what is missing."""
        probe = self._probe
        if probe is None:
            return []
        missing = probe.missing(serving=self._ready(), mongo=probe.mongo(), rabbitmq=probe.rabbitmq(),
                                redis_state=probe.redis() if probe.redis_required else OK)
        now = self._clock()
        if missing and (missing != self._last or now - self._logged_at >= self._repeat):
            logger.warning("Not ready: %s", "; ".join(missing))
            self._logged_at = now
        elif not missing and self._last:
            logger.info("Ready again: MongoDB, RabbitMQ%s answer", " and Redis" if probe.redis_required else "")
        self._last = missing
        return missing

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="readiness-watch", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.wait(self._every):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - a watch must not die; the next round tries again
                logger.exception("readiness check failed")


class ReadyHandler(tornado.web.RequestHandler):
    def initialize(self, ready: Callable[[], bool], probe: Probe | None) -> None:
        self.ready = ready
        self.probe = probe

    async def get(self) -> None:
        probe = self.probe
        if probe is None:
            report: dict[str, Any] = {"mongo": "unknown", "rabbitmq": "unknown", "redis": "unknown",
                                      "mailboxes": None, "mailboxHealth": None}
        else:
            loop = tornado.ioloop.IOLoop.current()
            mongo, rabbit, red, mailboxes = await asyncio.gather(*(
                loop.run_in_executor(probe.executor, check)
                for check in (probe.mongo, probe.rabbitmq, probe.redis, probe.mailbox_report)))
            states, health = mailboxes if mailboxes is not None else (None, None)
            report = {"mongo": mongo, "rabbitmq": rabbit, "redis": red, "mailboxes": states,
                      "mailboxHealth": health}
            if probe.node():
                report["node"] = probe.node()
            if probe.mode is not None:
                report["mode"] = probe.mode
        serving = self.ready()
        report["serving"] = serving
        if probe is None:
            missing = ([] if serving else ["not serving yet (starting or stopping)"]) + [
                "MongoDB: unknown", "RabbitMQ: unknown"]  # nothing to ask them with
        else:
            missing = probe.missing(serving=serving, mongo=report["mongo"], rabbitmq=report["rabbitmq"],
                                    redis_state=report["redis"])
        if missing:
            report["missing"] = missing
            self.set_status(503)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(report))


class MetricsHandler(tornado.web.RequestHandler):
    def initialize(self, probe: Probe | None) -> None:
        self.probe = probe

    async def get(self) -> None:
        probe = self.probe
        if probe is None:
            body = metrics.exposition(None)
        else:
            body = await tornado.ioloop.IOLoop.current().run_in_executor(
                probe.executor, lambda: metrics.exposition(*(probe.mailbox_report() or (None, None)),
                                                           node=probe.node()))
        self.set_header("Content-Type", metrics.CONTENT_TYPE)
        self.finish(body)


def ops_routes(ready: Callable[[], bool], probe: Probe | None) -> list[Any]:
    return [
        (r"/ready", ReadyHandler, {"ready": ready, "probe": probe}),
        (r"/metrics", MetricsHandler, {"probe": probe}),
    ]


def _short(exc: BaseException) -> str:
    """The first line of an error, bounded: pymongo's carry a whole topology description."""
    text = (str(exc) or type(exc).__name__).splitlines()[0]
    return text if len(text) <= 200 else text[:197] + "..."
