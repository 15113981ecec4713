"""RPC over HTTP end to end, against the real servers: the runtime serves ``POST /rpc/<procedure>`` exactly as its
AMQP queues, registers itself in Redis, and with ``RPC_TRANSPORT=http`` calls erxes peers found in Redis."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest
import redis

from runtime.errors import RpcError
from kinds.imap.procedures import ImapProcedures
from app.process import Runtime
from tests.conftest import MailServer, make_mail, wait_for
from tests.e2e import Caller, runtime_config
from tests.runtime.test_http_client import FakeErxes
from tests.runtime.test_registry import RedisKeys
from tests.web.test_ops import samples


@pytest.fixture
def redis_conn(services: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis(host=services["REDIS_HOST"], port=int(services["REDIS_PORT"]), socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def redis_keys(redis_conn: redis.Redis, prefix: str) -> Iterator[RedisKeys]:
    keys = RedisKeys(redis_conn, prefix)  # our queue names carry the test's broker suffix
    yield keys
    keys.restore()


@pytest.fixture
def runtime(redis_keys: RedisKeys, runtime: Runtime) -> Runtime:
    """conftest's runtime, started after ``redis_keys`` saved what its registration overwrites."""
    return runtime


def post(rt: Runtime, path: str, body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{rt.web_port}{path}", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            assert resp.headers["Content-Type"].startswith("application/json")
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def get(rt: Runtime, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{rt.web_port}{path}", timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def over_http(rt: Runtime, procedure: str, data: Any) -> tuple[str, Any]:
    status, envelope = post(rt, f"/rpc/{procedure}", json.dumps({"subdomain": "os", "data": data}).encode())
    assert status == 200
    if envelope["status"] == "success":
        return "success", envelope.get("data")
    return "error", envelope["errorMessage"]


def over_amqp(caller: Caller, procedure: str, data: Any) -> tuple[str, Any]:
    try:
        return "success", caller.call(procedure, data)
    except RpcError as exc:
        return "error", str(exc)


def details_doc(inbox_id: str, details: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "imap", "integrationId": inbox_id,
            "doc": {"accountId": "", "kind": "imap", "integrationId": inbox_id, "data": json.dumps(details)}}


def rpc_procedure_names() -> list[str]:
    return [queue.partition(":")[2] for queue in ImapProcedures(storage=None, supervisor=None).rpc_procedures()]


def test_every_procedure_answers_over_http_as_over_amqp(runtime: Runtime, caller: Caller, mailserver: MailServer,
                                                        db: Any) -> None:
    for procedure in rpc_procedure_names():  # requests about an unknown integration: no side effects
        data = {"integrationId": "no-such-inbox", "action": "getDetails"}
        assert over_http(runtime, procedure, data) == over_amqp(caller, procedure, data), procedure

    user, password = mailserver.add_user()
    assert over_http(runtime, "createIntegration", details_doc("inbox-h", mailserver.details(user, password))) == \
        ("success", None)
    wait_for(lambda: (db.imap_integrations.find_one({"inboxId": "inbox-h"}) or {}).get("state") == "idle",
             timeout=10, message="inbox-h to IDLE")
    for procedure, data in (("getStatus", {"integrationId": "inbox-h"}),
                            ("api_to_integrations", {"integrationId": "inbox-h", "action": "getDetails"}),
                            ("api_to_integrations", {"integrationId": "inbox-h", "action": "reply-imap"})):
        assert over_http(runtime, procedure, data) == over_amqp(caller, procedure, data)
    assert over_http(runtime, "getStatus", {"integrationId": "inbox-h"}) == \
        ("success", {"status": "healthy", "error": None})
    details = over_http(runtime, "api_to_integrations", {"integrationId": "inbox-h", "action": "getDetails"})[1]
    assert details["user"] == f"{user}@localhost" and details["password"] is None
    assert over_http(runtime, "removeIntegrations", {"integrationId": "inbox-h"}) == ("success", None)
    assert db.imap_integrations.count_documents({"inboxId": "inbox-h"}) == 0
    assert over_amqp(caller, "getStatus", {"integrationId": "inbox-h"}) == ("success", {"status": "healthy"})


def test_bad_requests_get_an_error_envelope_with_200(runtime: Runtime) -> None:
    for body in (b"{not json", b"", b"[1, 2]", b"\xff\xfe"):
        status, envelope = post(runtime, "/rpc/getStatus", body)
        assert status == 200 and envelope["status"] == "error", body
        assert envelope["errorMessage"].startswith("Invalid request"), envelope
    assert post(runtime, "/rpc/nope", b"{}") == (200, {"status": "error", "errorMessage": "Unknown procedure nope"})
    # the table key is not a path: procedure names carry no service and no suffix
    assert post(runtime, "/rpc/imap:getStatus", b"{}")[1]["status"] == "error"
    assert post(runtime, "/rpc/listen", b"{}")[1] == {"status": "error", "errorMessage": "Unknown procedure listen"}
    status, envelope = post(runtime, "/rpc/getStatus", json.dumps({"subdomain": "os", "data": {}}).encode())
    assert (status, envelope) == (200, {"status": "error", "errorMessage": "integrationId is required"})
    assert get(runtime, "/health") == (200, b"ok")


def test_the_runtime_registers_itself_in_redis_once_serving(runtime: Runtime, redis_conn: redis.Redis,
                                                            mongo_url: str, prefix: str) -> None:
    assert runtime.registration is not None and runtime.registration.registered
    assert redis_conn.get("service:imap") == f"http://localhost:{runtime.web_port}".encode()
    assert json.loads(redis_conn.get("service:config:imap") or b"") == {
        "dbConnectionString": mongo_url, "hasSubscriptions": False,
        "meta": {"inboxIntegrations": [{"kind": "imap", "label": "IMap"}],
                 "logs": {"providesActivityLog": True, "consumers": {}}}}
    members = {m.decode() for m in redis_conn.smembers("service:queuenames:imap")}
    for procedure in (*rpc_procedure_names(), "listen"):
        assert f"{procedure}{prefix}" in members, procedure  # as erxes's checkQueueName adds them


class Erxes:
    """core and inbox as erxes 2.x serves them over HTTP, in memory."""

    def __init__(self) -> None:
        self.customers: dict[str, dict[str, Any]] = {}
        self.conversations: list[dict[str, Any]] = []
        self.peer = FakeErxes({"customers.findOne": self.find, "customers.createCustomer": self.create,
                               "integrations.receive": self.receive})

    def find(self, envelope: dict[str, Any]) -> Any:
        return self.customers.get(envelope["data"]["customerPrimaryEmail"])

    def create(self, envelope: dict[str, Any]) -> Any:
        customer = {"_id": f"cust-{len(self.customers) + 1}", **envelope["data"]}
        self.customers[customer["primaryEmail"]] = customer
        return customer

    def receive(self, envelope: dict[str, Any]) -> Any:
        payload = json.loads(envelope["data"]["payload"])
        self.conversations.append(payload)
        return {"_id": payload.get("conversationId") or f"conv-{len(self.conversations)}"}


def test_with_rpc_transport_http_a_mail_goes_to_erxes_peers_found_in_redis(
        services: dict[str, str], mongo_url: str, prefix: str, redis_keys: RedisKeys, redis_conn: redis.Redis,
        caller: Caller, mailserver: MailServer, db: Any) -> None:
    erxes = Erxes()
    redis_conn.set("service:core", erxes.peer.url)
    redis_conn.set("service:inbox", erxes.peer.url + "/")
    inserted: list[dict[str, Any]] = []
    caller.broker.consume("inbox:conversationClientMessageInserted", inserted.append)  # erxes sends it over AMQP
    rt = Runtime(runtime_config(services, mongo_url=mongo_url, prefix=prefix, standalone=False,
                                rpc_transport="http"))
    try:
        rt.start()
        before = samples(get(rt, "/metrics")[1])
        user, password = mailserver.add_user()
        assert over_http(rt, "createIntegration", details_doc("inbox-p", mailserver.details(user, password))) == \
            ("success", None)
        wait_for(lambda: (db.imap_integrations.find_one({"inboxId": "inbox-p"}) or {}).get("state") == "idle",
                 timeout=10, message="inbox-p to IDLE")
        mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="Over HTTP",
                                                    sender="Dana Buyer <dana@example.com>"))
        [message] = wait_for(lambda: list(db.imap_messages.find({"inboxIntegrationId": "inbox-p",
                                                                 "ingestState": "done"})),
                             timeout=5, message="the message to be done")

        assert erxes.peer.procedures_called() == ["customers.findOne", "customers.createCustomer",
                                                  "integrations.receive"]
        envelopes = [envelope for _, envelope in erxes.peer.requests]
        assert all(e["subdomain"] == "os" and e["timeout"] == 10000 for e in envelopes)
        assert envelopes[0]["data"] == {"customerPrimaryEmail": "dana@example.com"}
        assert envelopes[1]["data"]["primaryEmail"] == "dana@example.com"
        assert envelopes[1]["data"]["integrationId"] == "inbox-p"
        assert envelopes[2]["data"]["action"] == "create-or-update-conversation"
        [payload] = erxes.conversations
        assert payload["integrationId"] == "inbox-p" and payload["customerId"] == "cust-1"
        assert payload["content"] == "Over HTTP" and "idempotencyKey" not in payload
        assert message["inboxConversationId"] == "conv-1" and message["customerId"] == "cust-1"
        [note] = wait_for(lambda: inserted, timeout=5, message="conversationClientMessageInserted over AMQP")
        assert note["data"] == {"_id": str(message["_id"]), "content": message["body"], "conversationId": "conv-1"}
        assert db.standalone_customers.count_documents({}) == 0  # nothing went to the emulation

        after = samples(get(rt, "/metrics")[1])
        imap = (("kind", "imap"),)
        assert after[("imap_mails_ingested_total", imap)] == before.get(("imap_mails_ingested_total", imap), 0) + 1
        assert after[("imap_ingest_latency_seconds_count", imap)] >= 1
        call = ("imap_rpc_call_seconds_count", (("procedure", "inbox:integrations.receive"), ("transport", "http")))
        assert after[call] >= 1
        served = ("imap_rpc_served_seconds_count", (("procedure", "imap:createIntegration"), ("transport", "http")))
        assert after[served] >= 1
        assert after[("imap_mailboxes", (("kind", "imap"), ("state", "idle")))] == 1
        status, body = get(rt, "/ready")
        assert status == 200 and json.loads(body)["mailboxes"]["idle"] == 1
    finally:
        rt.stop()
        erxes.peer.close()
