"""The send path (issue 3), end to end against the real servers: an in-process runtime listens to a Dovecot user,
MailSender submits through Dovecot's submission service (STARTTLS + AUTH, self-signed cert verified with the
integration's caCert), which relays into the recipients' Dovecot mailboxes; the customer's answer is ingested by the
same pipeline into the same conversation. SMTP security modes and attachment fetching use small local servers."""
from __future__ import annotations

import base64
import email
import email.policy
import http.server
import os
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from runtime.errors import AuthenticationFailed, MailboxError, OutboundError, OutboundTooLarge, RequestError
from runtime.erxes import ErxesClient
from runtime.fence import Fence
from app.process import Runtime
from kinds.imap.sending import MailSender
from kinds.imap.smtp import SmtpRefused
from runtime.storage import Storage
from tests.conftest import MailServer, make_mail, wait_for
from tests.e2e import Caller, free_port, runtime_config


@pytest.fixture
def sender(runtime: Runtime) -> MailSender:
    config = runtime.config
    erxes = ErxesClient(runtime.broker, customer_service=config.customer_service, timeout=config.rpc_timeout,
                        send_idempotency_keys=config.standalone)
    return MailSender(storage=runtime.storage, erxes=erxes, supervisor=runtime.supervisor, config=config,
                      imap_factory=_no_second_session)


def _no_second_session(settings: Any) -> Any:
    raise AssertionError("a second IMAP session was opened while the mailbox actor listens")


@pytest.fixture
def ca_cert(services: dict[str, str]) -> str:
    return Path(services["CA_CERT"]).read_text()


def connect_mailbox(caller: Caller, mailserver: MailServer, db: Any, inbox_id: str, ca_cert: str) -> tuple[str, str]:
    user, password = mailserver.add_user("staff")
    caller.create_integration(inbox_id, mailserver.details(user, password, caCert=ca_cert))
    wait_for(lambda: (db.imap_integrations.find_one({"inboxId": inbox_id}) or {}).get("state") == "idle",
             timeout=10, message=f"{inbox_id} to IDLE")
    return user, password


def mails(mailserver: MailServer, user: str, password: str, folder: str = "INBOX") -> list[email.message.EmailMessage]:
    with mailserver.client(user, password) as client:
        client.select_folder(folder, readonly=True)
        uids = client.search(["ALL"])
        fetched = client.fetch(uids, [b"BODY.PEEK[]"]) if uids else {}
    return [email.message_from_bytes(fetched[uid][b"BODY[]"], policy=email.policy.default) for uid in sorted(fetched)]


def stored(db: Any, inbox_id: str, message_id: str) -> dict[str, Any] | None:
    return db.imap_messages.find_one({"inboxIntegrationId": inbox_id, "messageId": message_id, "ingestState": "done"})


