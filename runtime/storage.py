"""MongoDB storage: erxes's collections (contract section 5) and ours, with their indexes.

Collections erxes has: ``imap_integrations``, ``imap_customers``, ``imap_messages``, ``imap_logs``.
Ours: ``imap_cursors`` (per integration and folder: UIDVALIDITY and the last UID fully processed),
``imap_intents``, ``imap_quarantine`` (mails that could not be processed), ``imap_tenants``, ``imap_oauth_states``
(``/login``'s) and ``imap_console`` (the console's session key).

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
``imap_integrations``, :data:`SECRET_FIELDS`) are sealed on write and unseal on read here, in one place
(:mod:`runtime.sealing`): ``get_integration``, ``get_integration_by_id``, ``integration_of_user``,
``integration_of_alias``, ``list_integrations`` and ``save_integration`` return documents with plain secrets, for
internal use only (never for a response). Plain values (erxes's own records) read as they are until
``reseal_integrations`` seals them. A Storage built without a sealer (tools, tests) writes plain values and refuses
to read sealed ones.

Callers use the operations, never a collection (issue 15): what a module needs from MongoDB is a method here that
says what it does. The IMAP kind's collections' operations are in :mod:`runtime._storage_mail`, a mixin; the
names every storage module shares (``PENDING``, ``utcnow``, ``scrub``...) in :mod:`runtime._storage_base`, all
importable from here. The collections stay attributes for tests, to set up and inspect data. Modules that own
collections of their own (the standalone stand-in's, a kind's store) reach them with :meth:`Storage.collection`.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any, Iterable

import pymongo
from bson import ObjectId
from bson.errors import InvalidId
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from runtime._storage_base import (DONE, DUPLICATE_KEY, MAX_DOCUMENT, MAX_RAW_IN_DOCUMENT, PENDING, STORED,
                                   TOO_LARGE_CODES, refused, scrub, utcnow)
from runtime._storage_mail import MailStorage
from runtime.errors import StorageError
from runtime.sealing import Sealer, is_sealed

__all__ = ["DONE", "DUPLICATE_KEY", "MAX_DOCUMENT", "MAX_RAW_IN_DOCUMENT", "PENDING", "SECRET_FIELDS", "STORED",
           "Storage", "TOO_LARGE_CODES", "refused", "scrub", "utcnow"]

logger = logging.getLogger(__name__)

SECRET_FIELDS = ("password", "webhookSecret", "oauthClientSecret", "oauthRefreshToken", "oauthAccessToken")
TENANTS = "imap_tenants"  # in the base database: {subdomain, createdAt} per tenant with integrations (saas)
SIGN_IN_STATES = "imap_oauth_states"  # /login's: {_id: SHA-256 of the state, inboxId, verifier (sealed), expiresAt}
CONSOLE_KEYS = "imap_console"  # {_id: "sessionKey", key: <hex, sealed when SECRET_KEYS are set>}


class Storage(MailStorage):
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

    @property
    def database_name(self) -> str:
        return str(self.db.name)

    def sibling(self, database: str, *, tenant: str) -> Storage:
        """A Storage of another database (a tenant's) on this one's client: one connection pool for every tenant,
        closed with this one."""
        return Storage("", database=database, client=self._client, sealer=self.sealer, tenant=tenant)

    def collection(self, name: str) -> Collection[Any]:
        """The collection ``name`` of this database, for a module that owns it and offers its operations itself
        (``runtime.standalone``'s ``standalone_*``, a kind's store: ``kinds.api.store``'s ``api_*``)."""
        return self.db[name]

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

    def integration_of_user(self, address: str) -> dict[str, Any] | None:
        """The integration whose ``user`` (its mailbox's address) is ``address``: as stored, else in any case."""
        doc = self._open(self.integrations.find_one({"user": address}))
        if doc is None:
            doc = next((d for d in self.list_integrations()
                        if str(d.get("user") or "").strip().lower() == address.lower()), None)
        return doc

    def integration_of_alias(self, address: str) -> dict[str, Any] | None:
        """The integration with ``address`` (lower case, as ``aliases`` are stored) among its ``aliases``."""
        return self._open(self.integrations.find_one({"aliases": address}))

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

    def inventory(self) -> Iterable[dict[str, Any]]:
        """``{_id, inboxId, updatedAt}`` of every integration (the supervisor's share of the leases; no secret)."""
        return self.integrations.find({}, {"inboxId": 1, "updatedAt": 1})

    def integration_users(self) -> Iterable[dict[str, Any]]:
        """``{_id, inboxId, user}`` of every integration (``admin owners``; no secret)."""
        return self.integrations.find({}, {"inboxId": 1, "user": 1})

    def integration_health(self) -> Iterable[dict[str, Any]]:
        """``{inboxId, state, healthStatus, error}`` of every integration (``/ready``'s counts; no secret)."""
        return self.integrations.find({}, {"state": 1, "healthStatus": 1, "error": 1, "inboxId": 1, "_id": 0})

    def integrations_mark(self) -> tuple[Any, ...]:
        """What changes when an integration comes or goes or its settings or state change (the console's live view
        polls it): the newest state change, the newest update and the count."""
        def newest(key: str) -> tuple[Any, ...]:
            doc = self.integrations.find_one({}, {key: 1, "inboxId": 1}, sort=[(key, -1)])
            return (doc or {}).get(key), (doc or {}).get("inboxId")

        return newest("stateChangedAt"), newest("updatedAt"), self.integrations.estimated_document_count()

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

    def logs_of(self, inbox_id: str | None = None, *, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` ``imap_logs`` entries, of ``inbox_id`` when given."""
        query = {"integrationId": inbox_id} if inbox_id else {}
        return list(self.logs.find(query, sort=[("date", -1), ("_id", -1)], limit=limit))

    # -- tenants (in the base database; runtime.tenants) -----------------------------------------------------------
    def record_tenant(self, subdomain: str) -> None:
        """Record a tenant with integrations, once, so a restart (or another node) resumes its mailboxes."""
        self.db[TENANTS].update_one({"subdomain": subdomain}, {"$setOnInsert": {"createdAt": utcnow()}},
                                    upsert=True)

    def tenant_recorded(self, subdomain: str) -> bool:
        return self.db[TENANTS].find_one({"subdomain": subdomain}, projection={"_id": 1}) is not None

    def recorded_tenants(self) -> list[str]:
        return [doc["subdomain"] for doc in self.db[TENANTS].find({}, projection={"subdomain": 1})]

    def ensure_tenant_index(self) -> None:
        self.db[TENANTS].create_index("subdomain", unique=True)

    # -- /login's sign-in states and the console's session key ------------------------------------------------------
    def keep_sign_in(self, state: dict[str, Any]) -> None:
        """Keep a started sign-in (``_id``: its state's digest, ``createdAt``, ``expiresAt``...) and drop the ones
        expired by its ``createdAt``."""
        states = self.db[SIGN_IN_STATES]
        states.delete_many({"expiresAt": {"$lt": state["createdAt"]}})
        states.insert_one(state)

    def take_sign_in(self, state_id: str) -> dict[str, Any] | None:
        """The unexpired sign-in ``state_id``, removed as it is read: a state serves once."""
        return self.db[SIGN_IN_STATES].find_one_and_delete({"_id": state_id, "expiresAt": {"$gt": utcnow()}})

    def console_key(self, candidate: str) -> str:
        """The console's stored session key (as stored: sealed or not); ``candidate`` becomes it when there is
        none yet, so every node ends up with the first one written."""
        doc = self.db[CONSOLE_KEYS].find_one_and_update(
            {"_id": "sessionKey"}, {"$setOnInsert": {"key": candidate}}, upsert=True, return_document=True)
        if doc is None:  # an old server answering the pre-image: read what is stored now
            doc = self.db[CONSOLE_KEYS].find_one({"_id": "sessionKey"})
        return str(doc["key"])

    def replace_console_key(self, old: str, new: str) -> None:
        """Store ``new`` as the console's session key if ``old`` is still the stored one."""
        self.db[CONSOLE_KEYS].update_one({"_id": "sessionKey", "key": old}, {"$set": {"key": new}})
