"""MongoDB storage: erxes's collections (contract section 5) and ours, with their indexes.

Collections erxes has: ``imap_integrations``, ``imap_customers``, ``imap_messages``, ``imap_logs``.
Ours: ``imap_cursors`` (per integration and folder: UIDVALIDITY and the last UID fully processed).

Uniqueness is scoped per integration (the contract's policy): ``(inboxIntegrationId, messageId)`` for messages,
intents and ``(inboxIntegrationId, email)`` for customers. A mail on its way in is first an intent in
``imap_intents`` (a small document: the future message's ``_id``, its customer, its thread's conversation when
known), recorded before inbox is called; once the call is done its message document is inserted, once, with its
conversation and ``ingestState: done``; once ``conversationClientMessageInserted`` went out the intent is deleted.
So an intent with no message means "call inbox (again)", an intent beside its message "announce it (again)". One
write of the ~4 KiB document per mail rather than three (``bench.write_patterns``). Documents of versions before
intents, ``pending`` and ``stored``, are adopted as intents when their mail comes again
(:meth:`Storage.adopt_legacy_message`); the UI's readers skip ``pending`` ones.

Secrets at rest (``password``, ``webhookSecret`` and the OAuth2 client secret, refresh and access tokens of
``imap_integrations``, :data:`SECRET_FIELDS`) are sealed on write and unseal on read
here, in one place (:mod:`runtime.sealing`): ``get_integration``, ``get_integration_by_id``, ``find_integration``,
``list_integrations`` and ``save_integration`` return documents with plain secrets, for internal use only (never
for a response). Plain values (erxes's own records) read as they are until ``reseal_integrations`` seals them. A
Storage built without a sealer (tools, tests) writes plain values and refuses to read sealed ones.
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
from typing import Any, Iterable

import bson
import pymongo
from bson import Binary, ObjectId
from bson.errors import InvalidId
from pymongo.errors import BulkWriteError, DocumentTooLarge, PyMongoError

from runtime.errors import StorageError
from runtime.pipeline import pick_thread
from runtime.sealing import Sealer, is_sealed

__all__ = ["Storage", "utcnow"]

logger = logging.getLogger(__name__)

PENDING, STORED, DONE = "pending", "stored", "done"
DUPLICATE_KEY = 11000
MAX_RAW_IN_DOCUMENT = 15 * 1024 * 1024  # MongoDB documents hold 16 MiB
MAX_DOCUMENT = 16 * 1024 * 1024  # MongoDB's limit on one document (BSON bytes)
TOO_LARGE_CODES = {10334, 17419, 17420}  # the server's "object to insert too large" (BSONObjectTooLarge)
SECRET_FIELDS = ("password", "webhookSecret", "oauthClientSecret", "oauthRefreshToken", "oauthAccessToken")


def refused(exc: BulkWriteError) -> StorageError:
    """``exc`` without the documents it carries. pymongo's message (``full error: ...``) holds every refused
    document (``op``: a mail's body, addresses and subject), which must reach no log, health error or API reply;
    this keeps the count, the codes and the server's first words of each distinct error."""
    errors = exc.details.get("writeErrors") or []
    reasons = sorted({f"code {e.get('code')}: {str(e.get('errmsg', ''))[:160]}" for e in errors})
    concern = exc.details.get("writeConcernErrors") or []
    if concern:
        reasons.append(f"write concern: {str(concern[0].get('errmsg', ''))[:160]}")
    return StorageError(f"MongoDB refused {len(errors)} document(s) of the write: "
                        f"{'; '.join(reasons[:3]) or 'no reason given'}")


def _duplicates_only(exc: BulkWriteError) -> set[int]:
    """The indexes of the documents an ``insert_many(ordered=False)`` found stored already; raises
    :func:`refused` when anything else failed."""
    errors = exc.details.get("writeErrors") or []
    if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
        raise refused(exc) from None  # not "from exc": a traceback would print the documents again
    return {int(e["index"]) for e in errors}


def _write_errors(exc: BulkWriteError) -> tuple[set[int], set[int]]:
    """The indexes an ``insert_many(ordered=False)`` found stored already and the ones too large for a document;
    raises :func:`refused` when anything else failed."""
    errors = exc.details.get("writeErrors") or []
    if not errors or any(e.get("code") not in (DUPLICATE_KEY, *TOO_LARGE_CODES) for e in errors):
        raise refused(exc) from None  # not "from exc": a traceback would print the documents again
    return ({int(e["index"]) for e in errors if e.get("code") == DUPLICATE_KEY},
            {int(e["index"]) for e in errors if e.get("code") in TOO_LARGE_CODES})


def _by_message_id(collection: Any, inbox_id: str, message_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The documents of ``inbox_id`` in ``collection`` among ``message_ids``, by Message-ID, in one query."""
    ids = [m for m in dict.fromkeys(message_ids) if m]
    if not ids:
        return {}
    return {doc["messageId"]: doc for doc in collection.find({"inboxIntegrationId": inbox_id,
                                                              "messageId": {"$in": ids}})}


def utcnow() -> dt.datetime:
    """Now in UTC, truncated to milliseconds as MongoDB stores it."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class Storage:
    """Thin, typed access to the runtime's collections. Thread-safe (pymongo clients are)."""

    def __init__(self, mongo_url: str, *, database: str | None = None, timeout_ms: int = 10000,
                 client: pymongo.MongoClient | None = None, sealer: Sealer | None = None,
                 tenant: str = "os") -> None:
        self.sealer = sealer
        self.tenant = tenant  # bound into every sealed value's associated data
        self._client = client or pymongo.MongoClient(
            mongo_url, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
            socketTimeoutMS=max(timeout_ms, 30000), tz_aware=True, appname="imap-runtime")
        self.db = self._client.get_database(database) if database else self._client.get_default_database(
            "imap_runtime")
        self.integrations = self.db["imap_integrations"]
        self.customers = self.db["imap_customers"]
        self.messages = self.db["imap_messages"]
        self.logs = self.db["imap_logs"]
        self.cursors = self.db["imap_cursors"]
        self.quarantine = self.db["imap_quarantine"]
        self.intents = self.db["imap_intents"]

    def ping(self) -> None:
        try:
            self.db.command("ping")
        except PyMongoError as exc:
            raise StorageError(f"MongoDB is not reachable: {exc}") from exc

    def ensure_indexes(self) -> None:
        try:
            self.integrations.create_index("inboxId", unique=True)
            self.customers.create_index([("inboxIntegrationId", 1), ("email", 1)], unique=True)
            self.customers.create_index("contactsId")
            self.messages.create_index([("inboxIntegrationId", 1), ("messageId", 1)], unique=True)
            self.messages.create_index([("inboxIntegrationId", 1), ("references", 1)])
            self.messages.create_index("inboxConversationId")
            self.cursors.create_index([("integrationId", 1), ("folder", 1)], unique=True)
            self.intents.create_index([("inboxIntegrationId", 1), ("messageId", 1)], unique=True)
            self.logs.create_index([("date", -1)])
            self.quarantine.create_index([("integrationId", 1), ("folder", 1), ("uid", 1), ("uidvalidity", 1)],
                                         unique=True)
        except PyMongoError as exc:
            raise StorageError(f"cannot create indexes: {exc}") from exc

    def close(self) -> None:
        self._client.close()

    # -- integrations ---------------------------------------------------------------------------------------------
    def save_integration(self, inbox_id: str, details: dict[str, Any]) -> dict[str, Any]:
        """Insert or replace the details of the integration ``inbox_id``; returns the stored document."""
        now = utcnow()
        details = {k: (self._seal(k, inbox_id, v) if k in SECRET_FIELDS else v) for k, v in details.items()}
        return self._open(self.integrations.find_one_and_update(
            {"inboxId": inbox_id},
            {"$set": {**details, "inboxId": inbox_id, "updatedAt": now},
             "$setOnInsert": {"createdAt": now, "healthStatus": "healthy", "error": None,
                              "webhookSecret": self._seal("webhookSecret", inbox_id, secrets.token_urlsafe(32))}},
            upsert=True, return_document=pymongo.ReturnDocument.AFTER))

    def update_integration_fields(self, inbox_id: str, fields: dict[str, Any]) -> bool:
        """Set ``fields`` (secrets sealed) on an existing integration; False when there is none (never creates).
        ``updatedAt`` (the settings' version: other nodes restart the mailbox when it changes) is left alone."""
        fields = {k: (self._seal(k, inbox_id, v) if k in SECRET_FIELDS else v) for k, v in fields.items()}
        return self.integrations.update_one({"inboxId": inbox_id}, {"$set": fields}).matched_count > 0

    def get_integration(self, inbox_id: str) -> dict[str, Any] | None:
        return self._open(self.integrations.find_one({"inboxId": inbox_id}))

    def find_integration(self, query: dict[str, Any]) -> dict[str, Any] | None:
        return self._open(self.integrations.find_one(query))

    def get_integration_by_id(self, object_id: str) -> dict[str, Any] | None:
        try:
            oid = ObjectId(object_id)
        except (InvalidId, TypeError):
            return None
        return self._open(self.integrations.find_one({"_id": oid}))

    def list_integrations(self) -> list[dict[str, Any]]:
        """Every integration, secrets unsealed; one whose secrets do not unseal (its key was dropped from
        SECRET_KEYS) comes without them and with ``sealError``, so it cannot stop the others."""
        found = []
        for doc in self.integrations.find({}):
            try:
                found.append(self._open(doc))
            except StorageError as exc:
                logger.error("Integration %s: %s", doc.get("inboxId"), exc)
                found.append({**{k: v for k, v in doc.items() if k not in SECRET_FIELDS}, "sealError": str(exc)})
        return found

    def _contexts(self, field: str, inbox_id: Any) -> tuple[str, str]:
        """The associated data of a sealed value: field, tenant and integration; then the form before the tenant was
        bound in (issue 12), still read, resealed at once."""
        return f"{field}:{self.tenant}:{inbox_id}", f"{field}:{inbox_id}"

    def _seal(self, field: str, inbox_id: str, value: Any) -> Any:
        if self.sealer is None or not isinstance(value, str) or not value or is_sealed(value):
            return value
        return self.sealer.seal(value, context=self._contexts(field, inbox_id)[0])

    def seal_secret(self, field: str, inbox_id: str, value: str) -> str:
        """``value`` sealed as every secret is (field, tenant and integration bound in), for a secret kept outside
        the integration's document (``/login``'s PKCE verifier); as it is without a sealer."""
        return self._seal(field, inbox_id, value)

    def open_secret(self, field: str, inbox_id: str, value: str) -> str:
        """The plain text of a value :meth:`seal_secret` sealed; only the current associated data opens it."""
        if self.sealer is None:
            return value
        return self.sealer.unseal(value, context=self._contexts(field, inbox_id)[0])

    def _unseal(self, field: str, inbox_id: Any, value: str) -> tuple[str, bool]:
        """The plain text, and whether it was sealed with the legacy associated data."""
        assert self.sealer is not None
        plain, index = self.sealer.unseal_with(value, contexts=self._contexts(field, inbox_id))
        return plain, index > 0

    def _open(self, doc: Any) -> Any:
        """``doc`` with its secrets unsealed (a copy); None stays None. A secret sealed with the legacy associated
        data (no tenant) is sealed again with the current one at once."""
        if doc is None or not any(is_sealed(doc.get(f)) for f in SECRET_FIELDS):
            return doc
        if self.sealer is None:
            raise StorageError(f"integration {doc.get('inboxId')} has sealed secrets and no SECRET_KEYS are given")
        inbox_id = doc.get("inboxId")
        plain: dict[str, Any] = {}
        legacy: dict[str, str] = {}
        for f in SECRET_FIELDS:
            if is_sealed(doc.get(f)):
                plain[f], old = self._unseal(f, inbox_id, doc[f])
                if old:
                    legacy[f] = doc[f]
        if legacy and "_id" in doc:
            self._reseal_legacy(doc["_id"], inbox_id, legacy, plain)
        return {**doc, **plain}

    def _reseal_legacy(self, oid: Any, inbox_id: Any, legacy: dict[str, str], plain: dict[str, Any]) -> None:
        """Seal ``legacy`` values again with the tenant bound in; only if they are still the ones read."""
        new = {f: self._seal(f, inbox_id, plain[f]) for f in legacy}
        try:
            self.integrations.update_one({"_id": oid, **legacy}, {"$set": new})
        except PyMongoError as exc:  # read again (and resealed) next time
            logger.warning("Integration %s: cannot reseal its secrets yet (MongoDB: %s)", inbox_id, exc)

    def reseal_integrations(self) -> tuple[int, int, list[str]]:
        """Seal every secret with the first key: plain ones (erxes's records) and ones sealed with an older key.
        Returns ``(documents changed, documents already current, inbox ids whose secrets do not unseal)``. Safe
        while the runtime runs: each update applies only if the values are still the ones read."""
        if self.sealer is None:
            raise StorageError("reseal needs SECRET_KEYS")
        changed = current = 0
        failed: list[str] = []
        for doc in self.integrations.find({}, projection={"inboxId": 1, **{f: 1 for f in SECRET_FIELDS}}):
            inbox_id = doc.get("inboxId")
            try:
                opened = {f: self._unseal(f, inbox_id, doc[f]) for f in SECRET_FIELDS
                          if isinstance(doc.get(f), str) and doc[f]}
                old = {f: doc[f] for f, (_, legacy) in opened.items() if legacy or not self.sealer.is_current(doc[f])}
                if not old:
                    current += 1
                    continue
                new = {f: self.sealer.seal(opened[f][0], context=self._contexts(f, inbox_id)[0]) for f in old}
            except StorageError as exc:
                logger.warning("Integration %s: %s", inbox_id, exc)
                failed.append(str(inbox_id))
                continue
            if self.integrations.update_one({"_id": doc["_id"], **old}, {"$set": new}).modified_count:
                changed += 1
        return changed, current, failed

    def set_health(self, inbox_id: str, *, state: str, healthy: bool, error: str | None,
                   synced: bool = False) -> None:
        fields: dict[str, Any] = {"state": state, "healthStatus": "healthy" if healthy else "unHealthy",
                                  "error": error, "stateChangedAt": utcnow()}
        if synced:
            fields["lastFetchDate"] = fields["stateChangedAt"]
        self.integrations.update_one({"inboxId": inbox_id}, {"$set": fields})

    def remove_integration(self, inbox_id: str) -> bool:
        """Delete the integration with its messages, customers and cursors, as erxes does."""
        found = self.integrations.delete_one({"inboxId": inbox_id}).deleted_count > 0
        self.messages.delete_many({"inboxIntegrationId": inbox_id})
        self.customers.delete_many({"inboxIntegrationId": inbox_id})
        self.cursors.delete_many({"integrationId": inbox_id})
        self.quarantine.delete_many({"integrationId": inbox_id})
        self.intents.delete_many({"inboxIntegrationId": inbox_id})
        return found

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

    # -- messages ---------------------------------------------------------------------------------------------------
    def find_message(self, inbox_id: str, message_id: str) -> dict[str, Any] | None:
        return self.messages.find_one({"inboxIntegrationId": inbox_id, "messageId": message_id})

    def find_messages(self, inbox_id: str, message_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The stored messages of ``inbox_id`` among ``message_ids``, by Message-ID (one query for a batch)."""
        return _by_message_id(self.messages, inbox_id, message_ids)

    def find_thread_conversation(self, inbox_id: str, message_ids: Iterable[str]) -> str | None:
        """The conversation of a stored message this mail answers (by In-Reply-To/References), or of a sibling
        that shares one of those ancestors; the earliest match wins."""
        ids = [m for m in dict.fromkeys(message_ids) if m]
        return pick_thread(self.thread_candidates(inbox_id, ids), ids)

    def thread_candidates(self, inbox_id: str, message_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Stored messages with a conversation that are one of ``message_ids`` or reference one of them (for a
        whole batch at once; :func:`runtime.pipeline.pick_thread` picks each mail's)."""
        ids = [m for m in dict.fromkeys(message_ids) if m]
        if not ids:
            return []
        # Two plain queries, each on its own index, rather than one $or: servers plan $or poorly (SecantusDB scanned
        # the collection: 390 ms a mail at 10,000 messages, see docs/benchmarks.md).
        found: dict[Any, dict[str, Any]] = {}
        for field in ("messageId", "references"):
            for doc in self.messages.find({"inboxIntegrationId": inbox_id, field: {"$in": ids}}, projection={
                    "messageId": 1, "references": 1, "inboxConversationId": 1, "createdAt": 1}):
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

    # -- logs -------------------------------------------------------------------------------------------------------
    def log(self, kind: str, message: str, *, inbox_id: str | None = None, error_stack: str | None = None) -> None:
        """Append an ``imap_logs`` entry; never raises (a log write must not break the caller)."""
        entry: dict[str, Any] = {"date": utcnow(), "type": kind, "message": scrub(message)}
        if inbox_id:
            entry["integrationId"] = inbox_id
        if error_stack:
            entry["errorStack"] = scrub(error_stack)
        try:
            self.logs.insert_one(entry)
        except PyMongoError:
            logger.warning("Could not write an imap_logs entry (MongoDB unavailable)")


_SECRET_PATTERNS = [
    re.compile(r'("?(?:password|pass|token|secret)"?\s*[:=]\s*)("[^"]*"|\'[^\']*\'|\S+)', re.IGNORECASE),
    re.compile(r"(://[^:/@\s]+:)([^@/\s]+)(@)"),
]


def scrub(text: str) -> str:
    """Hide anything that looks like a secret (``password=...``, credentials in URLs)."""
    text = _SECRET_PATTERNS[0].sub(r"\1***", text)
    return _SECRET_PATTERNS[1].sub(r"\1***\3", text)
