"""Turn the raw bytes of a fetched mail into a :class:`ParsedMail` (pure logic, no I/O).

The result carries what an erxes ``imap_messages`` document needs (contract section 5): decoded subject,
``{name, address}`` lists, threading ids, an HTML body that is never ``"false"`` and attachment descriptions.
Malformed input degrades (raw header strings, replacement characters) instead of raising; only bytes that are
not a mail at all raise :class:`~runtime.errors.MailParseError`.
"""
from __future__ import annotations

import codecs
import email
import email.policy
import email.utils
import hashlib
import html as html_lib
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.errors import InvalidHeaderDefect
from email.header import decode_header, make_header
from email.message import Message

from runtime.errors import MailParseError

logger = logging.getLogger(__name__)

__all__ = ["ParsedMail", "parse_mail", "synthetic_message_id", "is_addressed_to", "text_to_html", "find_part"]

KEPT_HEADERS = ("auto-submitted", "x-autoreply", "x-autorespond", "precedence", "return-path", "x-imap-runtime-id",
                "x-loop", "content-type")
SYNTHETIC_DOMAIN = "imap-runtime.invalid"
_MAX_DEPTH = 40                      # deeper MIME nesting is treated as opaque leaves
_MODERN_ADDRESS_LIMIT = 32 * 1024    # longer address headers skip the (slow on huge input) modern parser

_HEADER_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
_FOLD = re.compile(r"\r?\n")
_ID_TOKEN = re.compile(r"<([^<>]*)>|([^\s,<>]+)")
_WS = re.compile(r"\s+")
_UTF8_SEQ = re.compile(rb"[\xc2-\xf4][\x80-\xbf]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ASCII = {"us-ascii", "ascii", "ansi_x3.4-1968"}
_LATIN1 = {"iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1", "l1", "cp819", "ibm819",
           "windows-1252", "cp1252", "x-cp1252", *_ASCII}
_UTF8 = {"utf-8", "utf8", "unicode-1-1-utf-8", "x-unknown", "unknown", "unknown-8bit", "x-user-defined", "default"}
_ALIASES = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "ks_c_5601-1987": "cp949",
            "euc-kr": "cp949", "iso-8859-8-i": "iso-8859-8", "shift-jis": "cp932", "shift_jis": "cp932",
            "x-sjis": "cp932", "big5": "big5hkscs", "tis-620": "cp874", "windows-874": "cp874"}
_EXTENSIONS = {"message/rfc822": ".eml", "text/plain": ".txt", "text/html": ".html", "text/calendar": ".ics",
               "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "application/pdf": ".pdf",
               "message/delivery-status": ".txt", "text/rfc822-headers": ".txt"}


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


# ----------------------------------------------------------------------------------------------- text helpers

def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode a body with its declared charset; mislabelled or unknown charsets degrade, never raise."""
    label = (charset or "").strip().strip('"').lower()
    if not data:
        return ""
    if not label or label in _UTF8:
        return _utf8_or_cp1252(data, declared_utf8=label.startswith(("utf", "unicode")))
    if label in _LATIN1:
        if label in _ASCII and _UTF8_SEQ.search(data):
            return _utf8_or_cp1252(data, declared_utf8=False)   # 8-bit UTF-8 labelled as ASCII
        return data.decode("cp1252", errors="replace")          # WHATWG: Latin-1 labels mean windows-1252
    try:
        info = codecs.lookup(_ALIASES.get(label, label))
        if not getattr(info, "_is_text_encoding", True):         # e.g. "base64", "rot13"
            raise LookupError(label)
        return data.decode(info.name, errors="replace")
    except Exception:  # noqa: BLE001 - any codec failure degrades to the guess below
        logger.debug("unknown or failing charset %r, guessing", label)
        return _utf8_or_cp1252(data, declared_utf8=False)


def _utf8_or_cp1252(data: bytes, declared_utf8: bool) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if declared_utf8 and _UTF8_SEQ.search(data):
            return data.decode("utf-8", errors="replace")       # real UTF-8 with a few broken bytes
        return data.decode("cp1252", errors="replace")          # 8-bit Latin-1/Windows text


def _fix_surrogates(value: str) -> str:
    """Header strings from the bytes parser keep raw 8-bit bytes as surrogate escapes; decode them."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return _utf8_or_cp1252(value.encode("utf-8", "surrogateescape"), declared_utf8=False)