def test_staff_reply_threads_reaches_to_cc_bcc_files_in_sent_and_the_answer_joins(
        runtime, caller, mailserver, db, sender, ca_cert):
    staff, staff_pw = connect_mailbox(caller, mailserver, db, "inbox-r", ca_cert)
    customer, customer_pw = mailserver.add_user("cust")
    colleague, colleague_pw = mailserver.add_user("cc")
    boss, boss_pw = mailserver.add_user("bcc")
    mailserver.append(staff, staff_pw, make_mail(
        to=f"{staff}@localhost", sender=f"Alice Customer <{customer}@localhost>", subject="Order 42",
        message_id="<q2@customer.example>", references=["<q0@customer.example>", "<q1@customer.example>"]))
    question = wait_for(lambda: stored(db, "inbox-r", "<q2@customer.example>"), message="the question ingested")
    conversation_id = question["inboxConversationId"]
    blob = os.urandom(3000)

    result = sender.send("os", {
        "integrationId": "inbox-r", "conversationId": conversation_id, "from": f"{staff}@localhost",
        "to": [f"{customer}@localhost"], "cc": [f"Colleague <{colleague}@localhost>"], "bcc": [f"{boss}@localhost"],
        "subject": "Order 42", "body": "<p>Your order <b>ships</b> today.</p>",
        "replyToMessageId": str(question["_id"]),
        "attachments": [{"filename": "label.bin", "mimeType": "application/octet-stream",
                         "data": base64.b64encode(blob).decode()}]})

    info = result["info"]
    message_id = info["messageId"]
    assert message_id.startswith("<") and message_id.endswith("@localhost>")
    assert sorted(info["accepted"]) == sorted(f"{u}@localhost" for u in (customer, colleague, boss))
    assert info["rejected"] == [] and info["response"].startswith("250")
    assert info["envelope"] == {"from": f"{staff}@localhost",
                                "to": [f"{customer}@localhost", f"{colleague}@localhost", f"{boss}@localhost"]}
    assert result["conversationId"] == conversation_id

    [got] = mails(mailserver, customer, customer_pw)  # "sendmail returned": it is in the mailbox
    assert got["Message-ID"] == message_id
    assert got["In-Reply-To"] == "<q2@customer.example>"
    assert got["References"].split() == ["<q0@customer.example>", "<q1@customer.example>", "<q2@customer.example>"]
    assert got["Subject"] == "Re: Order 42"
    assert got["From"] == f"{staff}@localhost"
    assert got["Cc"] == f"Colleague <{colleague}@localhost>"
    assert got["X-Imap-Runtime-Id"] == "inbox-r"
    [text, html] = next(got.iter_parts()).iter_parts()
    assert "Your order ships today." in text.get_content() and "<b>ships</b>" in html.get_content()
    [attachment] = list(got.iter_attachments())
    assert attachment.get_filename() == "label.bin" and attachment.get_payload(decode=True) == blob
    [cc_copy] = mails(mailserver, colleague, colleague_pw)
    [bcc_copy] = mails(mailserver, boss, boss_pw)
    for copy in (got, cc_copy, bcc_copy):
        assert copy["Message-ID"] == message_id and copy["Bcc"] is None
        assert boss not in " ".join(str(copy[h]) for h in ("From", "To", "Cc", "Reply-To"))
    for copy in (got, cc_copy):  # only the Bcc recipient's own delivery headers name it
        assert boss.encode() not in copy.as_bytes()
    [filed] = mails(mailserver, staff, staff_pw, "Sent")
    assert filed["Message-ID"] == message_id

    doc = db.imap_messages.find_one({"inboxIntegrationId": "inbox-r", "messageId": message_id})
    assert doc["type"] == "SENT" and doc["ingestState"] == "done" and doc["folder"] == "Sent"
    assert doc["inboxConversationId"] == conversation_id and doc["customerId"] == question["customerId"]
    assert doc["inReplyTo"] == "<q2@customer.example>" and doc["subject"] == "Re: Order 42"
    assert doc["references"] == ["<q0@customer.example>", "<q1@customer.example>", "<q2@customer.example>"]
    assert doc["from"] == [{"name": "", "address": f"{staff}@localhost"}]
    assert doc["cc"] == [{"name": "Colleague", "address": f"{colleague}@localhost"}]
    assert doc["bcc"] == [{"name": "", "address": f"{boss}@localhost"}]
    assert [(a["filename"], a["size"]) for a in doc["attachments"]] == [("label.bin", 3000)]

    mailserver.append(staff, staff_pw, make_mail(
        to=f"{staff}@localhost", sender=f"Alice Customer <{customer}@localhost>", subject="Re: Order 42",
        message_id="<a1@customer.example>", in_reply_to=message_id,
        references=["<q0@customer.example>", "<q1@customer.example>", "<q2@customer.example>", message_id]))
    answer = wait_for(lambda: stored(db, "inbox-r", "<a1@customer.example>"), message="the answer ingested")
    assert answer["inboxConversationId"] == conversation_id
    assert db.standalone_conversations.count_documents({"integrationId": "inbox-r"}) == 1


