"""Mail that must not start a conversation loop: auto-replies, bounces, and mail this runtime sent itself.

Auto-replies and bounces are still ingested (a person may need to see a bounce) but flagged, so nothing answers
them automatically. Mail carrying our own ``X-Imap-Runtime-Id`` for the same integration is our own reply coming
back (a copy, a loop) and is never ingested as customer mail. Pure logic.
"""
from __future__ import annotations

import re
from typing import Any

__all__ = ["classify", "is_own_mail", "AUTO_REPLY", "BOUNCE", "OWN_HEADER"]

AUTO_REPLY, BOUNCE = "auto-reply", "bounce"
OWN_HEADER = "X-Imap-Runtime-Id"
_DAEMONS = re.compile(r"^(mailer-daemon|postmaster|mail-daemon|mailerdaemon)@", re.IGNORECASE)


def classify(mail: Any) -> str | None:
    """``"bounce"``, ``"auto-reply"`` or None for mail a person wrote."""
    headers: dict[str, str] = mail.headers
    content_type = headers.get("content-type", "").lower()
    sender = mail.sender or ""
    if "report-type=delivery-status" in content_type.replace('"', "").replace(" ", "") or _DAEMONS.match(sender):
        return BOUNCE
    if headers.get("return-path", "").strip() == "<>" and any(
            a.get("mimeType") == "message/delivery-status" for a in mail.attachments):
        return BOUNCE
    auto = headers.get("auto-submitted", "").strip().lower()
    if auto and not auto.startswith("no"):
        return AUTO_REPLY
    if "x-autoreply" in headers or "x-autorespond" in headers:
        return AUTO_REPLY
    if headers.get("precedence", "").strip().lower() in ("bulk", "junk", "auto_reply", "list"):
        return AUTO_REPLY
    return None


def is_own_mail(mail: Any, inbox_id: str) -> bool:
    return mail.headers.get(OWN_HEADER.lower(), "").strip() == inbox_id