def _decode_words(value: str) -> str:
    """Decode RFC 2047 encoded words in a raw (unfolded) header string, tolerating junk."""
    value = _fix_surrogates(value)
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # noqa: BLE001 - malformed encoded words stay as written
        return value


def text_to_html(text: str) -> str:
    """Render plain text as escaped HTML: ``<div>`` with ``<br>`` for each newline; ``""`` for empty text."""
    if not text:
        return ""
    escaped = html_lib.escape(text.replace("\r\n", "\n").replace("\r", "\n"))
    return "<div>" + escaped.replace("\n", "<br>") + "</div>"


# --------------------------------------------------------------------------------------------- header helpers

def _raw_values(msg: Message, name: str) -> list[str]:
    """Every value of header ``name`` as written (unfolded, stripped; 8-bit bytes as surrogate escapes)."""
    lname = name.lower()
    return [_FOLD.sub("", str(v)).strip() for k, v in msg.raw_items() if k.lower() == lname]


def _first_raw(msg: Message, name: str) -> str | None:
    return next(iter(_raw_values(msg, name)), None)


def _strip_comments(value: str) -> str:
    """Remove RFC 5322 comments ``(...)`` (nested, with escapes) outside angle brackets."""
    if "(" not in value:
        return value
    out: list[str] = []
    depth, in_angle, escaped = 0, False, False
    for ch in value:
        if depth:
            if escaped or ch == "\\":
                escaped = not escaped
            else:
                depth += (ch == "(") - (ch == ")")
        elif ch == "(" and not in_angle:
            depth = 1
            out.append(" ")
        else:
            in_angle = (ch == "<") or (in_angle and ch != ">")
            out.append(ch)
    return "".join(out)


def _extract_ids(value: str) -> list[str]:
    """``<a> b@c,<d>`` -> ``["<a>", "<b@c>", "<d>"]``; bare tokens count only when they contain ``@``."""
    ids: list[str] = []
    for bracketed, bare in _ID_TOKEN.findall(_strip_comments(_fix_surrogates(value))):
        inner = _WS.sub("", bracketed)
        if inner:
            ids.append(f"<{inner}>")
        elif bare and "@" in bare and '"' not in bare:
            ids.append(f"<{bare}>")
    return ids


def _message_id(msg: Message) -> str | None:
    raw = _fix_surrogates(_first_raw(msg, "message-id") or "")
    ids = _extract_ids(raw) or [f"<{t}>" for t in _strip_comments(raw).replace("<", " ").replace(">", " ").split()]
    return ids[0] if ids else None


def _unique_ids(msg: Message, name: str) -> list[str]:
    """All ids of every ``name`` header, in order, without duplicates."""
    return list(dict.fromkeys(i for raw in _raw_values(msg, name) for i in _extract_ids(raw)))


def _date(msg: Message) -> datetime | None:
    raw = _first_raw(msg, "date")
    if not raw:
        return None
    try:
        value = msg["date"].datetime
    except Exception:  # noqa: BLE001 - fall back to the lenient parser below
        value = None
    try:
        value = value or email.utils.parsedate_to_datetime(_fix_surrogates(raw))
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except Exception:  # noqa: BLE001 - malformed dates become None
        logger.debug("unparseable Date header %r", raw[:200])
        return None