def test_new_thread_creates_the_conversation_and_the_answer_joins_it(
        runtime, caller, mailserver, db, sender, ca_cert):
    staff, staff_pw = connect_mailbox(caller, mailserver, db, "inbox-n", ca_cert)
    customer, customer_pw = mailserver.add_user("cust")
    result = sender.send("os", {"from": f"Support <{staff.upper()}@LOCALHOST>",  # the user, in another case
                                "to": [f"Bob Buyer <{customer}@localhost>"], "subject": "Welcome",
                                "body": "<p>Hello Bob</p>"})
    message_id = result["info"]["messageId"]
    [got] = mails(mailserver, customer, customer_pw)
    assert got["Subject"] == "Welcome" and got["In-Reply-To"] is None and got["References"] is None
    assert got["From"] == f"Support <{staff.upper()}@LOCALHOST>"
    doc = db.imap_messages.find_one({"messageId": message_id})
    conversation = db.standalone_conversations.find_one({"_id": doc["inboxConversationId"]})
    assert conversation["integrationId"] == "inbox-n" and conversation["content"] == "Welcome"
    customer_doc = db.imap_customers.find_one({"inboxIntegrationId": "inbox-n", "email": f"{customer}@localhost"})
    assert customer_doc["contactsId"] == conversation["customerId"] == doc["customerId"]
    assert customer_doc["firstName"] == "Bob" and customer_doc["lastName"] == "Buyer"
    assert result["conversationId"] == conversation["_id"]

    mailserver.append(staff, staff_pw, make_mail(
        to=f"{staff}@localhost", sender=f"{customer}@localhost", subject="Re: Welcome",
        message_id="<thanks@customer.example>", in_reply_to=message_id, references=[message_id]))
    answer = wait_for(lambda: stored(db, "inbox-n", "<thanks@customer.example>"), message="the answer ingested")
    assert answer["inboxConversationId"] == conversation["_id"]
    assert answer["customerId"] == conversation["customerId"]
    assert db.standalone_conversations.count_documents({"integrationId": "inbox-n"}) == 1


def test_should_resolve_and_should_open_change_the_status(runtime, caller, mailserver, db, sender, ca_cert):
    staff, staff_pw = connect_mailbox(caller, mailserver, db, "inbox-s", ca_cert)
    customer, _ = mailserver.add_user("cust")
    mailserver.append(staff, staff_pw, make_mail(to=f"{staff}@localhost", sender=f"{customer}@localhost",
                                                 subject="Refund", message_id="<refund@customer.example>"))
    question = wait_for(lambda: stored(db, "inbox-s", "<refund@customer.example>"), message="the question ingested")
    args = {"integrationId": "inbox-s", "conversationId": question["inboxConversationId"],
            "from": f"{staff}@localhost", "to": [f"{customer}@localhost"], "subject": "Re: Refund",
            "body": "Done.", "inReplyTo": "refund@customer.example"}  # the replied mail given by its Message-ID

    info = sender.send("os", {**args, "shouldResolve": True})["info"]
    conversation = db.standalone_conversations.find_one({"_id": question["inboxConversationId"]})
    assert conversation["status"] == "closed"
    doc = db.imap_messages.find_one({"messageId": info["messageId"]})
    assert doc["inReplyTo"] == "<refund@customer.example>" and doc["subject"] == "Re: Refund"
    sender.send("os", {**args, "shouldOpen": True})
    assert db.standalone_conversations.find_one({"_id": question["inboxConversationId"]})["status"] == "new"


def test_wrong_smtp_password_and_refused_recipients_send_and_store_nothing(
        runtime, caller, mailserver, db, sender, ca_cert):
    staff, staff_pw = connect_mailbox(caller, mailserver, db, "inbox-f", ca_cert)
    customer, customer_pw = mailserver.add_user("cust")
    args = {"from": f"{staff}@localhost", "to": [f"{customer}@localhost"], "subject": "Hi", "body": "x"}

    # the stored password changes under the running mailbox (which keeps its session): SMTP refuses the login
    db.imap_integrations.update_one({"inboxId": "inbox-f"}, {"$set": {"password": "wrong-secret"}})
    with pytest.raises(AuthenticationFailed) as refused:
        sender.send("os", args)
    assert "535" in str(refused.value) and "wrong-secret" not in str(refused.value)
    db.imap_integrations.update_one({"inboxId": "inbox-f"}, {"$set": {"password": staff_pw}})

    with pytest.raises(SmtpRefused) as no_such:
        sender.send("os", {**args, "to": ["nobody-such@localhost"]})
    assert "nobody-such@localhost" in str(no_such.value) and "550" in str(no_such.value)
    assert "No such user" in str(no_such.value)

    assert db.imap_messages.count_documents({"type": "SENT"}) == 0
    assert mails(mailserver, staff, staff_pw, "Sent") == [] and mails(mailserver, customer, customer_pw) == []
    logged = [e["message"] for e in db.imap_logs.find({"integrationId": "inbox-f", "type": "error"})]
    assert any("535" in m for m in logged) and any("No such user" in m for m in logged)
    assert not any("wrong-secret" in m for m in logged)

    # one refused among accepted ones: the mail goes out and the refusal is reported
    info = sender.send("os", {**args, "cc": ["nobody-such@localhost"]})["info"]
    assert info["accepted"] == [f"{customer}@localhost"] and info["rejected"] == ["nobody-such@localhost"]
    assert "No such user" in info["rejectedErrors"][0]
    assert len(mails(mailserver, customer, customer_pw)) == 1


