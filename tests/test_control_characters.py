"""Issue 12 item 10: Message-IDs with NUL or other control characters are refused at the door, in ingest parsing
and in a send's inReplyTo/references/replyToMessageId/headerId, so none reaches a header or a query."""
from __future__ import annotations

import pytest

from runtime.mail.headers import CONTROL
from runtime.errors import RpcError
from runtime.mail.build import normalize_message_id, thread_references
from runtime.mail.parse import parse_mail
from tests.conftest import wait_for
from tests.e2e import connect_mailbox
from tests.test_sending import mails

CONTROLS = ["\x00", "\x01", "\x1b", "\x7f", "\x85"]


def raw_mail(to: str, message_id: str, in_reply_to: str, references: str) -> bytes:
    return (f"From: Eve <eve@example.com>\r\nTo: {to}\r\nSubject: controls\r\nMessage-ID: {message_id}\r\n"
            f"In-Reply-To: {in_reply_to}\r\nReferences: {references}\r\n\r\nhello\r\n").encode("utf-8")


@pytest.mark.parametrize("char", CONTROLS)
def test_ingest_refuses_ids_with_control_characters(char: str) -> None:
    """Refused (NUL, ESC, DEL...: a synthetic Message-ID instead), or stripped where the character is folding
    whitespace to Python (NEL, U+0085); either way no id keeps it."""
    mail = parse_mail(raw_mail("a@example.com", f"<evil{char}id@example.com>", f"<parent{char}@example.com>",
                               f"<good@example.com> <bad{char}@example.com>"))
    ids = [mail.message_id, mail.in_reply_to or "", *mail.references]
    assert not any(CONTROL.search(i) for i in ids), ids
    if char != "\x85":
        assert mail.synthetic_id and mail.in_reply_to is None and mail.references == ["<good@example.com>"]
    bare = parse_mail(raw_mail("a@example.com", f"evil{char}id", "<p@example.com>", "<p@example.com>"))
    assert not CONTROL.search(bare.message_id)


def test_building_drops_ids_with_control_characters() -> None:
    assert normalize_message_id("<a\x00b@example.com>") is None
    assert normalize_message_id("<ok@example.com>") == "<ok@example.com>"
    assert thread_references(["<x\x01@example.com>", "<y@example.com>"], "<p\r\n@example.com>") == [
        "<y@example.com>"]


def test_a_mail_with_control_characters_in_its_ids_is_stored_without_them(runtime, caller, mailserver, db):
    user, password = connect_mailbox(caller, mailserver, db, "inbox-ctl")
    mailserver.append(user, password, raw_mail(f"{user}@localhost", "<evil\x01id@example.com>",
                                               "<parent\x1b@example.com>", "<good@example.com> <bad\x7f@example.com>"))
    [message] = wait_for(lambda: list(db.imap_messages.find({"inboxIntegrationId": "inbox-ctl",
                                                             "ingestState": "done"})), timeout=10)
    assert message["syntheticMessageId"] is True and "\x01" not in message["messageId"]
    assert message["inReplyTo"] is None and message["references"] == ["<good@example.com>"]


def test_send_arguments_with_control_characters_are_refused_and_nothing_is_sent(runtime, caller, mailserver, db):
    staff, _ = connect_mailbox(caller, mailserver, db, "inbox-ctl-send")
    customer, customer_pw = mailserver.add_user("cust")
    args = {"from": f"{staff}@localhost", "to": [f"{customer}@localhost"], "subject": "Hi", "body": "x"}
    for key, value in (("inReplyTo", "<a\x00b@example.com>"), ("replyToMessageId", "<a\rBcc: x@example.com>"),
                       ("headerId", "<h\x01@example.com>"), ("references", ["<ok@example.com>", "<r\n@example.com>"]),
                       ("references", "<ok@example.com> <r\x7f@example.com>")):
        with pytest.raises(RpcError, match=f"{key} must not contain control characters"):
            caller.call("imapMessage.create", {**args, key: value})
    assert mails(mailserver, customer, customer_pw) == []
    assert db.imap_messages.count_documents({"type": "SENT"}) == 0
