"""``POST /receive`` over real HTTP against an in-process runtime: signed pushes are ingested exactly once."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest

from app.process import Runtime
from kinds.imap.push import sign, verify
from tests.conftest import make_mail, wait_for
from tests.e2e import Caller, runtime_config


@pytest.fixture
def runtime(services: dict[str, str], mongo_url: str, prefix: str) -> Iterator[Runtime]:
    rt = Runtime(runtime_config(services, mongo_url=mongo_url, prefix=prefix, max_mail_bytes=64 * 1024))
    try:
        rt.start()
        yield rt
    finally:
        rt.stop()


def post(runtime: Runtime, body: bytes, *, inbox_id: str = "push-1", signature: str | None = None
         ) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://127.0.0.1:{runtime.web_port}/receive?integrationId={inbox_id}",
                                     data=body, method="POST", headers={"Content-Type": "message/rfc822"})
    if signature:
        request.add_header("X-Imap-Runtime-Signature", signature)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_signed_push_is_ingested_exactly_once(runtime, amqp_url, prefix, mailserver, db):
    caller = Caller(amqp_url, prefix)
    try:
        user, password = mailserver.add_user()
        caller.create_integration("push-1", mailserver.details(user, password))
    finally:
        caller.close()
    secret = runtime.storage.get_integration("push-1")["webhookSecret"]  # sealed in MongoDB
    raw = make_mail(to=f"{user}@localhost", subject="pushed", message_id="<push@example.com>")

    status, body = post(runtime, raw, signature=sign(secret, raw))
    assert status == 200 and body["duplicate"] is False and body["conversationId"]
    status, again = post(runtime, raw, signature=sign(secret, raw))
    assert status == 200 and again == {**body, "duplicate": True}
    [message] = list(db.imap_messages.find({"inboxIntegrationId": "push-1"}))
    assert message["subject"] == "pushed" and message["ingestState"] == "done"
    wait_for(lambda: db.standalone_message_notifications.count_documents({}) == 1, timeout=5)
    assert db.standalone_conversations.count_documents({"integrationId": "push-1"}) == 1

    assert post(runtime, raw, signature=sign("not-the-secret", raw))[0] == 401
    assert post(runtime, raw)[0] == 401
    status, reason = post(runtime, b"\x00\x01\x02", signature=sign(secret, b"\x00\x01\x02"))
    assert status == 400 and "not a mail" in reason["error"]
    senderless = make_mail(to=f"{user}@localhost", sender="undisclosed-recipients:;", message_id="<nofrom@x>")
    status, reason = post(runtime, senderless, signature=sign(secret, senderless))
    assert status == 400 and "no usable sender" in reason["error"]
    big = make_mail(to="x@y", body="x" * 100_000)
    status, reason = post(runtime, big, signature=sign(secret, big))
    assert status == 413 and "limit" in reason["error"]
    assert post(runtime, raw, inbox_id="nope", signature=sign(secret, raw))[0] == 404
    assert db.imap_messages.count_documents({}) == 1
    for response in (body, again, reason):
        assert secret not in json.dumps(response)


def test_a_signature_with_letters_outside_ascii_is_401_not_500(runtime, amqp_url, prefix, mailserver, db):
    """issue 12 item 10: ``hmac.compare_digest`` raised TypeError on a non-ASCII str (HTTP 500)."""
    caller = Caller(amqp_url, prefix)
    try:
        user, password = mailserver.add_user()
        caller.create_integration("push-2", mailserver.details(user, password))
    finally:
        caller.close()
    raw = make_mail(to=f"{user}@localhost", subject="pushed")
    for signature in ("sha256=\u00e9t\u00e9", "\u00ff" * 71, "sha256=" + "\u00e4" * 64):
        status, body = post(runtime, raw, inbox_id="push-2", signature=signature)
        assert status == 401 and "signature" in body["error"].lower(), (signature, status, body)
    assert db.imap_messages.count_documents({}) == 0
    assert not verify("secret", raw, "sha256=\u00e9") and not verify("secret", raw, "\udcff")
