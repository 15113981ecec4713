"""Connecting to an integration's IMAP server (imapclient), and the settings that say how.

``connect(settings)`` is the seam the mailbox uses (``imap_factory``); tests can pass another factory. Errors are
mapped onto the project's hierarchy: a refused login is :class:`AuthenticationFailed` carrying the server's own
words, anything else :class:`MailboxError`. An integration with OAuth2 settings (:mod:`runtime.oauth`) logs in
with XOAUTH2: ``settings.tokens`` hands out a fresh access token, and a refused one is refreshed and tried once more.
"""
from __future__ import annotations

import functools
import json
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from runtime.errors import AuthenticationFailed, FolderUnavailable, MailboxError, RequestError
from runtime.folders import resolve
from runtime.idle import IdleClient
from runtime.oauth import Tokens, parse_oauth

__all__ = ["ImapSettings", "connect", "host_problem", "oauth_tokens", "parse_details", "select_resolved",
           "tls_context", "NETWORK_ERRORS"]

# Seconds for the TCP connect, the TLS handshake and the greeting: a dropped SYN or a server too busy to greet
# costs this, not the whole command timeout (imap_timeout_seconds) before the backoff.
CONNECT_TIMEOUT = 10.0

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
    oauth: bool = False  # XOAUTH2 with ``tokens`` instead of the password
    tokens: Tokens | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_integration(cls, doc: dict[str, Any], timeout: float = 30.0, *, storage: Any = None) -> ImapSettings:
        """``storage`` (where OAuth2 tokens are read and saved) is needed by an integration with OAuth2 settings."""
        tls = bool(doc.get("tls", True))
        port = int(doc.get("port") or (993 if tls else 143))
        user = str(doc.get("user") or "")
        main_user = str(doc.get("mainUser") or "")
        folders = tuple(doc.get("folders") or ("INBOX",))
        return cls(host=str(doc["host"]), port=port, tls=tls, starttls=bool(doc.get("starttls", False)),
                   login=main_user or user, password=str(doc.get("password") or ""), address=user,
                   main_user=main_user, folders=folders, timeout=timeout, ca_cert=str(doc.get("caCert") or ""),
                   oauth=bool(doc.get("oauthTokenUrl")), tokens=oauth_tokens(doc, storage, timeout))


def oauth_tokens(doc: dict[str, Any], storage: Any, timeout: float) -> Tokens | None:
    """The token source of an integration with OAuth2 settings (None: it uses a password, or no storage given)."""
    if not doc.get("oauthTokenUrl") or storage is None:
        return None
    return Tokens(str(doc.get("inboxId")), storage, timeout=timeout)


_REQUIRED = ("host", "user")