def test_attachments_over_the_limit_or_unusable_send_nothing(runtime, caller, mailserver, db, ca_cert):
    staff, staff_pw = connect_mailbox(caller, mailserver, db, "inbox-a", ca_cert)
    customer, customer_pw = mailserver.add_user("cust")
    small = MailSender(storage=runtime.storage, erxes=None, supervisor=runtime.supervisor, config=runtime.config,
                       max_attachment_bytes=1000)
    args = {"from": f"{staff}@localhost", "to": [f"{customer}@localhost"], "subject": "Files", "body": "x"}
    with pytest.raises(RequestError, match="larger than the limit of 1000 bytes"):
        small.send("os", {**args, "attachments": [
            {"filename": "a.bin", "data": base64.b64encode(b"a" * 600).decode()},
            {"filename": "b.bin", "data": base64.b64encode(b"b" * 600).decode()}]})
    for bad, words in (({"filename": "x", "url": "file:///etc/passwd"}, "http or https"),
                       ({"filename": "x", "url": "/etc/passwd"}, "http or https"),
                       ({"filename": "x", "data": "not base64!"}, "not valid base64"),
                       ({"filename": "x"}, "neither data")):
        with pytest.raises(RequestError, match=words):
            small.send("os", {**args, "attachments": [bad]})
    assert mails(mailserver, customer, customer_pw) == []
    assert db.imap_messages.count_documents({"type": "SENT"}) == 0
    assert db.imap_logs.count_documents({"integrationId": "inbox-a", "message": {"$regex": "sending"}}) == 0


def test_unknown_integration_and_bad_arguments(runtime, sender):
    with pytest.raises(RequestError, match="no IMAP integration found for from x@y.org or integrationId nope"):
        sender.send("os", {"from": "x@y.org", "integrationId": "nope", "to": ["a@b.org"], "subject": "s"})
    with pytest.raises(RequestError, match="to must name"):
        sender.send("os", {"from": "x@y.org", "to": [], "subject": "s"})
    with pytest.raises(RequestError, match="subject is required"):
        sender.send("os", {"from": "x@y.org", "to": ["a@b.org"]})
    with pytest.raises(RequestError, match="not an e-mail address"):
        sender.send("os", {"from": "x@y.org", "to": ["a@b.org"], "cc": ["nonsense"], "subject": "s"})


# --------------------------------------------------------------------------------- attachments fetched by URL

class _Files(http.server.BaseHTTPRequestHandler):
    blob = os.urandom(4000)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path.startswith("/blob"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.blob)))
            self.end_headers()
            self.wfile.write(self.blob)
        elif self.path == "/stream":  # no Content-Length: the size is only known by reading
            self.send_response(200)
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"z" * 1000)
        elif self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def files() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


class _Recorder:
    """An aiosmtpd handler that keeps what it got."""

    def __init__(self) -> None:
        self.envelopes: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.envelopes.append(envelope)
        return "250 2.0.0 Ok: queued as 42"


