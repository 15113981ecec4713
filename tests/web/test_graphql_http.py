"""GraphQL and /read-mail-attachment over real HTTP, against an in-process runtime with real servers: a mail with
attachments goes through Dovecot -> mailbox -> storage, then the UI's queries and the download are made as the
erxes gateway makes them (header ``user`` = base64 of the user's JSON)."""
from __future__ import annotations

import base64
import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import pytest
import tornado.web
from graphql import parse

from actors.web import WebActor
from kinds.imap.logs_collect import collect_items
from app.process import Runtime
from tests.conftest import wait_for
from tests.e2e import connect_mailbox
from kinds.imap import attachments
from kinds.imap.graphql import schema as imap_schema
from web import graphql

USER_HEADER = {"user": base64.b64encode(json.dumps({"_id": "agent-1", "username": "agent"}).encode()).decode()}
PDF = bytes(range(256)) * 40 + b"\r\n.\r\nend"   # every byte value, CRLF and a lone dot: must survive unchanged
PDF_NAME = "Rechnung März.pdf"


class FakeSender:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail: Exception | None = None

    def send(self, subdomain: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((subdomain, args))
        if self.fail:
            raise self.fail
        return {"info": {"messageId": "<sent@example.com>", "accepted": args["to"]}}


@dataclass
class Served:
    url: str
    sender: FakeSender
    runtime: Runtime

    def request(self, path: str, *, body: Any = None, headers: dict[str, str] | None = None,
                method: str | None = None) -> tuple[int, Any, bytes]:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def graphql(self, query: str, variables: dict[str, Any] | None = None, *, user: bool = True) -> dict[str, Any]:
        status, _headers, body = self.request("/graphql", body={"query": query, "variables": variables},
                                              headers=USER_HEADER if user else {})
        assert status == 200, body
        return json.loads(body)

    def attachment(self, message_id: str, integration_id: str, filename: str, *,
                   user: bool = True) -> tuple[int, Any, bytes]:
        from urllib.parse import urlencode
        query = urlencode({"messageId": message_id, "integrationId": integration_id, "filename": filename})
        return self.request(f"/read-mail-attachment?{query}", headers=USER_HEADER if user else {})


@pytest.fixture
def served(runtime: Runtime) -> Iterator[Served]:
    """Our routes on a Tornado app of their own, on a free port, run by the project's WebActor (IOLoop thread)."""
    sender = FakeSender()
    deps = SimpleNamespace(storage=runtime.storage, supervisor=runtime.supervisor, extra={"imap_sender": sender},
                           subdomain="os", schema=imap_schema)
    config = SimpleNamespace(imap_timeout_seconds=10.0)
    app = tornado.web.Application([*graphql.routes(deps), *attachments.routes(deps, config)])
    ref = WebActor.start(app, port=0, host="127.0.0.1")
    try:
        yield Served(f"http://127.0.0.1:{ref.proxy().port.get(timeout=5)}", sender, runtime)
    finally:
        ref.stop(timeout=10)


def mail_with_attachments(to: str, sent: dt.datetime) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice Customer <alice@example.com>"
    msg["To"] = to
    msg["Cc"] = "Carol <carol@example.com>"
    msg["Subject"] = "Invoice"
    msg["Date"] = format_datetime(sent)
    msg["Message-ID"] = "<invoice-1@example.com>"
    msg.set_content("Please find the invoice attached.")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename=PDF_NAME)
    msg.add_attachment(b"plain notes\n", maintype="text", subtype="plain", filename="notes.txt")
    return bytes(msg)


def gmail_reply(to: str, sent: dt.datetime) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Alice Customer <alice@example.com>"
    msg["To"] = to
    msg["Subject"] = "Re: Invoice"
    msg["Date"] = format_datetime(sent)
    msg["Message-ID"] = "<invoice-2@example.com>"
    msg["In-Reply-To"] = "<invoice-1@example.com>"
    msg["References"] = "<invoice-1@example.com>"
    msg.set_content('<div dir="ltr">Did you get it?</div><br><div class="gmail_quote"><div class="gmail_attr">'
                    'On Mon, Alice wrote:<br></div><blockquote class="gmail_quote">Please find the invoice attached.'
                    '</blockquote></div>', subtype="html")
    return bytes(msg)


def done(db: Any, inbox_id: str) -> list[dict[str, Any]]:
    return list(db.imap_messages.find({"inboxIntegrationId": inbox_id, "ingestState": "done"}).sort("createdAt", 1))


