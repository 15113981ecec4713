"""Conversation: threads mails, calls inbox, stores the messages, announces them, and tells the mailboxes they are
done; a batch at a time.

Each step is idempotent so a re-fetched mail (after a crash or reconnect) completes what was left and repeats
nothing that finished: the message document records the intent (``pending``, with its conversation id once
known) before inbox is called, ``stored`` after, and ``done`` once ``conversationClientMessageInserted`` went out.
A conversation actor serves one lane (``actors/router.py``): the mails of one thread pass one lane in order, so two
mails of one new thread create one conversation. It takes every mail waiting in its backlog at once and writes
them together: one lookup of the known messages and threads, one ``insert_many`` of the intents, then the inbox
calls one by one (a reply whose parent is in the same batch gets the parent's conversation), one ``bulk_write``
of the ``stored`` states, the announcements side by side, one update to ``done``.
"""
from __future__ import annotations

import concurrent.futures
import logging
from typing import Any, Callable

import pykka

from actors._answer import answer, is_transient
from runtime import metrics
from runtime.cursor import Incoming
from runtime.logctx import bind
from runtime.pipeline import Backlog, ThreadMap, grouped, pick_thread, thread_ids, unique_rounds
from runtime.tenants import bound
from runtime.loops import classify, is_own_mail
from runtime.storage import DONE, PENDING, STORED, utcnow

__all__ = ["Conversations", "ConversationActor"]

logger = logging.getLogger(__name__)

Item = tuple[Incoming, str]  # a mail and its customer id
ANNOUNCERS = 8  # threads per lane publishing a batch's announcements side by side


