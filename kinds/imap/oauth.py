"""OAuth2 (XOAUTH2) mailboxes: the provider settings of an integration, and access tokens kept fresh.

Plain logic, no actors. An integration signs in with OAuth2 instead of a password when its details carry
``oauth`` (``createIntegration``/``updateIntegration``, ``doc.data``)::

    "oauth": {"provider": "google" | "microsoft",        # presets for the URLs and scope below, or leave out
              "tenant": "<Microsoft 365 tenant id>",     # microsoft only; default "common"
              "authorizeUrl": "https://...", "tokenUrl": "https://...",
              "clientId": "...", "clientSecret": "...", "refreshToken": "...", "scope": "..."}

``refreshToken`` is usually left out: ``GET /login?integrationId=`` (kinds/imap/login.py) gets one by the provider's
sign-in. ``"oauth": null`` in an update goes back to the password. The details are stored flat on
``imap_integrations`` (:data:`FIELDS`), so :mod:`runtime.storage` seals ``oauthClientSecret``,
``oauthRefreshToken`` and ``oauthAccessToken`` exactly like the password.

:class:`Tokens` hands out an access token for one integration: the stored one while it is fresh, else it asks the
token endpoint (``grant_type=refresh_token``) under a per-integration lock, re-reading MongoDB first so two threads
never spend one refresh token twice. A rotated refresh token is saved together with the new access token before
that token is handed out. The provider's ``invalid_grant`` means the user's consent is gone: :class:`TokenRevoked`
(an :class:`AuthenticationFailed`, so the mailbox goes ``unHealthy``), recorded in ``oauthRevoked`` so no attempt
asks the endpoint again until someone signs in anew. An unreachable or failing endpoint is a plain
:class:`MailboxError`: transient, the mailbox backs off. No token or secret is ever put in a message or a log line.

The token endpoint is reached through the outbound fence (:mod:`runtime.fence`, the process's unless one is given):
https only, public addresses only (or an allowed prefix), no redirect, one deadline; ``http://`` to loopback only
with ``OUTBOUND_ALLOW_LOOPBACK_HTTP`` (tests). A refused endpoint is :class:`AuthenticationFailed`: retrying with
the same settings cannot help.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import logging
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

from pymongo.errors import PyMongoError

from runtime import fence as outbound
from runtime.errors import (
    AuthenticationFailed,
    MailboxError,
    OutboundError,
    OutboundRefused,
    OutboundTooLarge,
    RequestError,
    StorageError,
)
from runtime.hosts import host_problem

__all__ = ["FIELDS", "PROVIDERS", "NotSignedIn", "OAuthSettings", "TokenRevoked", "Tokens", "authorization_url",
           "exchange_code", "parse_oauth", "pkce_challenge", "store_tokens", "xoauth2"]

logger = logging.getLogger(__name__)

FIELDS = ("oauthProvider", "oauthAuthorizeUrl", "oauthTokenUrl", "oauthClientId", "oauthScope", "oauthClientSecret",
          "oauthRefreshToken", "oauthAccessToken", "oauthExpiresAt", "oauthRefreshAt", "oauthRevoked")
_MICROSOFT = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/"
PROVIDERS: dict[str, dict[str, Any]] = {
    "google": {"authorizeUrl": "https://accounts.google.com/o/oauth2/v2/auth",
               "tokenUrl": "https://oauth2.googleapis.com/token", "scope": "https://mail.google.com/",
               "extra": {"access_type": "offline", "prompt": "consent"}},  # or Google sends no refresh token
    "microsoft": {"authorizeUrl": _MICROSOFT + "authorize", "tokenUrl": _MICROSOFT + "token",
                  "scope": "offline_access https://outlook.office.com/IMAP.AccessAsUser.All "
                           "https://outlook.office.com/SMTP.Send", "extra": {}},
}
_KEYS = ("provider", "tenant", "authorizeUrl", "tokenUrl", "clientId", "clientSecret", "refreshToken", "scope")
_MAX_TEXT = 8192
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
REFRESH_MARGIN = 300.0  # refresh this long before expiry (at most half the token's lifetime)
DEFAULT_LIFETIME = 3600.0  # when the endpoint does not say (expires_in)
_MAX_RESPONSE = 1024 * 1024


class TokenRevoked(AuthenticationFailed):
    """The provider refused the refresh token (``invalid_grant``): someone must sign in again."""


class NotSignedIn(AuthenticationFailed):
    """The integration has OAuth2 settings but no refresh token yet."""


# -- the details ------------------------------------------------------------------------------------------------------
def parse_oauth(raw: Any) -> dict[str, Any]:
    """``doc.data.oauth`` checked, as the fields to store (None: clear them all, back to the password).

    A secret left out or empty keeps the stored one (as the password does); a new refresh token clears the stored
    access token and any ``oauthRevoked``. Raises :class:`RequestError` saying what is wrong."""
    if raw is None:
        return {name: None for name in FIELDS}
    if not isinstance(raw, dict):
        raise RequestError("doc.data.oauth must be an object: {provider?, tokenUrl, clientId, clientSecret, ...}")
    unknown = sorted(set(raw) - set(_KEYS))
    if unknown:
        raise RequestError(f"doc.data.oauth: unknown field {unknown[0]!r} (known: {', '.join(_KEYS)})")
    given = {k: _text(k, raw[k]) for k in _KEYS if raw.get(k) not in (None, "")}
    provider = given.get("provider", "").lower()
    if provider and provider not in PROVIDERS:
        raise RequestError(f"doc.data.oauth.provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    preset = PROVIDERS.get(provider, {})
    tenant = given.get("tenant", "common")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.-]{0,99}", tenant) or (given.get("tenant") and provider != "microsoft"):
        raise RequestError("doc.data.oauth.tenant must be a Microsoft 365 tenant id or domain (provider microsoft)")
    out: dict[str, Any] = {"oauthProvider": provider or None}
    for key, stored in (("authorizeUrl", "oauthAuthorizeUrl"), ("tokenUrl", "oauthTokenUrl")):
        url = given.get(key) or str(preset.get(key, "")).replace("{tenant}", tenant)
        out[stored] = _url(key, url) if url else None
    if not out["oauthTokenUrl"]:
        raise RequestError("doc.data.oauth.tokenUrl is required (or a provider: google, microsoft)")
    if not given.get("clientId"):
        raise RequestError("doc.data.oauth.clientId is required")
    out["oauthClientId"] = given["clientId"]
    out["oauthScope"] = given.get("scope") or preset.get("scope") or None
    if given.get("clientSecret"):
        out["oauthClientSecret"] = given["clientSecret"]
    if given.get("refreshToken"):
        out.update(oauthRefreshToken=given["refreshToken"], oauthAccessToken=None, oauthExpiresAt=None,
                   oauthRefreshAt=None, oauthRevoked=None)
    return out


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise RequestError(f"doc.data.oauth.{key} must be a string")
    value = value.strip()
    if len(value) > _MAX_TEXT or any(ord(c) < 32 for c in value):
        raise RequestError(f"doc.data.oauth.{key} must be at most {_MAX_TEXT} printable characters")
    return value


def _url(key: str, url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise RequestError(f"doc.data.oauth.{key} must not carry credentials (user:password@)")
    host = parts.hostname or ""
    if not host or parts.fragment or not (parts.scheme == "https" or parts.scheme == "http" and host in _LOOPBACK):
        raise RequestError(f"doc.data.oauth.{key} must be an https:// URL (http:// only for 127.0.0.1 or "
                           f"localhost), got {url!r}")
    problem = host_problem(host)
    if problem:
        raise RequestError(f"doc.data.oauth.{key} has an invalid host name: {problem}")
    return url


@dataclass(frozen=True)
class OAuthSettings:
    """An integration's OAuth2 details, secrets plain (unsealed by storage): for internal use only."""

    inbox_id: str
    token_url: str
    client_id: str
    authorize_url: str = ""
    provider: str = ""
    scope: str = ""
    client_secret: str = field(default="", repr=False)
    refresh_token: str = field(default="", repr=False)
    access_token: str = field(default="", repr=False)
    refresh_at: float = 0.0
    revoked: str = ""

    @classmethod
    def from_integration(cls, doc: dict[str, Any]) -> OAuthSettings | None:
        """None when the integration signs in with a password."""
        if not doc.get("oauthTokenUrl"):
            return None
        at = doc.get("oauthRefreshAt")
        return cls(inbox_id=str(doc.get("inboxId")), token_url=str(doc["oauthTokenUrl"]),
                   client_id=str(doc.get("oauthClientId") or ""), authorize_url=str(doc.get("oauthAuthorizeUrl") or ""),
                   provider=str(doc.get("oauthProvider") or ""), scope=str(doc.get("oauthScope") or ""),
                   client_secret=str(doc.get("oauthClientSecret") or ""),
                   refresh_token=str(doc.get("oauthRefreshToken") or ""),
                   access_token=str(doc.get("oauthAccessToken") or ""),
                   refresh_at=at.timestamp() if isinstance(at, dt.datetime) else 0.0,
                   revoked=str(doc.get("oauthRevoked") or ""))

    @property
    def where(self) -> str:
        return f"the token endpoint {urllib.parse.urlsplit(self.token_url).netloc}"

    @property
    def sign_in(self) -> str:
        return f"/login?integrationId={urllib.parse.quote(self.inbox_id)}"


