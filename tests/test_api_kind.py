"""The ``api`` kind end to end (spec api-kind.md) against the real servers: an in-process runtime (standalone: the
erxes emulation), erxes's calls over RabbitMQ and HTTP, signed posts to /api/receive, staff replies through
GraphQL delivered to a real local callback server (allowed by OUTBOUND_URL_ALLOW, loopback otherwise refused)."""
from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import hmac
import http.server
import json
import threading
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest
import redis

from runtime.broker.amqp import AmqpBroker
from app.process import Runtime
from tests.conftest import wait_for
from tests.e2e import runtime_config

SECRET = "s3cret-of-sixteen-plus"
USER = base64.b64encode(json.dumps({"_id": "agent-1", "username": "agent",
                                    "details": {"fullName": "Agent One"}}).encode()).decode()
FAST = {"kinds": ("imap", "api"), "api_retry_base_seconds": 0.1, "api_retry_max_seconds": 0.4, "api_delivery_poll_seconds": 0.1}


def signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Erxes:
    """erxes's side: api:* over AMQP, HTTP posts to the runtime."""

    def __init__(self, amqp_url: str, prefix: str, port: int) -> None:
        self.broker = AmqpBroker(amqp_url, prefix=prefix)
        self.broker.start()
        self.port = port

    def call(self, procedure: str, data: Any) -> Any:
        return self.broker.call(f"api:{procedure}", data, timeout=20)

    def create(self, inbox_id: str, **details: Any) -> Any:
        return self.call("createIntegration", {"integrationId": inbox_id, "doc": {
            "kind": "api", "integrationId": inbox_id, "data": json.dumps({"secret": SECRET, **details})}})

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, method="POST",
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, _json(answer.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())

    def receive(self, inbox_id: str, doc: dict[str, Any], secret: str = SECRET) -> tuple[int, Any]:
        body = json.dumps(doc).encode()
        return self.post(f"/api/receive?integrationId={inbox_id}", body, {"X-Api-Signature": signature(body, secret)})

    def graphql(self, query: str, variables: dict[str, Any]) -> Any:
        status, answer = self.post("/graphql", json.dumps({"query": query, "variables": variables}).encode(),
                                   {"user": USER})
        assert status == 200 and not answer.get("errors"), answer
        return answer["data"]

    def send(self, conversation_id: str, content: str) -> Any:
        return self.graphql("mutation($c: String!, $t: String!) { apiSendMessage(conversationId: $c, content: $t) }",
                            {"c": conversation_id, "t": content})["apiSendMessage"]

    def detail(self, conversation_id: str) -> list[dict[str, Any]]:
        return self.graphql("query($c: String!) { apiConversationDetail(conversationId: $c) { _id conversationId "
                            "content createdAt direction from delivery deliveryError } }",
                            {"c": conversation_id})["apiConversationDetail"]

    def close(self) -> None:
        self.broker.stop()


def _json(raw: bytes) -> Any:
    """A JSON answer, or the raw bytes of another (tornado's HTML 404 page)."""
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return raw