def _login(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.password == b"s3cret-pw"
    return AuthResult(success=ok)


class _NoMailboxes:
    def mailbox(self, inbox_id: str, subdomain: str = "os") -> None:
        return None


class _FakeImap:
    appended: list[tuple[str, bytes]] = []

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def find_special_folder(self, flag: bytes) -> str:
        return "Sent Items"

    def append(self, folder: str, raw: bytes, flags: Any = ()) -> bytes:
        self.appended.append((folder, raw))
        return b"[APPENDUID 1700000000 42] Append completed."

    def logout(self) -> None:
        pass


@pytest.fixture
def plain_storage(storage: Storage) -> Storage:
    return storage  # conftest's Storage on a fresh database


def local_sender(storage: Storage, runtime_cfg: Any, port: int, *, timeout: float = 2.0,
                 max_attachment_bytes: int = 50_000, **details: Any) -> MailSender:
    """A sender for the integration ``inbox-l`` whose SMTP server is 127.0.0.1:``port`` (details as given)."""
    storage.integrations.delete_many({})
    storage.save_integration("inbox-l", {"host": "127.0.0.1", "port": 1, "user": "me@shop.example",
                                         "mainUser": "me", "password": "s3cret-pw", "smtpHost": "127.0.0.1",
                                         "smtpPort": str(port), **details})
    _FakeImap.appended = []
    return MailSender(storage=storage, erxes=None, supervisor=_NoMailboxes(), config=runtime_cfg,
                      imap_factory=_FakeImap, timeout=timeout, max_attachment_bytes=max_attachment_bytes)


@pytest.fixture
def cfg(services: dict[str, str], mongo_url: str) -> Any:
    return runtime_config(services, mongo_url=mongo_url, prefix="")


ARGS = {"from": "me@shop.example", "to": ["a@b.example"], "subject": "Hi", "body": "<p>x</p>",
        "conversationId": "c1", "customerId": "k1"}


def test_attachments_by_url_are_streamed_within_the_limit(plain_storage, cfg, files):
    recorder = _Recorder()
    port = free_port()
    server = Controller(recorder, hostname="127.0.0.1", port=port, authenticator=_login, auth_require_tls=False)
    server.start()
    try:
        sender = local_sender(plain_storage, cfg, port, smtpTls="none")
        sender.send("os", {**ARGS, "attachments": [{"name": "a.bin", "type": "application/x-thing",
                                                    "url": f"{files}/blob?token=secret"}]})
        got = email.message_from_bytes(recorder.envelopes[0].original_content, policy=email.policy.default)
        [part] = list(got.iter_attachments())
        assert part.get_payload(decode=True) == _Files.blob and part.get_content_type() == "application/x-thing"
        with pytest.raises(RequestError, match="larger than the limit"):
            sender.send("os", {**ARGS, "attachments": [{"filename": "z", "url": f"{files}/stream"}]})
        with pytest.raises(RequestError, match="'file:///etc/passwd' is not allowed|not http or https"):
            sender.send("os", {**ARGS, "attachments": [{"filename": "z", "url": f"{files}/to-file"}]})
        with pytest.raises(RequestError, match="answered 404") as missing:
            sender.send("os", {**ARGS, "attachments": [{"filename": "z", "url": f"{files}/gone?token=secret"}]})
        assert "secret" not in str(missing.value)
        assert len(recorder.envelopes) == 1
    finally:
        server.stop()


# --------------------------------------------------------------------------------- SMTP security modes

def test_starttls_missing_is_refused_and_plain_only_when_asked(plain_storage, cfg):
    recorder = _Recorder()
    port = free_port()
    server = Controller(recorder, hostname="127.0.0.1", port=port, authenticator=_login, auth_require_tls=False)
    server.start()
    try:
        sender = local_sender(plain_storage, cfg, port)
        with pytest.raises(MailboxError, match="does not offer STARTTLS: refusing"):
            sender.send("os", ARGS)
        assert recorder.envelopes == [] and plain_storage.messages.count_documents({}) == 0
        assert _FakeImap.appended == []

        sender = local_sender(plain_storage, cfg, port, smtpTls="none")
        info = sender.send("os", ARGS)["info"]
        assert info["response"] == "250 2.0.0 Ok: queued as 42"
        [envelope] = recorder.envelopes
        assert envelope.mail_from == "me@shop.example" and envelope.rcpt_tos == ["a@b.example"]
        # no mailbox actor runs: one short IMAP session of ours files it in the folder marked \Sent
        [(folder, raw)] = _FakeImap.appended
        assert folder == "Sent Items" and info["messageId"].encode() in raw
        doc = plain_storage.messages.find_one({"messageId": info["messageId"]})
        assert (doc["folder"], doc["uid"]) == ("Sent Items", 42)

        with pytest.raises(RequestError, match="smtpTls must be one of"):
            local_sender(plain_storage, cfg, port, smtpTls="maybe").send("os", ARGS)
    finally:
        server.stop()


def test_implicit_tls_verifies_the_certificate(plain_storage, cfg, services, ca_cert):
    cert_dir = Path(services["CA_CERT"]).parent
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_dir / "cert.pem", cert_dir / "key.pem")
    recorder = _Recorder()
    port = free_port()
    # aiosmtpd counts only STARTTLS as TLS for AUTH; this connection is TLS from the first byte
    server = Controller(recorder, hostname="127.0.0.1", port=port, authenticator=_login, ssl_context=context,
                        auth_require_tls=False)
    server.start()
    try:
        with pytest.raises(MailboxError, match="certificate verify failed"):
            local_sender(plain_storage, cfg, port, smtpTls="tls").send("os", ARGS)
        info = local_sender(plain_storage, cfg, port, smtpTls="tls", caCert=ca_cert).send("os", ARGS)["info"]
        assert info["accepted"] == ["a@b.example"] and len(recorder.envelopes) == 1
    finally:
        server.stop()


