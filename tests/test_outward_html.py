"""Issue 12 item 1, end to end: a hostile mail ingested from Dovecot, and a hostile staff reply sent through
Dovecot's submission server, leave the runtime with no live markup on any path that carries mail HTML.

Paths walked (each with the hostile vectors of tests/runtime/test_sanitize.py): ``imapConversationDetail`` over
real HTTP/GraphQL (``body``, ``newContent``, ``replies``, INBOX and SENT messages), ``logs.collectItems`` over
RabbitMQ and over ``POST /rpc``, the ``inbox:conversationClientMessageInserted`` event as the erxes emulation
consumed it from RabbitMQ, ``imapLogs``, the ``imapSendMail`` reply and ``getDetails``. The stored bodies stay
as they came.
"""
from __future__ import annotations

import base64
import json
import re
import urllib.request
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from runtime.mail.sanitize import _TAGS
from tests.conftest import time_now, wait_for
from tests.runtime.test_sanitize import CLOBBER, HOSTILE, OVERLAY

USER_HEADER = {"user": base64.b64encode(json.dumps({"_id": "agent-1", "username": "agent"}).encode()).decode()}
# every vector but the one that leaves a <style> open (it would swallow the rest of the mail: the unit tests have it)
VECTORS = "".join(f"<div>{vector}</div>" for vector in (*HOSTILE, *OVERLAY, *CLOBBER) if "<mglyph>" not in vector)
HOSTILE_BODY = (f'<div dir="ltr">Where is my order? {VECTORS}</div>'
                f'<div class="gmail_quote">On Mon, Jan 1, 2024 at 10:00 AM Shop wrote:<br>'
                f'<blockquote class="gmail_quote">quoted {VECTORS}</blockquote></div>')
LINK = re.compile(r"^(https?:|mailto:|tel:)", re.IGNORECASE)
OVERLAY_STYLE = re.compile(r"position|transform|translate|rotate|scale|z-index|inset|offset|zoom|outline|shadow|"
                           r"animation|calc|(?<![\w])-\.?\d|url\(|expression|top\s*:|left\s*:", re.IGNORECASE)
LIVE_TEXT = re.compile(r"<\s*(script|iframe|object|embed|form|svg|math|style|meta|link|base)|javascript:|vbscript:",
                       re.IGNORECASE)