def parse_details(raw: Any, *, require_password: bool = True) -> dict[str, Any]:
    """Validate the integration details JSON of ``createIntegration``/``updateIntegration`` (``doc.data``).

    Accepts erxes's ``host, smtpHost, smtpPort, mainUser, user, password`` plus our optional ``port``, ``tls``,
    ``starttls``, ``folders`` and ``oauth`` (instead of the password: :func:`runtime.oauth.parse_oauth`). Raises
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
    if "oauth" in details:
        out.update(parse_oauth(details["oauth"]))
    if details.get("aliases") is not None:  # optional: the other addresses a reply's from may be
        from runtime.sending import parse_aliases  # runtime.sending builds on this module

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


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot be connected to (empty label, label over 63 characters, not IDNA), or None."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:  # an IPv6 literal
        try:
            socket.inet_pton(socket.AF_INET6, host)
        except OSError:
            return "not an IPv6 address"
        return None
    try:
        host.rstrip(".").encode("idna")
    except UnicodeError as exc:
        return str(exc.__cause__ or exc) or "not an IDNA name"
    return None


def connect(settings: ImapSettings) -> IMAPClient:
    """Open, secure and log in. The returned client has ``settings.timeout`` as its socket timeout."""
    context = tls_context(settings.ca_cert) if settings.tls or settings.starttls else None
    where = f"{settings.host}:{settings.port}"
    problem = host_problem(settings.host)
    if problem:  # stored before this check existed: a setting to fix, not a crash
        raise MailboxError(f"{settings.host!r} is not a valid host name: {problem}")
    token = _access_token(settings) if settings.oauth else ""  # before connecting: the server need not wait on it
    try:
        client = IdleClient(settings.host, port=settings.port, ssl=settings.tls,
                            ssl_context=context if settings.tls else None,
                            timeout=SocketTimeout(connect=min(CONNECT_TIMEOUT, settings.timeout),
                                                  read=settings.timeout))
    except NETWORK_ERRORS as exc:
        raise MailboxError(f"cannot connect to {where}: {_words(exc)}") from exc
    try:
        if settings.starttls:
            client.starttls(context)
        if settings.oauth:
            _oauth_login(client, settings, token)
        else:
            client.login(settings.login, settings.password)
    except LoginError as exc:
        _close(client)
        raise AuthenticationFailed(f"{where} refused the login{' (XOAUTH2)' if settings.oauth else ''}: "
                                   f"{_words(exc)}") from exc
    except MailboxError:  # from the token endpoint
        _close(client)
        raise
    except NETWORK_ERRORS as exc:
        _close(client)
        raise MailboxError(f"{where}: {_words(exc)}") from exc
    return client


def select_resolved(client: Any, wanted: str, known: str | None = None) -> tuple[str, dict[bytes, Any]]:
    """SELECT (read-only) the server folder that the configured name ``wanted`` means: ``known`` (an earlier
    resolution) or ``wanted`` itself first; when the server answers NO, the folder is resolved against its LIST
    and NAMESPACE (runtime/folders.py) and the folder found is selected. Returns (server name, SELECT answer).

    A folder that still cannot be selected raises :class:`FolderUnavailable` naming it, with the server's words;
    a dead connection raises what imapclient raises (IMAPClientAbortError, OSError)."""
    first = known or wanted
    try:
        return first, client.select_folder(first, readonly=True)
    except IMAPClientAbortError:
        raise
    except IMAPClientError as exc:
        refused = _words(exc)
    namespaces = client.namespace() if client.has_capability("NAMESPACE") else None
    personal = [(p, s) for p, s in (namespaces.personal or ())] if namespaces else []
    found = resolve(wanted, client.list_folders(), personal)
    if found.name is None or found.name == first:
        raise FolderUnavailable(f"folder {wanted!r} cannot be selected: {refused}"
                                + ("" if found.name else f"; {found.why}"))
    try:
        return found.name, client.select_folder(found.name, readonly=True)
    except IMAPClientAbortError:
        raise
    except IMAPClientError as exc:
        raise FolderUnavailable(f"folder {wanted!r} (on the server {found.name!r}) cannot be selected: "
                                f"{_words(exc)}") from exc


def _access_token(settings: ImapSettings) -> str:
    if settings.tokens is None:
        raise MailboxError(f"integration {settings.address} signs in with OAuth2 but has no token source")
    return settings.tokens.access_token()


def _oauth_login(client: IMAPClient, settings: ImapSettings, token: str) -> None:
    """XOAUTH2 with ``token``; a refused token is refreshed (on the server's word) and tried once more."""
    assert settings.tokens is not None
    try:
        client.oauth2_login(settings.login, token)
    except LoginError:
        client.oauth2_login(settings.login, settings.tokens.access_token(rejected=token))


@functools.lru_cache(maxsize=64)
def tls_context(ca_cert: str = "") -> ssl.SSLContext:
    """Certificates verified against the system's CAs, or against ``ca_cert`` (PEM text) for a self-hosted server.

    One context per distinct ``ca_cert``, shared by every connection that uses it (an ``SSLContext`` is safe to
    share, and each costs ~0.65 MB: 1,000 TLS mailboxes would otherwise hold 1,000 copies). Never modify it."""
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
