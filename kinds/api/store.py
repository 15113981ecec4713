"""The ``api`` kind's storage, in the bound tenant's database (through the runtime's storage facade).

Collections: ``api_integrations`` (``inboxId``, ``callbackUrl``, ``secret`` sealed as the runtime seals every
secret, ``name``, ``healthStatus``, ``error``), ``api_customers`` (per integration and sender key: the erxes
customer id), ``api_conversations`` (per integration and thread key: the erxes conversation id), ``api_intents``
(an inbound message on its way in), ``api_messages`` (both directions) and ``api_outbox`` (staff replies waiting
for their callback). Unique indexes make every step idempotent: ``(inboxId, messageId)`` for intents and inbound
messages, ``(inboxId, key)`` for customers and conversations.
"""
from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

import pymongo
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from runtime.storage import utcnow

__all__ = ["ApiStore"]

SECRET = "apiSecret"  # the associated data's field name of the sealed secret


class ApiStore:
    """Thread-safe; every call reaches the bound tenant's database (``storage.collection``)."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage  # runtime.storage.Storage or runtime.tenants.TenantStorage

    def _c(self, name: str) -> Any:
        return self._storage.collection(name)

    @staticmethod
    def ensure_indexes(storage: Any) -> None:
        c = storage.collection
        c("api_integrations").create_index("inboxId", unique=True)
        c("api_customers").create_index([("inboxId", 1), ("key", 1)], unique=True)
        c("api_conversations").create_index([("inboxId", 1), ("key", 1)], unique=True)
        c("api_conversations").create_index("conversationId")
        c("api_intents").create_index([("inboxId", 1), ("messageId", 1)], unique=True)
        # outbound messages have messageId "out:<_id>", so one full unique index serves (no partial index)
        c("api_messages").create_index([("inboxId", 1), ("messageId", 1)], unique=True)
        c("api_messages").create_index([("conversationId", 1), ("createdAt", 1)])
        c("api_outbox").create_index([("inboxId", 1), ("_id", 1)])

    # -- integrations (the supervisor's source: list_integrations, get_integration, inventory) ---------------------
    def save_integration(self, inbox_id: str, details: dict[str, Any]) -> None:
        fields = dict(details)
        if "secret" in fields:
            fields["secret"] = self._storage.seal_secret(SECRET, inbox_id, fields["secret"])
        self._c("api_integrations").update_one(
            {"inboxId": inbox_id}, {"$set": {**fields, "updatedAt": utcnow()},
                                    "$setOnInsert": {"healthStatus": "healthy", "createdAt": utcnow()}},
            upsert=True)

    def get_integration(self, inbox_id: str) -> dict[str, Any] | None:
        """With the plain secret: internal use only."""
        doc = self._c("api_integrations").find_one({"inboxId": inbox_id})
        return self._open(doc) if doc else None

    def list_integrations(self) -> list[dict[str, Any]]:
        return [self._open(doc) for doc in self._c("api_integrations").find({})]

    def inventory(self) -> Iterable[dict[str, Any]]:
        return self._c("api_integrations").find({}, {"inboxId": 1, "updatedAt": 1})

    def remove_integration(self, inbox_id: str) -> bool:
        for name in ("api_outbox", "api_intents", "api_customers", "api_conversations", "api_messages"):
            self._c(name).delete_many({"inboxId": inbox_id})
        return self._c("api_integrations").delete_one({"inboxId": inbox_id}).deleted_count > 0

    def set_health(self, inbox_id: str, status: str, error: str | None) -> None:
        self._c("api_integrations").update_one(
            {"inboxId": inbox_id, "$or": [{"healthStatus": {"$ne": status}}, {"error": {"$ne": error}}]},
            {"$set": {"healthStatus": status, "error": error}})

    def _open(self, doc: dict[str, Any]) -> dict[str, Any]:
        if doc.get("secret"):
            doc["secret"] = self._storage.open_secret(SECRET, doc["inboxId"], doc["secret"])
        return doc

    # -- inbound: customers, conversations, intents, messages ------------------------------------------------------
    def customer(self, inbox_id: str, key: str) -> str | None:
        doc = self._c("api_customers").find_one({"inboxId": inbox_id, "key": key})
        return doc["customerId"] if doc else None

    def remember_customer(self, inbox_id: str, key: str, customer_id: str) -> str:
        """The customer recorded for ``key`` (the first one recorded wins)."""
        doc = self._c("api_customers").find_one_and_update(
            {"inboxId": inbox_id, "key": key}, {"$setOnInsert": {"customerId": customer_id, "createdAt": utcnow()}},
            upsert=True, return_document=pymongo.ReturnDocument.AFTER)
        return doc["customerId"]

    def conversation(self, inbox_id: str, key: str) -> dict[str, Any] | None:
        return self._c("api_conversations").find_one({"inboxId": inbox_id, "key": key})

    def conversation_by_id(self, conversation_id: str) -> dict[str, Any] | None:
        return self._c("api_conversations").find_one({"conversationId": conversation_id})

    def remember_conversation(self, inbox_id: str, key: str, conversation_id: str, *, thread_id: str | None,
                              customer_id: str) -> str:
        doc = self._c("api_conversations").find_one_and_update(
            {"inboxId": inbox_id, "key": key},
            {"$setOnInsert": {"conversationId": conversation_id, "threadId": thread_id, "customerId": customer_id,
                              "createdAt": utcnow()}},
            upsert=True, return_document=pymongo.ReturnDocument.AFTER)
        return doc["conversationId"]

    def inbound(self, inbox_id: str, message_id: str) -> dict[str, Any] | None:
        return self._c("api_messages").find_one({"inboxId": inbox_id, "messageId": message_id, "direction": "in"})

    def intent(self, inbox_id: str, message_id: str) -> dict[str, Any] | None:
        return self._c("api_intents").find_one({"inboxId": inbox_id, "messageId": message_id})

    def claim_intent(self, inbox_id: str, message_id: str, *, stale_before: dt.datetime,
                     create: bool = True) -> dict[str, Any] | None:
        """Record the intent (a new one, unless ``create`` is False), or take over one whose claim is older than
        ``stale_before`` (its process died); None when another post holds it."""
        now = utcnow()
        if create:
            try:
                doc = {"_id": ObjectId(), "inboxId": inbox_id, "messageId": message_id, "claimedAt": now}
                self._c("api_intents").insert_one(doc)
                return doc
            except DuplicateKeyError:
                pass
        return self._c("api_intents").find_one_and_update(
            {"inboxId": inbox_id, "messageId": message_id, "claimedAt": {"$lt": stale_before}},
            {"$set": {"claimedAt": now}}, return_document=pymongo.ReturnDocument.AFTER)

    def note_intent(self, intent_id: Any, **fields: Any) -> None:
        self._c("api_intents").update_one({"_id": intent_id}, {"$set": fields})

    def drop_intent(self, intent_id: Any) -> None:
        self._c("api_intents").delete_one({"_id": intent_id})

    def insert_message(self, doc: dict[str, Any]) -> None:
        """Insert once: a repeat (the same ``_id`` or inbound messageId) is ignored."""
        try:
            self._c("api_messages").insert_one(doc)
        except DuplicateKeyError:
            pass

    def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        return list(self._c("api_messages").find({"conversationId": conversation_id},
                                                 sort=[("createdAt", 1), ("_id", 1)]))

    def set_delivery(self, message_id: Any, state: str, error: str | None = None) -> None:
        self._c("api_messages").update_one({"_id": message_id}, {"$set": {"delivery": state, "deliveryError": error}})

    # -- the outbox -------------------------------------------------------------------------------------------------
    def enqueue(self, item: dict[str, Any]) -> None:
        self._c("api_outbox").insert_one(item)

    def outbox(self, inbox_id: str) -> list[dict[str, Any]]:
        """The integration's waiting deliveries, oldest first (``_id`` order is queueing order)."""
        return list(self._c("api_outbox").find({"inboxId": inbox_id}, sort=[("_id", 1)]))

    def retry_later(self, item_id: Any, *, attempts: int, next_at: dt.datetime, error: str) -> None:
        self._c("api_outbox").update_one({"_id": item_id}, {"$set": {"attempts": attempts, "nextAt": next_at,
                                                                     "error": error}})

    def note_first_try(self, item_id: Any, when: dt.datetime) -> None:
        self._c("api_outbox").update_one({"_id": item_id, "firstTriedAt": None}, {"$set": {"firstTriedAt": when}})

    def done(self, item_id: Any) -> None:
        self._c("api_outbox").delete_one({"_id": item_id})