class Callback:
    """A real HTTP server in a thread: answers ``fail`` (a status) for the first ``failures`` posts, then 200."""

    def __init__(self, failures: int = 0, fail: int = 500) -> None:
        self.failures, self.fail = failures, fail
        self.posts: list[tuple[dict[str, Any], str, bytes]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.posts.append((json.loads(body), self.headers.get("X-Api-Signature", ""), body))
                    failing = outer.failures > 0
                    outer.failures -= 1
                self.send_response(outer.fail if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[dict[str, Any]]:
        """The bodies of posts answered 200, in order (a body posted again after a failure counts once)."""
        with self.lock:
            return [body for body, _sig, _raw in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def callback() -> Iterator[Callback]:
    server = Callback()
    yield server
    server.close()


def start(services: dict[str, str], mongo_url: str, prefix: str, **overrides: Any) -> Runtime:
    rt = Runtime(runtime_config(services, mongo_url=mongo_url, prefix=prefix, **{**FAST, **overrides}))
    rt.start()
    return rt


@pytest.fixture
def rt(services: dict[str, str], mongo_url: str, prefix: str) -> Iterator[Runtime]:
    runtime = start(services, mongo_url, prefix)
    yield runtime
    runtime.stop()


@pytest.fixture
def erxes(rt: Runtime, amqp_url: str, prefix: str) -> Iterator[Erxes]:
    client = Erxes(amqp_url, prefix, rt.web_port)
    yield client
    client.close()


def message(message_id: str, **extra: Any) -> dict[str, Any]:
    return {"messageId": message_id, "from": {"id": "u-1", "name": "Ann", "email": "ann@example.com"},
            "text": "Hi <b>there</b> & bye\nsecond line", **extra}


def test_a_signed_message_is_stored_once_and_announced_sanitised(erxes: Erxes, db: Any) -> None:
    assert erxes.create("api-1", name="Widget") == {"status": "success"}
    status, first = erxes.receive("api-1", message("m-1", threadId="t-1"))
    assert status == 200 and first["status"] == "ok", first
    assert db.api_messages.find_one({"messageId": "m-1"})["_id"].__str__() == first["messageId"]
    customer = db.standalone_customers.find_one({"primaryEmail": "ann@example.com"})
    assert customer is not None and customer["firstName"] == "Ann"
    conversation = db.standalone_conversations.find_one({"_id": first["conversationId"]})
    assert conversation["customerId"] == customer["_id"] and conversation["integrationId"] == "api-1"
    announced = db.standalone_message_notifications.find_one({"messageId": first["messageId"]})
    assert announced["conversationId"] == first["conversationId"]
    assert "&lt;b&gt;there&lt;/b&gt; &amp; bye<br>second line" in announced["content"], announced["content"]
    # the same messageId again: the same ids, erxes called no further
    assert erxes.receive("api-1", message("m-1", threadId="t-1")) == (200, first)
    assert db.standalone_message_notifications.find_one({"messageId": first["messageId"]})["deliveries"] == 1
    assert db.standalone_conversations.count_documents({}) == 1 and db.api_messages.count_documents({}) == 1
    # the same thread: the same conversation; another thread: another one
    assert erxes.receive("api-1", message("m-2", threadId="t-1"))[1]["conversationId"] == first["conversationId"]
    assert erxes.receive("api-1", message("m-3", threadId="t-2"))[1]["conversationId"] != first["conversationId"]
    assert db.standalone_customers.count_documents({}) == 1  # remembered per integration
    details = erxes.call("api_to_integrations", {"action": "getDetails", "integrationId": "api-1"})
    assert details["name"] == "Widget" and "secret" not in details
    assert SECRET not in json.dumps(db.api_integrations.find_one({}, {"_id": 0}), default=str)  # sealed at rest
    assert erxes.call("getStatus", {"integrationId": "api-1"}) == {"status": "healthy"}


def test_bad_posts_are_refused_and_never_a_500(services: dict[str, str], mongo_url: str, prefix: str,
                                               amqp_url: str, db: Any) -> None:
    runtime = start(services, mongo_url, prefix, max_request_bytes=4096)
    client = Erxes(amqp_url, prefix, runtime.web_port)
    try:
        client.create("api-2")
        body = json.dumps(message("m-1")).encode()
        path = "/api/receive?integrationId=api-2"
        assert client.post(path, body, {"X-Api-Signature": signature(body, "another-secret-16ch")})[0] == 401
        assert client.post(path, body)[0] == 401
        assert client.post(path, body, {"X-Api-Signature": "sha256=00"})[0] == 401
        assert client.receive("nope", message("m-1"))[0] == 404
        for bad, why in [(b"not json", "JSON"), (json.dumps({"from": {"id": "u"}, "text": "x"}).encode(), "messageId"),
                         (json.dumps({"messageId": "m", "from": {"id": "u"}}).encode(), "text, html or attachments"),
                         (json.dumps({"messageId": "m", "text": "x"}).encode(), "from"),
                         (json.dumps({"messageId": "m", "from": {"id": "u"}, "text": "x", "createdAt": "soon"}).encode(),
                          "createdAt"),
                         (json.dumps([1]).encode(), "object")]:
            status, answer = client.post(path, bad, {"X-Api-Signature": signature(bad)})
            assert status == 400 and why in answer["error"], (bad, status, answer)
        big = json.dumps(message("m-big", text="x" * 5000)).encode()
        assert client.post(path, big, {"X-Api-Signature": signature(big)})[0] == 413
        assert db.api_messages.count_documents({}) == 0 and db.standalone_conversations.count_documents({}) == 0
        with pytest.raises(Exception, match="secret"):
            client.call("createIntegration", {"integrationId": "api-3", "doc": {"kind": "api", "data": "{}"}})
    finally:
        client.close()
        runtime.stop()


def test_concurrent_posts_of_one_message_store_it_once(erxes: Erxes, db: Any) -> None:
    erxes.create("api-4")
    for round_ in range(4):  # each round: 8 posts of one new message at once
        doc = {"messageId": f"m-c{round_}", "from": {"id": "u-9", "phone": "+15550100"}, "text": "once"}
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: erxes.receive("api-4", doc), range(8)))
        assert {status for status, _ in answers} == {200}, answers
        assert len({json.dumps(a, sort_keys=True) for _, a in answers}) == 1
        assert db.api_messages.count_documents({"messageId": doc["messageId"]}) == 1
    assert db.standalone_message_notifications.count_documents({}) == 4
    assert [n["deliveries"] for n in db.standalone_message_notifications.find()] == [1, 1, 1, 1]
    assert db.api_intents.count_documents({}) == 0
    assert db.standalone_customers.count_documents({"primaryPhone": "+15550100"}) == 1
    assert db.standalone_conversations.count_documents({}) == 1
    # different messages of one new sender at once: one conversation (per sender without threadId), one customer
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: erxes.receive("api-4", {"messageId": f"n-{i}", "from": {"id": "u-7"},
                                                                "text": f"#{i}"}), range(6)))
    assert {status for status, _ in answers} == {200}
    assert len({a["conversationId"] for _, a in answers}) == 1
    assert db.standalone_customers.count_documents({"code": "api:api-4:u-7"}) == 1


