"""Build an outgoing mail (pure logic, no I/O): the staff reply or new mail of ``imapSendMail``.

:func:`build` turns an :class:`Outgoing` into the bytes to submit (CRLF, 7-bit clean) plus the envelope. The
result threads correctly in every mail client: a Message-ID under the sender's domain, ``In-Reply-To`` the replied
mail's Message-ID and ``References`` its whole chain, ``Re: `` once, Cc in the headers, Bcc only in the envelope,
``multipart/alternative`` (a text rendering of the HTML body, then the HTML) inside ``multipart/mixed`` when there
are attachments, and ``X-Imap-Runtime-Id`` naming the integration so a later reader can recognise our own mail.
Bad input raises :class:`~runtime.errors.RequestError` saying what is wrong.
"""
from __future__ import annotations

import datetime as dt
import email.policy
import email.utils
import html as html_lib
import re
import uuid
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from html.parser import HTMLParser
from typing import Iterable

from runtime.errors import RequestError

__all__ = ["Attachment", "Outgoing", "BuiltMail", "build", "reply_subject", "thread_references", "make_message_id",
           "normalize_message_id", "parse_addresses", "html_to_text", "RUNTIME_ID_HEADER"]

RUNTIME_ID_HEADER = "X-Imap-Runtime-Id"
MAX_REFERENCES = 100            # a longer chain keeps its first id and the newest ones (RFC 5322 3.6.4)
_POLICY = email.policy.SMTP.clone(cte_type="7bit", refold_source="none")  # CRLF; 8-bit parts get QP/base64
_REPLY_PREFIX = re.compile(r"^\s*(re|aw)(\[\d+\])?\s*:", re.IGNORECASE)
_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$", re.IGNORECASE)
MAX_ID_LENGTH = 998  # RFC 5322's line limit
_ID_TOKEN = re.compile(r"<([^<>\s]+)>|([^\s<>,]+@[^\s<>,]+)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # as runtime.mail.headers.CONTROL
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Attachment:
    filename: str
    mime_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Outgoing:
    """What to send. Addresses are ``(display name, address)`` pairs; ``subject`` is final (see reply_subject)."""

    sender: tuple[str, str]
    to: list[tuple[str, str]]
    subject: str
    html: str
    runtime_id: str
    cc: list[tuple[str, str]] = field(default_factory=list)
    bcc: list[tuple[str, str]] = field(default_factory=list)
    reply_to: list[tuple[str, str]] = field(default_factory=list)
    in_reply_to: str | None = None
    references: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    envelope_from: str | None = None     # the SMTP MAIL FROM; defaults to the sender's address
    message_id: str | None = None        # generated under the sender's domain when None
    date: dt.datetime | None = None      # now when None


@dataclass(frozen=True)
class BuiltMail:
    raw: bytes = field(repr=False)
    message_id: str
    envelope_from: str
    recipients: list[str]               # To, Cc and Bcc addresses, each once, in that order
    text: str = field(repr=False)


# ------------------------------------------------------------------------------------------------ threading

def reply_subject(subject: str) -> str:
    """``Re: <subject>``, unless it already starts with ``Re:``/``RE:``/``Aw:`` (any case, ``Re[2]:`` too)."""
    subject = _one_line(subject)
    return subject if _REPLY_PREFIX.match(subject) else f"Re: {subject}".rstrip()


def normalize_message_id(value: object) -> str | None:
    """``"<a@b>"`` or ``"a@b"`` -> ``"<a@b>"``; anything else (no ``@``, spaces, empty) -> None."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if _CONTROL.search(value):  # NUL, CR, LF and other controls never reach a header (issue 12)
        return None
    if len(value) > MAX_ID_LENGTH:  # no header line is longer; and _ID_TOKEN's search is quadratic on long input
        return None
    match = _ID_TOKEN.search(value)
    if not match:
        return None
    inner = match.group(1) or match.group(2)
    return f"<{inner}>" if "@" in inner else None


def thread_references(references: Iterable[str], parent_id: str | None) -> list[str]:
    """The replied mail's References plus its Message-ID: deduplicated, order kept, at most MAX_REFERENCES."""
    chain = [i for i in (normalize_message_id(r) for r in [*references, parent_id]) if i]
    chain = list(dict.fromkeys(chain))
    if len(chain) > MAX_REFERENCES:
        chain = chain[:1] + chain[-(MAX_REFERENCES - 1):]
    return chain


def make_message_id(domain: str) -> str:
    """A new, globally unique ``<...@domain>``."""
    domain = domain.strip().strip("[]").lower()
    if not re.fullmatch(r"[a-z0-9.-]+", domain):
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            domain = ""
    domain = domain if re.fullmatch(r"[a-z0-9.-]+", domain) else "localhost"
    return f"<{uuid.uuid4().hex}.{int(dt.datetime.now(dt.timezone.utc).timestamp())}@{domain}>"


# ------------------------------------------------------------------------------------------------ addresses

def parse_addresses(values: str | Iterable[str] | None, what: str = "address") -> list[tuple[str, str]]:
    """``["Bob <b@x.org>", "c@y.org, d@z.org"]`` -> ``[("Bob", "b@x.org"), ...]``; RequestError when invalid."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    elif not isinstance(values, (list, tuple)):
        raise RequestError(f"{what} must be text or a list of text, got {type(values).__name__}")
    out: list[tuple[str, str]] = []
    for value in values:
        if not isinstance(value, str):
            raise RequestError(f"{what} must be text, got {value!r}")
        if _CONTROL.search(value.replace("\t", " ")):
            raise RequestError(f"{what} {value!r} contains control characters")
        found = [(n, a.strip()) for n, a in email.utils.getaddresses([value]) if n or a.strip()]
        if value.strip() and not found:
            raise RequestError(f"{what} {value!r} is not an e-mail address")
        for name, address in found:
            local, at, domain = address.rpartition("@")
            if not at or not local or not domain or " " in address:
                raise RequestError(f"{what} {value!r} is not an e-mail address")
            if not local.isascii():
                raise RequestError(f"{what} {address!r}: addresses with non-ASCII before the @ are not supported")
            try:
                domain = domain if domain.isascii() else domain.encode("idna").decode("ascii")
            except UnicodeError:
                raise RequestError(f"{what} {address!r} has an invalid domain") from None
            out.append((name.strip(), f"{local}@{domain}"))
    return out


def unique_recipients(*groups: Iterable[tuple[str, str]]) -> list[str]:
    seen: dict[str, str] = {}
    for group in groups:
        for _name, address in group:
            seen.setdefault(address.lower(), address)
    return list(seen.values())


# ------------------------------------------------------------------------------------------------ the message

def build(mail: Outgoing) -> BuiltMail:
    if not mail.to:
        raise RequestError("to must name at least one recipient")
    sender_name, sender_address = mail.sender
    domain = sender_address.rpartition("@")[2]
    message_id = normalize_message_id(mail.message_id) if mail.message_id else make_message_id(domain)
    if message_id is None:
        raise RequestError(f"message id {mail.message_id!r} is not a Message-ID")
    text = html_to_text(mail.html)

    msg = EmailMessage(policy=_POLICY)
    try:
        msg["From"] = _address(mail.sender)
        msg["To"] = [_address(a) for a in mail.to]
        if mail.cc:
            msg["Cc"] = [_address(a) for a in mail.cc]
        if mail.reply_to:
            msg["Reply-To"] = [_address(a) for a in mail.reply_to]
        msg["Subject"] = _one_line(mail.subject)
    except (ValueError, IndexError, TypeError) as exc:  # the header registry rejects what it cannot encode
        raise RequestError(f"cannot write the headers: {exc}") from None
    msg["Date"] = email.utils.format_datetime(mail.date or dt.datetime.now(dt.timezone.utc))
    # Ids are written as they are (folded between ids): the header registry would RFC 2047-encode a long one.
    msg.set_raw("Message-ID", message_id)
    in_reply_to = normalize_message_id(mail.in_reply_to)
    if in_reply_to:
        msg.set_raw("In-Reply-To", in_reply_to)
    references = thread_references(mail.references, None)
    if references:
        msg.set_raw("References", _fold_ids(references))
    msg.set_raw(RUNTIME_ID_HEADER, _one_line(mail.runtime_id).encode("ascii", "replace").decode("ascii"))
    msg["MIME-Version"] = "1.0"

    body = MIMEPart(policy=_POLICY)
    body.make_alternative()
    body.attach(_text_part(text, "plain"))
    body.attach(_text_part(mail.html, "html"))
    if mail.attachments:
        msg.make_mixed()
        msg.attach(body)
        for attachment in mail.attachments:
            msg.attach(_attachment_part(attachment))
    else:
        msg.make_alternative()
        for part in body.iter_parts():
            msg.attach(part)

    try:
        raw = msg.as_bytes(policy=_POLICY)
    except (ValueError, UnicodeError) as exc:  # e.g. a non-ASCII local part, which SMTP without SMTPUTF8 cannot carry
        raise RequestError(f"cannot write the mail: {exc}") from None
    recipients = unique_recipients(mail.to, mail.cc, mail.bcc)
    return BuiltMail(raw=raw, message_id=message_id,
                     envelope_from=mail.envelope_from or sender_address, recipients=recipients, text=text)


def _address(pair: tuple[str, str]) -> Address:
    name, address = pair
    local, _, domain = address.rpartition("@")
    if not address.isascii():  # pairs come from parse_addresses, which makes them ASCII
        raise RequestError(f"address {address!r} is not ASCII: give it through parse_addresses")
    return Address(display_name=_one_line(name), username=local, domain=domain)


def _one_line(value: str) -> str:
    return _CONTROL.sub(" ", value or "").strip()


def _fold_ids(ids: list[str]) -> str:
    lines, line = [], ""
    for message_id in ids:
        if line and len(line) + 1 + len(message_id) > 66:
            lines.append(line)
            line = message_id
        else:
            line = f"{line} {message_id}" if line else message_id
    lines.append(line)
    return "\n ".join(lines)


def _text_part(content: str, subtype: str) -> MIMEPart:
    part = MIMEPart(policy=_POLICY)
    part.set_content(content.replace("\r\n", "\n").replace("\r", "\n"), subtype=subtype, charset="utf-8")
    return part


def _attachment_part(attachment: Attachment) -> MIMEPart:
    mime_type = attachment.mime_type if _MIME_TYPE.match(attachment.mime_type or "") else "application/octet-stream"
    maintype, subtype = mime_type.lower().split("/", 1)
    if maintype in ("multipart", "message"):  # containers cannot be base64 (RFC 2046): send the bytes as a file
        maintype, subtype = "application", "octet-stream"
    filename = _safe_filename(attachment.filename)
    part = MIMEPart(policy=_POLICY)
    # Always base64 (also text/* and message/*): the bytes arrive exactly as given.
    part.set_content(attachment.data, maintype=maintype, subtype=subtype, cte="base64", disposition="attachment",
                     filename=filename)
    return part


def _safe_filename(name: str) -> str:
    name = _one_line(name).replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name if name not in ("", ".", "..") else "attachment"


# ------------------------------------------------------------------------------------------------ HTML -> text

_BLOCK = {"p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "table", "ul",
          "ol", "hr", "section", "article", "header", "footer", "dd", "dt"}
_PARAGRAPH = {"p", "ul", "ol", "table", "blockquote", "pre", "h1", "h2", "h3", "h4", "h5", "h6"}
_SKIP = {"script", "style", "head", "title", "template"}


class _TextRenderer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._skip = 0
        self._pre = 0
        self._links: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self._skip += 1
        elif tag == "pre":
            self._pre += 1
        if tag == "br":
            self.out.append("\n")
        elif tag in _PARAGRAPH:
            self._break(2)
        elif tag in _BLOCK:
            self._break(1)
        if tag == "li":
            self.out.append("- ")
        elif tag == "a":
            self._links.append(dict(attrs).get("href"))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag in ("td", "th"):
            self.out.append("\t")
        elif tag in _PARAGRAPH:
            self._break(2)
        elif tag in _BLOCK and tag != "br":
            self._break(1)
        if tag == "a" and self._links:
            href = self._links.pop()
            if href and href.startswith(("http://", "https://", "mailto:")) and not self._ends_with(href):
                self.out.append(f" <{href}>")

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if not self._pre:
            data = re.sub(r"\s+", " ", data)
            if not self.out or self.out[-1].endswith(("\n", "\t")):
                data = data.lstrip(" ")
        self.out.append(data)

    def _break(self, count: int) -> None:
        """End the current line so that ``count`` line breaks (1: new line, 2: blank line) precede what follows."""
        tail = "".join(self.out[-3:]).rstrip(" \t")
        if self.out:
            self.out.append("\n" * max(0, count - (len(tail) - len(tail.rstrip("\n")))))

    def _ends_with(self, href: str) -> bool:
        return "".join(self.out[-3:]).rstrip().endswith(href.removeprefix("mailto:"))


def html_to_text(html: str) -> str:
    """A readable plain-text rendering of an HTML body (paragraphs, line breaks, lists, link targets)."""
    if not html:
        return ""
    renderer = _TextRenderer()
    try:
        renderer.feed(html)
        renderer.close()
    except Exception:  # noqa: BLE001 - html.parser is lenient; this is a last resort
        return html_lib.unescape(re.sub(r"<[^>]*>", " ", html)).strip()
    lines = [line.rstrip(" \t") for line in "".join(renderer.out).replace("\xa0", " ").split("\n")]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