def _split_bare(name: str, address: str) -> tuple[str, str]:
    """``("", "John Smith john@x.y")`` -> ``("John Smith", "john@x.y")`` for addresses getaddresses mangled."""
    address = address.strip()
    if " " in address and "@" in address and not address.startswith('"'):
        words = address.split()
        last = max(i for i, word in enumerate(words) if "@" in word)
        return (name or " ".join(words[:last] + words[last + 1:])).strip(), words[last].strip("<>,;")
    return name, address


def _addresses(msg: Message, name: str) -> list[dict]:
    """``[{name, address}]`` of an address header: the modern policy where it parses, else getaddresses."""
    raws = _raw_values(msg, name)
    if not raws:
        return []
    result: list[dict] = []
    if sum(len(r) for r in raws) <= _MODERN_ADDRESS_LIMIT:
        try:
            headers = msg.get_all(name) or []
            if not any(isinstance(d, InvalidHeaderDefect) for h in headers for d in h.defects):
                for addr in (a for h in headers for a in h.addresses):
                    address = _fix_surrogates(addr.addr_spec or "").strip()
                    if address and address != "<>":
                        result.append({"name": _fix_surrogates(addr.display_name or "").strip(), "address": address})
                return result
        except Exception:  # noqa: BLE001 - fall back to the lenient parser below
            logger.debug("%s header did not parse with the modern policy", name)
    for display, address in email.utils.getaddresses([_fix_surrogates(r) for r in raws]):
        display, address = _split_bare(display, address)
        if address and address != "<>":
            result.append({"name": _decode_words(display).strip(), "address": address})
    return result


def _delivered_to(msg: Message) -> list[str]:
    raws = [_fix_surrogates(v) for h in ("delivered-to", "x-original-to") for v in _raw_values(msg, h)]
    unique: dict[str, str] = {}
    for _display, address in email.utils.getaddresses(raws):
        if address.strip():
            unique.setdefault(address.strip().lower(), address.strip())
    return list(unique.values())


# ------------------------------------------------------------------------------------------------ MIME walking

def _is_container(part: Message, depth: int) -> bool:
    return part.get_content_maintype() == "multipart" and part.is_multipart() and depth < _MAX_DEPTH


def _children(part: Message) -> list[Message]:
    return [c for c in part.get_payload() if isinstance(c, Message)]


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:  # noqa: BLE001
        return None


def _filename(part: Message) -> str | None:
    """The part's filename, decoded, without directories or control characters."""
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001
        name = None
    name = _CONTROL.sub("", _decode_words(str(name or "")).replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return name or None


def _is_body_candidate(part: Message, top: bool) -> bool:
    """Inline text/plain or text/html without a filename; a single-part text mail is always its body."""
    if top:
        return part.get_content_maintype() in ("text", "multipart")     # multipart here: boundary missing
    if part.get_content_type() not in ("text/plain", "text/html"):
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
        return (content, None) if part.get_content_subtype() == "html" else (None, content)
    children, subtype = _children(part), part.get_content_subtype()
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
    mime_type = part.get_content_type()
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
        return email.message_from_bytes(raw, policy=email.policy.default)
    except RecursionError as exc:
        raise MailParseError("mail is too deeply nested to parse") from exc
    except Exception as exc:  # noqa: BLE001 - the parser is lenient; anything escaping it is fatal
        raise MailParseError(f"unreadable mail: {exc}") from exc


def synthetic_message_id(raw: bytes, msg: Message | None = None) -> str:
    """A stable ``<sha256@imap-runtime.invalid>`` id from Date, From, To, Subject values and ``len(raw)``."""
    if msg is None:
        msg = _parse_bytes(raw)
    digest = hashlib.sha256()
    for name in ("date", "from", "to", "subject"):
        digest.update(name.encode() + b"\x00")
        for value in _raw_values(msg, name):
            digest.update(value.encode("utf-8", "surrogateescape") + b"\x00")
    digest.update(str(len(raw)).encode())
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
