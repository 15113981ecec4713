"""Conversation: threads a mail, calls inbox, stores the message, announces it, and tells the mailbox it is done.

Each step is idempotent so a re-fetched mail (after a crash or reconnect) completes what was left and repeats
nothing that finished: the message document records the intent (``pending``, with its conversation id once
known) before inbox is called, ``stored`` after, and ``done`` once ``conversationClientMessageInserted`` went out.
One actor serializes the work, so two mails of one new thread create one conversation.
"""
from __future__ import annotations

import logging
from typing import Any

import pykka

from actors._answer import answer, is_transient
from runtime import metrics
from runtime.cursor import Incoming
from runtime.logctx import bind
from runtime.tenants import bound
from runtime.loops import classify, is_own_mail
from runtime.storage import DONE, PENDING, STORED, utcnow

__all__ = ["Conversations", "ConversationActor"]

logger = logging.getLogger(__name__)


class Conversations:
    def __init__(self, *, storage: Any, erxes: Any) -> None:
        self._storage = storage
        self._erxes = erxes

    def ingest(self, job: Incoming, customer_id: str) -> None:
        """Store ``job``'s mail in its conversation. Never raises: the outcome goes to the mailbox."""
        with bind(job.inbox_id, job.subdomain), bound(job.subdomain):
            self._ingest(job, customer_id)

    def _ingest(self, job: Incoming, customer_id: str) -> None:
        try:
            self.store(job, customer_id)
        except Exception as exc:  # noqa: BLE001 - reported to the mailbox, which retries
            logger.warning("Storing %s UID %d (%s) failed: %s", job.inbox_id, job.uid, job.folder, exc)
            answer(job.mailbox, "mail_failed", job.folder, job.uid, f"conversation: {exc}", is_transient(exc))
            return
        answer(job.mailbox, "mail_done", job.folder, job.uid)

    def store(self, job: Incoming, customer_id: str) -> dict[str, Any] | None:
        mail: Any = job.mail
        if is_own_mail(mail, job.inbox_id):
            logger.debug("Skipping our own mail %s coming back to %s", mail.message_id, job.inbox_id)
            return None
        doc = self._storage.find_message(job.inbox_id, mail.message_id)
        if doc is None:
            thread = self._storage.find_thread_conversation(job.inbox_id, [mail.in_reply_to, *mail.references])
            doc = self._storage.record_pending(self._document(job, customer_id, thread))
        state = doc.get("ingestState", DONE)  # documents written by erxes's own plugin have no state
        conversation_id = doc.get("inboxConversationId")
        if state == PENDING:
            conversation_id = self._erxes.create_or_update_conversation(
                job.subdomain, inbox_id=job.inbox_id, customer_id=doc["customerId"], created_at=doc["createdAt"],
                content=doc["subject"], conversation_id=conversation_id,
                idempotency_key=f"{job.inbox_id}/{mail.message_id}")
            self._storage.set_message_conversation(doc["_id"], conversation_id, STORED)
            state = STORED
        if state == STORED:
            self._erxes.message_inserted(job.subdomain, message_id=str(doc["_id"]), content=doc["body"],
                                         conversation_id=conversation_id)
            self._storage.set_message_state(doc["_id"], DONE)
            metrics.mail_ingested(job.fetched_at)  # latency: fetched over IMAP -> stored and announced
            logger.debug("Stored %s in conversation %s", mail.message_id, conversation_id)
        return doc

    @staticmethod
    def _document(job: Incoming, customer_id: str, conversation_id: str | None) -> dict[str, Any]:
        mail: Any = job.mail
        return {
            "inboxIntegrationId": job.inbox_id,
            "inboxConversationId": conversation_id,
            "customerId": customer_id,
            "messageId": mail.message_id,
            "syntheticMessageId": mail.synthetic_id,
            "subject": mail.subject,
            "inReplyTo": mail.in_reply_to,
            "references": list(mail.references),
            "body": mail.html,
            "from": list(mail.from_),
            "to": list(mail.to),
            "cc": list(mail.cc),
            "bcc": list(mail.bcc),
            "replyTo": list(mail.reply_to),
            "attachments": [{k: a.get(k) for k in ("filename", "mimeType", "type", "size", "attachmentId",
                                                   "contentId", "partIndex")} for a in mail.attachments],
            "createdAt": mail.date or job.fetched_at or utcnow(),
            "receivedAt": job.fetched_at or utcnow(),
            "type": "INBOX",
            "autoSubmitted": classify(mail),  # "auto-reply"/"bounce": ingested, but nothing may answer it
            "folder": job.folder,
            "uid": job.uid,
            "size": mail.size,
        }


class ConversationActor(pykka.ThreadingActor, Conversations):
    def __init__(self, **kwargs: Any) -> None:
        pykka.ThreadingActor.__init__(self)
        Conversations.__init__(self, **kwargs)
