"""The IMAP kind's collections in :class:`runtime.storage.Storage`: ``imap_cursors``, ``imap_customers``,
``imap_messages``, ``imap_intents`` and ``imap_quarantine`` (their documents: runtime.storage's docstring). A mixin,
so one Storage (one client, one tenant's database) serves every caller; the collections are Storage's attributes,
set in its ``__init__``. Callers use these operations, never the collections (tests may, to set up and inspect)."""
from __future__ import annotations

import logging
import re
from typing import Any, Iterable

import bson
import pymongo
from bson import Binary, ObjectId
from bson.errors import InvalidId
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, DocumentTooLarge, PyMongoError

from runtime._storage_base import (DONE, MAX_DOCUMENT, MAX_RAW_IN_DOCUMENT, PENDING, _by_message_id,
                                   _duplicates_only, _write_errors, scrub, utcnow)
from runtime.errors import StorageError

__all__ = ["MailStorage"]

logger = logging.getLogger("runtime.storage")  # the name these lines always logged under

_THREAD_FIELDS = {"messageId": 1, "references": 1, "inboxConversationId": 1, "createdAt": 1}  # a thread lookup's


def _object_id(value: Any) -> ObjectId | None:
    """``value`` as an ObjectId (a document's ``_id`` given as text); None when it is not one (``ObjectId(None)``
    would be a new id)."""
    if value is None:
        return None
    try:
        return value if isinstance(value, ObjectId) else ObjectId(value)
    except (InvalidId, TypeError):
        return None


