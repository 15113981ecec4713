"""kinds.imap.attachments.read_attachment with fakes at its seams (storage, supervisor, mailbox): every refusal."""
from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import pykka
import pytest
from bson import ObjectId

from runtime.errors import MailboxError
from runtime.mail.parse import parse_mail
from kinds.imap.attachments import AttachmentError, content_disposition, read_attachment


def raw_mail(message_id: str = "<m1@example.com>") -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.com"
    msg["To"] = "me@example.com"
    msg["Subject"] = "files"
    msg["Message-ID"] = message_id
    msg.set_content("see attached")
    msg.add_attachment(b"\x00\x01binary", maintype="application", subtype="octet-stream", filename="a.bin")
    return bytes(msg)


RAW = raw_mail()
DOC = {"_id": ObjectId(), "inboxIntegrationId": "inbox-1", "messageId": "<m1@example.com>", "folder": "INBOX",
       "uid": 7, "ingestState": "done", "attachments": parse_mail(RAW).attachments}


class FakeMessages:
    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs

    def find_one(self, query: dict[str, Any]) -> dict[str, Any] | None:
        return next((d for d in self.docs if all(d.get(k) == v for k, v in query.items())), None)


class FakeStorage:
    def __init__(self, *docs: dict[str, Any]) -> None:
        self.messages = FakeMessages(list(docs))

    def find_message(self, inbox_id: str, message_id: str) -> dict[str, Any] | None:
        return self.messages.find_one({"inboxIntegrationId": inbox_id, "messageId": message_id})

    def message_by_id(self, object_id: str, inbox_id: str) -> dict[str, Any] | None:
        if not ObjectId.is_valid(object_id):
            return None
        return self.messages.find_one({"_id": ObjectId(object_id), "inboxIntegrationId": inbox_id})


class FakeMailbox:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.fetched: list[tuple[str, int]] = []

    def fetch_raw(self, folder: str, uid: int) -> pykka.Future[Any]:
        self.fetched.append((folder, uid))
        future: pykka.Future[Any] = pykka.ThreadingFuture()
        if isinstance(self.answer, BaseException):
            future.set_exception((type(self.answer), self.answer, None))
        else:
            future.set(self.answer)
        return future


class FakeSupervisor:
    def __init__(self, mailbox: Any) -> None:
        self._mailbox = mailbox

    def mailbox(self, inbox_id: str, subdomain: str = "os") -> pykka.Future[Any]:
        future: pykka.Future[Any] = pykka.ThreadingFuture()
        future.set(self._mailbox if inbox_id == "inbox-1" else None)
        return future


def read(answer: Any = RAW, *, doc: dict[str, Any] = DOC, message_id: str | None = None,
         filename: str = "a.bin") -> tuple[str, str, bytes]:
    return read_attachment(FakeStorage(doc), FakeSupervisor(FakeMailbox(answer)), integration_id="inbox-1",
                           message_id=message_id or str(doc["_id"]), filename=filename, timeout=1)


def test_reads_the_part_by_filename_or_attachment_id():
    assert read() == ("a.bin", "application/octet-stream", b"\x00\x01binary")
    assert read(filename=DOC["attachments"][0]["attachmentId"])[2] == b"\x00\x01binary"
    assert read(message_id="m1@example.com")[2] == b"\x00\x01binary"


@pytest.mark.parametrize("answer, status, reason", [
    (MailboxError("mailbox inbox-1 is not connected (backoff)"), 503, "the mailbox is not connected"),
    (pykka.ActorDeadError("dead"), 503, "the mailbox is not connected"),
    (pykka.Timeout("slow"), 504, "the mailbox did not answer in time"),
    (OSError("connection reset"), 502, "the mail server could not deliver the mail"),
    (None, 404, "the mail is no longer on the mail server"),
    (raw_mail("<another@example.com>"), 404, "the mail is no longer on the mail server"),  # the UID was reused
])
def test_mailbox_failures(answer, status, reason):
    with pytest.raises(AttachmentError) as caught:
        read(answer)
    assert caught.value.status == status and caught.value.reason.startswith(reason)


def test_refusals_before_any_fetch():
    mailbox = FakeMailbox(RAW)
    cases = [({**DOC, "ingestState": "pending"}, "a.bin", "message not found"),
             (DOC, "other.bin", "attachment not found"),
             ({**DOC, "uid": None}, "a.bin", "this message's attachments were not kept on the mail server"),
             ({**DOC, "attachments": [{"filename": "a.bin"}]}, "a.bin",
              "this message's attachments were not kept on the mail server")]
    for doc, filename, reason in cases:
        with pytest.raises(AttachmentError, match=reason):
            read_attachment(FakeStorage(doc), FakeSupervisor(mailbox), integration_id="inbox-1",
                            message_id=str(doc["_id"]), filename=filename)
    with pytest.raises(AttachmentError, match="the mailbox is not connected"):
        read_attachment(FakeStorage({**DOC, "inboxIntegrationId": "inbox-2"}), FakeSupervisor(mailbox),
                        integration_id="inbox-2", message_id=str(DOC["_id"]), filename="a.bin")
    assert mailbox.fetched == []


@pytest.mark.parametrize("name, header", [
    ("report.pdf", "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"),
    ("Grüße 2024.txt", "attachment; filename=\"Gr__e 2024.txt\"; filename*=UTF-8''Gr%C3%BC%C3%9Fe%202024.txt"),
    ('../../etc/"passwd"\r\nX-Evil: 1',
     "attachment; filename=\"_.._etc_passwd_X-Evil_ 1\"; filename*=UTF-8''_.._etc_passwd_X-Evil_%201"),
    ("", "attachment; filename=\"attachment\"; filename*=UTF-8''attachment"),
])
def test_content_disposition_is_safe(name, header):
    assert content_disposition(name) == header
