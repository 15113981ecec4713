"""Sending a stored file to a browser safely, for any route that serves one (the IMAP kind's
``/read-mail-attachment``, the console's copy of it): the ``Content-Disposition`` of a name nobody checked, which
MIME types may be named as given, and the error such a route answers with."""
from __future__ import annotations

import re
import urllib.parse

__all__ = ["AttachmentError", "MIME_TYPE", "content_disposition"]

MIME_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_UNSAFE_NAME = re.compile(r'[\x00-\x1f\x7f"\\/:*?<>|]+')


class AttachmentError(Exception):
    """A request that cannot be answered with the attachment: ``status`` and a reason for the caller."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact name as RFC 5987 UTF-8."""
    name = _UNSAFE_NAME.sub("_", filename).strip(" .") or "attachment"
    fallback = name.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"
