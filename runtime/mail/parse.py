"""Turn the raw bytes of a fetched mail into a :class:`ParsedMail` (pure logic, no I/O).

The result carries what an erxes ``imap_messages`` document needs (contract section 5): decoded subject,
``{name, address}`` lists, threading ids, an HTML body that is never ``"false"`` and attachment descriptions.
Malformed input degrades (raw header strings, replacement characters) instead of raising; only bytes that are
not a mail at all raise :class:`~runtime.errors.MailParseError`.
"""
from __future__ import annotations

import email
import email.policy
import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import Message
from typing import Any, Callable

from runtime.errors import MailParseError
from runtime.mail.headers import (
    _addresses,
    _date,
    _decode_bytes,
    _decode_words,
    _delivered_to,
    _first_raw,
    _fix_surrogates,
    _message_id,
    _raw_values,
    _unique_ids,
    text_to_html,
)

logger = logging.getLogger(__name__)

__all__ = ["ParsedMail", "parse_mail", "synthetic_message_id", "is_addressed_to", "text_to_html", "find_part"]

KEPT_HEADERS = ("auto-submitted", "x-autoreply", "x-autorespond", "precedence", "return-path", "x-imap-runtime-id",
                "x-loop", "content-type")
SYNTHETIC_DOMAIN = "imap-runtime.invalid"
_MAX_DEPTH = 40                      # deeper MIME nesting is treated as opaque leaves
_REMEMBERED_LENGTH = 1024            # longer header values are not remembered by the header registry

_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
_WS = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EXTENSIONS = {"message/rfc822": ".eml", "text/plain": ".txt", "text/html": ".html", "text/calendar": ".ics",
               "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "application/pdf": ".pdf",
               "message/delivery-status": ".txt", "text/rfc822-headers": ".txt"}


class _RememberingRegistry(HeaderRegistry):
    """``email.policy.default``'s header registry, handing out the header object it made before for the same name
    and value: the parser and the walk below fetch a part's Content-Type again and again (the stdlib re-parses it at
    every ``get_content_type()``), about 20 parses of a header per mail. Header objects are immutable, so sharing
    one changes nothing. Bounded: forgets everything past ``size`` entries; values over 1 KiB are not kept."""

    def __init__(self, size: int = 4096) -> None:
        super().__init__()
        self._made: dict[tuple[str, str], BaseHeader] = {}
        self._size = size

    def __call__(self, name: str, value: str) -> BaseHeader:
        if len(value) > _REMEMBERED_LENGTH:  # a huge header is parsed anew rather than kept
            return super().__call__(name, value)
        key = (name, value)
        made = self._made.get(key)
        if made is None:
            if len(self._made) >= self._size:
                self._made.clear()
            made = self._made[key] = super().__call__(name, value)
        return made


_POLICY = email.policy.default.clone(header_factory=_RememberingRegistry())


@dataclass(frozen=True)
class ParsedMail:
    """One parsed mail; see the module docstring."""

    message_id: str
    synthetic_id: bool
    subject: str
    from_: list[dict]
    to: list[dict]
    cc: list[dict]
    bcc: list[dict]
    reply_to: list[dict]
    delivered_to: list[str]
    in_reply_to: str | None
    references: list[str]
    date: datetime | None
    html: str
    text: str | None
    attachments: list[dict]
    size: int
    headers: dict[str, str]

    @property
    def sender(self) -> str | None:
        """The first From address, lowercased; ``None`` when the mail has no From address."""
        return next((str(e["address"]).lower() for e in self.from_ if e.get("address")), None)


# ------------------------------------------------------------------------------------------------ MIME walking

