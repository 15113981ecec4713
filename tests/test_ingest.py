"""End to end, against the real servers: createIntegration over AMQP -> Dovecot mail -> customer, conversation,
stored message and conversationClientMessageInserted (standalone mode is the erxes emulation)."""
from __future__ import annotations

import subprocess
import logging
from typing import Any

import pytest
import redis

from runtime.cli import quiet_libraries
from runtime.errors import RpcError
from app.process import Runtime
from tests.conftest import MailServer, both_servers, make_mail, wait_for
from tests.e2e import connect_mailbox, runtime_config


def done_messages(db: Any, inbox_id: str) -> list[dict[str, Any]]:
    return list(db.imap_messages.find({"inboxIntegrationId": inbox_id, "ingestState": "done"}))


def mailbox_state(db: Any, inbox_id: str) -> dict[str, Any] | None:
    return db.imap_integrations.find_one({"inboxId": inbox_id}, {"state": 1, "healthStatus": 1, "error": 1,
                                                                 "updatedAt": 1, "stateChangedAt": 1, "_id": 0})


@both_servers
def test_new_mail_becomes_customer_conversation_message_and_notification(runtime, caller, mailserver, db):
    user, password = connect_mailbox(caller, mailserver, db, "inbox-1")
    mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="Where is my order?",
                                                body="Order 42 <has not arrived>"))
    [message] = wait_for(lambda: done_messages(db, "inbox-1"), timeout=2.0, message="the message to be stored")
    assert message["subject"] == "Where is my order?"
    assert "Order 42 &lt;has not arrived&gt;" in message["body"]
    assert message["from"][0]["address"] == "alice@example.com"
    assert message["type"] == "INBOX"
    # the lane saves a new sender's customer right after storing the mail (actors/customer.py ``after_stored``)
    [customer] = wait_for(lambda: list(db.imap_customers.find({"inboxIntegrationId": "inbox-1"})), timeout=5.0,
                          message="the customer to be remembered")
    assert customer["email"] == "alice@example.com" and customer["contactsId"] == message["customerId"]
    assert db.standalone_customers.count_documents({"primaryEmail": "alice@example.com"}) == 1
    [conversation] = list(db.standalone_conversations.find({"integrationId": "inbox-1"}))
    assert conversation["_id"] == message["inboxConversationId"]
    assert conversation["customerId"] == customer["contactsId"]
    assert conversation["content"] == "Where is my order?"
    [note] = wait_for(lambda: list(db.standalone_message_notifications.find()), timeout=2.0)
    assert note["messageId"] == str(message["_id"])
    assert note["conversationId"] == conversation["_id"]
    assert note["deliveries"] == 1
    wait_for(lambda: db.imap_cursors.find_one({"integrationId": "inbox-1", "folder": "INBOX",
                                               "lastUid": message["uid"]}), timeout=2.0, message="the cursor")


