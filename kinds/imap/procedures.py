"""The procedures the runtime serves as service ``imap`` (contract section 3): one table, any transport.

Each handler takes the request envelope (``{"subdomain", "data", ...}``) and returns the reply's ``data`` (or
None); raising :class:`RequestError` (or anything else) becomes an error envelope with that message. Handlers run
on broker worker threads and reach actors only with ``ask`` and a timeout.

With several nodes any node may serve any request (the broker's competing consumers, or HTTP behind a balancer):
the supervisor listens only where it holds the lease, the owner notices another node's change through
``updatedAt`` at its next rebalancing pass (seconds), and a removal waits for the owner to let go (docs/scaling.md).
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from pymongo.errors import DuplicateKeyError

from kinds.imap.credentials import follow_host
from kinds.imap.details import parse_details
from kinds.imap.logs_collect import collect_items
from runtime.arguments import envelope_data, integration_id, tenant
from runtime.errors import RequestError
from runtime.storage import SECRET_FIELDS

__all__ = ["ImapProcedures", "SERVICE"]

logger = logging.getLogger(__name__)

SERVICE = "imap"
# What a caller sees of an integration's details (erxes's shape); never one of storage's SECRET_FIELDS
DETAIL_FIELDS = ("host", "smtpHost", "smtpPort", "smtpTls", "mainUser", "user", "port", "tls", "starttls", "folders")
assert not set(DETAIL_FIELDS) & set(SECRET_FIELDS)


class ImapProcedures:
    def __init__(self, *, storage: Any, supervisor: Any, sender: Any = None, timeout: float = 30.0,
                 on_tenant: Callable[[str], None] = lambda subdomain: None, ownership: Any = None,
                 attachment_url_prefix: str = "") -> None:
        self._url_prefix = attachment_url_prefix  # where cid: images of collectItems' bodies point
        self._ownership = ownership  # runtime.leases.Leases (several nodes), or None
        self._on_tenant = on_tenant  # records a tenant that now has integrations (saas)
        self._storage = storage
        self._supervisor = supervisor  # a SupervisorActor proxy
        self._sender = sender  # kinds.imap.sending.MailSender
        self._timeout = timeout

    def rpc_procedures(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            f"{SERVICE}:createIntegration": self.create_integration,
            f"{SERVICE}:updateIntegration": self.update_integration,
            f"{SERVICE}:removeIntegrations": self.remove_integration,
            f"{SERVICE}:removeIntegration": self.remove_integration,  # the seed guide's name
            f"{SERVICE}:api_to_integrations": self.api_to_integrations,
            f"{SERVICE}:getStatus": self.get_status,
            f"{SERVICE}:imapMessage.create": self.create_message,
            f"{SERVICE}:logs.collectItems": self.collect_items,
        }

    def plain_procedures(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {f"{SERVICE}:listen": self.listen}

    # -- procedures ---------------------------------------------------------------------------------------------------
    def create_integration(self, envelope: dict[str, Any]) -> None:
        data = envelope_data(envelope)
        inbox_id = integration_id(data)
        doc = data.get("doc")
        if not isinstance(doc, dict):
            raise RequestError("doc is required: {accountId, kind, integrationId, data}")
        details = parse_details(doc.get("data"))
        details = self._follow_host(inbox_id, self._storage.get_integration(inbox_id), details)
        self._on_tenant(tenant())
        self._save(inbox_id, details)
        self._storage.log("info", f"integration {inbox_id} created for {details['user']}", inbox_id=inbox_id)
        self._ask(self._supervisor.restart(inbox_id, tenant(), unless_current=True))

    def update_integration(self, envelope: dict[str, Any]) -> None:
        data = envelope_data(envelope)
        inbox_id = integration_id(data)
        stored = self._storage.get_integration(inbox_id)
        if stored is None:
            raise RequestError("Integration not found.")
        doc = data.get("doc")
        if not isinstance(doc, dict):
            raise RequestError("doc is required: {accountId, kind, integrationId, data}")
        details = parse_details(doc.get("data"), require_password=False)
        if not details["password"]:
            del details["password"]  # an empty password keeps the stored one, while the servers stay the same
        details = self._follow_host(inbox_id, stored, details)
        self._save(inbox_id, details)
        self._storage.log("info", f"integration {inbox_id} updated", inbox_id=inbox_id)
        self._ask(self._supervisor.restart(inbox_id, tenant(), unless_current=True))

    def remove_integration(self, envelope: dict[str, Any]) -> None:
        inbox_id = integration_id(envelope_data(envelope))
        doc = self._storage.get_integration(inbox_id)
        self._ask(self._supervisor.stop_listening(inbox_id, tenant()))
        if self._storage.remove_integration(inbox_id):
            logger.info("Integration %s removed", inbox_id)
        if doc is not None and getattr(self._ownership, "leasing", False):
            # Another node may own it: it stops at its next rebalancing pass, seeing the integration gone. Wait for
            # that, then remove again what its mailbox stored meanwhile.
            timings = self._ownership.timings
            if not self._ownership.wait_released(self._ownership.key(tenant(), doc["_id"]),
                                                 timings.lease + 2 * timings.renew_every):
                logger.warning("Integration %s: its owner did not let go in time; its lease expires anyway",
                               inbox_id)
            self._storage.remove_integration(inbox_id)

    def api_to_integrations(self, envelope: dict[str, Any]) -> Any:
        data = envelope_data(envelope)
        if data.get("action") != "getDetails":
            return None  # inbox stores a reply itself only when we answer with no data
        doc = self._storage.get_integration(integration_id(data))
        return public_details(doc) if doc else None

    def get_status(self, envelope: dict[str, Any]) -> dict[str, Any]:
        doc = self._storage.get_integration(integration_id(envelope_data(envelope)))
        if doc is None:
            return {"status": "healthy"}
        return {"status": doc.get("healthStatus", "healthy"), "error": doc.get("error")}

    def create_message(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """engages' new email: the same arguments and reply as the ``imapSendMail`` mutation."""
        if self._sender is None:
            raise RequestError("sending is not available in this process")
        return self._sender.send(envelope.get("subdomain") or "os", envelope_data(envelope))

    def collect_items(self, envelope: dict[str, Any]) -> dict[str, Any]:
        """core's activity log: wrapped twice (``{status, data}`` inside the reply's data), as core reads it."""
        return collect_items(self._storage, envelope, url_prefix=self._url_prefix)

    def listen(self, envelope: dict[str, Any]) -> None:
        data = envelope_data(envelope)
        object_id = data.get("_id")
        if not isinstance(object_id, str) or not object_id:
            raise RequestError("_id is required")
        doc = self._storage.get_integration_by_id(object_id)
        if doc is None:
            raise RequestError(f"Integration {object_id} not found.")
        self._ask(self._supervisor.ensure_listening(doc["inboxId"], tenant()))

    def _follow_host(self, inbox_id: str, stored: dict[str, Any] | None, details: dict[str, Any]) -> dict[str, Any]:
        """``details`` checked by :func:`kinds.imap.credentials.follow_host` (RequestError when a stored password would
        follow a server that moved); a cleared OAuth consent is logged."""
        out = follow_host(stored, details)
        if stored and stored.get("oauthRefreshToken") and "oauthRefreshToken" in out and not out["oauthRefreshToken"]:
            logger.info("Integration %s: its servers changed; the OAuth consent is cleared", inbox_id)
            self._storage.log("info", f"integration {inbox_id}: the servers changed, so the OAuth consent was cleared "
                                      f"(tokens are never sent to a new host); sign in again", inbox_id=inbox_id)
        return out

    def _save(self, inbox_id: str, details: dict[str, Any]) -> None:
        try:
            self._storage.save_integration(inbox_id, details)
        except DuplicateKeyError:  # the same integration created on two nodes at once: the other insert won
            self._storage.save_integration(inbox_id, details)

    def _ask(self, future: Any) -> Any:
        return future.get(timeout=self._timeout)


def public_details(doc: dict[str, Any]) -> dict[str, Any]:
    """An integration as callers may see it: never a secret (the contract's policy)."""
    out: dict[str, Any] = {"_id": str(doc["_id"]), "inboxId": doc["inboxId"]}
    out.update({k: doc.get(k) for k in DETAIL_FIELDS if k in doc})
    out["password"] = None  # erxes's shape has the field; its value is never sent
    out["healthStatus"] = doc.get("healthStatus", "healthy")
    out["error"] = doc.get("error")
    return out