def _once(part: Message, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()``, remembered on ``part`` for this parse: with ``email.policy.default`` every
    ``get_content_type()``, ``get_content_disposition()``, ``get_filename()``... re-parses its header through the
    header registry, and the walk below asks each part several times (the same methods, so the same answers)."""
    memo = part.__dict__.setdefault("_imap_runtime_memo", {})
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def _content_type(part: Message) -> str:
    return _once(part, "type", part.get_content_type)


def _maintype(part: Message) -> str:
    return _content_type(part).split("/")[0]  # as Message.get_content_maintype()


def _subtype(part: Message) -> str:
    return _content_type(part).split("/")[1]  # as Message.get_content_subtype()


def _is_container(part: Message, depth: int) -> bool:
    return _maintype(part) == "multipart" and part.is_multipart() and depth < _MAX_DEPTH


def _children(part: Message) -> list[Message]:
    return [c for c in part.get_payload() if isinstance(c, Message)]


def _disposition(part: Message) -> str | None:
    return _once(part, "disposition", lambda: _disposition_of(part))


def _disposition_of(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:  # noqa: BLE001
        return None


def _filename(part: Message) -> str | None:
    """The part's filename, decoded, without directories or control characters."""
    return _once(part, "filename", lambda: _filename_of(part))


def _filename_of(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001
        name = None
    name = _CONTROL.sub("", _decode_words(str(name or "")).replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return name or None


def _is_body_candidate(part: Message, top: bool) -> bool:
    """Inline text/plain or text/html without a filename; a single-part text mail is always its body."""
    if top:
        return _maintype(part) in ("text", "multipart")     # multipart here: boundary missing
    if _content_type(part) not in ("text/plain", "text/html"):
        return False
    return _disposition(part) != "attachment" and _filename(part) is None


def _part_bytes(part: Message) -> bytes:
    """Decoded payload of a leaf; an embedded message (message/*) serialised back to bytes."""
    if not part.is_multipart():
        payload = part.get_payload(decode=True)
        return payload if isinstance(payload, bytes) else b""
    chunks: list[bytes] = []
    for sub in _children(part):
        try:
            chunks.append(sub.as_bytes())
        except Exception:  # noqa: BLE001 - e.g. RecursionError on absurd nesting: degrade to nothing
            logger.debug("could not serialise an embedded part, leaving it empty")
    return b"\n".join(chunks)


def _part_text(part: Message) -> str:
    try:
        charset = part.get_content_charset()
    except Exception:  # noqa: BLE001
        charset = None
    return _decode_bytes(_part_bytes(part), charset)


def _related_root(part: Message, children: list[Message]) -> Message | None:
    start = part.get_param("start")
    wanted = start.strip("<> ") if isinstance(start, str) else ""
    for child in children if wanted else ():
        if (_first_raw(child, "content-id") or "").strip("<> ") == wanted:
            return child
    return children[0] if children else None


def _body_of(part: Message, top: bool, depth: int) -> tuple[str | None, str | None]:
    """``(html, text)`` of a part; alternatives prefer the last, mixed parts concatenate inline bodies."""
    if not _is_container(part, depth):
        if not _is_body_candidate(part, top):
            return None, None
        content = _part_text(part)
        return (content, None) if _subtype(part) == "html" else (None, content)
    children, subtype = _children(part), _subtype(part)
    if subtype == "alternative":
        html = text = None
        for child in children:
            child_html, child_text = _body_of(child, False, depth + 1)
            html = child_html if child_html is not None else html
            text = child_text if child_text is not None else text
        return html, text
    if subtype == "related":
        root = _related_root(part, children)
        return _body_of(root, False, depth + 1) if root is not None else (None, None)
    pieces = [p for p in (_body_of(c, False, depth + 1) for c in children) if p != (None, None)]
    texts = [t for _h, t in pieces if t is not None]
    text = "\n".join(texts) if texts else None
    if all(h is None for h, _t in pieces):
        return None, text
    return "".join(h if h is not None else text_to_html(t or "") for h, t in pieces), text


def _leaves(part: Message, prefix: str = "", depth: int = 0) -> list[tuple[str, Message, bool]]:
    """All leaf parts as ``(partIndex, part, is_top)`` in document order, IMAP-style numbering."""
    if not _is_container(part, depth):
        return [("1", part, True)] if depth == 0 else [(prefix, part, False)]
    result: list[tuple[str, Message, bool]] = []
    for number, child in enumerate(_children(part), 1):
        result.extend(_leaves(child, f"{prefix}.{number}" if prefix else str(number), depth + 1))
    return result


def _attachment_parts(msg: Message) -> list[tuple[str, Message]]:
    return [(path, part) for path, part, top in _leaves(msg) if not _is_body_candidate(part, top)]


def _describe(path: str, part: Message) -> tuple[str, str, str | None, str]:
    """``(filename, mimeType, contentId, type)`` of an attachment part."""
    mime_type = _content_type(part)
    content_id = _WS.sub("", _fix_surrogates(_first_raw(part, "content-id") or "")).strip("<>") or None
    filename = _filename(part) or f"attachment-{path.replace('.', '-')}{_EXTENSIONS.get(mime_type, '.bin')}"
    kind = "inline" if content_id and _disposition(part) != "attachment" else "attachment"
    return filename, mime_type, content_id, kind


# ------------------------------------------------------------------------------------------------- public API

def _parse_bytes(raw: bytes) -> Message:
    if not isinstance(raw, (bytes, bytearray, memoryview)):
        raise MailParseError(f"expected bytes, got {type(raw).__name__}")
    raw = bytes(raw).lstrip(b"\r\n")
    head = raw[:4096]
    if head.startswith(b"From "):                      # mbox separator line before the headers
        head = head.split(b"\n", 1)[1] if b"\n" in head else b""
    if not _HEADER_LINE.match(head):
        raise MailParseError("not a mail: no header section")
    try:
        return email.message_from_bytes(raw, policy=_POLICY)
    except RecursionError as exc:
        raise MailParseError("mail is too deeply nested to parse") from exc
    except Exception as exc:  # noqa: BLE001 - the parser is lenient; anything escaping it is fatal
        raise MailParseError(f"unreadable mail: {exc}") from exc


def synthetic_message_id(raw: bytes, msg: Message | None = None) -> str:
    """A stable ``<sha256@imap-runtime.invalid>`` id from Date, From, To, Subject values and the raw bytes (two
    mails that differ only in their bodies are two mails)."""
    if msg is None:
        msg = _parse_bytes(raw)
    digest = hashlib.sha256()
    for name in ("date", "from", "to", "subject"):
        digest.update(name.encode() + b"\x00")
        for value in _raw_values(msg, name):
            digest.update(value.encode("utf-8", "surrogateescape") + b"\x00")
    digest.update(str(len(raw)).encode() + b"\x00" + raw)
    return f"<{digest.hexdigest()}@{SYNTHETIC_DOMAIN}>"


def parse_mail(raw: bytes) -> ParsedMail:
    """Parse a fetched mail; raises :class:`MailParseError` only for bytes that are not a mail."""
    msg = _parse_bytes(raw)
    message_id = _message_id(msg)
    synthetic = message_id is None
    if message_id is None:
        message_id = synthetic_message_id(raw, msg)
        logger.debug("mail without Message-ID, using %s", message_id)

    html_body, text = _body_of(msg, True, 0)
    body = html_body if html_body is not None and (html_body.strip() or not text) else text_to_html(text or "")
    if body.strip() == "false":                           # erxes' "false" marker must never be a body
        body = text_to_html(body)

    attachments: list[dict] = []
    for path, part in _attachment_parts(msg):
        filename, mime_type, content_id, kind = _describe(path, part)
        attachment_id = hashlib.sha1(f"{message_id}|{path}".encode("utf-8", "surrogateescape")).hexdigest()[:16]
        attachments.append({"filename": filename, "mimeType": mime_type, "type": kind,
                            "size": len(_part_bytes(part)), "attachmentId": attachment_id,
                            "contentId": content_id, "partIndex": path})

    headers = {name: _fix_surrogates(value) for name in KEPT_HEADERS
               if (value := _first_raw(msg, name)) is not None}
    in_reply_to = _unique_ids(msg, "in-reply-to")
    return ParsedMail(
        message_id=message_id, synthetic_id=synthetic, subject=_decode_words(_first_raw(msg, "subject") or ""),
        from_=_addresses(msg, "from"), to=_addresses(msg, "to"), cc=_addresses(msg, "cc"),
        bcc=_addresses(msg, "bcc"), reply_to=_addresses(msg, "reply-to"), delivered_to=_delivered_to(msg),
        in_reply_to=in_reply_to[0] if in_reply_to else None, references=_unique_ids(msg, "references"),
        date=_date(msg), html=body, text=text, attachments=attachments, size=len(raw), headers=headers,
    )


def is_addressed_to(mail: ParsedMail, *addresses: str | None) -> bool:
    """Whether any of ``addresses`` (case-insensitive; empty ones ignored) is in To, Cc or Delivered-To."""
    wanted = {a.strip().lower() for a in addresses if a and a.strip()}
    present = {str(e.get("address", "")).strip().lower() for e in (*mail.to, *mail.cc)}
    present.update(a.strip().lower() for a in mail.delivered_to)
    return not wanted.isdisjoint(present)


def find_part(raw: bytes, part_index: str) -> tuple[str, str, bytes] | None:
    """``(filename, mimeType, decoded payload)`` of the attachment listed with ``part_index``, else ``None``."""
    for path, part in _attachment_parts(_parse_bytes(raw)):
        if path == part_index:
            filename, mime_type, _cid, _kind = _describe(path, part)
            return filename, mime_type, _part_bytes(part)
    return None
