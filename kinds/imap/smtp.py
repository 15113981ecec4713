"""Submitting a mail to an integration's SMTP server (smtplib), and the settings that say how.

Security, from the integration's optional ``smtpTls``: ``"tls"`` (implicit TLS), ``"starttls"`` or ``"none"``;
without it, implicit TLS on port 465 and STARTTLS on any other port. With STARTTLS we refuse to go on when the
server does not offer it: the password and the mail never travel in plain text unless ``smtpTls`` is ``"none"``.
Certificates are always verified (:func:`runtime.hosts.tls_context`, with the integration's ``caCert``), every
socket operation has a timeout, and every failure raises an error carrying the server's own reason, never the
password: :class:`~runtime.errors.AuthenticationFailed` for a refused login, :class:`SmtpRefused` for a refused
sender, recipients or mail, :class:`~runtime.errors.MailboxError` for anything else. An integration with OAuth2
settings (:mod:`kinds.imap.oauth`) logs in with ``AUTH XOAUTH2`` and a fresh access token; a refused token is refreshed
and tried once more.
"""
from __future__ import annotations

import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from typing import Any, Callable

from kinds.imap.oauth import xoauth2
from kinds.imap.oauth_refresh import Tokens, oauth_tokens
from runtime.errors import AuthenticationFailed, MailboxError, RequestError
from runtime.hosts import tls_context

__all__ = ["SmtpSettings", "SendResult", "SmtpRefused", "send", "smtp_security", "smtp_port", "SECURITY_MODES"]

SECURITY_MODES = ("tls", "starttls", "none")
IMPLICIT_TLS_PORT = 465
DEFAULT_PORT = 587


