"""The console's mailboxes: every integration with its state, add (through ``createIntegration`` itself), edit
(``updateIntegration``), test the login first, remove (``removeIntegration``), and one integration's details and
log (``imap_logs``). :class:`ImapPage` is the base of the IMAP kind's console pages."""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

import tornado.web
from bson import ObjectId

from kinds.imap.connection import NETWORK_ERRORS, ImapSettings, connect
from kinds.imap.details import parse_details
from kinds.imap.procedures import public_details
from runtime.errors import MailboxError, RequestError
from web.console.base import Console, ConsoleHandler

__all__ = ["AddMailboxHandler", "EditMailboxHandler", "ImapPage", "MailboxHandler", "MailboxesHandler",
           "RemoveMailboxHandler", "TEMPLATES", "TestLoginHandler", "mailbox_rows", "test_login"]

logger = logging.getLogger(__name__)

TEMPLATES = str(Path(__file__).resolve().parent / "templates")

FORM_FIELDS = ("host", "port", "user", "mainUser", "smtpHost", "smtpPort", "caCert")
LOG_LIMIT = 100
MAX_LISTED = 1000


def mailbox_rows(storage: Any, ownership: Any, subdomain: str) -> list[dict[str, Any]]:
    """One row per integration (newest first): its state and reason, last mail, message count, lease holder."""
    docs = sorted(storage.list_integrations(), key=lambda d: str(d.get("createdAt") or ""), reverse=True)
    docs = docs[:MAX_LISTED]
    holders = _holders(ownership, subdomain, docs)
    rows = []
    for doc in docs:
        inbox_id = doc["inboxId"]
        last = storage.newest_message(inbox_id)
        state = str(doc.get("state") or "connecting")
        if doc.get("healthStatus") == "unHealthy" and state != "backoff":
            state = "unhealthy"
        rows.append({"inboxId": inbox_id, "user": doc.get("user") or "", "host": doc.get("host") or "",
                     "kind": "imap (OAuth2)" if doc.get("oauthTokenUrl") else "imap", "state": state,
                     "health": doc.get("healthStatus", "healthy"), "error": doc.get("error") or doc.get("sealError"),
                     "lastMail": last.get("createdAt") if last else None,
                     "lastSubject": (last.get("subject") or "") if last else "",
                     "messages": storage.count_messages(inbox_id),
                     "holder": holders.get(inbox_id, ""), "synced": doc.get("lastFetchDate")})
    return rows


def _holders(ownership: Any, subdomain: str, docs: list[dict[str, Any]]) -> dict[str, str]:
    if ownership is None:
        return {}
    if not getattr(ownership, "leasing", False):
        return {d["inboxId"]: getattr(ownership, "node_id", "") or "this node" for d in docs}
    keys = {d["inboxId"]: ownership.key(subdomain, d["_id"]) for d in docs}
    try:
        owners = ownership.owners(list(keys.values()))
    except Exception as exc:  # Redis away: the page still shows everything else
        logger.debug("console: lease holders unknown: %s", exc)
        return {}
    return {inbox: owners.get(key) or "none" for inbox, key in keys.items()}


def test_login(details: dict[str, Any], *, timeout: float) -> str:
    """Validate ``details`` as createIntegration does, log in once and out; the notice to show. Raises RequestError
    (a bad form) or MailboxError (the server's own words). Blocking."""
    settings = ImapSettings.from_integration(parse_details(details), timeout=timeout)
    client = connect(settings)
    try:
        client.logout()
    except NETWORK_ERRORS:
        pass
    return f"The server accepted the login of {settings.login} at {settings.host}:{settings.port}."


class ImapPage(ConsoleHandler):
    """A page of the IMAP kind: its templates first, then the shell's; the kind's sender and mailbox timeout."""

    template_dirs = (TEMPLATES, *ConsoleHandler.template_dirs)

    def initialize(self, console: Console, sender: Any = None, timeout: float = 30.0) -> None:  # type: ignore[override]
        super().initialize(console)
        self.sender = sender  # kinds.imap.sending.MailSender (Services.extra["imap_sender"])
        self.timeout = timeout


class MailboxesHandler(ImapPage):
    """``GET /``: the mailboxes page (``?fragment=rows``: only the table's rows, for live updates)."""

    async def get(self, form: dict[str, str] | None = None, error: str = "", notice: str = "") -> None:
        rows = await self.blocking(mailbox_rows, self.deps.storage, getattr(self.deps, "ownership", None),
                                   self.subdomain)
        if self.get_query_argument("fragment", "") == "rows":
            self.render("mailbox_rows.html", rows=rows)
            return
        self.render("mailboxes.html", rows=rows, form=form or {}, error=error, notice=notice, page="mailboxes",
                    added=self.get_query_argument("added", ""), removed=self.get_query_argument("removed", ""),
                    action="/console/mailboxes", submit_label="Add mailbox", editing=False, inbox_id="")

    def read_form(self) -> tuple[dict[str, str], dict[str, Any]]:
        """The form as typed (to show it again, never the password) and as integration details (``doc.data``)."""
        form = {name: self.get_body_argument(name, "").strip() for name in FORM_FIELDS}
        details: dict[str, Any] = {k: v for k, v in form.items() if v}
        details["password"] = self.get_body_argument("password", "")
        details["tls"] = self.get_body_argument("tls", "") in ("on", "true", "1")
        form["tls"] = "on" if details["tls"] else ""
        return form, details


