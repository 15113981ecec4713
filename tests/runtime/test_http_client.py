"""The HTTP RPC client against a real HTTP peer on loopback (a tiny Tornado server answering like erxes)."""
from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any, Callable, Iterator

import pytest
import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.web

from runtime.broker.enabled import EnabledServices
from runtime.broker.http import HttpRpcClient
from runtime.config import load_config
from runtime.errors import BrokerError, RpcError, RpcTimeout
from tests.e2e import REPO, free_port
from tests.faultproxy import FaultProxy


class FakeErxes:
    """An erxes service's HTTP side: ``POST /rpc/<procedure>`` runs ``procedures[procedure](envelope)`` and answers
    ``{"status": "success", "data": ...}`` (or the error form when it raises); an unknown procedure gets express's
    404. Every request is recorded as ``(procedure, envelope)``. Runs its own IOLoop in a thread."""

    def __init__(self, procedures: dict[str, Callable[[dict[str, Any]], Any]], *, delay: float = 0.0) -> None:
        self.procedures = procedures
        self.delay = delay
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
        self.port = self._sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop: tornado.ioloop.IOLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-erxes", daemon=True)
        self._thread.start()
        assert self._started.wait(5)

    def procedures_called(self) -> list[str]:
        return [name for name, _ in self.requests]

    def close(self) -> None:
        if self._loop is not None:
            self._loop.add_callback(self._loop.stop)
        self._thread.join(5)

    def _serve(self) -> None:
        asyncio.set_event_loop(asyncio.new_event_loop())
        self._loop = tornado.ioloop.IOLoop.current()
        server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/rpc/(.+)", _PeerHandler, {"peer": self})]))
        server.add_sockets(self._sockets)
        self._loop.add_callback(self._started.set)
        self._loop.start()
        server.stop()
        self._loop.close(all_fds=False)


class _PeerHandler(tornado.web.RequestHandler):
    def initialize(self, peer: FakeErxes) -> None:
        self.peer = peer

    async def post(self, procedure: str) -> None:
        envelope = json.loads(self.request.body)
        self.peer.requests.append((procedure, envelope))
        if self.peer.delay:
            await asyncio.sleep(self.peer.delay)
        handler = self.peer.procedures.get(procedure)
        if handler is None:
            self.set_status(404)
            self.finish(f"Cannot POST /rpc/{procedure}")
            return
        try:
            reply = {"status": "success", "data": handler(envelope)}
        except Exception as exc:  # noqa: BLE001 - the peer answers errors as erxes does
            reply = {"status": "error", "errorMessage": str(exc)}
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(reply))