def test_http_rpc_and_the_registration_of_service_api(erxes: Erxes, rt: Runtime, services: dict[str, str],
                                                      prefix: str) -> None:
    erxes.create("api-5")
    body = json.dumps({"subdomain": "os", "data": {"integrationId": "api-5"}}).encode()
    assert erxes.post("/api/rpc/getStatus", body) == (200, {"status": "success", "data": {"status": "healthy"}})
    assert erxes.post("/rpc/api:getStatus", body)[1]["data"] == {"status": "healthy"}
    status, answer = erxes.post("/graphql", json.dumps({"query": "{ _service { sdl } }"}).encode())
    sdl = answer["data"]["_service"]["sdl"]  # one subgraph of every kind's fields
    assert status == 200 and "apiSendMessage(conversationId: String!, content: String!): JSON" in sdl
    assert "apiConversationDetail(conversationId: String!): [ApiMessage]" in sdl and "imapSendMail(" in sdl
    client = redis.Redis(host=services["REDIS_HOST"], port=int(services["REDIS_PORT"]))
    try:
        wait_for(lambda: client.sismember("service:queuenames:api", f"createIntegration{prefix}"), timeout=5)
        config = json.loads(client.get("service:config:api"))
        assert config["meta"]["inboxIntegrations"] == [{"kind": "api", "label": "API"}]
        assert client.sismember("service:queuenames:api", f"api_to_integrations{prefix}")
        assert client.get("service:api").decode().endswith("/api")  # its HTTP RPC address: /api/rpc/<procedure>
        assert not client.sismember("service:queuenames:api", f"imapMessage.create{prefix}")  # each kind its own
        for action in ("createIntegration", "updateIntegration", "removeIntegrations", "getStatus"):
            client.srem("service:queuenames:api", f"{action}{prefix}")
        client.srem("service:queuenames:api", f"api_to_integrations{prefix}")
    finally:
        client.close()


def test_replies_reach_the_callback_in_order_through_failures(services: dict[str, str], mongo_url: str,
                                                              prefix: str, amqp_url: str, db: Any) -> None:
    server = Callback(failures=3, fail=503)
    runtime = start(services, mongo_url, prefix, outbound_allow_loopback_http=False,
                    outbound_url_allow=("erxes", server.url.rsplit("/", 1)[0] + "/"))
    client = Erxes(amqp_url, prefix, runtime.web_port)
    try:
        client.create("api-6", callbackUrl=server.url)
        _status, inbound = client.receive("api-6", message("m-1", threadId="t-9"))
        conversation = inbound["conversationId"]
        sent = [client.send(conversation, f"reply {i} <script>x</script>") for i in range(3)]
        assert all(s["delivery"] == "pending" for s in sent)
        wait_for(lambda: client.call("getStatus", {"integrationId": "api-6"})["status"] == "unHealthy", timeout=10)
        wait_for(lambda: all(m["delivery"] == "delivered" for m in client.detail(conversation)
                             if m["direction"] == "out"), timeout=20)
        bodies = server.delivered()
        delivered = [b["messageId"] for b in bodies[3:]]  # the first three posts were answered 503
        assert delivered == [s["_id"] for s in sent], bodies
        assert all(b["messageId"] == sent[0]["_id"] for b in bodies[:3])  # the head retried, nothing overtook it
        first_body, first_signature, raw = server.posts[-3]
        assert first_signature == signature(raw)
        assert first_body["event"] == "message.created" and first_body["integrationId"] == "api-6"
        assert first_body["conversationId"] == conversation and first_body["threadId"] == "t-9"
        assert first_body["author"] == {"id": "agent-1", "name": "Agent One"}
        assert "<script>" not in first_body["content"]
        wait_for(lambda: client.call("getStatus", {"integrationId": "api-6"}) == {"status": "healthy"}, timeout=5)
        detail = client.detail(conversation)
        assert [m["direction"] for m in detail] == ["in", "out", "out", "out"]
        assert detail[0]["from"]["email"] == "ann@example.com" and detail[0]["delivery"] is None
        assert db.api_outbox.count_documents({}) == 0
    finally:
        client.close()
        runtime.stop()
        server.close()