def test_threading_cc_text_only_and_latin1(runtime, caller, mailserver, db):
    user, password = connect_mailbox(caller, mailserver, db, "inbox-2")
    address = f"{user}@localhost"
    first = make_mail(to=address, subject="Invoice", message_id="<first@example.com>")
    mailserver.append(user, password, first)
    wait_for(lambda: len(done_messages(db, "inbox-2")) == 1, timeout=5)
    reply = make_mail(to=address, subject="Re: Invoice", message_id="<second@example.com>",
                      in_reply_to="<first@example.com>", references=["<first@example.com>"])
    cc_only = make_mail(to="someone-else@example.org", cc=address.upper(), subject="Copy for you",
                        sender="bob@example.net", message_id="<cc@example.net>")
    latin1 = (b"From: =?iso-8859-1?q?J=FCrgen?= <juergen@example.de>\r\nTo: " + address.encode() +
              b"\r\nSubject: =?iso-8859-1?q?Gr=FC=DFe?=\r\nMessage-ID: <latin@example.de>\r\n"
              b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
              b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe aus K\xf6ln, caf\xe9\r\n")
    mailserver.append_many(user, password, [reply, cc_only, latin1])
    wait_for(lambda: len(done_messages(db, "inbox-2")) == 4, timeout=5)
    by_id = {m["messageId"]: m for m in done_messages(db, "inbox-2")}
    assert by_id["<second@example.com>"]["inboxConversationId"] == by_id["<first@example.com>"]["inboxConversationId"]
    assert by_id["<cc@example.net>"]["inboxConversationId"] != by_id["<first@example.com>"]["inboxConversationId"]
    assert by_id["<cc@example.net>"]["body"].strip() not in ("", "false")
    assert by_id["<latin@example.de>"]["subject"] == "Grüße"
    assert "Grüße aus Köln, café" in by_id["<latin@example.de>"]["body"]
    assert db.standalone_conversations.count_documents({"integrationId": "inbox-2"}) == 3
    wait_for(lambda: db.imap_customers.count_documents({"inboxIntegrationId": "inbox-2"}) == 3,  # alice, bob, jürgen
             timeout=5.0, message="the three customers to be remembered")


def test_same_new_sender_twice_at_once_creates_one_customer(runtime, caller, mailserver, db):
    user, password = connect_mailbox(caller, mailserver, db, "inbox-3")
    mails = [make_mail(to=f"{user}@localhost", sender="carol@example.com", subject=f"n{i}") for i in range(5)]
    mailserver.append_many(user, password, mails)
    wait_for(lambda: len(done_messages(db, "inbox-3")) == 5, timeout=5)
    wait_for(lambda: db.imap_customers.count_documents({"inboxIntegrationId": "inbox-3"}) >= 1, timeout=5)
    assert db.imap_customers.count_documents({"inboxIntegrationId": "inbox-3"}) == 1
    assert db.standalone_customers.count_documents({"primaryEmail": "carol@example.com"}) == 1


def test_remove_update_and_wrong_password(runtime, caller, mailserver, db, caplog):
    quiet_libraries()  # as the entry point does: library loggers that print payloads stay at WARNING
    caplog.set_level(logging.DEBUG)
    good_user, good_password = connect_mailbox(caller, mailserver, db, "inbox-good")
    user, password = connect_mailbox(caller, mailserver, db, "inbox-x")

    # a wrong password: unHealthy with the server's reason, while the other mailbox keeps working
    caller.update_integration("inbox-x", mailserver.details(user, "wrong-password"))
    status = wait_for(lambda: (s := caller.call("getStatus", {"integrationId": "inbox-x"}))["status"] == "unHealthy"
                      and s, timeout=10, message="unHealthy")
    assert "AUTHENTICATIONFAILED" in status["error"] or "Authentication failed" in status["error"]
    assert "wrong-password" not in status["error"]
    mailserver.append(good_user, good_password, make_mail(to=f"{good_user}@localhost", subject="still works"))
    wait_for(lambda: len(done_messages(db, "inbox-good")) == 1, timeout=5)

    # new credentials on the server and in the integration: it reconnects with them
    mailserver.set_password(user, "new-password-1")
    caller.update_integration("inbox-x", {**mailserver.details(user, "new-password-1")})
    wait_for(lambda: caller.call("getStatus", {"integrationId": "inbox-x"})["status"] == "healthy", timeout=10)
    mailserver.append(user, "new-password-1", make_mail(to=f"{user}@localhost", subject="after update"))
    wait_for(lambda: len(done_messages(db, "inbox-x")) == 1, timeout=5, message=lambda: (
        f"the mail after the update; integration {mailbox_state(db, 'inbox-x')}, "
        f"intents {list(db.imap_intents.find({}, {'messageId': 1}))}, cursor {list(db.imap_cursors.find())}"))
    details = caller.call("api_to_integrations", {"integrationId": "inbox-x", "action": "getDetails"})
    assert details["password"] is None and details["user"] == f"{user}@localhost"
    assert caller.call("api_to_integrations", {"integrationId": "inbox-x", "action": "reply-imap"}) is None

    # remove: the mailbox stops, its IMAP session closes, its data goes
    assert imap_sessions(mailserver, user) == 1
    caller.call("removeIntegrations", {"integrationId": "inbox-x"})
    wait_for(lambda: imap_sessions(mailserver, user) == 0, timeout=5, message="the IMAP session to close")
    assert db.imap_integrations.count_documents({"inboxId": "inbox-x"}) == 0
    assert db.imap_messages.count_documents({"inboxIntegrationId": "inbox-x"}) == 0
    assert caller.call("getStatus", {"integrationId": "inbox-x"}) == {"status": "healthy"}
    assert imap_sessions(mailserver, good_user) == 1

    # no secret in any log line, log entry or reply
    logged = caplog.text + "\n".join(str(e) for e in db.imap_logs.find())
    for secret in (good_password, password, "wrong-password", "new-password-1"):
        assert secret not in logged
    assert any(e["type"] == "error" and "inbox-x" == e.get("integrationId") for e in db.imap_logs.find())


@both_servers
def test_listen_and_restart_resume_every_stored_integration(services, mongo_url, prefix, caller, mailserver, db):
    rt = Runtime(runtime_config(services, mongo_url=mongo_url, prefix=prefix))
    rt.start()
    try:
        user, password = connect_mailbox(caller, mailserver, db, "inbox-r")
    finally:
        rt.stop()
    mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="while stopped"))
    rt = Runtime(runtime_config(services, mongo_url=mongo_url, prefix=prefix))
    rt.start()
    try:
        wait_for(lambda: len(done_messages(db, "inbox-r")) == 1, timeout=5)
        doc = db.imap_integrations.find_one({"inboxId": "inbox-r"})
        caller.publish("listen", {"_id": str(doc["_id"])})  # already listening: nothing changes
        mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="after listen"))
        wait_for(lambda: len(done_messages(db, "inbox-r")) == 2, timeout=5)
        assert imap_sessions(mailserver, user) == 1
    finally:
        rt.stop()