class MailStorage:
    """Operations on the IMAP kind's collections; mixed into :class:`runtime.storage.Storage`."""

    cursors: Collection[Any]
    customers: Collection[Any]
    messages: Collection[Any]
    intents: Collection[Any]
    quarantine: Collection[Any]

    # -- cursors ----------------------------------------------------------------------------------------------------
    def get_cursor(self, inbox_id: str, folder: str) -> dict[str, Any] | None:
        return self.cursors.find_one({"integrationId": inbox_id, "folder": folder})

    def save_cursor(self, inbox_id: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        self.cursors.update_one(
            {"integrationId": inbox_id, "folder": folder},
            {"$set": {"uidvalidity": uidvalidity, "lastUid": last_uid, "updatedAt": utcnow()}}, upsert=True)

    # -- customers --------------------------------------------------------------------------------------------------
    def find_customer(self, inbox_id: str, email: str) -> dict[str, Any] | None:
        return self.customers.find_one({"inboxIntegrationId": inbox_id, "email": email})

    def find_customers(self, inbox_id: str, emails: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The known customers of ``inbox_id`` among ``emails``, by email (one query for a batch)."""
        wanted = [e for e in dict.fromkeys(emails) if e]
        if not wanted:
            return {}
        return {doc["email"]: doc for doc in self.customers.find({"inboxIntegrationId": inbox_id,
                                                                  "email": {"$in": wanted}})}

    def save_customer(self, inbox_id: str, email: str, contacts_id: str, first_name: str = "",
                      last_name: str = "") -> dict[str, Any]:
        return self.customers.find_one_and_update(
            {"inboxIntegrationId": inbox_id, "email": email},
            {"$setOnInsert": {"contactsId": contacts_id, "firstName": first_name, "lastName": last_name,
                              "createdAt": utcnow()}},
            upsert=True, return_document=pymongo.ReturnDocument.AFTER)

    def customer_emails(self, contacts_id: str) -> list[str]:
        """The addresses stored for erxes customer ``contacts_id``, in any integration."""
        return [c["email"] for c in self.customers.find({"contactsId": contacts_id}, projection={"email": 1})
                if c.get("email")]

    # -- messages ---------------------------------------------------------------------------------------------------
    def find_message(self, inbox_id: str, message_id: str) -> dict[str, Any] | None:
        return self.messages.find_one({"inboxIntegrationId": inbox_id, "messageId": message_id})

    def find_messages(self, inbox_id: str, message_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored messages of ``inbox_id`` among ``message_ids``, by Message-ID (one query for a batch)."""
        return _by_message_id(self.messages, inbox_id, message_ids)

    def batch_lookup(self, inbox_id: str, message_ids: Iterable[str], thread_ids: Iterable[str]
                     ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """What the conversation stage needs to know of a batch, in one query when no mail of it answers another
        (else two): the stored messages among ``message_ids`` by Message-ID (without ``body``: see
        :meth:`find_messages` for the whole document), and the :meth:`thread_candidates` of ``thread_ids``. The
        batch's own ids and the thread ids share one ``messageId $in`` query (issue 14: one round trip fewer on a
        reply's way to stored)."""
        own = [m for m in dict.fromkeys(message_ids) if m]
        threads = [m for m in dict.fromkeys(thread_ids) if m]
        wanted = list(dict.fromkeys([*own, *threads]))
        if not wanted:
            return {}, []
        own_set, thread_set = set(own), set(threads)
        known: dict[str, dict[str, Any]] = {}
        found: dict[Any, dict[str, Any]] = {}
        for doc in self.messages.find({"inboxIntegrationId": inbox_id, "messageId": {"$in": wanted}},
                                      projection={"body": 0}):
            if doc["messageId"] in own_set:
                known[doc["messageId"]] = doc
            if doc["messageId"] in thread_set and doc.get("inboxConversationId"):
                found[doc["_id"]] = doc
        if threads:
            for doc in self.messages.find({"inboxIntegrationId": inbox_id, "references": {"$in": threads}},
                                          projection=_THREAD_FIELDS):
                if doc.get("inboxConversationId"):
                    found[doc["_id"]] = doc
        return known, list(found.values())

    def thread_candidates(self, inbox_id: str, message_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Stored messages with a conversation that are one of ``message_ids`` or reference one of them (for a
        whole batch at once; :func:`runtime.pipeline.pick_thread` picks each mail's conversation among them)."""
        ids = [m for m in dict.fromkeys(message_ids) if m]
        if not ids:
            return []
        # Two plain queries, each on its own index, rather than one $or: servers plan $or poorly (SecantusDB scanned
        # the collection: 390 ms a mail at 10,000 messages, see docs/benchmarks.md).
        found: dict[Any, dict[str, Any]] = {}
        for field in ("messageId", "references"):
            for doc in self.messages.find({"inboxIntegrationId": inbox_id, field: {"$in": ids}},
                                          projection=_THREAD_FIELDS):
                if doc.get("inboxConversationId"):
                    found[doc["_id"]] = doc
        return list(found.values())

    # -- intents: a mail on its way in, recorded before inbox is called (erxes takes no idempotency key) -------
    def find_intents(self, inbox_id: str, message_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The intents of ``inbox_id`` among ``message_ids``, by Message-ID (one query for a batch)."""
        return _by_message_id(self.intents, inbox_id, message_ids)

    def record_intents(self, docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Record intents (small documents: ``_id``, the future message's, ``inboxIntegrationId``, ``messageId``,
        ``customerId``, ``inboxConversationId`` when the thread's is known, ``createdAt``, ``receivedAt``) in one
        ``insert_many(ordered=False)``; returns them by Message-ID, the earlier one where one existed."""
        if not docs:
            return {}
        try:
            self.intents.insert_many(docs, ordered=False)
            return {doc["messageId"]: doc for doc in docs}
        except BulkWriteError as exc:
            _duplicates_only(exc)
        return self.find_intents(docs[0]["inboxIntegrationId"], [doc["messageId"] for doc in docs])

    def store_messages(self, docs: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """Insert message documents, each once its conversation call is done (``ingestState: done``, the
        conversation id set: a message document is written once); returns the stored documents in order, the
        earlier one for a Message-ID stored meanwhile (another node, erxes's own plugin), and None for a document
        over MongoDB's 16 MiB: it fails alone (the server's write error, or pymongo's ``DocumentTooLarge``, which
        is no ``PyMongoError``), the others are stored."""
        if not docs:
            return []
        try:
            self.messages.insert_many(docs, ordered=False)
            return list(docs)
        except BulkWriteError as exc:
            duplicates, too_large = _write_errors(exc)
        except DocumentTooLarge:  # pymongo refused before sending (some earlier batches may be written)
            too_large = {i for i, doc in enumerate(docs) if len(bson.encode(doc)) > MAX_DOCUMENT}
            if not too_large:
                raise
            rest = iter(self.store_messages([doc for i, doc in enumerate(docs) if i not in too_large]))
            return [None if i in too_large else next(rest) for i in range(len(docs))]
        for i in too_large:
            logger.warning("Message %s of %s: its document is over MongoDB's %d bytes; not stored",
                           docs[i].get("messageId"), docs[i].get("inboxIntegrationId"), MAX_DOCUMENT)
        stored: list[dict[str, Any] | None] = []
        for i, doc in enumerate(docs):
            if i in too_large:
                stored.append(None)
                continue
            if i in duplicates:
                doc = self.find_message(doc["inboxIntegrationId"], doc["messageId"])
                if doc is None:  # deleted in between: the integration is being removed
                    raise StorageError("message vanished while being stored")
            stored.append(doc)
        return stored

    def clear_intents(self, oids: list[Any]) -> None:
        """The messages of these intents are stored and announced."""
        if oids:
            self.intents.delete_many({"_id": {"$in": oids}})

    def adopt_legacy_message(self, doc: dict[str, Any]) -> dict[str, Any]:
        """A message document in state ``pending`` or ``stored``, as versions before intents wrote them before the
        conversation call: its intent is recorded (same ``_id``; idempotent), then a ``pending`` document is removed
        (the message is stored anew after the call) and a ``stored`` one is marked ``done`` (its announcement is
        what remains). Returns the intent."""
        intent = {"_id": doc["_id"], "inboxIntegrationId": doc["inboxIntegrationId"], "messageId": doc["messageId"],
                  "customerId": doc.get("customerId"), "inboxConversationId": doc.get("inboxConversationId"),
                  "createdAt": doc.get("createdAt"), "receivedAt": doc.get("receivedAt")}
        self.intents.update_one({"inboxIntegrationId": intent["inboxIntegrationId"], "messageId": intent["messageId"]},
                                {"$setOnInsert": intent}, upsert=True)
        if doc.get("ingestState") == PENDING:
            self.messages.delete_one({"_id": doc["_id"], "ingestState": PENDING})
        else:
            self.messages.update_one({"_id": doc["_id"]}, {"$set": {"ingestState": DONE}})
        return self.intents.find_one({"inboxIntegrationId": intent["inboxIntegrationId"],
                                      "messageId": intent["messageId"]}) or intent

    def conversation_messages(self, conversation_id: str) -> list[dict[str, Any]]:
        # messages written by erxes's own plugin have no ingestState: they count as done
        return list(self.messages.find({"inboxConversationId": conversation_id,
                                        "ingestState": {"$ne": PENDING}}).sort("createdAt", 1))

    def remember_split(self, message_id: Any, record: dict[str, Any]) -> None:
        """Keep a message's quote split (``runtime.mail.quoting.split_record``) so it is computed once; never raises
        (the next view computes it again)."""
        try:
            self.messages.update_one({"_id": message_id}, {"$set": {"split": record}})
        except PyMongoError as exc:
            logger.warning("Could not keep the quote split of message %s: %s", message_id, exc)

    def message_by_id(self, object_id: Any, inbox_id: str | None = None) -> dict[str, Any] | None:
        """The message whose ``_id`` is ``object_id`` (an ObjectId or its text), of ``inbox_id`` when given; None when
        there is none or ``object_id`` is no ObjectId (callers then try it as a Message-ID)."""
        oid = _object_id(object_id)
        if oid is None:
            return None
        query: dict[str, Any] = {"_id": oid} if inbox_id is None else {"_id": oid, "inboxIntegrationId": inbox_id}
        return self.messages.find_one(query)

    def insert_message(self, doc: dict[str, Any]) -> None:
        """Insert one message document as it is (a sent mail's, ``ingestState: done``); ``doc`` gets its ``_id``."""
        self.messages.insert_one(doc)

    def set_message_location(self, message_oid: Any, folder: str | None, uid: int | None) -> None:
        """Where a message's copy is on the mail server (a sent mail filed in Sent): what the attachment route
        fetches."""
        self.messages.update_one({"_id": message_oid}, {"$set": {"folder": folder, "uid": uid}})

    def conversation_customer(self, inbox_id: str, conversation_id: str) -> str | None:
        """The customer of the newest message of ``conversation_id`` that names one (a reply's addressee)."""
        known = self.messages.find_one(
            {"inboxIntegrationId": inbox_id, "inboxConversationId": conversation_id,
             "customerId": {"$nin": [None, ""]}}, projection={"customerId": 1}, sort=[("createdAt", -1)])
        return known["customerId"] if known else None

    def messages_about(self, customer_id: str, emails: Iterable[str], fields: Iterable[str], *,
                       limit: int) -> Iterable[dict[str, Any]]:
        """The newest ``limit`` messages (none ``pending``) of erxes customer ``customer_id`` or with one of
        ``emails`` (whole, case-insensitive) in one of the address ``fields``: a customer's activity log."""
        any_email = {"$regex": "^(?:" + "|".join(re.escape(e) for e in emails) + ")$", "$options": "i"}
        query = {"$or": [{"customerId": customer_id}, *({f"{f}.address": any_email} for f in fields)],
                 "ingestState": {"$ne": PENDING}}
        return self.messages.find(query, sort=[("createdAt", -1), ("_id", -1)], limit=limit)

    def newest_message(self, inbox_id: str) -> dict[str, Any] | None:
        """The ``createdAt`` and ``subject`` of the newest message of ``inbox_id``."""
        return self.messages.find_one({"inboxIntegrationId": inbox_id}, {"createdAt": 1, "subject": 1},
                                      sort=[("createdAt", -1)])

    def count_messages(self, inbox_id: str) -> int:
        return self.messages.count_documents({"inboxIntegrationId": inbox_id})

    def conversations_mentioning(self, text: str, *, limit: int = 5000) -> list[Any]:
        """The conversations of messages (at most ``limit``) whose sender, by name or address, or subject contains
        ``text`` (its first 200 characters, case-insensitive)."""
        pattern = {"$regex": re.escape(text[:200]), "$options": "i"}
        ids = {m.get("inboxConversationId") for m in self.messages.find(
            {"$or": [{"from.address": pattern}, {"from.name": pattern}, {"subject": pattern}]},
            {"inboxConversationId": 1}, limit=limit)}
        return [i for i in ids if i]

    def last_message_of_conversation(self, conversation_id: str) -> dict[str, Any] | None:
        """The sender, subject and date of the newest message (none ``pending``) of ``conversation_id``."""
        return self.messages.find_one({"inboxConversationId": conversation_id, "ingestState": {"$ne": PENDING}},
                                      {"from": 1, "subject": 1, "createdAt": 1}, sort=[("createdAt", -1)])

    def messages_mark(self) -> tuple[Any, ...]:
        """The newest message's ``_id``: it changes whenever a message is stored (the console's live view polls
        it)."""
        doc = self.messages.find_one({}, {"_id": 1}, sort=[("_id", -1)])
        return ((doc or {}).get("_id"),)

    # -- quarantine ---------------------------------------------------------------------------------------------------
    def quarantine_mail(self, inbox_id: str, folder: str, uidvalidity: int, uid: int, reason: str, *,
                        raw: bytes | None = None, size: int | None = None) -> None:
        """Keep a mail that could not be processed (with its raw bytes when we have them) so nothing is lost."""
        fields: dict[str, Any] = {"reason": scrub(reason), "size": size if size is not None else len(raw or b""),
                                  "quarantinedAt": utcnow()}
        if raw is not None and len(raw) <= MAX_RAW_IN_DOCUMENT:
            fields["raw"] = Binary(raw)
        elif raw is not None:
            fields["rawOmitted"] = f"{len(raw)} bytes: over the {MAX_RAW_IN_DOCUMENT} bytes a document holds"
        self.quarantine.update_one(
            {"integrationId": inbox_id, "folder": folder, "uid": uid, "uidvalidity": uidvalidity},
            {"$set": fields, "$inc": {"times": 1}}, upsert=True)

    def quarantined(self, inbox_id: str | None = None) -> Iterable[dict[str, Any]]:
        """The quarantined mails (of ``inbox_id`` when given), oldest first, without their raw bytes."""
        query = {"integrationId": inbox_id} if inbox_id else {}
        return self.quarantine.find(query, projection={"raw": 0}).sort("quarantinedAt", 1)

    def quarantined_mail(self, entry_id: Any) -> dict[str, Any] | None:
        """One quarantined mail, with its raw bytes; None when there is none or ``entry_id`` is no ObjectId."""
        oid = _object_id(entry_id)
        return None if oid is None else self.quarantine.find_one({"_id": oid})

    def release_quarantined(self, entry_id: Any) -> None:
        """Forget a quarantined mail: it was processed after all."""
        self.quarantine.delete_one({"_id": entry_id})