def live_markup(html: str) -> list[str]:
    """What in ``html`` could run, load, overlay the UI or clobber the DOM; [] when nothing."""
    found = [m.group(0) for m in LIVE_TEXT.finditer(html)]

    class Walk(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag not in _TAGS and "@" not in tag:  # <id@host> is a Message-ID in a text field
                found.append(f"<{tag}>")
            for name, value in attrs:
                value = value or ""
                if name.startswith("on") or name in ("id", "name", "srcset", "background", "srcdoc", "formaction"):
                    found.append(f"{tag} {name}")
                elif name == "href" and not LINK.match(value):
                    found.append(f"href={value}")
                elif name == "src" and not value.startswith("/read-mail-attachment?"):
                    found.append(f"src={value}")
                elif name == "style" and OVERLAY_STYLE.search(value):
                    found.append(f"style={value}")
                elif name == "class" and any(not c.startswith(("gmail", "Mso", "moz-")) for c in value.split()):
                    found.append(f"class={value}")

    walker = Walk()
    walker.feed(html)
    walker.close()
    return found


def strings(value: Any) -> list[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def assert_clean(where: str, value: Any) -> None:
    for text in strings(value):
        assert not live_markup(text), (where, live_markup(text)[:5], text[:300])


def html_mail(*, to: str, sender: str, subject: str, html: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"] = format_datetime(time_now())
    msg["Message-ID"] = make_msgid(domain="customer.example")
    msg.set_content("Where is my order?")
    msg.add_alternative(html, subtype="html")
    return bytes(msg)


def http(rt: Any, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(f"http://127.0.0.1:{rt.web_port}{path}", data=json.dumps(body).encode(),
                                     method="POST", headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(request, timeout=30) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def graphql(rt: Any, query: str, **variables: Any) -> Any:
    result = http(rt, "/graphql", {"query": query, "variables": variables}, USER_HEADER)
    assert "errors" not in result, result
    return result["data"]


DETAIL = ("query($id: String!) { imapConversationDetail(conversationId: $id) { _id createdAt mailData } }")


def test_a_hostile_mail_leaves_the_runtime_without_live_markup_on_every_path(runtime, caller, mailserver, db,
                                                                            services):
    staff, staff_pw = mailserver.add_user("staff")
    customer, _customer_pw = mailserver.add_user("cust")
    details = mailserver.details(staff, staff_pw, caCert=Path(services["CA_CERT"]).read_text())
    caller.create_integration("inbox-x", details)
    wait_for(lambda: (db.imap_integrations.find_one({"inboxId": "inbox-x"}) or {}).get("state") == "idle",
             timeout=10, message="inbox-x to IDLE")
    mailserver.append(staff, staff_pw, html_mail(to=f"{staff}@localhost", sender=f"Mallory <{customer}@localhost>",
                                                 subject="Order 42", html=HOSTILE_BODY))
    message = wait_for(lambda: db.imap_messages.find_one({"inboxIntegrationId": "inbox-x", "ingestState": "done"}),
                       message="the hostile mail stored")
    assert "<script>alert(1)</script>" in message["body"]  # the stored original stays as it came
    conversation_id = message["inboxConversationId"]

    # the event, as the erxes emulation consumed it from RabbitMQ
    note = wait_for(lambda: db.standalone_message_notifications.find_one({"messageId": str(message["_id"])}),
                    message="conversationClientMessageInserted")
    assert "Where is my order?" in note["content"] and "quoted" in note["content"]
    assert_clean("conversationClientMessageInserted.content", note["content"])

    # imapConversationDetail over HTTP: split once, kept, sanitised at every view
    [first] = graphql(runtime, DETAIL, id=conversation_id)["imapConversationDetail"]
    mail = first["mailData"]
    assert "Where is my order?" in mail["newContent"] and "quoted" not in mail["newContent"]
    assert '<div class="gmail_quote">On Mon, Jan 1, 2024' in mail["replies"] and "quoted" in mail["replies"]
    assert_clean("imapConversationDetail", mail)
    kept = db.imap_messages.find_one({"_id": message["_id"]})
    assert kept["split"]["at"] is not None and kept["body"] == message["body"]
    [again] = graphql(runtime, DETAIL, id=conversation_id)["imapConversationDetail"]
    assert again == first

    # logs.collectItems over RabbitMQ and over POST /rpc (erxes's ActivityLog.tsx renders the body as HTML)
    contacts_id = message["customerId"]
    envelope_data = {"contentId": contacts_id, "contentType": "customer"}
    over_amqp = caller.call("logs.collectItems", envelope_data)
    over_rpc = http(runtime, "/rpc/logs.collectItems", {"subdomain": "os", "data": envelope_data})
    assert over_rpc["status"] == "success" and over_rpc["data"] == over_amqp
    [item] = over_amqp["data"]
    assert item["_id"] == str(message["_id"]) and "Where is my order?" in item["contentTypeDetail"]["body"]
    assert "split" not in item["contentTypeDetail"]
    assert_clean("logs.collectItems", over_amqp)

    # a staff reply with the same vectors, sent through Dovecot's submission server and stored as SENT
    sent = graphql(runtime, "mutation($c: String!, $b: String!, $to: [String]!, $f: String!) { imapSendMail("
                   "integrationId: \"inbox-x\", conversationId: $c, subject: \"Re: Order 42\", body: $b, to: $to, "
                   "from: $f, replyToMessageId: \"" + str(message["_id"]) + "\") }",
                   c=conversation_id, b=f"<p>Shipped. {VECTORS}</p>", to=[f"{customer}@localhost"],
                   f=f"{staff}@localhost")
    assert_clean("imapSendMail", sent)
    stored_sent = db.imap_messages.find_one({"inboxIntegrationId": "inbox-x", "type": "SENT"})
    assert "<script>alert(1)</script>" in stored_sent["body"]
    detail = graphql(runtime, DETAIL, id=conversation_id)["imapConversationDetail"]
    assert [m["_id"] for m in detail] == [str(message["_id"]), str(stored_sent["_id"])]
    assert "Shipped." in detail[1]["mailData"]["body"]
    assert_clean("imapConversationDetail (SENT)", detail)
    items = caller.call("logs.collectItems", envelope_data)["data"]
    assert {i["_id"] for i in items} == {str(message["_id"]), str(stored_sent["_id"])}
    assert_clean("logs.collectItems (SENT)", items)

    # the rest of what goes out: imapLogs, getDetails
    assert_clean("imapLogs", graphql(runtime, "{ imapLogs }"))
    assert_clean("getDetails", caller.call("api_to_integrations", {"action": "getDetails", "integrationId": "inbox-x"}))
