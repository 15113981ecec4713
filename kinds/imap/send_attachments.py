"""The attachments of a send, gathered before anything is sent: each decoded (base64, or a ``data:`` URL) or fetched
(an http(s) URL, through the outbound fence, :mod:`runtime.fence`), stopping as soon as they pass the size limit."""
from __future__ import annotations

import base64
import binascii
import mimetypes
from typing import Any

from runtime.errors import OutboundTooLarge, RequestError
from runtime.fence import Fence
from runtime.mail.build import Attachment

__all__ = ["DEFAULT_MAX_ATTACHMENT_BYTES", "AttachmentLoader"]

DEFAULT_MAX_ATTACHMENT_BYTES = 25 * 1024 * 1024


class AttachmentLoader:
    """A send's attachments, all of them within ``max_bytes``; URLs fetched within 4 x ``timeout``. Thread-safe."""

    def __init__(self, *, fence: Fence, timeout: float, max_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES) -> None:
        self._fence = fence
        self._timeout = timeout
        self._max_bytes = max_bytes

    def load(self, items: list[Any], subdomain: str) -> list[Attachment]:
        """Decode or fetch every attachment, stopping as soon as they pass the size limit (before any sending)."""
        out: list[Attachment] = []
        budget = self._max_bytes
        for index, item in enumerate(items, 1):
            if not isinstance(item, dict):
                raise RequestError(f"attachment {index} must be an object {{filename, mimeType, url or data}}")
            filename = str(item.get("filename") or item.get("name") or f"attachment-{index}")
            mime_type = _mime_type(item, filename)
            if item.get("data") not in (None, ""):
                data = self._decode(item["data"], filename, budget)
            elif item.get("url"):
                data = self._fetch(item["url"], filename, budget, subdomain)
            else:
                raise RequestError(f"attachment {filename!r} has neither data (base64) nor url")
            budget -= len(data)
            out.append(Attachment(filename=filename, mime_type=mime_type, data=data))
        return out

    def _too_big(self, filename: str) -> RequestError:
        return RequestError(f"the attachments are larger than the limit of {_megabytes(self._max_bytes)} per mail "
                            f"(passed at {filename!r}): nothing was sent")

    def _decode(self, data: Any, filename: str, budget: int) -> bytes:
        if not isinstance(data, str):
            raise RequestError(f"attachment {filename!r}: data must be base64 text")
        if data.startswith("data:") and "," in data:  # a data: URL
            data = data.split(",", 1)[1]
        compact = "".join(data.split())
        if len(compact) // 4 * 3 - compact[-2:].count("=") > budget:
            raise self._too_big(filename)
        try:
            decoded = base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(f"attachment {filename!r}: data is not valid base64") from None
        if len(decoded) > budget:
            raise self._too_big(filename)
        return decoded

    def _fetch(self, url: Any, filename: str, budget: int, subdomain: str) -> bytes:
        """GET an http(s) URL through the outbound fence: an allowed prefix or public addresses only, every redirect
        checked, one deadline for all of it, streamed against the size limit; never a file path."""
        try:
            response = self._fence.fetch(url, timeout=4 * self._timeout, max_bytes=budget, subdomain=subdomain)
        except OutboundTooLarge:
            raise self._too_big(filename) from None
        except RequestError as exc:  # the fence's texts never show the query: it may carry a signed key
            raise RequestError(f"attachment {filename!r}: {exc}") from None
        if response.status != 200:
            raise RequestError(f"attachment {filename!r}: {response.url} answered {response.status} "
                               f"{response.reason}")
        return response.body


def _mime_type(item: dict[str, Any], filename: str) -> str:
    for key in ("mimeType", "contentType", "type"):
        value = item.get(key)
        if isinstance(value, str) and "/" in value:
            return value.strip()
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def _megabytes(size: int) -> str:
    return f"{size / (1024 * 1024):g} MB" if size >= 1024 * 1024 else f"{size} bytes"