class SmtpRefused(MailboxError):
    """The server refused the sender, every recipient or the mail itself; ``reply`` is its ``"<code> <text>"``."""

    def __init__(self, message: str, reply: str, rejected: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reply = reply
        self.rejected = rejected or {}


def smtp_security(value: Any, port: int) -> str:
    """The security mode of ``smtpTls`` (``None``/``""``: by port); RequestError for anything unknown."""
    if value in (None, ""):
        return "tls" if port == IMPLICIT_TLS_PORT else "starttls"
    if not isinstance(value, str) or value.strip().lower() not in SECURITY_MODES:
        raise RequestError(f"smtpTls must be one of {', '.join(SECURITY_MODES)}, got {value!r}")
    return value.strip().lower()


def smtp_port(value: Any) -> int:
    """``smtpPort`` (a string in erxes; empty: 587) as a port number; RequestError when it is not one."""
    if value in (None, ""):
        return DEFAULT_PORT
    try:
        port = int(str(value).strip())
    except ValueError:
        raise RequestError(f"smtpPort must be a number, got {value!r}") from None
    if not 0 < port < 65536:
        raise RequestError(f"smtpPort must be between 1 and 65535, got {port}")
    return port


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: str
    login: str
    password: str = field(repr=False)
    timeout: float = 30.0
    ca_cert: str = field(default="", repr=False)
    oauth: bool = False  # AUTH XOAUTH2 with ``tokens`` instead of the password
    tokens: Tokens | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_integration(cls, doc: dict[str, Any], timeout: float = 30.0, *, storage: Any = None) -> SmtpSettings:
        """``storage`` (where OAuth2 tokens are read and saved) is needed by an integration with OAuth2 settings."""
        host = str(doc.get("smtpHost") or "").strip()
        if not host:
            raise RequestError(f"integration {doc.get('inboxId')} has no smtpHost: it cannot send mail")
        port = smtp_port(doc.get("smtpPort"))
        return cls(host=host, port=port, security=smtp_security(doc.get("smtpTls"), port),
                   login=str(doc.get("mainUser") or doc.get("user") or ""), password=str(doc.get("password") or ""),
                   timeout=timeout, ca_cert=str(doc.get("caCert") or ""), oauth=bool(doc.get("oauthTokenUrl")),
                   tokens=oauth_tokens(doc, storage, timeout))

    @property
    def where(self) -> str:
        return f"SMTP server {self.host}:{self.port}"


@dataclass(frozen=True)
class SendResult:
    accepted: list[str]
    rejected: dict[str, str]     # address -> the server's reply to its RCPT
    response: str                # the server's reply to the mail's data, e.g. "250 2.0.0 Ok: queued as 1234"


def send(settings: SmtpSettings, *, sender: str, recipients: list[str], raw: bytes,
         local_hostname: str | None = None,
         smtp_factory: Callable[..., smtplib.SMTP] | None = None) -> SendResult:
    """Submit ``raw`` from ``sender`` to ``recipients``. Some refused recipients are reported in the result; all
    of them refused (or the sender, or the data) raises :class:`SmtpRefused` and nothing was sent."""
    if not recipients:
        raise RequestError("no recipients")
    hostname = local_hostname or socket.gethostname() or "localhost"  # never getfqdn(): a reverse DNS lookup
    context = tls_context(settings.ca_cert)
    try:
        smtp = _open(settings, context, hostname, smtp_factory)
    except smtplib.SMTPException as exc:
        raise MailboxError(_scrub(settings, f"{settings.where} refused the connection: {_reply(exc)}")) from exc
    except ssl.SSLError as exc:
        raise MailboxError(f"TLS with {settings.where} failed: {_tls_words(exc)}") from exc
    except OSError as exc:  # refused, unreachable, timeout
        raise MailboxError(f"cannot connect to {settings.where}: {exc}") from exc
    sent = False
    try:
        _secure_and_login(smtp, settings, context)
        result = _transaction(smtp, settings, sender, recipients, raw)
        sent = True
        return result
    except MailboxError:
        raise
    except smtplib.SMTPServerDisconnected as exc:
        raise MailboxError(f"{settings.where} closed the connection: {exc}") from exc
    except smtplib.SMTPException as exc:
        raise MailboxError(_scrub(settings, f"{settings.where}: {_reply(exc)}")) from exc
    except ssl.SSLError as exc:
        raise MailboxError(f"TLS with {settings.where} failed: {_tls_words(exc)}") from exc
    except OSError as exc:
        raise MailboxError(f"{settings.where}: {exc or type(exc).__name__}") from exc
    finally:
        _close(smtp, polite=sent)  # after a failure no QUIT: the server may be the reason (a stall)


def _open(settings: SmtpSettings, context: ssl.SSLContext, hostname: str,
          factory: Callable[..., smtplib.SMTP] | None) -> smtplib.SMTP:
    if factory is not None:
        return factory(settings, context, hostname)
    if settings.security == "tls":
        return smtplib.SMTP_SSL(settings.host, settings.port, local_hostname=hostname, timeout=settings.timeout,
                                context=context)
    return smtplib.SMTP(settings.host, settings.port, local_hostname=hostname, timeout=settings.timeout)


def _secure_and_login(smtp: smtplib.SMTP, settings: SmtpSettings, context: ssl.SSLContext) -> None:
    smtp.ehlo_or_helo_if_needed()
    if settings.security == "starttls":
        if not smtp.has_extn("starttls"):
            raise MailboxError(f"{settings.where} does not offer STARTTLS: refusing to send the password and the "
                               f"mail in plain text (set smtpTls to \"none\" to allow it)")
        code, reply = smtp.starttls(context=context)
        if code != 220:
            raise MailboxError(f"{settings.where} refused STARTTLS: {code} {_text(reply)}")
        smtp.ehlo()
    if not settings.login:
        return
    if not smtp.has_extn("auth"):
        raise MailboxError(f"{settings.where} offers no login (AUTH) on this connection")
    try:
        if settings.oauth:
            _oauth_login(smtp, settings)
        else:
            smtp.login(settings.login, settings.password)
    except smtplib.SMTPAuthenticationError as exc:
        raise AuthenticationFailed(_scrub(settings, f"{settings.where} refused the login of {settings.login}: "
                                                    f"{_reply(exc)}")) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise MailboxError(f"{settings.where} supports none of our login mechanisms: {exc}") from exc


def _oauth_login(smtp: smtplib.SMTP, settings: SmtpSettings) -> None:
    """AUTH XOAUTH2 with a fresh access token; a refused one is refreshed and tried once more."""
    if settings.tokens is None:
        raise MailboxError(f"{settings.where}: the integration signs in with OAuth2 but has no token source")
    if "xoauth2" not in smtp.esmtp_features.get("auth", "").lower().split():
        raise MailboxError(f"{settings.where} does not offer AUTH XOAUTH2")
    token = settings.tokens.access_token()
    try:
        _xoauth2(smtp, settings.login, token)
    except smtplib.SMTPAuthenticationError:
        _xoauth2(smtp, settings.login, settings.tokens.access_token(rejected=token))


def _xoauth2(smtp: smtplib.SMTP, login: str, token: str) -> None:
    # On failure the server sends a challenge (its error as JSON) and waits for an empty line; then 535.
    smtp.auth("XOAUTH2", lambda challenge=None: xoauth2(login, token) if challenge is None else "",
              initial_response_ok=True)


def _transaction(smtp: smtplib.SMTP, settings: SmtpSettings, sender: str, recipients: list[str],
                 raw: bytes) -> SendResult:
    options: list[str] = []
    if smtp.does_esmtp and smtp.has_extn("size"):
        options.append(f"SIZE={len(raw)}")
    if not all(a.isascii() for a in (sender, *recipients)):
        if not smtp.has_extn("smtputf8"):
            raise SmtpRefused(f"{settings.where} cannot take non-ASCII addresses (no SMTPUTF8)", "")
        options.append("SMTPUTF8")
    code, reply = smtp.mail(sender, options)
    if code != 250:
        _rset(smtp)
        words = f"{code} {_text(reply)}"
        raise SmtpRefused(f"{settings.where} refused the sender {sender}: {words}", words)
    accepted: list[str] = []
    rejected: dict[str, str] = {}
    for recipient in recipients:
        code, reply = smtp.rcpt(recipient)
        if code in (250, 251):
            accepted.append(recipient)
        else:
            rejected[recipient] = f"{code} {_text(reply)}"
    if not accepted:
        _rset(smtp)
        reasons = "; ".join(f"{a}: {r}" for a, r in rejected.items())
        raise SmtpRefused(f"{settings.where} refused every recipient: {reasons}", next(iter(rejected.values())),
                          rejected)
    try:
        code, reply = smtp.data(raw)
    except smtplib.SMTPDataError as exc:  # refused DATA itself (e.g. 554 no valid recipients)
        _rset(smtp)
        words = _reply(exc)
        raise SmtpRefused(f"{settings.where} refused the mail: {words}", words, rejected) from exc
    if code != 250:
        _rset(smtp)
        words = f"{code} {_text(reply)}"
        raise SmtpRefused(f"{settings.where} refused the mail: {words}", words, rejected)
    return SendResult(accepted=accepted, rejected=rejected, response=f"{code} {_text(reply)}")


def _rset(smtp: smtplib.SMTP) -> None:
    try:
        smtp.rset()
    except (smtplib.SMTPException, OSError):
        pass


def _close(smtp: smtplib.SMTP, *, polite: bool) -> None:
    try:
        if polite:
            smtp.quit()
    except (smtplib.SMTPException, OSError):
        pass
    finally:
        try:
            smtp.close()
        except OSError:
            pass


def _text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())


def _reply(exc: smtplib.SMTPException) -> str:
    code = getattr(exc, "smtp_code", None)
    error = getattr(exc, "smtp_error", None)
    if code is not None and error is not None:
        return f"{code} {_text(error)}"
    return str(exc) or type(exc).__name__


def _tls_words(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message} (a self-hosted server needs caCert)"
    return str(exc.reason or exc)


def _scrub(settings: SmtpSettings, text: str) -> str:
    """A server may echo what it got; the password never leaves in an error."""
    return text.replace(settings.password, "***") if len(settings.password) >= 3 else text
