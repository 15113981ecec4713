"""AmqpBroker against the real RabbitMQ on 127.0.0.1:5672 (override with AMQP_TEST_URL).

Each test uses its own queue suffix and deletes its queues afterwards. Wire-format tests talk to the broker
with a raw pika client that behaves like erxes's amqplib code. Reconnect tests go through tests/faultproxy.py.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pika
import pika.exceptions
import pytest

from runtime.broker import _envelope
from runtime.broker._envelope import delivery_id
from runtime.broker.amqp import MISSING, AmqpBroker, Backoff
from runtime.errors import BrokerError, RequestError, RpcError, RpcTimeout
from tests.faultproxy import FaultProxy

URL = os.environ.get("AMQP_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PARAMS = pika.URLParameters(URL)
NO_PROPERTIES = ("content_type", "content_encoding", "headers", "delivery_mode", "priority", "reply_to",
                 "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id")

pytestmark = pytest.mark.timeout(60)


@contextmanager
def raw_channel() -> Iterator[Any]:
    """A plain pika channel, like the one an erxes service would have."""
    conn = pika.BlockingConnection(PARAMS)
    try:
        yield conn.channel()
    finally:
        if conn.is_open:
            conn.close()


def raw_get(ch: Any, queue: str, timeout: float = 5.0) -> tuple[Any, Any, bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, props, body = ch.basic_get(queue, auto_ack=True)
        if method is not None:
            return method, props, body
        ch.connection.sleep(0.02)
    raise AssertionError(f"no message on {queue} within {timeout}s")


def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def message_count(queue: str) -> int:
    with raw_channel() as ch:
        return ch.queue_declare(queue, passive=True).method.message_count


def assert_only_properties(props: Any, **expected: Any) -> None:
    for name in NO_PROPERTIES:
        if name not in expected:
            assert getattr(props, name) is None, name
    for name, value in expected.items():
        assert getattr(props, name) == value, name


class Queues:
    """Queue names of one test: ``full(base)`` applies the suffix; all are deleted at teardown."""

    def __init__(self) -> None:
        self.suffix = f".test{uuid.uuid4().hex[:8]}"
        self.names: set[str] = set()

    def full(self, base: str) -> str:
        self.names.add(base + self.suffix)
        return base + self.suffix

    def delete_all(self) -> None:
        with raw_channel() as ch:
            for name in self.names:
                ch.queue_delete(name)


@pytest.fixture
def queues() -> Iterator[Queues]:
    q = Queues()
    yield q
    q.delete_all()


@pytest.fixture
def make_broker(queues: Queues) -> Iterator[Callable[..., AmqpBroker]]:
    brokers: list[AmqpBroker] = []

    def make(url: str = URL, **kw: Any) -> AmqpBroker:
        broker = AmqpBroker(url, prefix=queues.suffix, **kw)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.stop(timeout=5)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    with FaultProxy(PARAMS.host, PARAMS.port) as p:
        yield p


def proxied(proxy: FaultProxy) -> str:
    return f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"


def echo(request: dict[str, Any]) -> Any:
    return {"data": request["data"], "subdomain": request["subdomain"]}


# -- RPC ---------------------------------------------------------------------------------------------


def test_rpc_round_trip_in_one_broker(make_broker, queues):
    broker = make_broker()
    broker.serve_rpc("x:echo", echo)
    queues.full("x:echo")
    broker.start(timeout=10)
    assert broker.connected
    assert broker.call("x:echo", {"a": [1, "é"]}, timeout=5) == {"data": {"a": [1, "é"]}, "subdomain": "os"}
    assert broker.call("x:echo", None, subdomain="acme", timeout=5) == {"data": None, "subdomain": "acme"}


def test_handler_error_becomes_an_error_reply_and_serving_goes_on(make_broker, queues, caplog):
    def handler(request: dict[str, Any]) -> Any:
        if request["data"] == "crash":
            raise ValueError("bad thing")
        if request["data"] == "refuse":
            raise RequestError("Integration not found.")
        return "fine"

    broker = make_broker()
    broker.serve_rpc("x:flaky", handler)
    queues.full("x:flaky")
    broker.start()
    with caplog.at_level(logging.INFO, logger="runtime.broker"):
        with pytest.raises(RpcError, match="^bad thing$"):
            broker.call("x:flaky", "crash", timeout=5)
        with pytest.raises(RpcError, match="^Integration not found.$"):
            broker.call("x:flaky", "refuse", timeout=5)
    assert broker.call("x:flaky", "ok", timeout=5) == "fine"
    unexpected = [r for r in caplog.records if r.exc_info]
    assert len(unexpected) == 1 and "x:flaky" in unexpected[0].getMessage()  # only the ValueError has a traceback


def test_timeout_returns_the_default_value_or_raises_rpc_timeout(make_broker, queues):
    release = threading.Event()

    def slow(request: dict[str, Any]) -> Any:
        release.wait(5)
        return "late"

    broker = make_broker()
    broker.serve_rpc("x:slow", slow)
    queues.full("x:slow")
    queues.full("x:nobody")
    broker.start()

    started = time.monotonic()
    assert broker.call("x:nobody", {}, timeout=0.3, default_value={"d": 1}) == {"d": 1}
    assert broker.call("x:nobody", {}, timeout=0.3, default_value=None) is None
    with pytest.raises(RpcTimeout):
        broker.call("x:slow", {}, timeout=0.3)
    assert time.monotonic() - started < 3
    release.set()  # the late reply arrives and is dropped
    assert broker.call("x:slow", {}, timeout=5) == "late"


def test_a_request_that_is_not_json_gets_an_error_reply_and_is_acked(make_broker, queues):
    broker = make_broker()
    broker.serve_rpc("x:strict", echo)
    full = queues.full("x:strict")
    broker.start()
    with raw_channel() as ch:
        reply_queue = ch.queue_declare("", exclusive=True).method.queue
        ch.basic_publish("", full, b"\xffnot json", pika.BasicProperties(correlation_id="c1", reply_to=reply_queue))
        ch.basic_publish("", full, b"[1, 2]")  # JSON, but no envelope, and nobody to answer
        _, props, body = raw_get(ch, reply_queue)
    assert props.correlation_id == "c1"
    reply = json.loads(body)
    assert reply["status"] == "error" and reply["errorMessage"].startswith("Invalid request")
    broker.stop()
    assert message_count(full) == 0  # both acked, so nothing came back when the connection closed


def test_nested_calls_run_on_worker_threads(make_broker, queues):
    threads: list[str] = []

    def outer(request: dict[str, Any]) -> Any:
        threads.append(threading.current_thread().name)
        return broker.call("x:inner", request["data"], timeout=5) + 1

    def inner(request: dict[str, Any]) -> Any:
        threads.append(threading.current_thread().name)
        return request["data"] * 2

    broker = make_broker(workers=4)
    broker.serve_rpc("x:outer", outer)
    broker.serve_rpc("x:inner", inner)
    queues.full("x:outer")
    queues.full("x:inner")
    broker.start()
    assert broker.call("x:outer", 20, timeout=5) == 41
    assert len(threads) == 2 and all(name.startswith("amqp-worker") for name in threads)


def test_fifty_concurrent_calls_from_ten_threads(make_broker, queues):
    broker = make_broker()
    broker.serve_rpc("x:square", lambda request: request["data"] ** 2)
    queues.full("x:square")
    broker.start()
    results: dict[int, Any] = {}
    lock = threading.Lock()

    def caller(offset: int) -> None:
        for i in range(offset, offset + 5):
            try:
                value = broker.call("x:square", i, timeout=10)
            except Exception as exc:  # recorded, asserted below
                value = exc
            with lock:
                results[i] = value

    threads = [threading.Thread(target=caller, args=(n * 5,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert results == {i: i * i for i in range(50)}


# -- plain messages ----------------------------------------------------------------------------------


def test_publish_is_confirmed_and_a_failing_plain_consumer_still_acks(make_broker, queues, caplog):
    seen: list[Any] = []
    ids: list[str | None] = []
    three = threading.Semaphore(0)

    def handler(request: dict[str, Any]) -> None:
        seen.append(request)
        ids.append(delivery_id())
        three.release()
        raise RuntimeError("handler broke")

    broker = make_broker()
    broker.consume("x:plain", handler)
    full = queues.full("x:plain")
    broker.start()
    with caplog.at_level(logging.ERROR, logger="runtime.broker"):
        for n in range(3):
            broker.publish("x:plain", {"n": n}, subdomain="acme", timeout=5)  # returns once confirmed
        for _ in range(3):
            assert three.acquire(timeout=5)
        broker.stop()
    assert sorted(r["data"]["n"] for r in seen) == [0, 1, 2]
    assert all(r == {"subdomain": "acme", "data": {"n": r["data"]["n"]}} for r in seen)
    assert len(set(ids)) == 3 and None not in ids  # each handler saw its own message's id
    assert delivery_id() is None  # only inside a handler
    assert message_count(full) == 0
    failures = [r for r in caplog.records if r.name.startswith("runtime.broker") and r.levelno >= logging.ERROR]
    assert len(failures) == 3 and all("x:plain" in r.getMessage() for r in failures)


def test_consumer_registered_after_start_gets_messages(make_broker, queues):
    got = threading.Event()
    broker = make_broker()
    broker.start()
    broker.consume("x:late", lambda request: got.set())
    queues.full("x:late")
    broker.publish("x:late", {})
    assert got.wait(5)
    with pytest.raises(ValueError):
        broker.consume("x:late", lambda request: None)


# -- the erxes contract on the wire ------------------------------------------------------------------


def test_queues_are_durable_and_named_with_the_suffix(make_broker, queues):
    base = f"x:named{uuid.uuid4().hex[:6]}"
    broker = make_broker()
    broker.serve_rpc(base, echo)
    full = queues.full(base)
    queues.names.add(base)
    broker.start()
    assert full == base + queues.suffix
    with raw_channel() as ch:
        ch.queue_declare(full, passive=True)  # exists under the suffixed name
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as refused:
            ch.queue_declare(full, durable=False)
    assert refused.value.reply_code == 406
    with raw_channel() as ch:
        ch.queue_declare(full, durable=True)  # the erxes declaration is accepted
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as missing:
            ch.queue_declare(base, passive=True)
    assert missing.value.reply_code == 404


def test_reply_to_an_erxes_style_request(make_broker, queues):
    broker = make_broker()
    broker.serve_rpc("x:wire", lambda request: {"echo": request["data"]} if request["data"] else None)
    full = queues.full("x:wire")
    broker.start()
    with raw_channel() as ch:  # as amqplib: exclusive reply queue, correlationId, replyTo, expiration
        reply_queue = ch.queue_declare("", exclusive=True).method.queue
        for data, expected in (({"a": 1}, b'{"status":"success","data":{"echo":{"a":1}}}'),
                               (None, b'{"status":"success"}')):
            corr = str(uuid.uuid4())
            request = json.dumps({"subdomain": "os", "data": data, "timeout": 5000}).encode()
            ch.basic_publish("", full, request,
                             pika.BasicProperties(correlation_id=corr, reply_to=reply_queue, expiration="5000"))
            method, props, body = raw_get(ch, reply_queue)
            assert method.exchange == "" and method.routing_key == reply_queue
            assert_only_properties(props, correlation_id=corr)
            assert body == expected


def test_our_requests_and_messages_look_like_erxes_ones(make_broker, queues):
    broker = make_broker()
    broker.start()
    rpc_queue, plain_queue = queues.full("x:remote"), queues.full("x:remoteplain")
    outcome: dict[str, Any] = {}

    def call(name: str, **kw: Any) -> None:
        try:
            outcome[name] = broker.call("x:remote", {"k": "v"}, **kw)
        except Exception as exc:  # asserted below
            outcome[name] = exc

    with raw_channel() as ch:
        ch.queue_declare(rpc_queue, durable=True)  # an erxes server declares it the same way
        first = threading.Thread(target=call, args=("first",), kwargs={"timeout": 5})
        first.start()
        method, props, body = raw_get(ch, rpc_queue)
        assert method.exchange == "" and method.routing_key == rpc_queue
        assert props.reply_to.startswith("amq.rabbitmq.reply-to")
        assert len(props.correlation_id) == 32 and int(props.correlation_id, 16) >= 0
        assert_only_properties(props, correlation_id=props.correlation_id, reply_to=props.reply_to,
                               expiration="5000")
        assert json.loads(body) == {"subdomain": "os", "data": {"k": "v"}, "timeout": 5000}
        ch.basic_publish("", props.reply_to, b'{"status":"success","data":42}',
                         pika.BasicProperties(correlation_id=props.correlation_id))
        first.join(5)

        second = threading.Thread(target=call, args=("second",),
                                  kwargs={"timeout": 2.5, "subdomain": "acme", "default_value": []})
        second.start()
        _, props, body = raw_get(ch, rpc_queue)
        assert props.expiration == "2500"
        assert json.loads(body) == {"subdomain": "acme", "data": {"k": "v"}, "defaultValue": [], "timeout": 2500}
        ch.basic_publish("", props.reply_to, b'{"status":"error","errorMessage":"nope"}',
                         pika.BasicProperties(correlation_id=props.correlation_id))
        second.join(5)

        broker.publish("x:remoteplain", {"n": 1}, timeout=5)
        method, props, body = raw_get(ch, plain_queue)
        assert method.routing_key == plain_queue
        assert len(props.message_id) == 32 and int(props.message_id, 16) >= 0  # one per publish (erxes sets none)
        assert_only_properties(props, message_id=props.message_id)
        assert json.loads(body) == {"subdomain": "os", "data": {"n": 1}}
    assert outcome["first"] == 42
    assert isinstance(outcome["second"], RpcError) and str(outcome["second"]) == "nope"


# -- connection loss, start and stop -----------------------------------------------------------------


def test_reconnects_after_a_cut_and_fails_calls_in_flight(proxy, make_broker, queues, caplog):
    entered, release = threading.Event(), threading.Event()

    def hang(request: dict[str, Any]) -> Any:
        entered.set()
        release.wait(10)
        return "done"

    broker = make_broker(proxied(proxy), reconnect_max_delay=1.0)
    broker.serve_rpc("x:echo", echo)
    broker.serve_rpc("x:hang", hang)
    queues.full("x:echo")
    queues.full("x:hang")
    broker.start()
    assert broker.call("x:echo", 1, timeout=5)["data"] == 1

    failure: dict[str, Any] = {}

    def in_flight() -> None:
        started = time.monotonic()
        try:
            broker.call("x:hang", {}, timeout=20)
        except Exception as exc:  # asserted below
            failure["exc"], failure["after"] = exc, time.monotonic() - started

    caller = threading.Thread(target=in_flight)
    try:
        with caplog.at_level(logging.WARNING, logger="runtime.broker"):
            caller.start()
            assert entered.wait(5)
            proxy.cut()
            caller.join(5)
            assert type(failure["exc"]) is BrokerError and failure["after"] < 5
            assert broker.wait_connected(10)
        problems = [r for r in caplog.records if r.name.startswith("runtime.broker") and r.levelno >= logging.WARNING]
        assert [r.levelname for r in problems] == ["WARNING"]  # one warning for one outage
    finally:
        release.set()  # the old delivery's ack is dropped; RabbitMQ redelivers it on the new connection
    assert broker.call("x:echo", 2, timeout=5)["data"] == 2  # consumers re-registered, calls work again
    broker.publish("x:echo", 3, timeout=5)


def test_a_call_made_while_disconnected_waits_for_the_connection(proxy, make_broker, queues):
    broker = make_broker(proxied(proxy), reconnect_max_delay=1.0)
    broker.serve_rpc("x:echo", echo)
    queues.full("x:echo")
    broker.start()
    proxy.refuse(True)
    proxy.cut()
    wait_until(lambda: not broker.connected, 5)
    threading.Timer(1.0, proxy.refuse, args=(False,)).start()
    assert broker.call("x:echo", "after", timeout=10)["data"] == "after"
    with pytest.raises(BrokerError):  # the RpcTimeout subclass is for missing replies, not a missing broker
        proxy.refuse(True)
        proxy.cut()
        broker.publish("x:echo", 1, timeout=0.5)


def test_heartbeat_loss_is_noticed_and_recovered(proxy, make_broker, queues):
    broker = make_broker(proxied(proxy), heartbeat=1, reconnect_max_delay=1.0)
    broker.serve_rpc("x:echo", echo)
    queues.full("x:echo")
    broker.start()
    proxy.stall(True)  # the TCP connection stays up, but nothing gets through any more
    wait_until(lambda: not broker.connected, 20)
    proxy.stall(False)
    assert broker.wait_connected(10)
    assert broker.call("x:echo", "back", timeout=5)["data"] == "back"


def test_start_times_out_stops_and_raises(proxy, make_broker):
    before = set(threading.enumerate())
    proxy.stall(True)
    broker = make_broker(proxied(proxy))
    started = time.monotonic()
    with pytest.raises(BrokerError, match="within 1.0s"):
        broker.start(timeout=1.0)
    assert time.monotonic() - started < 4
    assert not broker.connected
    assert [t.name for t in set(threading.enumerate()) - before if t.name.startswith("amqp")] == []
    with pytest.raises(BrokerError, match="not running"):
        broker.call("x:any", {}, timeout=1)


def test_backoff_uses_the_injected_sleep(proxy, make_broker):
    delays: list[float] = []

    def fake_sleep(seconds: float) -> None:
        delays.append(seconds)
        time.sleep(0.01)  # keeps the retry loop from spinning

    proxy.refuse(True)
    broker = make_broker(proxied(proxy), reconnect_max_delay=2.0, sleep=fake_sleep)
    with pytest.raises(BrokerError):
        broker.start(timeout=1.0)
    assert len(delays) >= 4
    assert 0.375 <= delays[0] <= 0.5 and 0.75 <= delays[1] <= 1.0 and all(1.5 <= d <= 2.0 for d in delays[2:])


def test_stop_lets_a_running_handler_finish_and_leaves_nothing_running(make_broker, queues):
    before = set(threading.enumerate())
    entered, finished = threading.Event(), threading.Event()

    def slow(request: dict[str, Any]) -> None:
        entered.set()
        time.sleep(0.5)
        finished.set()

    broker = make_broker()
    broker.consume("x:slowplain", slow)
    full = queues.full("x:slowplain")
    broker.start()
    broker.publish("x:slowplain", {})
    assert entered.wait(5)
    started = time.monotonic()
    broker.stop(timeout=5)
    assert finished.is_set() and time.monotonic() - started < 5
    assert [t.name for t in set(threading.enumerate()) - before if t.is_alive()] == []
    assert message_count(full) == 0
    broker.stop()  # a second stop is harmless


def test_stop_keeps_its_timeout_when_a_handler_hangs(make_broker, queues):
    entered, release = threading.Event(), threading.Event()
    broker = make_broker()
    broker.consume("x:stuck", lambda request: (entered.set(), release.wait(10)))
    full = queues.full("x:stuck")
    broker.start()
    try:
        broker.publish("x:stuck", {})
        assert entered.wait(5)
        started = time.monotonic()
        broker.stop(timeout=1.0)
        assert time.monotonic() - started < 1.5
    finally:
        release.set()
    assert message_count(full) == 1  # never acked, so RabbitMQ kept it


def test_calls_before_start_fail_at_once():
    broker = AmqpBroker(URL)
    with pytest.raises(BrokerError, match="not running"):
        broker.publish("x:any", {}, timeout=5)


# -- pure pieces -------------------------------------------------------------------------------------


def test_backoff_doubles_to_the_cap_with_jitter_and_resets():
    backoff = Backoff(0.5, 4.0, rng=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5
    low = Backoff(0.5, 4.0, rng=lambda: 0.0)
    assert low.next_delay() == 0.375


def test_envelope_leaves_out_what_was_not_given():
    assert json.loads(_envelope.encode_request("os", {"a": 1})) == {"subdomain": "os", "data": {"a": 1}}
    assert json.loads(_envelope.encode_request("os", None, timeout_ms=10, default_value=None)) == {
        "subdomain": "os", "data": None, "defaultValue": None, "timeout": 10}
    assert _envelope.encode_success(None) == b'{"status":"success"}'
    assert _envelope.encode_success(0) == b'{"status":"success","data":0}'
    assert _envelope.encode_error(KeyError()) == b'{"status":"error","errorMessage":"KeyError"}'
    when = dt.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)
    assert _envelope.encode_success(when) == b'{"status":"success","data":"2024-05-01T12:00:00.123Z"}'
    assert json.loads(_envelope.handle_rpc("q", lambda r: float("nan"), b"{}"))["status"] == "error"
    assert repr(MISSING) == "MISSING"