def xoauth2(user: str, access_token: str) -> str:
    """The SASL XOAUTH2 initial response (before base64), as Google and Microsoft define it."""
    return f"user={user}\x01auth=Bearer {access_token}\x01\x01"


# -- the token endpoint -----------------------------------------------------------------------------------------------
def _post(settings: OAuthSettings, form: dict[str, str], timeout: float,
          fence: outbound.Fence | None = None) -> dict[str, Any]:
    """POST ``form`` (with the client's credentials) to the token endpoint, through ``fence`` (default: the
    process's); its JSON answer. Raises :class:`MailboxError` (transient), :class:`AuthenticationFailed` (the fence
    refuses the endpoint), or ``_Refused`` carrying the endpoint's OAuth error code. A redirect is an answer like
    any other (never followed: it would resend the client secret elsewhere)."""
    form = {**form, "client_id": settings.client_id}
    if settings.client_secret:
        form["client_secret"] = settings.client_secret
    try:
        response = (fence or outbound.shared()).fetch(
            settings.token_url, method="POST", body=urllib.parse.urlencode(form).encode("ascii"), headers={
                "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            timeout=timeout, max_bytes=_MAX_RESPONSE, redirects=0, https_only=True, error_body=True)
    except OutboundRefused as exc:
        raise AuthenticationFailed(f"{settings.where}: {exc}") from None
    except OutboundTooLarge:
        raise MailboxError(f"{settings.where} answered more than {_MAX_RESPONSE} bytes") from None
    except OutboundError as exc:
        raise MailboxError(f"{settings.where} is unreachable: {exc}") from None
    status, body = response.status, response.body
    try:
        answer = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        answer = None
    if not isinstance(answer, dict):
        raise MailboxError(f"{settings.where} answered HTTP {status} without a JSON object")
    if status == 200:
        return answer
    code = str(answer.get("error") or "")
    words = _scrub(settings, f"{code or 'HTTP ' + str(status)}: {str(answer.get('error_description') or '')[:300]}")
    if status in (400, 401) and code:
        raise _Refused(code, words)
    raise MailboxError(f"{settings.where} failed (HTTP {status}, {words})")


class _Refused(Exception):
    def __init__(self, code: str, words: str) -> None:
        super().__init__(words)
        self.code = code
        self.words = words


def _scrub(settings: OAuthSettings, text: str) -> str:
    for secret in (settings.client_secret, settings.refresh_token, settings.access_token):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def store_tokens(storage: Any, inbox_id: str, answer: dict[str, Any], *, now: float, signed_in: bool = False) -> str:
    """Save a token endpoint's answer on the integration at once (sealed by storage): the new access token, its
    times and a new (rotated) refresh token; clears ``oauthRevoked``. Returns the access token. ``signed_in``: a new
    sign-in, which changes the settings' version (``updatedAt``), so the node that runs the mailbox restarts it."""
    fields = _token_fields(answer, now=now)
    if signed_in:
        fields["updatedAt"] = _utc(now)
    _save(storage, inbox_id, fields)
    return str(fields["oauthAccessToken"])


def _save(storage: Any, inbox_id: str, fields: dict[str, Any]) -> None:
    if not storage.update_integration_fields(inbox_id, fields):
        raise MailboxError(f"integration {inbox_id} was removed while signing in")


def _token_fields(answer: dict[str, Any], *, now: float) -> dict[str, Any]:
    """The fields to store for a token endpoint's answer, checked (MailboxError when it is unusable)."""
    access = answer.get("access_token")
    if not isinstance(access, str) or not access:
        raise MailboxError("the token endpoint answered without an access_token")
    token_type = str(answer.get("token_type") or "bearer")
    if token_type.lower() != "bearer":
        raise MailboxError(f"the token endpoint gave a {token_type!r} token; XOAUTH2 needs a Bearer token")
    try:
        lifetime = max(1.0, float(answer.get("expires_in") or DEFAULT_LIFETIME))
    except (TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME
    fields: dict[str, Any] = {
        "oauthAccessToken": access, "oauthRevoked": None,
        "oauthExpiresAt": _utc(now + lifetime), "oauthRefreshAt": _utc(now + lifetime - min(REFRESH_MARGIN,
                                                                                         lifetime / 2))}
    rotated = answer.get("refresh_token")
    if isinstance(rotated, str) and rotated:
        fields["oauthRefreshToken"] = rotated
    return fields


def exchange_code(settings: OAuthSettings, *, code: str, redirect_uri: str, verifier: str,
                  timeout: float, fence: outbound.Fence | None = None) -> dict[str, Any]:
    """The authorization-code grant (with the PKCE verifier): the endpoint's answer, which must hold a refresh
    token. Raises :class:`MailboxError` saying why not."""
    try:
        answer = _post(settings, {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
                                  "code_verifier": verifier}, timeout, fence)
    except _Refused as exc:
        raise MailboxError(f"{settings.where} refused the sign-in ({exc.words})") from None
    if not answer.get("refresh_token"):
        raise MailboxError(f"{settings.where} gave no refresh token: the app must ask for offline access (Google: "
                           f"access_type=offline; Microsoft: the offline_access scope)")
    return answer


# -- fresh access tokens ----------------------------------------------------------------------------------------------
_slots_lock = threading.Lock()
_slots: dict[tuple[str, str], _Slot] = {}


@dataclass
class _Slot:
    """Per integration and database: one refresh at a time, and an answer kept until MongoDB has it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    unsaved: dict[str, Any] | None = None


def _slot(key: tuple[str, str]) -> _Slot:
    with _slots_lock:
        return _slots.setdefault(key, _Slot())


class Tokens:
    """Access tokens of one integration, for its IMAP and SMTP logins. Thread-safe."""

    def __init__(self, inbox_id: str, storage: Any, *, timeout: float = 30.0,
                 clock: Callable[[], float] = time.time, fence: outbound.Fence | None = None) -> None:
        self.inbox_id = inbox_id
        self._storage = storage
        self._timeout = timeout
        self._clock = clock
        self._fence = fence  # None: the process's (runtime.fence.shared), read at each refresh

    def access_token(self, rejected: str | None = None) -> str:
        """A fresh access token. ``rejected``: the server refused this one, get another (unless someone else
        already did). Raises :class:`TokenRevoked`, :class:`NotSignedIn`, or :class:`MailboxError` (transient)."""
        slot = _slot((self._storage.database_name, self.inbox_id))
        with slot.lock:
            if slot.unsaved is not None:  # a refresh whose answer MongoDB did not take: save it first
                _save(self._storage, self.inbox_id, slot.unsaved)
                slot.unsaved = None
            doc = self._storage.get_integration(self.inbox_id)
            settings = OAuthSettings.from_integration(doc or {})
            if settings is None:
                raise MailboxError(f"integration {self.inbox_id} has no OAuth2 settings (removed or changed)")
            if settings.revoked:
                raise TokenRevoked(settings.revoked)
            now = self._clock()
            if settings.access_token and settings.access_token != rejected and now < settings.refresh_at:
                return settings.access_token
            if not settings.refresh_token:
                raise NotSignedIn(f"not signed in yet: sign in at {settings.sign_in}")
            fields = _token_fields(self._refresh(settings), now=now)
            try:
                _save(self._storage, self.inbox_id, fields)
            except (PyMongoError, StorageError):
                if "oauthRefreshToken" in fields:
                    slot.unsaved = fields  # rotated: the old refresh token may be dead already, keep the new one
                raise
            return str(fields["oauthAccessToken"])

    def _refresh(self, settings: OAuthSettings) -> dict[str, Any]:
        form = {"grant_type": "refresh_token", "refresh_token": settings.refresh_token}
        if settings.scope:
            form["scope"] = settings.scope
        try:
            answer = _post(settings, form, self._timeout, self._fence)
        except _Refused as exc:
            if exc.code == "invalid_grant":
                reason = (f"the refresh token was revoked; sign in again at {settings.sign_in} ({settings.where} "
                          f"said {exc.words})")
                self._storage.update_integration_fields(self.inbox_id, {"oauthRevoked": reason,
                                                                        "oauthAccessToken": None})
                logger.warning("Integration %s: %s", self.inbox_id, reason)
                raise TokenRevoked(reason) from None
            raise AuthenticationFailed(f"{settings.where} refused our client ({exc.words}): check oauth.clientId "
                                       f"and oauth.clientSecret") from None
        logger.info("Integration %s: access token refreshed%s", self.inbox_id,
                    " (refresh token rotated)" if answer.get("refresh_token") else "")
        return answer


def oauth_tokens(doc: dict[str, Any], storage: Any, timeout: float) -> Tokens | None:
    """The token source of an integration with OAuth2 settings (None: it uses a password, or no storage given)."""
    if not doc.get("oauthTokenUrl") or storage is None:
        return None
    return Tokens(str(doc.get("inboxId")), storage, timeout=timeout)


def pkce_challenge(verifier: str) -> str:
    """The S256 ``code_challenge`` of a PKCE ``verifier``."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode("ascii")


def authorization_url(settings: OAuthSettings, *, redirect_uri: str, state: str, challenge: str,
                      login_hint: str) -> str:
    """Where the browser signs in: the provider's authorization endpoint with our request."""
    params = {"response_type": "code", "client_id": settings.client_id, "redirect_uri": redirect_uri,
              "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
              **({"scope": settings.scope} if settings.scope else {}),
              **({"login_hint": login_hint} if login_hint else {}),
              **PROVIDERS.get(settings.provider, {}).get("extra", {})}
    sep = "&" if urllib.parse.urlsplit(settings.authorize_url).query else "?"
    return settings.authorize_url + sep + urllib.parse.urlencode(params)


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(timestamp * 1000) / 1000, tz=dt.timezone.utc)