def test_ui_reads_a_conversation_and_downloads_its_attachment(served, caller, mailserver, db):
    user, password = connect_mailbox(caller, mailserver, db, "inbox-h")
    address = f"{user}@localhost"
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    mailserver.append_many(user, password, [mail_with_attachments(address, now - dt.timedelta(minutes=10)),
                                            gmail_reply(address, now - dt.timedelta(minutes=5))])
    first, reply = wait_for(lambda: len(done(db, "inbox-h")) == 2 and done(db, "inbox-h"), timeout=10)
    conversation_id = first["inboxConversationId"]
    assert reply["inboxConversationId"] == conversation_id

    # conversation detail: oldest first, erxes's mailData with {name, email} and the quote split off
    result = served.graphql("query($id: String!) { imapConversationDetail(conversationId: $id) "
                            "{ _id title createdAt mailData } }", {"id": conversation_id})
    assert "errors" not in result
    detail = result["data"]["imapConversationDetail"]
    assert [d["_id"] for d in detail] == [str(first["_id"]), str(reply["_id"])]
    assert detail[0]["createdAt"] == (now - dt.timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    data = detail[0]["mailData"]
    assert set(data) == {"messageId", "from", "to", "cc", "bcc", "subject", "body", "attachments", "newContent",
                         "replies"}
    assert data["messageId"] == "<invoice-1@example.com>" and data["subject"] == "Invoice"
    assert data["from"] == [{"name": "Alice Customer", "email": "alice@example.com"}]
    assert data["to"] == [{"name": "", "email": address}]
    assert data["cc"] == [{"name": "Carol", "email": "carol@example.com"}] and data["bcc"] == []
    assert "Please find the invoice attached." in data["body"] and data["newContent"] == data["body"]
    assert [(a["filename"], a["mimeType"], a["size"]) for a in data["attachments"]] == [
        (PDF_NAME, "application/pdf", len(PDF)), ("notes.txt", "text/plain", 12)]
    quoted = detail[1]["mailData"]
    assert quoted["newContent"] == '<div dir="ltr">Did you get it?</div>'
    assert quoted["replies"].startswith('<div class="gmail_quote">')

    # integrations (no password) and logs (newest first, of one integration)
    integrations = served.graphql("{ imapGetIntegrations { inboxId host smtpHost smtpPort mainUser user password } }")
    assert integrations["data"]["imapGetIntegrations"] == [{
        "inboxId": "inbox-h", "host": mailserver.host, "smtpHost": mailserver.host,
        "smtpPort": str(mailserver.submission_port), "mainUser": user, "user": address, "password": None}]
    assert password not in json.dumps(integrations)
    logs = served.graphql('{ all: imapLogs  mine: imapLogs(integrationId: "inbox-h") '
                          ' none: imapLogs(integrationId: "other") }')["data"]
    assert any(f"integration inbox-h created for {address}" == entry["message"] for entry in logs["mine"])
    assert logs["all"] and logs["none"] == []
    assert [e["date"] for e in logs["all"]] == sorted((e["date"] for e in logs["all"]), reverse=True)

    # the attachment, byte-identical, by document id and by Message-ID (with or without brackets)
    for message_id in (str(first["_id"]), "<invoice-1@example.com>", "invoice-1@example.com"):
        status, headers, body = served.attachment(message_id, "inbox-h", PDF_NAME)
        assert status == 200, body
        assert body == PDF
        assert headers["Content-Type"] == "application/pdf"
        assert headers["Content-Disposition"] == ("attachment; filename=\"Rechnung M_rz.pdf\"; "
                                                  "filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf")
        assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, body = served.attachment(str(first["_id"]), "inbox-h", "notes.txt")
    assert (status, body) == (200, b"plain notes\n") and headers["Content-Type"] == "text/plain"

    # refusals
    assert served.attachment(str(first["_id"]), "inbox-h", "nope.pdf")[:3:2] == (404, b"attachment not found")
    assert served.attachment(str(first["_id"]), "inbox-h", PDF_NAME, user=False)[:3:2] == (401, b"Login required")
    assert served.attachment("<unknown@example.com>", "inbox-h", PDF_NAME)[:3:2] == (404, b"message not found")
    assert served.attachment(str(first["_id"]), "other-inbox", PDF_NAME)[0] == 404  # not in that integration
    status, _headers, body = served.request("/read-mail-attachment?messageId=x", headers=USER_HEADER)
    assert (status, body) == (400, b"missing parameter: integrationId, filename")

    # logs.collectItems finds the customer's mail through imap_customers.contactsId (real MongoDB)
    customer = wait_for(lambda: db.imap_customers.find_one({"inboxIntegrationId": "inbox-h",
                                                             "email": "alice@example.com"}), timeout=5.0)
    envelope = {"subdomain": "os", "data": {"contentId": customer["contactsId"]}}
    collected = collect_items(served.runtime.storage, envelope)
    assert collected["status"] == "success"
    assert [(i["_id"], i["contentType"]) for i in collected["data"]] == [
        (str(reply["_id"]), "imap:customer"), (str(first["_id"]), "imap:customer")]
    assert collected["data"][0]["contentTypeDetail"]["subject"] == "Re: Invoice"
    json.dumps(collected)  # plain JSON for the broker

    # a mailbox that is not connected cannot fetch the attachment
    served.runtime.supervisor.stop_listening("inbox-h").get(timeout=10)
    status, _headers, body = served.attachment(str(first["_id"]), "inbox-h", PDF_NAME)
    assert (status, body) == (503, b"the mailbox is not connected")


ROOT_FIELDS = {
    "imapConversationDetail": '{ imapConversationDetail(conversationId: "c1") { _id mailData } }',
    "imapGetIntegrations": "{ imapGetIntegrations { inboxId password } }",
    "imapLogs": "{ imapLogs }",
    "imapSendMail": 'mutation { imapSendMail(subject: "s", to: ["a@x.com"], from: "me@x.com") }',
}


def test_every_field_refuses_without_the_user_header_but_the_federation_sdl(served):
    for field, query in ROOT_FIELDS.items():
        result = served.graphql(query, user=False)
        assert result["data"] == {field: None}
        assert [e["message"] for e in result["errors"]] == ["Login required"]
    bad_user = {"user": base64.b64encode(b'{"username": "no id"}').decode()}
    status, _h, body = served.request("/graphql", body={"query": "{ imapLogs }"}, headers=bad_user)
    assert status == 200 and json.loads(body)["errors"][0]["message"] == "Login required"
    assert served.sender.calls == []

    result = served.graphql("query SubgraphIntrospectQuery { _service { sdl } }", user=False)
    sdl = result["data"]["_service"]["sdl"]
    names = {d.name.value for d in parse(sdl).definitions}
    assert names == {"Query", "Mutation", "IMap", "IMapIntegration", "JSON", "Date"}
    for needle in ("extend type Query", "extend type Mutation",
                   "imapConversationDetail(conversationId: String!): [IMap]",
                   "imapGetIntegrations: [IMapIntegration]", "imapLogs(integrationId: String): [JSON]",
                   "imapSendMail(", "): JSON", "scalar JSON", "scalar Date", "_id: String!", "password: String"):
        assert needle in sdl


def test_send_mail_over_http_and_its_error(served):
    result = served.graphql('mutation($to: [String]!) { imapSendMail(integrationId: "inbox-1", subject: "Hi", '
                            'body: "<p>x</p>", to: $to, from: "me@x.com", shouldOpen: true) }', {"to": ["a@x.com"]})
    assert result == {"data": {"imapSendMail": {"info": {"messageId": "<sent@example.com>", "accepted": ["a@x.com"]}}}}
    assert served.sender.calls == [("os", {"integrationId": "inbox-1", "subject": "Hi", "body": "<p>x</p>",
                                           "to": ["a@x.com"], "from": "me@x.com", "shouldOpen": True})]
    served.sender.fail = RuntimeError("Integration not found.")
    result = served.graphql('mutation { imapSendMail(subject: "Hi", to: ["a@x.com"], from: "me@x.com") }')
    assert result["data"] == {"imapSendMail": None}
    assert [e["message"] for e in result["errors"]] == ["Integration not found."]


def test_bad_requests_graphiql_and_its_bundled_assets(served):
    status, _h, body = served.request("/graphql", body=b"{not json", headers=USER_HEADER)
    assert status == 400 and "errors" in json.loads(body)
    status, _h, body = served.request("/graphql", body={"query": "{ imapLogs"}, headers=USER_HEADER)
    assert status == 400 and json.loads(body)["errors"][0]["message"].startswith("Syntax Error")
    deep = b"[" * 100_000 + b"]" * 100_000  # json's parser recurses: RecursionError unless caught
    status, _h, body = served.request("/graphql", body=b'{"query": ' + deep + b"}", headers=USER_HEADER)
    assert status == 400 and "must be JSON" in json.loads(body)["errors"][0]["message"]
    status, _h, body = served.request("/graphql", body={"query": "{ imapLogs }", "variables": deep.decode()},
                                      headers=USER_HEADER)
    assert status == 400 and "variables" in json.loads(body)["errors"][0]["message"]
    deep_user = {"user": base64.b64encode(b"[" * 3000 + b"]" * 3000).decode()}
    status, _h, body = served.request("/graphql", body={"query": "{ imapLogs }"}, headers=deep_user)
    assert status == 200 and json.loads(body)["errors"][0]["message"] == "Login required"
    status, _h, body = served.request("/graphql", body={"variables": {}}, headers=USER_HEADER)
    assert (status, json.loads(body)) == (400, {"errors": [{"message": "Must provide query string."}]})
    status, _h, body = served.request("/graphql", body=b'{"query": "{ imapLogs }"}',
                                      headers={**USER_HEADER, "Content-Type": "text/plain"})
    assert status == 400 and "application/json" in json.loads(body)["errors"][0]["message"]
    status, _h, body = served.request("/graphql", body=b"{ imapLogs }",
                                      headers={**USER_HEADER, "Content-Type": "application/graphql"})
    assert status == 200 and isinstance(json.loads(body)["data"]["imapLogs"], list)

    status, headers, page = served.request("/graphql", method="GET")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    for asset in ("graphiql.min.js", "graphiql.min.css", "react.production.min.js", "react-dom.production.min.js",
                  "graphiql-init.js"):
        assert f'"graphiql-static/{asset}"'.encode() in page
        status, _h, content = served.request(f"/graphiql-static/{asset}", method="GET")
        assert status == 200 and len(content) > 500
    assert b"https://" not in page
    assert served.request("/graphiql-static/../graphql.py", method="GET")[0] in (403, 404)
