"""The token endpoint of an OAuth2 mailbox: the authorization-code grant of a sign-in (:func:`exchange_code`), the
POST every grant makes (:func:`post_form`), and its answer checked and saved on the integration (:func:`store_tokens`).

The token endpoint is reached through the outbound fence (:mod:`runtime.fence`, the process's unless one is given):
https only, public addresses only (or an allowed prefix), no redirect, one deadline; ``http://`` to loopback only
with ``OUTBOUND_ALLOW_LOOPBACK_HTTP`` (tests). A refused endpoint is :class:`AuthenticationFailed`: retrying with
the same settings cannot help. No token or secret is ever put in a message or a log line.
"""
from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from typing import Any

from kinds.imap.oauth import OAuthSettings
from runtime import fence as outbound
from runtime.errors import AuthenticationFailed, MailboxError, OutboundError, OutboundRefused, OutboundTooLarge

__all__ = ["DEFAULT_LIFETIME", "REFRESH_MARGIN", "Refused", "exchange_code", "post_form", "save_fields",
           "store_tokens", "token_fields"]

REFRESH_MARGIN = 300.0  # refresh this long before expiry (at most half the token's lifetime)
DEFAULT_LIFETIME = 3600.0  # when the endpoint does not say (expires_in)
_MAX_RESPONSE = 1024 * 1024


def post_form(settings: OAuthSettings, form: dict[str, str], timeout: float,
              fence: outbound.Fence | None = None) -> dict[str, Any]:
    """POST ``form`` (with the client's credentials) to the token endpoint, through ``fence`` (default: the
    process's); its JSON answer. Raises :class:`MailboxError` (transient), :class:`AuthenticationFailed` (the fence
    refuses the endpoint), or :class:`Refused` carrying the endpoint's OAuth error code. A redirect is an answer like
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
        raise Refused(code, words)
    raise MailboxError(f"{settings.where} failed (HTTP {status}, {words})")


class Refused(Exception):
    """The token endpoint refused a grant: its OAuth error ``code`` (``invalid_grant``...) and what it said."""

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
    fields = token_fields(answer, now=now)
    if signed_in:
        fields["updatedAt"] = _utc(now)
    save_fields(storage, inbox_id, fields)
    return str(fields["oauthAccessToken"])


def save_fields(storage: Any, inbox_id: str, fields: dict[str, Any]) -> None:
    """Set token ``fields`` on the integration (MailboxError when it is gone)."""
    if not storage.update_integration_fields(inbox_id, fields):
        raise MailboxError(f"integration {inbox_id} was removed while signing in")


def token_fields(answer: dict[str, Any], *, now: float) -> dict[str, Any]:
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
        answer = post_form(settings, {"grant_type": "authorization_code", "code": code,
                                      "redirect_uri": redirect_uri, "code_verifier": verifier}, timeout, fence)
    except Refused as exc:
        raise MailboxError(f"{settings.where} refused the sign-in ({exc.words})") from None
    if not answer.get("refresh_token"):
        raise MailboxError(f"{settings.where} gave no refresh token: the app must ask for offline access (Google: "
                           f"access_type=offline; Microsoft: the offline_access scope)")
    return answer


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(timestamp * 1000) / 1000, tz=dt.timezone.utc)
