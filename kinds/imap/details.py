"""The integration details of ``createIntegration``/``updateIntegration`` (``doc.data``), validated.

The form every caller fills in (erxes's UI through the broker, the console's add form): one place says what a
valid IMAP integration is, before anything is stored or any server is asked. It builds on the connectors' own
checks (host names and certificates, SMTP security modes, OAuth2 settings) and nothing builds on it but the
callers.
"""
from __future__ import annotations

import json
import ssl
from typing import Any

from kinds.imap.oauth import parse_oauth
from kinds.imap.smtp import smtp_port, smtp_security
from runtime.errors import RequestError
from runtime.hosts import host_problem, tls_context
from runtime.mail.build import parse_addresses

__all__ = ["parse_aliases", "parse_details"]

_MAX_ALIASES = 100

_REQUIRED = ("host", "user")


def parse_details(raw: Any, *, require_password: bool = True) -> dict[str, Any]:
    """Validate the integration details JSON of ``createIntegration``/``updateIntegration`` (``doc.data``).

    Accepts erxes's ``host, smtpHost, smtpPort, mainUser, user, password`` plus our optional ``port``, ``tls``,
    ``starttls``, ``folders`` and ``oauth`` (instead of the password: :func:`kinds.imap.oauth.parse_oauth`). Raises
    :class:`RequestError` saying what is wrong.
    """
    if isinstance(raw, str):
        try:
            details = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestError(f"doc.data is not valid JSON: {exc.msg} at position {exc.pos}") from None
        except RecursionError:
            raise RequestError("doc.data is nested too deeply") from None
    else:
        details = raw
    if not isinstance(details, dict):
        raise RequestError("doc.data must be a JSON object with host, user and password")
    required = _REQUIRED + (("password",) if require_password and not details.get("oauth") else ())
    missing = [k for k in required if not isinstance(details.get(k), str) or not details[k].strip()]
    if missing:
        raise RequestError(f"doc.data is missing {', '.join(missing)}")
    for key in ("smtpHost", "mainUser"):
        if details.get(key) is not None and not isinstance(details[key], str):
            raise RequestError(f"doc.data.{key} must be a string")
    out: dict[str, Any] = {k: str(details.get(k) or "").strip() for k in ("host", "smtpHost", "mainUser", "user")}
    for key in ("host", "smtpHost"):
        if out[key]:
            problem = host_problem(out[key])
            if problem:
                raise RequestError(f"doc.data.{key} is not a valid host name: {problem}")
    out["password"] = str(details.get("password") or "")
    out["smtpPort"] = str(_port(details, "smtpPort") or "")
    port = _port(details, "port")
    if port is not None:
        out["port"] = port
    for flag in ("tls", "starttls"):
        if flag in details:
            if not isinstance(details[flag], bool):
                raise RequestError(f"doc.data.{flag} must be true or false")
            out[flag] = details[flag]
    if out.get("tls") and out.get("starttls"):
        raise RequestError("doc.data: tls (implicit TLS) and starttls cannot both be true")
    if details.get("smtpTls") not in (None, ""):
        out["smtpTls"] = smtp_security(details["smtpTls"], smtp_port(out["smtpPort"]))
    if details.get("caCert") not in (None, ""):
        if not isinstance(details["caCert"], str) or "-----BEGIN CERTIFICATE-----" not in details["caCert"]:
            raise RequestError("doc.data.caCert must be PEM text (-----BEGIN CERTIFICATE-----...)")
        try:
            tls_context(details["caCert"])
        except ssl.SSLError as exc:
            raise RequestError(f"doc.data.caCert is not a usable certificate: {exc.reason}") from None
        out["caCert"] = details["caCert"]
    if "folders" in details:
        folders = details["folders"]
        if not isinstance(folders, list) or not folders or not all(isinstance(f, str) and f for f in folders):
            raise RequestError("doc.data.folders must be a non-empty list of folder names")
        out["folders"] = folders
    if "oauth" in details:
        out.update(parse_oauth(details["oauth"]))
    if details.get("aliases") is not None:  # optional: the other addresses a reply's from may be
        out["aliases"] = parse_aliases(details["aliases"])
    return out


def _port(details: dict[str, Any], key: str) -> int | None:
    """``details[key]`` as a port number (a number or a string of digits), None when absent."""
    value = details.get(key)
    if value in (None, ""):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"doc.data.{key} must be a port number, got {json.dumps(value)[:40]}")
    if not 0 < value < 65536:
        raise RequestError(f"doc.data.{key} must be between 1 and 65535, got {value}")
    return value


def parse_aliases(raw: Any) -> list[str]:
    """``doc.data.aliases``: the other addresses the integration may send as (``from``), lower-cased."""
    if not isinstance(raw, list) or len(raw) > _MAX_ALIASES or not all(isinstance(a, str) for a in raw):
        raise RequestError(f"doc.data.aliases must be a list of at most {_MAX_ALIASES} e-mail addresses")
    out: list[str] = []
    for text in raw:
        found = parse_addresses(text, "doc.data.aliases")
        if len(found) != 1 or found[0][0]:
            raise RequestError(f"doc.data.aliases: {text!r} is not one bare e-mail address")
        out.append(found[0][1].lower())
    return list(dict.fromkeys(out))
