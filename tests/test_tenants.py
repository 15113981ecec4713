"""VERSION=saas: each organisation's integrations, messages, cursors and logs live in its own database."""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from typing import Any, Iterator

import pymongo
import pytest

from app.process import Runtime
from tests.conftest import make_mail, wait_for
from tests.e2e import Caller, runtime_config


@pytest.fixture
def tenant_dbs(mongo_url: str) -> Iterator[dict[str, Any]]:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000, tz_aware=True)
    base = client.get_default_database().name
    yield {name: client[f"{base}_{name}"] for name in ("acme", "globex")}
    for name in ("acme", "globex"):
        client.drop_database(f"{base}_{name}")
    client.close()


def graphql_integrations(port: int, hostname: str) -> list[dict[str, Any]]:
    body = json.dumps({"query": "{ imapGetIntegrations { inboxId } }"}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=body, method="POST", headers={
        "Content-Type": "application/json", "hostname": hostname,
        "user": base64.b64encode(b'{"_id": "staff"}').decode()})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["data"]["imapGetIntegrations"]


def test_two_organisations_never_see_each_other(services, mongo_url, prefix, amqp_url, mailserver, db, tenant_dbs):
    config = runtime_config(services, mongo_url=mongo_url, prefix=prefix, version="saas")
    caller = Caller(amqp_url, prefix)
    users = {}
    rt = Runtime(config)
    rt.start()
    try:
        for org in ("acme", "globex"):
            user, password = mailserver.add_user()
            users[org] = (user, password)
            caller.create_integration(f"{org}-inbox", mailserver.details(user, password), subdomain=org)
        for org, tdb in tenant_dbs.items():
            wait_for(lambda tdb=tdb, org=org: (tdb.imap_integrations.find_one({"inboxId": f"{org}-inbox"}) or {}
                                              ).get("state") == "idle", timeout=10, message=f"{org} IDLE")
        for org, (user, password) in users.items():
            mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject=f"for {org}"))
        for org, tdb in tenant_dbs.items():
            wait_for(lambda tdb=tdb: tdb.imap_messages.count_documents({"ingestState": "done"}) == 1, timeout=5)
            [message] = list(tdb.imap_messages.find())
            assert message["subject"] == f"for {org}" and message["inboxIntegrationId"] == f"{org}-inbox"
            assert tdb.imap_integrations.count_documents({}) == 1
            assert tdb.imap_cursors.count_documents({}) == 1
            assert tdb.standalone_conversations.count_documents({}) == 1
            assert tdb.imap_logs.count_documents({"integrationId": f"{org}-inbox"}) > 0
        assert db.imap_integrations.count_documents({}) == 0 and db.imap_messages.count_documents({}) == 0
        assert sorted(d["subdomain"] for d in db.imap_tenants.find()) == ["acme", "globex"]

        # one organisation cannot reach the other's integration, over AMQP or GraphQL
        assert caller.call("getStatus", {"integrationId": "globex-inbox"}, subdomain="acme") == {"status": "healthy"}
        assert caller.call("api_to_integrations", {"integrationId": "globex-inbox", "action": "getDetails"},
                           subdomain="acme") is None
        assert graphql_integrations(rt.web_port, "acme.erxes.io") == [{"inboxId": "acme-inbox"}]
        ready = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{rt.web_port}/ready", timeout=10).read())
        assert ready["mailboxes"]["idle"] == 2  # every organisation's mailboxes are counted
        assert graphql_integrations(rt.web_port, "https://globex.erxes.io") == [{"inboxId": "globex-inbox"}]
        with pytest.raises(Exception, match="not a valid organisation"):
            caller.call("getStatus", {"integrationId": "x"}, subdomain="../admin")
    finally:
        rt.stop()

    # a restart resumes every organisation's mailboxes
    rt = Runtime(config)
    rt.start()
    try:
        for org, (user, password) in users.items():
            mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject=f"again for {org}"))
        for org, tdb in tenant_dbs.items():
            wait_for(lambda tdb=tdb: tdb.imap_messages.count_documents({"ingestState": "done"}) == 2, timeout=10)
        assert sorted(rt.supervisor.listening().get(timeout=5)) == ["acme/acme-inbox", "globex/globex-inbox"]
    finally:
        rt.stop()
        caller.close()


def request(port: int, method: str, path: str, hostname: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                 headers={"hostname": hostname, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


OWNER = {"user": base64.b64encode(b'{"_id": "owner-1", "isOwner": true}').decode()}


def test_no_tenant_is_created_by_an_unauthenticated_request(services, mongo_url, prefix, amqp_url, mailserver,
                                                            tenant_dbs):
    """issue 12 item 7: /receive and /login serve only organisations the runtime knows (an integration was created
    for it over the authenticated RPC path: imap_tenants); any other hostname gets 404 and no database."""
    from kinds.imap.push import sign

    config = runtime_config(services, mongo_url=mongo_url, prefix=prefix, version="saas")
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    base = client.get_default_database().name

    def tenant_databases() -> list[str]:
        return sorted(n for n in client.list_database_names() if n.startswith(f"{base}_"))

    def refused_everywhere(port: int, host: str) -> None:
        for method, path, body, headers in (
                ("POST", "/receive?integrationId=x", b"Subject: x\r\n\r\nx", {"X-Imap-Runtime-Signature": "sha256=0"}),
                ("GET", "/login?state=forged&code=x", None, {}),
                ("GET", "/login?integrationId=x", None, OWNER)):
            status, answer = request(port, method, path, host, body, headers)
            organisation = host.split("//")[-1].split(".")[0]
            assert f"{base}_{organisation}" not in tenant_databases(), f"{method} {path} created a database"
            assert status == 404 and b"no organisation" in answer, (host, path, status, answer)

    caller = Caller(amqp_url, prefix)
    rt = Runtime(config)
    rt.start()
    try:
        for host in ("evil.erxes.io", "acme.erxes.io", "https://globex.erxes.io"):  # none is known yet
            refused_everywhere(rt.web_port, host)
        assert tenant_databases() == []
        user, password = mailserver.add_user()
        caller.create_integration("acme-inbox", mailserver.details(user, password), subdomain="acme")
        secret = rt.tenants.storage("acme").get_integration("acme-inbox")["webhookSecret"]
        raw = make_mail(to=f"{user}@localhost", subject="pushed to acme")
        status, answer = request(rt.web_port, "POST", "/receive?integrationId=acme-inbox", "acme.erxes.io", raw,
                                 {"X-Imap-Runtime-Signature": sign(secret, raw)})
        assert status == 200 and json.loads(answer)["duplicate"] is False
        assert request(rt.web_port, "GET", "/login?state=forged&code=x", "acme.erxes.io")[0] == 400  # known: served
        refused_everywhere(rt.web_port, "evil.erxes.io")
    finally:
        rt.stop()
    rt = Runtime(config)  # a restart (or another node) knows acme from imap_tenants
    rt.start()
    try:
        raw = make_mail(to=f"{user}@localhost", subject="again")
        status, _ = request(rt.web_port, "POST", "/receive?integrationId=acme-inbox", "acme.erxes.io", raw,
                            {"X-Imap-Runtime-Signature": sign(secret, raw)})
        assert status == 200
        refused_everywhere(rt.web_port, "evil.erxes.io")
        assert tenant_databases() == [f"{base}_acme"]
    finally:
        rt.stop()
        caller.close()
        for name in tenant_databases():
            client.drop_database(name)
        client.close()