def test_a_callback_on_a_loopback_address_is_refused_without_an_allowed_prefix(
        services: dict[str, str], mongo_url: str, prefix: str, amqp_url: str, callback: Callback) -> None:
    runtime = start(services, mongo_url, prefix, outbound_allow_loopback_http=False)
    client = Erxes(amqp_url, prefix, runtime.web_port)
    try:
        client.create("api-7", callbackUrl=callback.url)
        conversation = client.receive("api-7", message("m-1"))[1]["conversationId"]
        client.send(conversation, "hello")
        wait_for(lambda: (client.detail(conversation)[-1]["deliveryError"] or ""), timeout=10)
        out = client.detail(conversation)[-1]
        assert out["delivery"] == "pending" and "OUTBOUND_URL_ALLOW" in out["deliveryError"], out
        status = client.call("getStatus", {"integrationId": "api-7"})
        assert status["status"] == "unHealthy" and "refused" in status["error"]
        assert callback.posts == []
    finally:
        client.close()
        runtime.stop()


def test_pending_deliveries_survive_a_restart(services: dict[str, str], mongo_url: str, prefix: str,
                                              amqp_url: str, db: Any) -> None:
    server = Callback(failures=10 ** 6, fail=500)  # down until the restart
    allow = {"outbound_allow_loopback_http": False, "outbound_url_allow": ("erxes", server.url.rsplit("/", 1)[0] + "/")}
    runtime = start(services, mongo_url, prefix, **allow)
    client = Erxes(amqp_url, prefix, runtime.web_port)
    try:
        client.create("api-8", callbackUrl=server.url)
        conversation = client.receive("api-8", message("m-1"))[1]["conversationId"]
        sent = [client.send(conversation, f"r{i}")["_id"] for i in range(2)]
        wait_for(lambda: len(server.posts) >= 2, timeout=10)
    finally:
        client.close()
        runtime.stop()
    assert db.api_outbox.count_documents({"inboxId": "api-8"}) == 2
    server.failures = 0
    server.posts.clear()
    runtime = start(services, mongo_url, prefix, **allow)
    try:
        wait_for(lambda: db.api_outbox.count_documents({}) == 0, timeout=20)
        assert [b["messageId"] for b in server.delivered()] == sent
        assert [m["delivery"] for m in db.api_messages.find({"direction": "out"}, sort=[("createdAt", 1)])] == \
            ["delivered", "delivered"]
    finally:
        runtime.stop()
        server.close()


def test_removing_an_integration_drops_its_pending_deliveries(erxes: Erxes, db: Any) -> None:
    erxes.create("api-9", callbackUrl="https://callback.invalid/hook")
    conversation = erxes.receive("api-9", message("m-1"))[1]["conversationId"]
    erxes.send(conversation, "pending forever")
    assert db.api_outbox.count_documents({"inboxId": "api-9"}) == 1
    assert erxes.call("removeIntegrations", {"integrationId": "api-9"}) == {"status": "success"}
    assert db.api_outbox.count_documents({}) == 0 and db.api_integrations.count_documents({}) == 0
    assert erxes.receive("api-9", message("m-2"))[0] == 404
    assert erxes.call("getStatus", {"integrationId": "api-9"}) == {"status": "healthy"}


def test_the_api_kind_runs_alone(services: dict[str, str], mongo_url: str, prefix: str, amqp_url: str,
                                 db: Any) -> None:
    runtime = start(services, mongo_url, prefix, kinds=("api",))
    client = Erxes(amqp_url, prefix, runtime.web_port)
    try:
        client.create("api-10")
        assert client.receive("api-10", message("m-1"))[0] == 200
        body = json.dumps({"subdomain": "os", "data": {"integrationId": "x"}}).encode()
        assert client.post("/rpc/getStatus", body)[1]["status"] == "error"  # no imap procedures: imap is off
        assert client.post("/receive?integrationId=x", b"")[0] == 404  # nor the imap routes
        assert sorted(runtime.kinds.kinds) == ["api"]
    finally:
        client.close()
        runtime.stop()