class Conversations:
    def __init__(self, *, storage: Any, erxes: Any, finished: Callable[[Incoming], None] = lambda job: None,
                 announcer: concurrent.futures.Executor | None = None) -> None:
        self._storage = storage
        self._erxes = erxes
        self._finished = finished  # told for each mail that leaves the pipeline
        self._announcer = announcer  # publishes a batch's announcements side by side

    def ingest(self, job: Incoming, customer_id: str) -> None:
        self.ingest_batch([(job, customer_id)])

    def ingest_batch(self, items: list[Item]) -> None:
        """Store the mails in their conversations. Never raises: each outcome goes to its mailbox."""
        groups = grouped(items, lambda item: (item[0].subdomain, item[0].inbox_id))
        for (subdomain, inbox_id), group in groups.items():
            # a second copy of a Message-ID (another folder, a duplicate UID) waits for the first to be done
            for round_ in unique_rounds(group, lambda item: _message_id(item[0])):
                with bind(inbox_id, subdomain), bound(subdomain):
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
            docs = self._record(mine)
        except Exception as exc:  # noqa: BLE001 - reported to the mailboxes, which retry
            self._fail([job for job, _ in mine], exc)
            return
        called, stored, done = self._call_inbox([job for job, _ in mine], docs)
        if called:
            try:
                self._storage.set_conversations_stored([(doc["_id"], conversation) for _, doc, conversation in called])
            except Exception as exc:  # noqa: BLE001
                self._fail([job for job, _, _ in called], exc)
                called = []
        announced: list[tuple[Incoming, dict[str, Any], str]] = []
        pending = [*stored, *called]
        for item, error in zip(pending, self._announce(pending)):
            if error is None:
                announced.append(item)
            else:
                self._fail([item[0]], error)
        if announced:
            try:
                self._storage.set_messages_state([doc["_id"] for _, doc, _ in announced], DONE)
            except Exception as exc:  # noqa: BLE001
                self._fail([job for job, _, _ in announced], exc)
                announced = []
        for job, doc, conversation in announced:
            metrics.mail_ingested(job.fetched_at)  # latency: fetched over IMAP -> stored and announced
            logger.debug("Stored %s in conversation %s", doc["messageId"], conversation)
            self._answer(job, "mail_done")
        for job in done:
            self._answer(job, "mail_done")  # done before (an earlier fetch, or erxes's own plugin)

    def _record(self, items: list[Item]) -> list[dict[str, Any]]:
        """The message documents of ``items``: the stored ones, and the intents of the new ones, recorded. A
        pending one comes with the conversation of its thread when that is stored already."""
        inbox_id = items[0][0].inbox_id
        known = self._storage.find_messages(inbox_id, [_message_id(job) for job, _ in items])

        def unthreaded(job: Incoming) -> bool:  # new, or pending without a conversation
            doc = known.get(_message_id(job))
            return doc is None or (doc.get("ingestState") == PENDING and not doc.get("inboxConversationId"))

        jobs = [job for job, _ in items if unthreaded(job)]
        ids = [m for job in jobs for m in thread_ids(job.mail)]
        candidates = self._storage.thread_candidates(inbox_id, ids) if ids else []
        threads = {_message_id(job): pick_thread(candidates, thread_ids(job.mail)) for job in jobs}
        new = self._storage.record_pending_many([self._document(job, customer_id, threads[_message_id(job)])
                                                 for job, customer_id in items if _message_id(job) not in known])
        known.update((doc["messageId"], doc) for doc in new)
        docs = [known[_message_id(job)] for job, _ in items]
        # after a crash between the inbox call and the ``stored`` write: threaded again rather than anew
        return [{**doc, "inboxConversationId": threads[doc["messageId"]]} if unthreaded(job) and threads.get(
            doc["messageId"]) else doc for (job, _), doc in zip(items, docs)]

    def _call_inbox(self, jobs: list[Incoming], docs: list[dict[str, Any]]) -> tuple[list[Any], list[Any], list[Any]]:
        """Create or update the conversation of each pending message, in order; returns (called now, stored
        before, done before)."""
        threads = ThreadMap()
        called: list[tuple[Incoming, dict[str, Any], str]] = []
        stored: list[tuple[Incoming, dict[str, Any], str]] = []
        done: list[Incoming] = []
        for n, (job, doc) in enumerate(zip(jobs, docs)):
            state = doc.get("ingestState", DONE)  # documents written by erxes's own plugin have no state
            conversation_id = doc.get("inboxConversationId")
            if state == PENDING:
                # a reply to a mail of this batch: the parent's conversation, called for just before
                conversation_id = conversation_id or threads.find(job.mail)
                try:
                    conversation_id = self._erxes.create_or_update_conversation(
                        job.subdomain, inbox_id=job.inbox_id, customer_id=doc["customerId"],
                        created_at=doc["createdAt"], content=doc["subject"], conversation_id=conversation_id,
                        idempotency_key=f"{job.inbox_id}/{doc['messageId']}")
                except Exception as exc:  # noqa: BLE001
                    if is_transient(exc):  # an outage: the rest of the batch fails at once, not one timeout each
                        self._fail(jobs[n:], exc)
                        break
                    self._fail([job], exc)
                    continue
                called.append((job, doc, conversation_id))
            elif state == STORED:
                stored.append((job, doc, conversation_id))
            else:
                done.append(job)
            if conversation_id:
                threads.add(job.mail, conversation_id)
        return called, stored, done

    def _announce(self, pending: list[tuple[Incoming, dict[str, Any], str]]) -> list[Exception | None]:
        """Publish ``conversationClientMessageInserted`` for each; all at once when there is an ``announcer``, so
        the batch waits for one confirmation rather than one after another (and a kill before the ``done`` write
        repeats few). Returns each one's error, or None."""
        def announce(item: tuple[Incoming, dict[str, Any], str]) -> Exception | None:
            job, doc, conversation = item
            try:
                self._erxes.message_inserted(job.subdomain, message_id=str(doc["_id"]), content=doc["body"],
                                             conversation_id=conversation)
            except Exception as exc:  # noqa: BLE001 - reported for this mail
                return exc
            return None

        if self._announcer is None or len(pending) < 2:
            return [announce(item) for item in pending]
        return list(self._announcer.map(announce, pending))

    def _fail(self, jobs: list[Incoming], exc: Exception) -> None:
        for job in jobs:
            logger.warning("Storing %s UID %d (%s) failed: %s", job.inbox_id, job.uid, job.folder, exc)
            self._answer(job, "mail_failed", f"conversation: {exc}", is_transient(exc))

    def _answer(self, job: Incoming, method: str, *args: Any) -> None:
        self._finished(job)
        answer(job.mailbox, method, job.folder, job.uid, *args)

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


def _message_id(job: Incoming) -> str:
    return job.mail.message_id  # type: ignore[attr-defined, no-any-return]


class ConversationActor(pykka.ThreadingActor, Conversations):
    """One lane's conversation stage: ``backlog.wake`` tells it to :meth:`work` off everything waiting."""

    def __init__(self, *, backlog: Backlog, **kwargs: Any) -> None:
        pykka.ThreadingActor.__init__(self)
        Conversations.__init__(self, announcer=concurrent.futures.ThreadPoolExecutor(
            ANNOUNCERS, thread_name_prefix="announce"), **kwargs)
        self._backlog = backlog

    def work(self) -> None:
        self.ingest_batch(self._backlog.take())

    def on_stop(self) -> None:
        if self._announcer is not None:
            self._announcer.shutdown(wait=True)
