"""Conversation: threads mails, calls inbox, stores the messages, announces them, and tells the mailboxes they are
done; a batch at a time.

Each step is idempotent so a re-fetched mail (after a crash or reconnect) completes what was left and repeats
nothing that finished (``runtime/storage.py``): an intent (with its thread's conversation id when known) is
recorded before inbox is called, the message document is inserted once the call is done, and the intent is
deleted once ``conversationClientMessageInserted`` went out. So a mail with an intent and no message is called
for (again), one with both is announced (again), one with only its message is done.
Work the lane's customer stage hands over with the mails (``runtime.pipeline.Later``: a new sender's customer
saved) runs after them, so it does not compete with their writes.
A conversation actor serves one lane (``actors/router.py``): the mails of one thread pass one lane in order, so two
mails of one new thread create one conversation. It takes every mail waiting in its backlog at once and writes
them together: one lookup of the known messages and the threads (and of the known ones' intents), one
``insert_many`` of the new intents, then the inbox calls one by one (a reply whose parent is in the same batch gets
the parent's conversation), one ``insert_many`` of the messages, then the announcements one by one, each mail's
intent deleted as soon as its announcement is confirmed (so a crash repeats at most one announcement per lane, not
a batch).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import bson
import pykka
from bson import ObjectId

from actors._answer import answer, is_transient
from runtime import metrics
from runtime.pipeline import Incoming
from runtime.errors import StorageError
from runtime.logctx import bind
from runtime.pipeline import Backlog, Later, ThreadMap, grouped, pick_thread, thread_ids, unique_rounds
from runtime.tenants import bound
from runtime.mail.loops import classify, is_own_mail
from runtime.storage import DONE, PENDING, STORED, utcnow

__all__ = ["Conversations", "ConversationActor"]

logger = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024  # MongoDB's limit on one document

Item = tuple[Incoming, str]  # a mail and its customer id


@dataclass
class Entry:
    """One mail of a batch and what storage knows of it."""
    job: Incoming
    message: dict[str, Any] | None  # its stored message document
    intent: dict[str, Any] | None  # its intent, until it is announced
    thread: str | None = None  # its thread's stored conversation, looked up for a mail still to be called for


class Conversations:
    def __init__(self, *, storage: Any, erxes: Any, finished: Callable[[Incoming], None] = lambda job: None) -> None:
        self._storage = storage
        self._erxes = erxes
        self._finished = finished  # told for each mail that leaves the pipeline

    def ingest_batch(self, items: list[Item]) -> None:
        """Store the mails in their conversations. Never raises: each outcome goes to its mailbox."""
        groups = grouped(items, lambda item: (item[0].subdomain, item[0].inbox_id))
        for (subdomain, inbox_id), group in groups.items():
            # a second copy of a Message-ID (another folder, a duplicate UID) waits for the first to be done
            for round_ in unique_rounds(group, lambda item: _message_id(item[0])):
                with bind(inbox_id, subdomain, kind=round_[0][0].kind), bound(subdomain):
                    self._ingest_round(round_)

    def _ingest_round(self, items: list[Item]) -> None:
        mine = []
        for job, customer_id in items:
            if is_own_mail(job.mail, job.inbox_id):
                logger.debug("Skipping our own mail %s coming back to %s", _message_id(job), job.inbox_id)
                self._answer(job, "mail_done")
            else:
                mine.append((job, customer_id))
        if not mine:
            return
        try:
            entries = self._record(mine)
        except Exception as exc:  # noqa: BLE001 - reported to the mailboxes, which retry
            self._fail([job for job, _ in mine], exc)
            return
        called, unannounced, done, oversized = self._call_inbox(entries)
        if oversized:  # before any call: inbox must not get a conversation whose message cannot be stored
            self._set_aside_too_large(oversized)
        if called:
            try:
                stored = self._storage.store_messages([self._message(entry, conversation)
                                                       for entry, conversation in called])
            except Exception as exc:  # noqa: BLE001 - the intents stay: the re-fetch calls again
                self._fail([entry.job for entry, _ in called], exc)
                stored = []
            too_large = []
            for (entry, _), doc in zip(called, stored):
                if doc is None:  # over MongoDB's 16 MiB: it fails alone, the rest of the batch goes on
                    too_large.append(entry)
                    continue
                entry.message = doc
                unannounced.append(entry)
            if too_large:
                self._set_aside_too_large(too_large)
        announced: list[Entry] = []
        for entry, error in zip(unannounced, self._announce(unannounced)):
            if error is None:
                announced.append(entry)
            else:
                self._fail([entry.job], error)
        for entry in announced:
            metrics.mail_ingested(entry.job.fetched_at)  # latency: fetched over IMAP -> stored and announced
            logger.debug("Stored %s in conversation %s", _message_id(entry.job),
                         entry.message and entry.message.get("inboxConversationId"))
            self._answer(entry.job, "mail_done")
        if announced:  # one INFO line per stored batch of a mailbox: count and latency since the IMAP fetch
            waits = [(utcnow() - e.job.fetched_at).total_seconds() for e in announced if e.job.fetched_at]
            logger.info("Stored %d mail(s) of %s in %.2f s (max, since fetched)", len(announced),
                        announced[0].job.inbox_id, max(waits, default=0.0))
        for job in done:
            self._answer(job, "mail_done")  # done before (an earlier fetch, or erxes's own plugin)

    def _record(self, items: list[Item]) -> list[Entry]:
        """What storage knows of each mail, with the intents of the new ones recorded. A mail still to be called
        for comes with the conversation of its thread when that is stored already."""
        inbox_id = items[0][0].inbox_id
        ids = [_message_id(job) for job, _ in items]
        # the stored messages of the batch (without their bodies) and its replies' threads, in one round trip
        # unless some mail answers another (a thread candidate of a mail stored already is not used)
        known, candidates = self._storage.batch_lookup(inbox_id, ids, [m for job, _ in items
                                                                      for m in thread_ids(job.mail)])
        # the intents of stored messages tell which still wait for their announcement; those of the others come
        # back from record_intents (the earlier one of a duplicate), so a batch of new mail asks for none
        intents = self._storage.find_intents(inbox_id, list(known)) if known else {}
        for message_id, doc in list(known.items()):
            if doc.get("ingestState") in (PENDING, STORED):  # written by a version before intents
                intents[message_id] = self._storage.adopt_legacy_message(doc)
                if doc["ingestState"] == PENDING:
                    del known[message_id]
        unannounced = [m for m in known if m in intents]
        if unannounced:  # after a crash: announced again, which takes the whole document (its body)
            known.update(self._storage.find_messages(inbox_id, unannounced))
        to_call = [job for job, _ in items if _message_id(job) not in known]
        threads = {_message_id(job): pick_thread(candidates, thread_ids(job.mail)) for job in to_call}
        new = {}
        for job, customer_id in items:
            message_id = _message_id(job)
            if message_id not in known and message_id not in intents and message_id not in new:
                new[message_id] = self._intent(job, customer_id, threads[message_id])
        intents.update(self._storage.record_intents(list(new.values())))
        return [Entry(job, known.get(_message_id(job)), intents.get(_message_id(job)),
                      threads.get(_message_id(job))) for job, _ in items]

    def _call_inbox(self, entries: list[Entry]) -> tuple[list[tuple[Entry, str]], list[Entry], list[Incoming],
                                                         list[Entry]]:
        """Create or update the conversation of each mail not stored yet, in order; returns (called now with their
        conversations, stored but not announced, done before, too large to store: not called for)."""
        threads = ThreadMap()
        called: list[tuple[Entry, str]] = []
        unannounced: list[Entry] = []
        done: list[Incoming] = []
        oversized: list[Entry] = []
        for n, entry in enumerate(entries):
            job, intent = entry.job, entry.intent
            if entry.message is not None:
                conversation_id = entry.message.get("inboxConversationId")
                if intent is not None:
                    unannounced.append(entry)
                else:
                    done.append(job)
            elif intent is None:  # its intent vanished meanwhile (another node finished the mail): look again
                self._fail([job], StorageError("the mail's intent vanished while it was recorded"))
                continue
            elif self._too_large(entry):
                oversized.append(entry)
                continue
            else:
                # a reply to a mail of this batch: the parent's conversation, called for just before
                conversation_id = intent.get("inboxConversationId") or entry.thread or threads.find(job.mail)
                try:
                    conversation_id = self._erxes.create_or_update_conversation(
                        job.subdomain, inbox_id=job.inbox_id, customer_id=intent["customerId"],
                        created_at=intent["createdAt"], content=job.mail.subject,  # type: ignore[attr-defined]
                        conversation_id=conversation_id, idempotency_key=f"{job.inbox_id}/{intent['messageId']}")
                except Exception as exc:  # noqa: BLE001
                    if is_transient(exc):  # an outage: the rest of the batch fails at once, not one timeout each
                        self._fail([e.job for e in entries[n:]], exc)
                        break
                    self._fail([job], exc)
                    continue
                called.append((entry, conversation_id))
            if conversation_id:
                threads.add(job.mail, conversation_id)
        return called, unannounced, done, oversized

    def _too_large(self, entry: Entry) -> bool:
        """Whether the mail's message document is over MongoDB's 16 MiB, known before inbox is called: only a
        document whose strings alone come near it is encoded to tell (a few in a million)."""
        mail: Any = entry.job.mail
        rough = len(mail.html) * 4 + sum(len(r) for r in mail.references) + 300 * len(mail.attachments)
        if rough < MAX_DOCUMENT_BYTES // 2:
            return False
        return len(bson.encode(self._message(entry, "0" * 24))) > MAX_DOCUMENT_BYTES

    def _announce(self, pending: list[Entry]) -> list[Exception | None]:
        """Publish ``conversationClientMessageInserted`` for each, one after another, and delete its intent right
        after the broker's confirmation: a kill repeats at most the one announcement of this lane that was
        published and not yet recorded at that instant, never a whole batch's (issue 14; side by side, 8 at a
        time, a kill repeated about 2, and a batch's intents deleted together after its last, about 4).
        Returns each one's error, or None."""
        errors: list[Exception | None] = []
        for entry in pending:
            doc = entry.message
            assert doc is not None
            try:
                self._erxes.message_inserted(entry.job.subdomain, message_id=str(doc["_id"]), content=doc["body"],
                                             conversation_id=doc["inboxConversationId"])
                if entry.intent is not None:
                    self._storage.clear_intents([entry.intent["_id"]])
            except Exception as exc:  # noqa: BLE001 - reported for this mail: announced again on the re-fetch
                errors.append(exc)
            else:
                errors.append(None)
        return errors

    def _set_aside_too_large(self, entries: list[Entry]) -> None:
        """Mails whose message document MongoDB cannot hold: quarantined at once by their mailbox (never retried, so
        inbox is not called again), their intents dropped."""
        try:
            self._storage.clear_intents([entry.intent["_id"] for entry in entries if entry.intent])
        except Exception as exc:  # noqa: BLE001 - an intent left behind only waits for a mail that never comes back
            logger.warning("Cannot drop the intents of %d mail(s) too large to store: %s", len(entries), exc)
        for entry in entries:
            self._answer(entry.job, "mail_rejected", "its message document is over MongoDB's 16 MiB limit "
                                                     "(DocumentTooLarge): the mail cannot be stored")

    def _fail(self, jobs: list[Incoming], exc: Exception) -> None:
        for job in jobs:
            logger.warning("Storing %s UID %d (%s) failed: %s", job.inbox_id, job.uid, job.folder, exc)
            self._answer(job, "mail_failed", f"conversation: {exc}", is_transient(exc))

    def _answer(self, job: Incoming, method: str, *args: Any) -> None:
        self._finished(job)
        answer(job.mailbox, method, job.folder, job.uid, *args)

    @staticmethod
    def _intent(job: Incoming, customer_id: str, conversation_id: str | None) -> dict[str, Any]:
        """A new mail's intent: the future message's ``_id`` and what must not change between attempts."""
        created_at, received_at = _times(job)
        return {"_id": ObjectId(), "inboxIntegrationId": job.inbox_id, "messageId": _message_id(job),
                "customerId": customer_id, "inboxConversationId": conversation_id, "createdAt": created_at,
                "receivedAt": received_at}

    @classmethod
    def _message(cls, entry: Entry, conversation_id: str) -> dict[str, Any]:
        """The message document of a mail whose conversation call is done (its intent's ``_id`` and values)."""
        intent = entry.intent
        assert intent is not None
        return {**cls._document(entry.job, intent["customerId"], conversation_id), "_id": intent["_id"],
                "createdAt": intent["createdAt"], "receivedAt": intent["receivedAt"], "ingestState": DONE}

    @staticmethod
    def _document(job: Incoming, customer_id: str, conversation_id: str | None) -> dict[str, Any]:
        mail: Any = job.mail
        created_at, received_at = _times(job)
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
            "createdAt": created_at,
            "receivedAt": received_at,
            "type": "INBOX",
            "autoSubmitted": classify(mail),  # "auto-reply"/"bounce": ingested, but nothing may answer it
            "folder": job.folder,
            "uid": job.uid,
            "size": mail.size,
        }


def _times(job: Incoming) -> tuple[Any, Any]:
    """A mail's ``createdAt`` (its Date, else when it was fetched) and ``receivedAt`` (when it was fetched)."""
    received_at = job.fetched_at or utcnow()
    return job.mail.date or received_at, received_at  # type: ignore[attr-defined]


def _message_id(job: Incoming) -> str:
    return job.mail.message_id  # type: ignore[attr-defined, no-any-return]


class ConversationActor(pykka.ThreadingActor, Conversations):
    """One lane's conversation stage: ``backlog.wake`` tells it to :meth:`work` off everything waiting."""

    def __init__(self, *, backlog: Backlog, **kwargs: Any) -> None:
        pykka.ThreadingActor.__init__(self)
        Conversations.__init__(self, **kwargs)
        self._backlog = backlog

    def work(self) -> None:
        items = self._backlog.take()
        self.ingest_batch([item for item in items if not isinstance(item, Later)])
        for item in items:  # after the mails: their writes first (e.g. a new sender's customer, saved after)
            if isinstance(item, Later):
                try:
                    item.run()
                except Exception:  # noqa: BLE001 - a cache write: the next mail does without it
                    logger.exception("Deferred work of the customer stage failed")
