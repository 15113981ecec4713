"""Header and text decoding for :mod:`runtime.mail.parse`: charsets, encoded words, message ids, dates and
addresses, each degrading on malformed input instead of raising (pure logic, no I/O)."""
from __future__ import annotations

import codecs
import email.utils
import html as html_lib
import logging
import re
from datetime import datetime, timezone
from email.errors import InvalidHeaderDefect
from email.header import decode_header, make_header
from email.message import Message

logger = logging.getLogger(__name__)

__all__ = ["text_to_html"]  # and the underscored helpers runtime.mail.parse imports

_MODERN_ADDRESS_LIMIT = 32 * 1024    # longer address headers skip the (slow on huge input) modern parser

_FOLD = re.compile(r"\r?\n")
_ID_TOKEN = re.compile(r"<([^<>]*)>|([^\s,<>]+)")
_WS = re.compile(r"\s+")
# C0 and C1 control characters and DEL: never part of a Message-ID (RFC 5322 msg-id is visible ASCII). An id that
# holds one (NUL, a bare CR or LF folded in, an escape) is refused, so it reaches neither a header we build
# (In-Reply-To, References) nor a query.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_UTF8_SEQ = re.compile(rb"[\xc2-\xf4][\x80-\xbf]")
_ASCII = {"us-ascii", "ascii", "ansi_x3.4-1968"}
_LATIN1 = {"iso-8859-1", "iso8859-1", "iso_8859-1", "latin1", "latin-1", "l1", "cp819", "ibm819",
           "windows-1252", "cp1252", "x-cp1252", *_ASCII}
_UTF8 = {"utf-8", "utf8", "unicode-1-1-utf-8", "x-unknown", "unknown", "unknown-8bit", "x-user-defined", "default"}
_ALIASES = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "ks_c_5601-1987": "cp949",
            "euc-kr": "cp949", "iso-8859-8-i": "iso-8859-8", "shift-jis": "cp932", "shift_jis": "cp932",
            "x-sjis": "cp932", "big5": "big5hkscs", "tis-620": "cp874", "windows-874": "cp874"}


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
        if CONTROL.search(inner or bare):
            continue  # refused at the door (see CONTROL)
        if inner:
            ids.append(f"<{inner}>")
        elif bare and "@" in bare and '"' not in bare:
            ids.append(f"<{bare}>")
    return ids


def _message_id(msg: Message) -> str | None:
    raw = _fix_surrogates(_first_raw(msg, "message-id") or "")
    ids = _extract_ids(raw) or [f"<{t}>" for t in _strip_comments(raw).replace("<", " ").replace(">", " ").split()
                                if not CONTROL.search(t)]
    return ids[0] if ids else None  # none: the mail gets a synthetic Message-ID


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

