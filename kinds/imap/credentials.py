"""Credentials follow the host: a stored password or OAuth consent is never sent to a server it was not given for.

Plain logic for ``createIntegration``/``updateIntegration`` (:mod:`kinds.imap.procedures`). An update that leaves the
password empty keeps the stored one (the contract's policy), but only while the servers it goes to stay the same:
when the IMAP host, port or TLS mode, or the SMTP host, port or TLS mode change, the password is required again
(:func:`follow_host` raises ``RequestError("host changed: the password is required again (it is never sent to a
new host)")``, naming what changed). Host names are compared without case and a trailing dot; absent ports and
modes compare as their defaults (993/TLS for IMAP, 587/STARTTLS for SMTP), so re-sending the same details is no
change.

An OAuth2 integration's consent is bound the same way. Its tokens go to the IMAP and SMTP servers (the access
token) and to the token endpoint (the refresh token, with the client secret). When a server moves and the update
brings no new refresh token, the stored tokens (and any stored password) are cleared: the mailbox shows
``unHealthy`` with "not signed in yet: sign in at /login?integrationId=…" until someone consents again. We clear
rather than refuse because a refresh token is normally obtained through ``/login`` after the details are saved.
A changed token URL also needs the client secret again (refused otherwise): it would be sent to the new endpoint.
"""
from __future__ import annotations

from typing import Any

from kinds.imap.smtp import smtp_port, smtp_security
from runtime.errors import RequestError

__all__ = ["endpoints", "follow_host", "moved"]

NEVER_RESENT = "(it is never sent to a new host)"
_OAUTH_TOKENS = ("oauthRefreshToken", "oauthAccessToken", "oauthExpiresAt", "oauthRefreshAt")


def _host(value: Any) -> str:
    return str(value or "").strip().rstrip(".").lower()


def endpoints(doc: dict[str, Any]) -> dict[str, Any]:
    """Where an integration's credentials go, with defaults filled in: one value per name an error can quote."""
    tls = bool(doc.get("tls", True))
    starttls = bool(doc.get("starttls", False))
    try:
        port = int(doc.get("port") or (993 if tls else 143))
    except (TypeError, ValueError):
        port = doc.get("port")
    try:
        s_port: Any = smtp_port(doc.get("smtpPort"))
        s_tls: Any = smtp_security(doc.get("smtpTls"), s_port)
    except RequestError:
        s_port, s_tls = doc.get("smtpPort"), doc.get("smtpTls")
    return {"host": _host(doc.get("host")), "port": port,
            "TLS mode": "tls" if tls else "starttls" if starttls else "none",
            "smtpHost": _host(doc.get("smtpHost")), "smtpPort": s_port, "smtpTls": s_tls}


def moved(stored: dict[str, Any], details: dict[str, Any]) -> list[str]:
    """The names of the endpoints that ``details`` (merged over ``stored``, as the update stores it) change."""
    before, after = endpoints(stored), endpoints({**stored, **details})
    return [name for name in before if before[name] != after[name]]


def follow_host(stored: dict[str, Any] | None, details: dict[str, Any]) -> dict[str, Any]:
    """``details`` ready to store over ``stored`` (None: a new integration), or RequestError when a credential
    would follow a server that moved. ``details`` is what :func:`kinds.imap.details.parse_details` returned (an empty
    or absent password means "keep the stored one")."""
    out = dict(details)
    if stored is None:
        return out
    changed = moved(stored, out)
    merged = {**stored, **out}
    oauth = bool(merged.get("oauthTokenUrl"))
    token_url_moved = bool(stored.get("oauthTokenUrl")) and bool(out.get("oauthTokenUrl")) and _url_key(
        stored["oauthTokenUrl"]) != _url_key(out["oauthTokenUrl"])
    if token_url_moved and not out.get("oauthClientSecret") and stored.get("oauthClientSecret"):
        raise RequestError(f"oauth.tokenUrl changed: the client secret is required again {NEVER_RESENT}")
    if not oauth:
        if changed and not out.get("password"):
            raise RequestError(f"{', '.join(changed)} changed: the password is required again {NEVER_RESENT}")
        return out
    if (changed or token_url_moved) and not out.get("oauthRefreshToken"):
        # a new consent is needed: nothing stored for the old servers goes to the new ones
        out.update({name: None for name in _OAUTH_TOKENS})
        out["oauthRevoked"] = None
        if not out.get("password"):
            out["password"] = ""
    return out


def _url_key(url: Any) -> str:
    return str(url or "").strip().rstrip("/").lower()
