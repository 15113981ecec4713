"""OAuth2 (XOAUTH2) mailboxes: the provider settings of an integration, and the sign-in request.

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

The token endpoint's calls are :mod:`kinds.imap.oauth_endpoint`; fresh access tokens for the IMAP and SMTP logins
come from :mod:`kinds.imap.oauth_refresh`.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from runtime.errors import RequestError
from runtime.hosts import host_problem

__all__ = ["FIELDS", "PROVIDERS", "OAuthSettings", "authorization_url", "parse_oauth", "pkce_challenge", "xoauth2"]

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
