"""Host names and TLS: the two checks every outbound connection of a mailbox shares (IMAP, SMTP, OAuth2 token
endpoints). A leaf module: it imports nothing of the project, so every connector can build on it.
"""
from __future__ import annotations

import functools
import socket
import ssl

__all__ = ["host_problem", "tls_context"]


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


@functools.lru_cache(maxsize=64)
def tls_context(ca_cert: str = "") -> ssl.SSLContext:
    """Certificates verified against the system's CAs, or against ``ca_cert`` (PEM text) for a self-hosted server.

    One context per distinct ``ca_cert``, shared by every connection that uses it (an ``SSLContext`` is safe to
    share, and each costs ~0.65 MB: 1,000 TLS mailboxes would otherwise hold 1,000 copies). Never modify it."""
    context = ssl.create_default_context()
    if ca_cert:
        context.load_verify_locations(cadata=ca_cert)
    return context