def test_a_silent_server_times_out(plain_storage, cfg):
    with socket.socket() as listener:  # accepts connections (backlog) but never greets
        listener.bind(("127.0.0.1", 0))
        listener.listen(5)
        sender = local_sender(plain_storage, cfg, listener.getsockname()[1], timeout=0.5)
        with pytest.raises(MailboxError, match="timed out"):
            sender.send("os", ARGS)
    with pytest.raises(MailboxError, match="cannot connect"):
        local_sender(plain_storage, cfg, free_port()).send("os", ARGS)
    assert plain_storage.messages.count_documents({}) == 0


# --------------------------------------------------------------------------------- the outbound fence (issue 12)

class _Seen(http.server.BaseHTTPRequestHandler):
    """A server that records every request it gets; ``routes`` (path -> handler) answers, else 200 with a blob."""

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        self.server.hosts.append(self.headers.get("Host"))  # type: ignore[attr-defined]
        route = self.server.routes.get(self.path.split("?")[0])  # type: ignore[attr-defined]
        if route is not None:
            route(self)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(_Files.blob)))
        self.end_headers()
        self.wfile.write(_Files.blob)

    def log_message(self, *args: Any) -> None:
        pass


class SeenServer:
    def __init__(self, routes: dict[str, Any] | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Seen)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.httpd.requests = []  # type: ignore[attr-defined]
        self.httpd.hosts = []  # type: ignore[attr-defined]
        self.httpd.routes = routes or {}  # type: ignore[attr-defined]
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def requests(self) -> list[str]:
        return list(self.httpd.requests)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def smtp_recorder() -> Iterator[tuple[_Recorder, int]]:
    recorder = _Recorder()
    port = free_port()
    server = Controller(recorder, hostname="127.0.0.1", port=port, authenticator=_login, auth_require_tls=False)
    server.start()
    yield recorder, port
    server.stop()


@pytest.fixture
def fenced(services: dict[str, str], mongo_url: str) -> Any:
    """The configuration as production has it: loopback is not let through."""
    return runtime_config(services, mongo_url=mongo_url, prefix="", outbound_allow_loopback_http=False)