class AddMailboxHandler(MailboxesHandler):
    """``POST /console/mailboxes``: the ``add-integration`` form, validated and saved by ``createIntegration``."""

    async def post(self) -> None:
        if not self.console.full:
            raise tornado.web.HTTPError(403)
        form, details = self.read_form()
        inbox_id = str(ObjectId())
        envelope = {"subdomain": self.subdomain, "data": {"kind": "imap", "integrationId": inbox_id, "doc": {
            "accountId": "", "kind": "imap", "integrationId": inbox_id, "data": json.dumps(details)}}}
        try:
            await self.blocking(self._procedure("createIntegration"), envelope)
        except RequestError as exc:
            self.set_status(400)
            await self.get(form=form, error=str(exc))
            return
        logger.info("Console: integration %s added for %s", inbox_id, details.get("user"))
        self.redirect(f"/console/mailboxes/{inbox_id}?added=1")

    def _procedure(self, name: str) -> Any:
        try:
            return self.deps.rpc[name][1]  # the very handler /rpc and AMQP serve
        except KeyError:
            raise tornado.web.HTTPError(503, reason=f"{name} is not served by this process") from None


class RemoveMailboxHandler(AddMailboxHandler):
    async def post(self, inbox_id: str) -> None:
        if not self.console.full:
            raise tornado.web.HTTPError(403)
        envelope = {"subdomain": self.subdomain, "data": {"integrationId": inbox_id}}
        try:
            await self.blocking(self._procedure("removeIntegration"), envelope)
        except RequestError as exc:
            raise tornado.web.HTTPError(400, reason=str(exc)[:100]) from None
        logger.info("Console: integration %s removed", inbox_id)
        self.redirect("/?removed=1")


class TestLoginHandler(AddMailboxHandler):
    """``POST /console/mailboxes/test``: the form's details checked by ``parse_details`` (createIntegration's own
    validation), then one IMAP login with them (the IMAP kind's ``test_login``), and the server's answer shown.
    From the edit form (``inboxId``), an empty password means the stored one. Nothing is saved."""

    async def post(self) -> None:
        if not self.console.full:
            raise tornado.web.HTTPError(403)
        form, details = self.read_form()
        inbox_id = self.get_body_argument("inboxId", "").strip()
        if inbox_id and not details["password"]:
            stored = await self.blocking(self.deps.storage.get_integration, inbox_id)
            details["password"] = str((stored or {}).get("password") or "")
        error, notice = "", ""
        try:
            notice = await self.blocking(functools.partial(test_login, details, timeout=min(self.timeout, 15.0)))
        except RequestError as exc:
            error = str(exc)
        except MailboxError as exc:  # AuthenticationFailed included: the server's own words
            error = f"The login failed: {exc}"
        if error:
            self.set_status(400)
        if inbox_id:
            self.render("edit.html", form=form, error=error, notice=notice, inbox_id=inbox_id, editing=True,
                        action=f"/console/mailboxes/{inbox_id}/edit", submit_label="Save", page="mailboxes")
        else:
            await self.get(form=form, error=error, notice=notice)


class EditMailboxHandler(AddMailboxHandler):
    """``GET/POST /console/mailboxes/<inboxId>/edit``: the settings through ``updateIntegration`` (an empty
    password keeps the stored one)."""

    async def get(self, inbox_id: str) -> None:  # type: ignore[override]
        if not self.console.full:
            raise tornado.web.HTTPError(403)
        doc = await self.blocking(self.deps.storage.get_integration, inbox_id)
        if doc is None:
            raise tornado.web.HTTPError(404)
        form = {k: str(doc.get(k) or "") for k in FORM_FIELDS}
        form["tls"] = "on" if doc.get("tls", True) else ""
        self.render("edit.html", form=form, error="", notice="", inbox_id=inbox_id, editing=True,
                    action=f"/console/mailboxes/{inbox_id}/edit", submit_label="Save", page="mailboxes")

    async def post(self, inbox_id: str) -> None:  # type: ignore[override]
        if not self.console.full:
            raise tornado.web.HTTPError(403)
        form, details = self.read_form()
        envelope = {"subdomain": self.subdomain, "data": {"kind": "imap", "integrationId": inbox_id, "doc": {
            "accountId": "", "kind": "imap", "integrationId": inbox_id, "data": json.dumps(details)}}}
        try:
            await self.blocking(self._procedure("updateIntegration"), envelope)
        except RequestError as exc:
            self.set_status(404 if str(exc) == "Integration not found." else 400)
            self.render("edit.html", form=form, error=str(exc), notice="", inbox_id=inbox_id, editing=True,
                        action=f"/console/mailboxes/{inbox_id}/edit", submit_label="Save", page="mailboxes")
            return
        logger.info("Console: integration %s updated", inbox_id)
        self.redirect(f"/console/mailboxes/{inbox_id}?updated=1")


class MailboxHandler(ImapPage):
    """``GET /console/mailboxes/<inboxId>``: settings (no secret), state and the integration's log."""

    async def get(self, inbox_id: str) -> None:
        storage = self.deps.storage

        def load() -> tuple[Any, list[Any], list[Any]]:
            doc = storage.get_integration(inbox_id)
            if doc is None:
                return None, [], []
            rows = [r for r in mailbox_rows(storage, getattr(self.deps, "ownership", None), self.subdomain)
                    if r["inboxId"] == inbox_id]
            logs = storage.logs_of(inbox_id, limit=LOG_LIMIT)
            return public_details(doc), rows, logs

        details, rows, logs = await self.blocking(load)
        if details is None:
            raise tornado.web.HTTPError(404)
        self.render("mailbox.html", details=details, rows=rows, logs=logs, page="mailboxes",
                    added=self.get_query_argument("added", ""), updated=self.get_query_argument("updated", ""))
