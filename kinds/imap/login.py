"""``GET /login``: an admin connects a Google or Microsoft 365 mailbox by signing in (OAuth2 authorization code).

The seed guide's login route. Two legs on the one address (so one redirect URI is registered at the provider):

1. ``GET /login?integrationId=<inboxId>`` (needs the gateway's ``user`` header of an erxes owner, ``isOwner``, or of
   a user named in ``login_allowed_users``; anyone else logged in gets 403): for an integration
   whose details carry ``oauth`` (kinds/imap/oauth.py), redirects the browser to the provider's authorization endpoint
   with a fresh ``state`` (32 random bytes; only its SHA-256 is stored, in ``imap_oauth_states``, for 10 minutes)
   and a PKCE S256 challenge (its verifier stored sealed with the state).
2. ``GET /login?code=&state=`` (the provider sends the browser back): the state is taken once (a second use, an
   unknown or an expired one is refused), the code is exchanged with the verifier, the tokens are stored sealed on
   the integration and its mailbox restarts with them (as ``updateIntegration`` does).

The provider's settings (authorize and token endpoints, client id and secret, scope) are the integration's own
(``doc.data.oauth``, presets for ``google`` and ``microsoft``): each mailbox, and each tenant, may use its own app
registration. The redirect URI is the ``oauth_redirect_url`` setting, else this request's own address.
Answers: 302 to the provider, 200 a short page when connected, 400 a bad or stale request, 401 not logged in,
403 not an owner, 404 unknown integration (or, ``VERSION=saas``, an organisation the runtime does not know), 502
the provider refused. No token or secret is ever in a page, a header or a log line.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import html
import logging
import secrets
from typing import Any

import pykka
import tornado.web

from kinds.imap.oauth import OAuthSettings, authorization_url, pkce_challenge
from kinds.imap.oauth_endpoint import exchange_code, store_tokens
from runtime.errors import MailboxError, RequestError
from runtime.storage import utcnow
from runtime.tenants import UnknownTenant, bind_request
from web.auth import LOGIN_REQUIRED, current_user, is_logged_in, may_administer
from web.replies import fail_text

__all__ = ["LoginHandler", "routes"]

logger = logging.getLogger(__name__)

STATE_TTL = dt.timedelta(minutes=10)
VERIFIER = "oauthVerifier"  # the sealed field name of a sign-in's PKCE verifier (its associated data)


class LoginFailed(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class LoginHandler(tornado.web.RequestHandler):
    def initialize(self, *, storage: Any, supervisor: Any, tenants: Any = None, redirect_url: str = "",
                   timeout: float = 30.0, allowed_users: tuple[str, ...] = ()) -> None:
        self.allowed_users = allowed_users
        self.storage = storage
        self.supervisor = supervisor
        self.tenants = tenants
        self.redirect_url = redirect_url
        self.timeout = timeout

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")  # the code and state never leak to another site
        self.set_header("X-Content-Type-Options", "nosniff")

    async def get(self) -> None:
        try:
            subdomain = bind_request(self.tenants, self.request.headers)
            if self.tenants is not None:  # a tenant is never created by this route (VERSION=saas)
                await asyncio.to_thread(self.tenants.require_known, subdomain)
            if self.get_query_argument("state", None) is not None:
                page = await asyncio.to_thread(self._finish, subdomain)
                self.set_header("Content-Type", "text/html; charset=utf-8")
                self.set_header("Content-Security-Policy", "default-src 'none'")
                self.finish(page)
                return
            user = current_user(self.request.headers)
            if user is None or not is_logged_in(user):
                raise LoginFailed(401, LOGIN_REQUIRED)
            if not may_administer(user, self.allowed_users):
                logger.info("GET /login refused to user %s: not an owner nor in login_allowed_users",
                            str(user["_id"])[:100])
                raise LoginFailed(403, "only an erxes owner (or a user in LOGIN_ALLOWED_USERS) may connect a mailbox")
            self.redirect(await asyncio.to_thread(self._start, str(user["_id"])))
        except UnknownTenant as exc:
            fail_text(self, 404, str(exc))
        except RequestError as exc:
            fail_text(self, 400, str(exc))
        except LoginFailed as exc:
            fail_text(self, exc.status, exc.reason)

    # -- leg 1: to the provider -------------------------------------------------------------------------------------
    def _start(self, user_id: str) -> str:
        inbox_id = self.get_query_argument("integrationId", "").strip()
        if not inbox_id:
            raise LoginFailed(400, "missing parameter: integrationId")
        settings, doc = self._settings(inbox_id)
        if not settings.authorize_url:
            raise LoginFailed(400, f"integration {inbox_id} has no oauth.authorizeUrl (or provider): set it with "
                                   f"updateIntegration")
        state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
        redirect_uri = self._redirect_uri()
        now = utcnow()
        self.storage.keep_sign_in({"_id": _digest(state), "inboxId": inbox_id, "userId": user_id,
                                   "redirectUri": redirect_uri,
                                   "verifier": self.storage.seal_secret(VERIFIER, inbox_id, verifier), "createdAt": now,
                                   "expiresAt": now + STATE_TTL})
        logger.info("Integration %s: sign-in started by user %s", inbox_id, user_id)
        return authorization_url(settings, redirect_uri=redirect_uri, state=state, challenge=pkce_challenge(verifier),
                                 login_hint=str(doc.get("mainUser") or doc.get("user") or ""))

    # -- leg 2: back from the provider ------------------------------------------------------------------------------
    def _finish(self, subdomain: str) -> str:
        found = self.storage.take_sign_in(_digest(self.get_query_argument("state", "")))
        if found is None:
            raise LoginFailed(400, "this sign-in is unknown, already used or expired (10 minutes): start again at "
                                   "/login?integrationId=<integration>")
        inbox_id = str(found["inboxId"])
        error = self.get_query_argument("error", "")
        if error:
            described = self.get_query_argument("error_description", "")[:300]
            raise LoginFailed(400, f"the provider did not sign in: {error}{': ' + described if described else ''}")
        code = self.get_query_argument("code", "")
        if not code:
            raise LoginFailed(400, "the provider sent no code")
        settings, doc = self._settings(inbox_id)
        verifier = self.storage.open_secret(VERIFIER, inbox_id, found["verifier"])
        try:
            answer = exchange_code(settings, code=code, redirect_uri=found["redirectUri"], verifier=verifier,
                                   timeout=self.timeout)
            store_tokens(self.storage, inbox_id, answer, now=utcnow().timestamp(), signed_in=True)
        except MailboxError as exc:
            self.storage.log("error", f"sign-in failed: {exc}", inbox_id=inbox_id)
            raise LoginFailed(502, str(exc)) from None
        self.storage.log("info", f"signed in with OAuth2 (user {found.get('userId')})", inbox_id=inbox_id)
        logger.info("Integration %s: signed in with OAuth2; restarting its mailbox", inbox_id)
        try:
            self.supervisor.restart(inbox_id, subdomain).get(timeout=self.timeout)
        except pykka.Timeout:  # the tokens are stored (and updatedAt changed): the mailbox restarts on its own
            logger.warning("Integration %s: its mailbox did not restart within %.0f s", inbox_id, self.timeout)
        who = html.escape(str(doc.get("user") or inbox_id))
        return (f"<!doctype html><meta charset=utf-8><title>Mailbox connected</title>"
                f"<p>The mailbox <b>{who}</b> is connected. You can close this window.</p>")

    def _settings(self, inbox_id: str) -> tuple[OAuthSettings, dict[str, Any]]:
        doc = self.storage.get_integration(inbox_id)
        if doc is None:
            raise LoginFailed(404, f"integration {inbox_id} not found")
        settings = OAuthSettings.from_integration(doc)
        if settings is None:
            raise LoginFailed(400, f"integration {inbox_id} signs in with a password: give it oauth settings "
                                   f"(updateIntegration, doc.data.oauth) first")
        return settings, doc

    def _redirect_uri(self) -> str:
        return self.redirect_url or f"{self.request.protocol}://{self.request.host}{self.request.path}"

    def _request_summary(self) -> str:
        """Tornado's access log line, without the query: a code or state never reaches a log."""
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"


def _digest(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8", "replace")).hexdigest()


def routes(deps: Any, config: Any) -> list[tuple[Any, ...]]:
    """``/login``. ``deps`` carries ``storage``, ``supervisor`` and ``tenants``; ``config`` the redirect URI."""
    return [(r"/login", LoginHandler, {
        "storage": deps.storage, "supervisor": deps.supervisor, "tenants": getattr(deps, "tenants", None),
        "redirect_url": getattr(config, "oauth_redirect_url", ""),
        "timeout": float(getattr(config, "imap_timeout_seconds", 30.0)),
        "allowed_users": tuple(getattr(config, "login_allowed_users", ()))})]
