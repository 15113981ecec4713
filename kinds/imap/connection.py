"""Connecting to an integration's IMAP server (imapclient), and the settings that say how.

``connect(settings)`` is the seam the mailbox uses (``imap_factory``); tests can pass another factory. Errors are
mapped onto the project's hierarchy: a refused login is :class:`AuthenticationFailed` carrying the server's own
words, anything else :class:`MailboxError`. An integration with OAuth2 settings (:mod:`kinds.imap.oauth`) logs in
with XOAUTH2: ``settings.tokens`` hands out a fresh access token, and a refused one is refreshed and tried once more.
"""
from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any

from imapclient import IMAPClient, SocketTimeout
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from kinds.imap.folders import resolve
from kinds.imap.idle import IdleClient
from kinds.imap.oauth_refresh import Tokens, oauth_tokens
from runtime.errors import AuthenticationFailed, FolderUnavailable, MailboxError
from runtime.hosts import host_problem, tls_context

__all__ = ["ImapSettings", "NETWORK_ERRORS", "appended_uid", "connect", "select_resolved"]

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
    and NAMESPACE (kinds/imap/folders.py) and the folder found is selected. Returns (server name, SELECT answer).

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


def appended_uid(response: Any) -> int | None:
    """The new message's UID from an APPEND response carrying ``[APPENDUID <validity> <uid>]`` (RFC 4315)."""
    text = response.decode("ascii", "replace") if isinstance(response, bytes) else str(response or "")
    match = re.search(r"\[APPENDUID \d+ (\d+)\]", text, re.IGNORECASE)
    return int(match.group(1)) if match else None