def test_mailbox_serves_append_and_fetch_on_its_own_session(runtime, caller, mailserver, db):
    user, password = connect_mailbox(caller, mailserver, db, "inbox-s")
    mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="fetch me"))
    [message] = wait_for(lambda: done_messages(db, "inbox-s"), timeout=5)
    box = runtime.supervisor.mailbox("inbox-s").get(timeout=5)
    raw = box.fetch_raw("INBOX", message["uid"]).get(timeout=10)
    assert b"Subject: fetch me" in raw
    sent = make_mail(to="alice@example.com", sender=f"{user}@localhost", subject="our reply")
    folder, appended = box.append_sent(sent).get(timeout=10)
    assert folder == "Sent"
    with mailserver.client(user, password) as client:
        client.select_folder("Sent", readonly=True)
        [uid] = client.search(["SUBJECT", "our reply"])
        assert uid == appended
        assert b"\\Seen" in client.get_flags([uid])[uid]
        client.select_folder("INBOX", readonly=True)
        assert b"\\Seen" not in client.get_flags([message["uid"]])[message["uid"]]  # fetched with PEEK
    assert imap_sessions(mailserver, user) == 1  # the mailbox's own session did both
    mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="after the requests"))
    wait_for(lambda: len(done_messages(db, "inbox-s")) == 2, timeout=5)  # and went back to IDLE


def test_auto_replies_are_flagged_and_our_own_mail_is_not_ingested(runtime, caller, mailserver, db):
    user, password = connect_mailbox(caller, mailserver, db, "inbox-l")
    to = f"{user}@localhost"
    mailserver.append_many(user, password, [
        make_mail(to=to, subject="Out of office", extra={"Auto-Submitted": "auto-replied"}),
        make_mail(to=to, subject="our own reply", sender=to, extra={"X-Imap-Runtime-Id": "inbox-l"}),
        make_mail(to=to, subject="a person"),
    ])
    wait_for(lambda: (db.imap_cursors.find_one({"integrationId": "inbox-l"}) or {}).get("lastUid") == 3, timeout=5)
    by_subject = {m["subject"]: m for m in done_messages(db, "inbox-l")}
    assert set(by_subject) == {"Out of office", "a person"}
    assert by_subject["Out of office"]["autoSubmitted"] == "auto-reply"
    assert by_subject["a person"]["autoSubmitted"] is None
    assert db.imap_customers.count_documents({"inboxIntegrationId": "inbox-l", "email": to}) == 0


