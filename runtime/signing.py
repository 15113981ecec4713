"""Webhook signatures, both ways: ``sha256=<hex HMAC-SHA256 of the body>`` under a per-integration secret. The IMAP
kind's ``POST /receive`` (``X-Imap-Runtime-Signature``) and the api kind's receive and callbacks (``X-Api-Signature``)
share it; each kind names its own header."""
from __future__ import annotations

import hashlib
import hmac

__all__ = ["sign", "verify"]


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body>``, the header's value both ways."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str | None, body: bytes, signature: str | None) -> bool:
    """Constant-time check of a signature; no secret or no signature never verifies. A signature is compared as
    bytes: ``hmac.compare_digest`` refuses a str with a non-ASCII letter (a TypeError, so a 500, before)."""
    if not secret or not signature:
        return False
    given = signature.strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(sign(secret, body).encode(), given)
