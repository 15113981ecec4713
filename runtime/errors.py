"""The project's exceptions, in one documented hierarchy.

    RuntimeFault                  base of everything the runtime raises on purpose
    ├── ConfigError               a setting is missing or wrong; start-up stops (exit status 2)
    ├── RequestError              a caller's request is malformed or names something unknown
    │   ├── MailRejected          a mail that can never be ingested as it is (no usable sender): quarantined
    │   └── OutboundError         fetching a URL a caller gave failed (runtime/fence.py; the text has no query)
    │       ├── OutboundRefused   the fence refused the URL (not public, not allowed): retrying cannot help
    │       └── OutboundTooLarge  the answer passed the size limit
    ├── MailboxError              talking to one integration's IMAP/SMTP server failed
    │   └── AuthenticationFailed  the server refused the credentials
    ├── BrokerError               the message broker is unreachable or refused an operation
    │   ├── RpcError              the remote procedure answered with an error envelope
    │   └── RpcTimeout            no reply within the timeout
    ├── StorageError              MongoDB failed
    └── MailParseError            the bytes are not a mail we can read

Raise with ``raise X(...) from exc`` so the cause stays attached.
"""
from __future__ import annotations


class RuntimeFault(Exception):
    """Base class of every error the runtime raises on purpose."""


class ConfigError(RuntimeFault):
    """A setting is missing or invalid. ``setting`` names it, ``problem`` says what is wrong."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem


class RequestError(RuntimeFault):
    """A caller's request is malformed or names something unknown; the message goes back to the caller."""


class MailRejected(RequestError):
    """The mail itself can never be ingested as it is (no usable sender address): retrying cannot help, so it is
    quarantined at once."""


class OutboundError(RequestError):
    """An HTTP request to a URL a caller gave (an attachment, a token endpoint) failed; the text never shows the
    URL's query."""


class OutboundRefused(OutboundError):
    """The outbound fence refused the URL: not a public address and no allowed prefix, or a refused redirect."""


class OutboundTooLarge(OutboundError):
    """The answer to an outbound request passed its size limit."""


class MailboxError(RuntimeFault):
    """Talking to an integration's mail server failed."""


class FolderUnavailable(MailboxError):
    """A configured folder cannot be selected (not on the server, ambiguous, refused): that folder is skipped and
    retried on its own schedule (kinds/imap/folders.py); the mailbox's connection and other folders go on."""


class AuthenticationFailed(MailboxError):
    """The mail server refused the login; retrying with the same settings will not help."""


class BrokerError(RuntimeFault):
    """The message broker is unreachable or refused an operation."""


class RpcError(BrokerError):
    """The remote procedure replied with ``{"status": "error", "errorMessage": ...}``."""


class RpcTimeout(BrokerError):
    """No reply arrived within the timeout."""


class StorageError(RuntimeFault):
    """MongoDB failed."""


class MailParseError(RuntimeFault):
    """The bytes could not be read as a mail."""