def test_the_runtime_serves_graphql_and_the_activity_log(runtime, caller, mailserver, db):
    import base64
    import json as _json
    import urllib.request

    user, password = connect_mailbox(caller, mailserver, db, "inbox-g")
    mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="for the UI"))
    [message] = wait_for(lambda: done_messages(db, "inbox-g"), timeout=5)
    query = {"query": "query($c: String!) { imapConversationDetail(conversationId: $c) { _id mailData } "
                      "imapGetIntegrations { inboxId password } }",
             "variables": {"c": message["inboxConversationId"]}}
    request = urllib.request.Request(
        f"http://127.0.0.1:{runtime.web_port}/graphql", data=_json.dumps(query).encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "user": base64.b64encode(_json.dumps({"_id": "staff-1"}).encode()).decode()})
    with urllib.request.urlopen(request, timeout=10) as response:
        data = _json.loads(response.read())["data"]
    [detail] = data["imapConversationDetail"]
    assert detail["_id"] == str(message["_id"]) and detail["mailData"]["subject"] == "for the UI"
    assert detail["mailData"]["from"] == [{"name": "Alice Customer", "email": "alice@example.com"}]
    assert data["imapGetIntegrations"] == [{"inboxId": "inbox-g", "password": None}]

    logs = caller.call("logs.collectItems", {"contentId": message["customerId"]})
    assert logs["status"] == "success"  # wrapped twice, as core reads it
    assert [item["contentTypeDetail"]["subject"] for item in logs["data"]] == ["for the UI"]
    assert logs["data"][0]["contentType"] == "imap:customer"


def test_bad_requests_get_errors_and_the_runtime_keeps_serving(runtime, caller, mailserver, db):
    bad = {"kind": "imap", "integrationId": "inbox-bad", "doc": {"kind": "imap", "data": "{not json"}}
    with pytest.raises(RpcError, match="doc.data is not valid JSON"):
        caller.call("createIntegration", bad)
    with pytest.raises(RpcError, match="doc.data is missing password"):
        caller.call("createIntegration", {**bad, "doc": {"data": '{"host": "h", "user": "u"}'}})
    with pytest.raises(RpcError, match="integrationId is required"):
        caller.call("createIntegration", {"doc": {"data": "{}"}})
    with pytest.raises(RpcError, match="doc is required"):
        caller.call("createIntegration", {"integrationId": "inbox-bad"})
    with pytest.raises(RpcError, match="Integration not found."):
        caller.update_integration("nope", {"host": "h", "user": "u", "password": "p"})
    with pytest.raises(RpcError, match="data must be an object"):
        caller.call("getStatus", "just a string")
    assert db.imap_integrations.count_documents({}) == 0
    connect_mailbox(caller, mailserver, db, "inbox-ok")  # still serving


def test_queue_names_are_registered_in_redis(runtime, services, prefix):
    client = redis.Redis(host=services["REDIS_HOST"], port=int(services["REDIS_PORT"]))
    try:
        names = {n.decode() for n in client.smembers("service:queuenames:imap")}
        for procedure in ("createIntegration", "updateIntegration", "removeIntegrations", "removeIntegration",
                          "api_to_integrations", "getStatus", "listen"):
            assert f"{procedure}{prefix}" in names  # erxes's checkQueueName keeps only the part after "imap:"
    finally:
        client.srem("service:queuenames:imap", *[n for n in names if n.endswith(prefix)])
        client.close()


def imap_sessions(mailserver: MailServer, user: str) -> int:
    """How many IMAP sessions Dovecot has open for ``user`` (doveadm who); Cyrus: ``CyrusServer.sessions``."""
    if mailserver.kind == "cyrus":
        return mailserver.sessions(user)  # type: ignore[attr-defined]
    out = subprocess.run(["doveadm", "-c", f"{mailserver.env['MAIL_DIR']}/dovecot.conf", "who", "-1", user],
                         capture_output=True, text=True, timeout=10)
    return sum(1 for line in out.stdout.splitlines()[1:] if line.split() and line.split()[0] == user
               and "imap" in line)


