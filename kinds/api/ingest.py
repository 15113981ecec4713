"""Inbound messages of the ``api`` kind, exactly once per (integration, ``messageId``) (spec api-kind.md).

The steps, each idempotent, as the IMAP ingest does them (docs/reliability.md): a message already stored answers
its ids and calls erxes no further (its announcement is repeated only when its intent is still there: a crash
came between the two). Otherwise the post claims the message's intent (a unique index: of concurrent posts of
the same ``messageId`` one claims it, the others wait for its message and answer the same ids); the intent
remembers the customer and the conversation as they are learned, so a post that takes over the intent of a dead
process resumes where it stopped. Then: the customer (remembered per integration and sender; else
``customers.findOne`` by email, phone or code, else ``customers.createCustomer``), the conversation (one per
thread key, created with ``create-or-update-conversation`` and updated with it afterwards), the message stored,
``conversationClientMessageInserted`` published, the intent deleted.
"""
from __future__ import annotations

import datetime as dt
import html
import logging
import threading
import time
from typing import Any, Callable

from bson import ObjectId

from kinds.api.details import Inbound
from kinds.api.store import ApiStore
from runtime import metrics
from runtime.errors import BrokerError, RuntimeFault
from runtime.mail.sanitize import outward_html
from runtime.storage import utcnow

__all__ = ["ApiIngest", "content_of"]

logger = logging.getLogger(__name__)

STALE_CLAIM = dt.timedelta(seconds=60)  # an intent claimed longer ago belongs to a process that died
LOCK_STRIPES = 64
WAIT_FOR_OTHER = 20.0  # how long a concurrent post of the same messageId waits for the first one's message


def content_of(message: Inbound) -> str:
    """The message as sanitised HTML: ``html`` sanitised, else ``text`` escaped (line breaks kept)."""
    if message.html and message.html.strip():
        return outward_html(message.html)
    if message.text and message.text.strip():
        return "<p>" + html.escape(message.text).replace("\r\n", "\n").replace("\n", "<br>") + "</p>"
    names = ", ".join(html.escape(a["name"] or a["url"]) for a in message.attachments)
    return f"<p>{names}</p>"


