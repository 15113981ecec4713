"""``/ready`` and ``/metrics`` over real HTTP, with a real MongoDB behind a TCP proxy that can refuse and cut."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterator

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry

from actors.web import WebActor
from runtime import metrics
from runtime.storage import Storage
from tests.conftest import wait_for
from tests.e2e import free_port
from tests.faultproxy import FaultProxy
from web.app import WebDeps, make_app
from web.ops import Probe


class Broker:
    connected = True


class Ops:
    """The web app with a Probe over MongoDB through ``proxy``, served by a WebActor on a free port."""

    def __init__(self, mongo_url: str, proxy: FaultProxy, redis_port: int) -> None:
        parts = urllib.parse.urlsplit(mongo_url)
        # directConnection: SecantusDB announces itself as a replica set member by its own address, which pymongo
        # would otherwise connect to, around the proxy
        url = parts._replace(netloc=f"127.0.0.1:{proxy.port}").geturl() + "&directConnection=true"
        self.storage = Storage(url, timeout_ms=5000)
        self.broker = Broker()
        self.serving = True
        self.redis = redis.Redis(port=redis_port, socket_timeout=1, socket_connect_timeout=1,
                                 retry=Retry(NoBackoff(), 0))
        self.probe = Probe(storage=self.storage, broker=self.broker, redis_client=self.redis, timeout=1.0)
        app = make_app(None, deps=WebDeps(ready=lambda: self.serving, probe=self.probe))
        self.web = WebActor.start(app, port=0, host="127.0.0.1")
        self.base = f"http://127.0.0.1:{self.web.proxy().port.get(timeout=5)}"

    def get(self, path: str) -> tuple[int, bytes, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as resp:
                return resp.status, resp.read(), resp.headers["Content-Type"]
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), exc.headers["Content-Type"]

    def ready(self) -> tuple[int, dict[str, Any]]:
        status, body, content_type = self.get("/ready")
        assert content_type.startswith("application/json")
        return status, json.loads(body)

    def close(self) -> None:
        self.web.stop(timeout=5)
        self.probe.close()
        self.redis.close()
        self.storage.close()


@pytest.fixture
def proxy(services: dict[str, str]) -> Iterator[FaultProxy]:
    mongo = urllib.parse.urlsplit(services["MONGO_URL"])
    with FaultProxy(mongo.hostname or "127.0.0.1", mongo.port or 27017) as p:
        yield p


@pytest.fixture
def ops(mongo_url: str, proxy: FaultProxy, services: dict[str, str]) -> Iterator[Ops]:
    o = Ops(mongo_url, proxy, int(services["REDIS_PORT"]))
    yield o
    o.close()


def add_integrations(db: Any, states: list[str]) -> None:
    db.imap_integrations.insert_many([{"inboxId": f"inbox-{i}", "state": s} for i, s in enumerate(states)])


def test_ready_reports_every_dependency_and_is_503_until_the_runtime_serves(ops: Ops, db: Any) -> None:
    add_integrations(db, ["idle", "idle", "backoff", "unhealthy", "gone-state"])
    ops.serving = False
    status, report = ops.ready()
    assert status == 503 and report["serving"] is False
    ops.serving = True
    status, report = ops.ready()
    assert status == 200, report
    assert report == {"mongo": "ok", "rabbitmq": "ok", "redis": "ok", "serving": True,
                      "mailboxes": {"connecting": 0, "idle": 2, "syncing": 0, "backoff": 1, "unhealthy": 1},
                      "mailboxHealth": {"healthy": 5, "degraded": 0, "unHealthy": 0, "unHealthyInboxes": [],
                                        "degradedInboxes": []}}
    ops.broker.connected = False
    status, report = ops.ready()
    assert status == 503 and report["rabbitmq"] == "not connected"
    assert ops.get("/health")[:2] == (200, b"ok")


def test_ready_is_503_while_mongodb_is_unreachable_and_200_when_it_returns(ops: Ops, proxy: FaultProxy,
                                                                          db: Any) -> None:
    add_integrations(db, ["idle"])
    assert ops.ready()[0] == 200
    proxy.refuse(True)
    proxy.cut()
    started = time.monotonic()
    status, report = ops.ready()
    assert time.monotonic() - started < 4, "each check has a short timeout, and they run side by side"
    assert status == 503
    assert report["mongo"] != "ok" and report["mailboxes"] is None
    assert report["rabbitmq"] == "ok" and report["redis"] == "ok"
    status, body, _ = ops.get("/metrics")  # still answers, without the gauge it cannot compute
    assert status == 200 and b"imap_mailboxes" not in body
    proxy.refuse(False)
    wait_for(lambda: ops.ready()[0] == 200, timeout=15, interval=0.2, message="/ready back to 200")
    assert ops.ready()[1]["mailboxes"]["idle"] == 1


def test_redis_down_is_reported_but_not_unready(mongo_url: str, proxy: FaultProxy) -> None:
    ops = Ops(mongo_url, proxy, free_port())
    try:
        status, report = ops.ready()
        assert status == 200 and report["redis"] != "ok" and report["mongo"] == "ok"
    finally:
        ops.close()


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_is_prometheus_text_with_mailboxes_by_state(ops: Ops, db: Any) -> None:
    add_integrations(db, ["idle", "syncing", "syncing"])
    status, body, content_type = ops.get("/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    before = samples(body)
    assert before[("imap_mailboxes", (("kind", "imap"), ("state", "syncing")))] == 2
    assert before[("imap_mailboxes", (("kind", "imap"), ("state", "idle")))] == 1
    assert before[("imap_mailboxes", (("kind", "imap"), ("state", "unhealthy")))] == 0
    for name in ("imap_mails_ingested_total", "imap_mails_failed_total", "imap_idle_renewals_total",
                 "imap_ingest_latency_seconds_count"):  # the IMAP kind's carry its name
        assert (name, (("kind", "imap"),)) in before, name
    for name in ("imap_broker_reconnects_total", "process_cpu_seconds_total"):  # the runtime's own: no kind
        assert (name, ()) in before, name
    metrics.mail_ingested(None)
    after = samples(ops.get("/metrics")[1])
    ingested = ("imap_mails_ingested_total", (("kind", "imap"),))
    assert after[ingested] == before[ingested] + 1


def test_ready_and_metrics_tell_healthy_degraded_and_unhealthy_mailboxes_apart(ops: Ops, db: Any) -> None:
    """Issue 14: a mailbox backing off after an error that outlasts its retry is unHealthy for erxes (getStatus);
    one with a skipped folder is healthy with a reason. /ready and /metrics say the same, and stay ready: a sick
    mailbox is not a sick node. Before, both showed states only (a backoff looked like any other)."""
    db.imap_integrations.insert_many([
        {"inboxId": "ok", "state": "idle", "healthStatus": "healthy", "error": None},
        {"inboxId": "skipped", "state": "idle", "healthStatus": "healthy",
         "error": "folder 'Billing' skipped: folder 'Billing' cannot be selected"},
        {"inboxId": "tls", "state": "backoff", "healthStatus": "unHealthy",
         "error": "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"},
        {"inboxId": "legacy", "state": "idle"},  # written before health was recorded
    ])
    status, report = ops.ready()
    assert status == 200, report
    assert report["mailboxHealth"] == {"healthy": 2, "degraded": 1, "unHealthy": 1, "unHealthyInboxes": ["tls"],
                                       "degradedInboxes": ["skipped"]}
    assert "CERTIFICATE" not in json.dumps(report)  # the reasons stay behind getStatus and the log
    got = samples(ops.get("/metrics")[1])
    assert {h: got[("imap_mailboxes_health", (("health", h), ("kind", "imap")))]
            for h in ("healthy", "degraded", "unHealthy")} == {"healthy": 2, "degraded": 1, "unHealthy": 1}


def reconnects() -> float:
    return metrics.REGISTRY.get_sample_value("imap_broker_reconnects_total") or 0.0


def test_broker_reconnects_are_counted(amqp_url: str) -> None:
    from runtime.serving import MeteredAmqpBroker

    target = urllib.parse.urlsplit(amqp_url)
    with FaultProxy(target.hostname or "127.0.0.1", target.port or 5672) as rabbit:
        netloc = f"{target.username}:{target.password}@127.0.0.1:{rabbit.port}"
        broker = MeteredAmqpBroker(target._replace(netloc=netloc).geturl())
        broker.start()
        try:
            before = reconnects()
            rabbit.cut()
            wait_for(lambda: reconnects() == before + 1, timeout=10, message="the reconnect to be counted")
            assert broker.wait_connected(5)
        finally:
            broker.stop()
