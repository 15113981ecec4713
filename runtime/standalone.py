"""Standalone mode: the core/contacts and inbox procedures the runtime calls (contract section 4), served by the
runtime itself over the same broker, so it works with no erxes at all. The test suite uses it as the erxes
emulation. Its data lives in ``standalone_*`` collections of the runtime's database.

Beyond erxes, ``integrations.receive`` honours an optional ``idempotencyKey`` in its payload: the same key always
yields the same conversation, which closes the window between "conversation created" and "intent recorded".
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any, Callable

from bson import ObjectId
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, OperationFailure

from runtime.arguments import envelope_data
from runtime.broker._envelope import delivery_id
from runtime.errors import RequestError
from runtime.storage import utcnow

__all__ = ["Standalone"]

logger = logging.getLogger(__name__)

CUSTOMER_KEYS = ("primaryEmail", "primaryPhone", "code")


class Standalone:
    """The emulated procedures. ``procedures()`` maps queue names to handlers taking the request envelope."""

    def __init__(self, storage: Any, *, customer_service: str = "core") -> None:
        self._storage = storage  # the runtime's storage: with tenants, the bound tenant's database
        self._customer_service = customer_service

    @property
    def customers(self) -> Collection[Any]:
        return self._storage.collection("standalone_customers")

    @property
    def conversations(self) -> Collection[Any]:
        return self._storage.collection("standalone_conversations")

    @property
    def inserted(self) -> Collection[Any]:
        return self._storage.collection("standalone_message_notifications")

    @staticmethod
    def ensure_indexes(storage: Any) -> None:
        """The emulation's indexes in ``storage``'s database (each tenant's, with tenants). Customers are unique
        by ``primaryEmail``, ``primaryPhone`` and ``code`` where they have one (sparse: the ``api`` kind's customers
        may have only a phone or a code); an older, non-sparse email index is replaced."""
        customers = storage.collection("standalone_customers")
        for key in CUSTOMER_KEYS:
            try:
                customers.create_index(key, unique=True, sparse=True)
            except OperationFailure as exc:
                if exc.code not in (85, 86):  # IndexOptionsConflict, IndexKeySpecsConflict
                    raise
                customers.drop_index(f"{key}_1")
                customers.create_index(key, unique=True, sparse=True)
        storage.collection("standalone_conversations").create_index("idempotencyKey", unique=True, sparse=True)
        storage.collection("standalone_message_notifications").create_index("messageId", unique=True)

    # -- the console's reads (web/console) --------------------------------------------------------------------------
    def conversation(self, conversation_id: str) -> dict[str, Any] | None:
        return self.conversations.find_one({"_id": conversation_id})

    def recent_conversations(self, among: list[Any] | None = None, *, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` conversations with the latest activity, of ``among`` when given."""
        where = {} if among is None else {"_id": {"$in": among}}
        return list(self.conversations.find(where, sort=[("updatedAt", -1), ("_id", -1)], limit=limit))

    def conversations_mark(self) -> tuple[Any, ...]:
        """The last-updated conversation's ``updatedAt``, ``_id`` and ``status``: it changes whenever a conversation
        does (the console's live view polls it)."""
        doc = self.conversations.find_one({}, {"updatedAt": 1, "status": 1}, sort=[("updatedAt", -1)])
        return tuple((doc or {}).get(k) for k in ("updatedAt", "_id", "status"))

    def rpc_procedures(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        svc = self._customer_service
        return {
            f"{svc}:customers.findOne": self.find_customer,
            f"{svc}:customers.createCustomer": self.create_customer,
            "inbox:integrations.receive": self.receive,
            "inbox:conversations.changeStatus": self.change_status,
        }

    def plain_procedures(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {"inbox:conversationClientMessageInserted": self.message_inserted}

    # -- core/contacts ----------------------------------------------------------------------------------------------
    def find_customer(self, envelope: dict[str, Any]) -> dict[str, Any] | None:
        """erxes's selectors, in its order: ``customerPrimaryEmail``, ``customerPrimaryPhone``, ``customerCode``."""
        data = envelope_data(envelope)
        email = data.get("customerPrimaryEmail") or data.get("primaryEmail")
        if email:
            return _public(self.customers.find_one({"primaryEmail": str(email).lower()}))
        phone = data.get("customerPrimaryPhone") or data.get("primaryPhone")
        if phone:
            return _public(self.customers.find_one({"primaryPhone": str(phone)}))
        code = data.get("customerCode") or data.get("code")
        if code:
            return _public(self.customers.find_one({"code": str(code)}))
        return None

    def create_customer(self, envelope: dict[str, Any]) -> dict[str, Any]:
        data = envelope_data(envelope)
        email, phone, code = data.get("primaryEmail"), data.get("primaryPhone"), data.get("code")
        fields = {k: data[k] for k in ("firstName", "lastName", "integrationId") if data.get(k)}
        if isinstance(email, str) and "@" in email:
            key = {"primaryEmail": email.lower()}
            fields["emails"] = [email.lower()]
        elif isinstance(phone, str) and phone.strip():
            key = {"primaryPhone": phone.strip()}
            fields["phones"] = [phone.strip()]
        elif isinstance(code, str) and code.strip():
            key = {"code": code.strip()}
        else:
            raise RequestError("primaryEmail, primaryPhone or code is required")
        doc = {**fields, **key, "_id": str(ObjectId()), "createdAt": utcnow(), "state": "customer"}
        try:  # an insert, rather than an upsert: one write instead of a lookup and a write (as receive does)
            self.customers.insert_one(doc)
        except DuplicateKeyError:  # this customer exists (or another call inserted it meanwhile): that one
            stored = self.customers.find_one(key)
            if stored is None:
                raise
            return _public(stored)
        return _public(doc)

    # -- inbox ------------------------------------------------------------------------------------------------------
    def receive(self, envelope: dict[str, Any]) -> dict[str, Any]:
        data = envelope_data(envelope)
        if data.get("action") != "create-or-update-conversation":
            raise RequestError(f"unknown action {data.get('action')!r}")
        try:
            payload = json.loads(data.get("payload") or "")
        except (TypeError, json.JSONDecodeError, RecursionError):
            raise RequestError("payload must be a JSON string") from None
        if not isinstance(payload, dict) or not payload.get("integrationId"):
            raise RequestError("payload.integrationId is required")
        now = utcnow()
        conversation_id = payload.get("conversationId")
        if conversation_id:
            result = self.conversations.update_one(
                {"_id": conversation_id},
                {"$set": {"content": payload.get("content", ""), "updatedAt": now, "status": "open"},
                 "$inc": {"messageCount": 1}})
            if result.matched_count:
                return {"_id": conversation_id}
        doc = {"integrationId": payload["integrationId"], "customerId": payload.get("customerId"),
               "content": payload.get("content", ""), "createdAt": _date(payload.get("createdAt")) or now,
               "updatedAt": now, "status": "new", "messageCount": 1}
        key = payload.get("idempotencyKey")
        doc["_id"] = str(ObjectId())
        if key:
            doc["idempotencyKey"] = key
        try:  # an insert, rather than an upsert: one write instead of a lookup and a write
            self.conversations.insert_one(doc)
        except DuplicateKeyError:  # this key's conversation exists: the same answer again
            stored = self.conversations.find_one({"idempotencyKey": key}) if key else None
            if stored is None:
                raise
            return {"_id": stored["_id"]}
        return {"_id": doc["_id"]}

    def change_status(self, envelope: dict[str, Any]) -> None:
        data = envelope_data(envelope)
        if not data.get("id") or data.get("status") not in ("closed", "new", "open"):
            raise RequestError("id and status (closed/new) are required")
        self.conversations.update_one({"_id": data["id"]}, {"$set": {"status": data["status"]}})

    def message_inserted(self, envelope: dict[str, Any]) -> None:
        data = envelope_data(envelope)
        # one record per message; ``deliveries`` counts repeats (at-least-once after a crash at the wrong moment),
        # ``publishes`` the AMQP message ids among them: a message the runtime published twice has two, one that
        # RabbitMQ redelivered (this emulation died before its ack) has one.
        # An insert first (one write; almost every message comes once), the count raised on a repeat.
        publish = delivery_id()
        try:
            self.inserted.insert_one({"messageId": data.get("_id"), "conversationId": data.get("conversationId"),
                                      "content": data.get("content"), "receivedAt": utcnow(), "deliveries": 1,
                                      "publishes": [publish] if publish else []})
        except DuplicateKeyError:
            self.inserted.update_one({"messageId": data.get("_id")}, {"$inc": {"deliveries": 1},
                                                                    **({"$addToSet": {"publishes": publish}}
                                                                       if publish else {})})


def _public(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    if doc is None:
        return None
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in doc.items()}


def _date(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