class ApiIngest:
    def __init__(self, *, store: ApiStore, erxes: Any, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._store = store
        self._erxes = erxes  # runtime.erxes.ErxesClient
        self._clock = clock
        self._sleep = sleep
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]  # by thread key: one conversation per thread

    def ingest(self, subdomain: str, inbox_id: str, message: Inbound) -> dict[str, str]:
        """``{status: "ok", conversationId, messageId}``; RuntimeFault when erxes or MongoDB failed (the sender
        may post again)."""
        deadline = self._clock() + WAIT_FOR_OTHER
        while True:
            stored = self._store.inbound(inbox_id, message.message_id)
            intent = self._store.intent(inbox_id, message.message_id)
            if stored is not None and intent is None:
                return _answer(stored)
            # no message yet, or stored and not yet announced: whoever holds the intent finishes; an intent whose
            # claim is stale (its process died) is taken over here
            claimed = self._store.claim_intent(inbox_id, message.message_id, stale_before=utcnow() - STALE_CLAIM,
                                               create=stored is None)
            if claimed is not None:
                if stored is not None:
                    self._announce(subdomain, stored, claimed["_id"])
                    return _answer(stored)
                done = self._store.inbound(inbox_id, message.message_id)
                if done is not None:  # stored and announced between our reads: no intent was left to hold
                    self._store.drop_intent(claimed["_id"])
                    return _answer(done)
                return self._run(subdomain, inbox_id, message, claimed)
            if self._clock() > deadline:
                if stored is not None:
                    return _answer(stored)  # its announcement is the other request's to make
                raise RuntimeFault(f"message {message.message_id!r} is being stored by another request; post again")
            self._sleep(0.05)

    def _run(self, subdomain: str, inbox_id: str, message: Inbound, intent: dict[str, Any]) -> dict[str, str]:
        try:
            with self._lock(inbox_id, f"sender:{message.sender['id']}"):  # one createCustomer per sender
                customer_id = intent.get("customerId") or self._customer(subdomain, inbox_id, message)
            self._store.note_intent(intent["_id"], customerId=customer_id)
            with self._lock(inbox_id, message.thread_key):
                conversation_id = intent.get("conversationId") or self._conversation(
                    subdomain, inbox_id, message, customer_id, intent["_id"])
            self._store.note_intent(intent["_id"], conversationId=conversation_id)
            doc = {"_id": intent["_id"], "inboxId": inbox_id, "messageId": message.message_id, "direction": "in",
                   "conversationId": conversation_id, "customerId": customer_id, "content": content_of(message),
                   "text": message.text, "html": message.html, "threadId": message.thread_id,
                   "from": message.sender, "attachments": message.attachments,
                   "createdAt": message.created_at or utcnow(), "receivedAt": utcnow(), "delivery": None}
            self._store.insert_message(doc)
            stored = self._store.inbound(inbox_id, message.message_id) or doc
            self._announce(subdomain, stored, intent["_id"])
        except BrokerError as exc:
            raise RuntimeFault(f"erxes did not answer: {exc}") from exc
        metrics.KIND_MESSAGES.labels("api").inc()
        logger.debug("api integration %s: message %s stored in conversation %s", inbox_id, message.message_id,
                     stored["conversationId"])
        return _answer(stored)

    def _customer(self, subdomain: str, inbox_id: str, message: Inbound) -> str:
        sender = message.sender
        if sender.get("email"):
            key, selector, doc = (f"email:{sender['email'].lower()}", {"customerPrimaryEmail": sender["email"]},
                                  {"primaryEmail": sender["email"]})
        elif sender.get("phone"):
            key, selector, doc = (f"phone:{sender['phone']}", {"customerPrimaryPhone": sender["phone"]},
                                  {"primaryPhone": sender["phone"]})
        else:
            code = f"api:{inbox_id}:{sender['id']}"
            key, selector, doc = f"code:{code}", {"customerCode": code}, {"code": code}
        known = self._store.customer(inbox_id, key)
        if known:
            return known
        found = self._erxes.find_customer_by(subdomain, selector)
        if found is None:
            if sender.get("name"):
                doc["firstName"] = sender["name"]
            found = self._erxes.create_customer_doc(subdomain, inbox_id, doc)
        return self._store.remember_customer(inbox_id, key, str(found["_id"]))

    def _conversation(self, subdomain: str, inbox_id: str, message: Inbound, customer_id: str,
                      intent_id: ObjectId) -> str:
        known = self._store.conversation(inbox_id, message.thread_key)
        created_at = message.created_at or utcnow()
        content = (message.text or "")[:200] or "api message"
        if known is not None:
            self._erxes.create_or_update_conversation(
                subdomain, inbox_id=inbox_id, customer_id=customer_id, created_at=created_at, content=content,
                conversation_id=known["conversationId"], idempotency_key=f"api:{inbox_id}:{intent_id}")
            return known["conversationId"]
        conversation_id = self._erxes.create_or_update_conversation(
            subdomain, inbox_id=inbox_id, customer_id=customer_id, created_at=created_at, content=content,
            idempotency_key=f"api:{inbox_id}:{message.thread_key}")
        return self._store.remember_conversation(inbox_id, message.thread_key, conversation_id,
                                                 thread_id=message.thread_id, customer_id=customer_id)

    def _announce(self, subdomain: str, stored: dict[str, Any], intent_id: Any) -> None:
        self._erxes.message_inserted(subdomain, message_id=str(stored["_id"]), content=stored["content"],
                                     conversation_id=stored["conversationId"])
        self._store.drop_intent(intent_id)

    def _lock(self, inbox_id: str, key: str) -> threading.Lock:
        return self._locks[hash((inbox_id, key)) % LOCK_STRIPES]


def _answer(stored: dict[str, Any]) -> dict[str, str]:
    return {"status": "ok", "conversationId": stored["conversationId"], "messageId": str(stored["_id"])}
