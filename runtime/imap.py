"""Connecting to an integration's IMAP server (imapclient), and the settings that say how.

``connect(settings)`` is the seam the mailbox uses (``imap_factory``); tests can pass another factory. Errors are
mapped onto the project's hierarchy: a refused login is :class:`AuthenticationFailed` carrying the server's own
words, anything else :class:`MailboxError`.
"""
from __future__ import annotations

import json
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from runtime.errors import AuthenticationFailed, MailboxError, RequestError

__all__ = ["ImapSettings", "connect", "parse_details", "tls_context", "NETWORK_ERRORS"]

# What a network or protocol failure can raise from imapclient/imaplib/ssl/socket.
NETWORK_ERRORS: tuple[type[BaseException], ...] = (IMAPClientError, OSError, EOFError, ssl.SSLError, socket.timeout)


@dataclass(frozen=True)
class ImapSettings:
    host: str
    port: int
    tls: bool
    starttls: bool
    login: str
    password: str = field(repr=False)
    address: str
    main_user: str
    folders: tuple[str, ...]
    timeout: float = 30.0
    ca_cert: str = field(default="", repr=False)

    @classmethod
    def from_integration(cls, doc: dict[str, Any], timeout: float = 30.0) -> ImapSettings:
        tls = bool(doc.get("tls", True))
        port = int(doc.get("port") or (993 if tls else 143))
        user = str(doc.get("user") or "")
        main_user = str(doc.get("mainUser") or "")
        folders = tuple(doc.get("folders") or ("INBOX",))
        return cls(host=str(doc["host"]), port=port, tls=tls, starttls=bool(doc.get("starttls", False)),
                   login=main_user or user, password=str(doc.get("password") or ""), address=user,
                   main_user=main_user, folders=folders, timeout=timeout, ca_cert=str(doc.get("caCert") or ""))


_REQUIRED = ("host", "user")


def parse_details(raw: Any, *, require_password: bool = True) -> dict[str, Any]:
    """Validate the integration details JSON of ``createIntegration``/``updateIntegration`` (``doc.data``).

    Accepts erxes's ``host, smtpHost, smtpPort, mainUser, user, password`` plus our optional ``port``, ``tls``,
    ``starttls`` and ``folders``. Raises :class:`RequestError` saying what is wrong.
    """
    if isinstance(raw, str):
        try:
            details = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestError(f"doc.data is not valid JSON: {exc.msg} at position {exc.pos}") from None
    else:
        details = raw
    if not isinstance(details, dict):
        raise RequestError("doc.data must be a JSON object with host, user and password")
    required = _REQUIRED + (("password",) if require_password else ())
    missing = [k for k in required if not isinstance(details.get(k), str) or not details[k].strip()]
    if missing:
        raise RequestError(f"doc.data is missing {', '.join(missing)}")
    out: dict[str, Any] = {k: str(details.get(k) or "").strip() for k in ("host", "smtpHost", "mainUser", "user")}
    out["password"] = str(details.get("password") or "")
    out["smtpPort"] = str(details.get("smtpPort") or "")
    if "port" in details and details["port"] not in (None, ""):
        try:
            port = int(details["port"])
        except (TypeError, ValueError):
            raise RequestError(f"doc.data.port must be a number, got {details['port']!r}") from None
        if not 0 < port < 65536:
            raise RequestError(f"doc.data.port must be between 1 and 65535, got {port}")
        out["port"] = port
    for flag in ("tls", "starttls"):
        if flag in details:
            if not isinstance(details[flag], bool):
                raise RequestError(f"doc.data.{flag} must be true or false")
            out[flag] = details[flag]
    if out.get("tls") and out.get("starttls"):
        raise RequestError("doc.data: tls (implicit TLS) and starttls cannot both be true")
    if details.get("smtpTls") not in (None, ""):
        from runtime.smtp import smtp_port, smtp_security  # runtime.smtp builds on this module

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
    return out


def connect(settings: ImapSettings) -> IMAPClient:
    """Open, secure and log in. The returned client has ``settings.timeout`` as its socket timeout."""
    context = tls_context(settings.ca_cert)
    where = f"{settings.host}:{settings.port}"
    try:
        client = IMAPClient(settings.host, port=settings.port, ssl=settings.tls,
                            ssl_context=context if settings.tls else None, timeout=settings.timeout)
    except NETWORK_ERRORS as exc:
        raise MailboxError(f"cannot connect to {where}: {_words(exc)}") from exc
    try:
        if settings.starttls:
            client.starttls(context)
        client.login(settings.login, settings.password)
    except LoginError as exc:
        _close(client)
        raise AuthenticationFailed(f"{where} refused the login: {_words(exc)}") from exc
    except NETWORK_ERRORS as exc:
        _close(client)
        raise MailboxError(f"{where}: {_words(exc)}") from exc
    return client


def tls_context(ca_cert: str = "") -> ssl.SSLContext:
    """Certificates verified against the system's CAs, or against ``ca_cert`` (PEM text) for a self-hosted server."""
    context = ssl.create_default_context()
    if ca_cert:
        context.load_verify_locations(cadata=ca_cert)
    return context


def _close(client: IMAPClient) -> None:
    try:
        client.shutdown()
    except NETWORK_ERRORS:
        pass


def _words(exc: BaseException) -> str:
    """The server's own reason, decoded (imapclient wraps bytes in its exception text)."""
    text = str(exc) or type(exc).__name__
    if text.startswith(("b'", 'b"')) and text.endswith(("'", '"')):
        text = text[2:-1]
    return text