class Directory:
    """``service:<name>`` addresses without Redis; records what was forgotten."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self.addresses = addresses
        self.forgotten: list[str] = []

    def address(self, service: str) -> str | None:
        return self.addresses.get(service)

    def forget(self, service: str) -> None:
        self.forgotten.append(service)


class Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, str]] = []

    def publish(self, queue: str, data: Any, *, subdomain: str = "os", timeout: float = 10.0) -> None:
        self.sent.append((queue, data, subdomain))


@pytest.fixture
def peer() -> Iterator[FakeErxes]:
    def find(envelope: dict[str, Any]) -> Any:
        return {"_id": "c1", "primaryEmail": envelope["data"]["customerPrimaryEmail"]}

    def fail(envelope: dict[str, Any]) -> Any:
        raise ValueError("Customer not found")

    p = FakeErxes({"customers.findOne": find, "customers.fail": fail, "integrations.receive": lambda e: {"_id": "x"}})
    yield p
    p.close()


def client(addresses: dict[str, str], **kwargs: Any) -> tuple[HttpRpcClient, Directory, list[float]]:
    directory, slept = Directory(addresses), []
    kwargs.setdefault("sleep", slept.append)
    return HttpRpcClient(directory, **kwargs), directory, slept


def test_a_call_posts_the_envelope_to_the_service_address_and_returns_data(peer: FakeErxes) -> None:
    rpc, _, _ = client({"core": peer.url + "/"})
    found = rpc.call("core:customers.findOne", {"customerPrimaryEmail": "a@example.com"}, subdomain="os", timeout=5)
    assert found == {"_id": "c1", "primaryEmail": "a@example.com"}
    [(procedure, envelope)] = peer.requests
    assert procedure == "customers.findOne"
    assert envelope == {"subdomain": "os", "data": {"customerPrimaryEmail": "a@example.com"}, "timeout": 5000}


def test_an_error_envelope_is_an_rpc_error_and_a_404_a_broker_error(peer: FakeErxes) -> None:
    rpc, _, slept = client({"core": peer.url})
    with pytest.raises(RpcError, match="^Customer not found$"):
        rpc.call("core:customers.fail", {})
    with pytest.raises(BrokerError, match="status 404"):
        rpc.call("core:customers.nope", {})
    assert slept == []  # neither is retried


def test_refused_connections_are_tried_three_times_3_s_apart() -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    rpc, directory, slept = client({"inbox": nobody})
    with pytest.raises(BrokerError, match="cannot reach inbox .* after 3 tries"):
        rpc.call("inbox:integrations.receive", {})
    assert slept == [3.0, 3.0]
    assert directory.forgotten == ["inbox"] * 3  # the address is read again from Redis after each refusal


def test_a_reset_connection_is_retried_and_the_next_try_succeeds(peer: FakeErxes) -> None:
    with FaultProxy("127.0.0.1", peer.port) as proxy:
        proxy.refuse(True)  # accepts, then closes at once: a reset as the client sees it
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            proxy.refuse(False)

        rpc, _, _ = client({"inbox": f"http://127.0.0.1:{proxy.port}"}, sleep=sleep)
        assert rpc.call("inbox:integrations.receive", {}) == {"_id": "x"}
        assert slept == [3.0]


def test_a_timeout_returns_a_truthy_default_value_else_fails() -> None:
    slow = FakeErxes({"customers.findOne": lambda e: {"_id": "late"}}, delay=2.0)
    try:
        rpc, _, slept = client({"core": slow.url})
        started = time.monotonic()
        assert rpc.call("core:customers.findOne", {}, timeout=0.3, default_value=[]) == []  # [] is truthy in JS
        assert time.monotonic() - started < 1.5
        assert rpc.call("core:customers.findOne", {}, timeout=0.3, default_value={"x": 1}) == {"x": 1}
        for falsy in (None, 0, "", False):
            with pytest.raises(RpcTimeout):
                rpc.call("core:customers.findOne", {}, timeout=0.3, default_value=falsy)
        with pytest.raises(RpcTimeout, match="no reply from .*customers.findOne within 0.3 s"):
            rpc.call("core:customers.findOne", {}, timeout=0.3)
        assert slept == []  # a timeout is not retried
        assert slow.requests[0][1]["defaultValue"] == []
    finally:
        slow.close()


def test_a_service_that_is_not_enabled_is_not_called(peer: FakeErxes) -> None:
    config = load_config(REPO / "configs.json", environ={"ENABLED_SERVICES_JSON": '["inbox"]'})
    publisher = Publisher()
    http, _, _ = client({"logs": peer.url, "core": peer.url, "inbox": peer.url}, publisher=publisher)
    rpc = EnabledServices(http, config.service_enabled)
    assert rpc.call("logs:putActivityLog", {}, default_value={"ok": False}) == {"ok": False}
    assert rpc.call("logs:putActivityLog", {}, default_value=None) is None
    with pytest.raises(BrokerError, match="^logs service is not enabled$"):
        rpc.call("logs:putActivityLog", {})
    rpc.publish("logs:putActivityLog", {"a": 1})
    assert peer.requests == [] and publisher.sent == []
    assert rpc.call("core:customers.findOne", {"customerPrimaryEmail": "b@example.com"})["_id"] == "c1"  # always on
    rpc.publish("inbox:conversationClientMessageInserted", {"_id": "m1"}, subdomain="os")
    assert publisher.sent == [("inbox:conversationClientMessageInserted", {"_id": "m1"}, "os")]


def test_no_address_and_bad_names_fail_clearly(peer: FakeErxes) -> None:
    rpc, _, _ = client({})
    with pytest.raises(BrokerError, match=r"inbox has no address in service discovery \(Redis service:inbox\)"):
        rpc.call("inbox:integrations.receive", {})
    with pytest.raises(BrokerError, match="procedure names contain no ':'"):
        rpc.call("inbox:a:b", {})
    with pytest.raises(BrokerError, match="no message broker"):
        rpc.publish("inbox:conversationClientMessageInserted", {})


def test_a_service_that_is_not_enabled_is_not_called_over_amqp_either() -> None:
    """The gate stands in front of any transport: a call that would wait out the timeout for a service that is not
    deployed answers at once."""
    calls: list[tuple[str, dict[str, Any]]] = []

    class Transport:
        def call(self, queue: str, data: Any, **kwargs: Any) -> Any:
            calls.append((queue, kwargs))
            return "sent"

        def publish(self, queue: str, data: Any, **kwargs: Any) -> None:
            calls.append((queue, kwargs))

    gate = EnabledServices(Transport(), lambda service: service in ("core", "inbox"))
    assert gate.call("contacts:customers.findOne", {}, default_value=[]) == []
    gate.publish("logs:putActivityLog", {})
    assert calls == []
    assert gate.call("inbox:integrations.receive", {}, subdomain="acme", default_value=None) == "sent"
    assert gate.call("core:x", {}) == "sent"
    assert calls == [("inbox:integrations.receive", {"subdomain": "acme", "default_value": None}), ("core:x", {})]
