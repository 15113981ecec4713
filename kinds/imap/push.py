"""Push ingestion: a raw mail handed to us (``POST /receive``) instead of fetched by IDLE.

It goes through the same customer -> conversation pipeline as fetched mail, so it is idempotent on Message-ID in
the same way. Each integration has its own webhook secret (generated at creation); a push is signed with
``X-Imap-Runtime-Signature: sha256=<hex HMAC-SHA256 of the body>``.
"""
from __future__ import annotations

import threading
from typing import Any

from runtime.errors import MailboxError, MailRejected, RequestError
from runtime.mail.parse import parse_mail
from runtime.pipeline import Incoming
from runtime.signing import sign, verify
from runtime.storage import utcnow

__all__ = ["PushIngest", "sign", "verify"]

PUSH_FOLDER = "(push)"


class _Outcome:
    """Stands in for the mailbox: the pipeline answers ``mail_done``/``mail_failed`` here."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.error: str | None = None
        self.rejected = False

    def mail_done(self, folder: str, uid: int) -> None:
        self.event.set()

    def mail_failed(self, folder: str, uid: int, error: str, transient: bool = False) -> None:
        self.error = error
        self.event.set()

    def mail_rejected(self, folder: str, uid: int, reason: str) -> None:
        self.rejected = True
        self.mail_failed(folder, uid, reason)


class PushIngest:
    def __init__(self, *, storage: Any, pipeline: Any, timeout: float = 60.0) -> None:
        self._storage = storage
        self._pipeline = pipeline  # the customer actor's proxy
        self._timeout = timeout

    def ingest(self, inbox_id: str, raw: bytes, subdomain: str = "os") -> dict[str, Any]:
        """Store ``raw`` in ``inbox_id``; returns ``{messageId, conversationId, duplicate}``. Raises
        MailParseError for bytes that are not a mail, MailboxError when the pipeline failed or timed out."""
        mail = parse_mail(raw)
        known = self._storage.find_message(inbox_id, mail.message_id)
        if (known is not None and known.get("ingestState", "done") == "done"
                and not self._storage.find_intents(inbox_id, [mail.message_id])):  # stored and announced
            return {"messageId": mail.message_id, "conversationId": known.get("inboxConversationId"),
                    "duplicate": True}
        outcome = _Outcome()
        self._pipeline.resolve(Incoming(inbox_id, subdomain, PUSH_FOLDER, 0, mail, outcome, utcnow(), kind="imap"))
        if not outcome.event.wait(self._timeout):
            raise MailboxError(f"the mail was not stored within {self._timeout:.0f} s; push it again")
        if outcome.rejected:
            raise MailRejected(f"the mail was not stored: {outcome.error}")
        if outcome.error is not None:
            raise MailboxError(f"the mail was not stored: {outcome.error}")
        stored = self._storage.find_message(inbox_id, mail.message_id)
        if stored is None:
            raise RequestError("the mail was not stored: it is this integration's own mail")
        return {"messageId": mail.message_id, "conversationId": stored.get("inboxConversationId"),
                "duplicate": False}