def test_attachment_urls_to_loopback_and_private_addresses_are_refused_unread(plain_storage, fenced, smtp_recorder):
    recorder, port = smtp_recorder
    inner = SeenServer()  # "the metadata service": the runtime must never reach it
    try:
        sender = local_sender(plain_storage, fenced, port, smtpTls="none")
        for url in (f"{inner.url}/latest/meta-data?key=signed-secret", f"http://localhost:{inner.port}/x",
                    f"http://2130706433:{inner.port}/x", f"http://0x7f.1:{inner.port}/x",
                    f"http://[::ffff:127.0.0.1]:{inner.port}/x", f"http://0:{inner.port}/x",
                    "http://169.254.169.254/latest/meta-data/", "http://10.255.255.1/x"):
            with pytest.raises(RequestError, match="is refused: .* non-public address") as refused:
                sender.send("os", {**ARGS, "attachments": [{"name": "a.bin", "url": url}]})
            assert "signed-secret" not in str(refused.value) and str(refused.value).startswith("attachment 'a.bin'")
        assert inner.requests == [] and recorder.envelopes == []
        assert plain_storage.messages.count_documents({}) == 0
    finally:
        inner.close()


def test_an_allowed_prefix_is_fetched_and_its_redirects_are_checked_again(plain_storage, fenced, smtp_recorder):
    recorder, port = smtp_recorder
    inner = SeenServer()

    def to_inner(handler: Any, location: str) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.end_headers()

    allowed = SeenServer({
        "/files/to-inner": lambda h: to_inner(h, f"{inner.url}/secret?key=k"),
        "/files/to-localhost": lambda h: to_inner(h, f"http://localhost:{inner.port}/secret"),
        "/files/to-blob": lambda h: to_inner(h, "/files/blob"),  # a hop inside the prefix: followed
        "/files/loop": lambda h: to_inner(h, "/files/loop")})
    try:
        config = fenced.with_overrides(outbound_url_allow=f"{allowed.url}/files")
        sender = local_sender(plain_storage, config, port, smtpTls="none")
        sender.send("os", {**ARGS, "attachments": [{"name": "a.bin", "url": f"{allowed.url}/files/blob?key=k"},
                                                   {"name": "b.bin", "url": f"{allowed.url}/files/to-blob"}]})
        got = email.message_from_bytes(recorder.envelopes[0].original_content, policy=email.policy.default)
        assert [p.get_payload(decode=True) for p in got.iter_attachments()] == [_Files.blob, _Files.blob]

        for path in ("/files/to-inner", "/files/to-localhost"):
            with pytest.raises(RequestError, match="redirected to a URL that is refused: .*loopback"):
                sender.send("os", {**ARGS, "attachments": [{"name": "c", "url": f"{allowed.url}{path}"}]})
        with pytest.raises(RequestError, match="redirected more than 5 times"):
            sender.send("os", {**ARGS, "attachments": [{"name": "c", "url": f"{allowed.url}/files/loop"}]})
        for outside in (f"{allowed.url}/other", f"{allowed.url}/files/../other", f"{allowed.url}/filesx"):
            with pytest.raises(RequestError, match="non-public address"):
                sender.send("os", {**ARGS, "attachments": [{"name": "c", "url": outside}]})
        assert inner.requests == []
        assert not any(p.startswith(("/other", "/filesx", "/files/../")) for p in allowed.requests)
        assert len(recorder.envelopes) == 1
    finally:
        inner.close()
        allowed.close()


def test_the_connection_goes_to_the_checked_address_and_keeps_the_host_name(services):
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:  # a name only this "DNS" knows
        asked.append(host)
        return [(socket.AF_INET, ("127.0.0.1", port))]

    cert_dir = Path(services["CA_CERT"]).parent  # its certificate names localhost and 127.0.0.1
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_dir / "cert.pem", cert_dir / "key.pem")
    sni: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, context: sni.append(name)
    client_tls = ssl.create_default_context(cafile=str(cert_dir / "cert.pem"))
    outside = Fence(resolve=resolve, allow_loopback=True, context=client_tls)
    plain, secure = SeenServer(), SeenServer(tls=server_tls)
    try:
        got = outside.fetch(f"http://files.fence.test:{plain.port}/blob?key=k", timeout=5, max_bytes=10_000)
        assert (got.status, got.body, got.url) == (200, _Files.blob, f"http://files.fence.test:{plain.port}/blob")
        assert plain.requests == ["/blob?key=k"] and plain.httpd.hosts == [f"files.fence.test:{plain.port}"]
        assert outside.fetch(f"https://localhost:{secure.port}/x", timeout=5, max_bytes=10_000).body == _Files.blob
        assert sni == ["localhost"] and secure.httpd.hosts == [f"localhost:{secure.port}"]
        with pytest.raises(OutboundError, match="certificate verify failed .*Hostname mismatch"):
            outside.fetch(f"https://files.fence.test:{secure.port}/x", timeout=5, max_bytes=10_000)
        assert sni[-1] == "files.fence.test" and len(secure.requests) == 1  # checked against the name, not the IP
        assert asked == ["files.fence.test", "localhost", "files.fence.test"]  # once per fetch, then its answer
        with pytest.raises(OutboundTooLarge, match="answered more than 100 bytes"):
            outside.fetch(f"http://files.fence.test:{plain.port}/blob", timeout=5, max_bytes=100)
    finally:
        plain.close()
        secure.close()


def _trickle(handler: Any, *, headers_too: bool) -> None:
    """One byte every 0.5 s, for up to 30 s: each read alone is quick, the whole is not."""
    head = b"HTTP/1.0 200 OK\r\nContent-Length: 1000\r\n\r\n"
    if not headers_too:
        handler.wfile.write(head)
        head = b""
    try:
        for byte in head + b"x" * 60:
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()
            time.sleep(0.5)
    except OSError:  # the runtime gave up and closed
        pass


def test_a_trickling_server_cannot_hold_a_download_past_its_deadline(plain_storage, cfg, smtp_recorder):
    recorder, port = smtp_recorder
    slow = SeenServer({"/body": lambda h: _trickle(h, headers_too=False),
                       "/headers": lambda h: _trickle(h, headers_too=True)})
    try:
        sender = local_sender(plain_storage, cfg, port, smtpTls="none", timeout=1.0)  # the deadline: 4 s
        for path in ("/body", "/headers"):
            started = time.monotonic()
            with pytest.raises(RequestError, match="too slow to download"):
                sender.send("os", {**ARGS, "attachments": [{"name": "slow", "url": f"{slow.url}{path}"}]})
            assert time.monotonic() - started < 8, path  # the deadline, not the server's 30 s
        assert slow.requests == ["/body", "/headers"] and recorder.envelopes == []
    finally:
        slow.close()


def test_from_must_be_the_integrations_address_or_one_of_its_aliases(plain_storage, cfg, smtp_recorder):
    from kinds.imap.details import parse_details

    recorder, port = smtp_recorder
    sender = local_sender(plain_storage, cfg, port, smtpTls="none", aliases=["sales@shop.example", "help@shop.example"])
    for stranger in ("ceo@bank.example", "Me <me@shop.example.evil>", "sales@shop.example.com"):
        with pytest.raises(RequestError, match="is neither the address of integration inbox-l .me@shop.example. "
                                               "nor one of its aliases"):
            sender.send("os", {**ARGS, "from": stranger, "integrationId": "inbox-l"})
    assert recorder.envelopes == [] and plain_storage.messages.count_documents({}) == 0

    for given in ("me@shop.example", "Me <ME@shop.example>", "Sales Team <sales@shop.example>", None):
        sender.send("os", {**ARGS, "from": given, "integrationId": "inbox-l"})
    sender.send("os", {**ARGS, "from": "help@shop.example"})  # found by its alias, without integrationId
    froms = [email.message_from_bytes(e.original_content, policy=email.policy.default)["From"]
             for e in recorder.envelopes]
    assert froms == ["me@shop.example", "Me <ME@shop.example>", "Sales Team <sales@shop.example>",
                     "me@shop.example", "help@shop.example"]
    assert {e.mail_from for e in recorder.envelopes} == {"me@shop.example"}  # the envelope: the mailbox's own
    details = {"host": "127.0.0.1", "user": "me@shop.example", "password": "s3cret-pw"}
    assert parse_details({**details, "aliases": ["Sales@Shop.example", " help@shop.example", "sales@shop.example"]}
                         )["aliases"] == ["sales@shop.example", "help@shop.example"]
    for bad in ("sales", ["Sales <sales@shop.example>"], ["a@b.example, c@d.example"], [42], "x" * 3):
        with pytest.raises(RequestError, match="doc.data.aliases"):
            parse_details({**details, "aliases": bad})
