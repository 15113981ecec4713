"""The arguments of a send (``imapSendMail``, ``imap:imapMessage.create``), checked before anything is looked up
or sent: :class:`SendRequest`, and :func:`check_sender`, which lets ``from`` be only the integration's own address or
one of its aliases. Ids with a control character are refused here, at the door (docs/security.md)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from runtime.errors import RequestError
from runtime.mail.build import parse_addresses

__all__ = ["SendRequest", "check_sender"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0/C1 controls and DEL: never in a Message-ID


@dataclass(frozen=True)
class SendRequest:
    """The ``imapSendMail`` arguments, checked."""

    integration_id: str | None
    conversation_id: str | None
    customer_id: str | None
    sender: tuple[str, str] | None
    to: list[tuple[str, str]]
    cc: list[tuple[str, str]]
    bcc: list[tuple[str, str]]
    reply_to: list[tuple[str, str]]
    subject: str
    body: str
    reply_ids: list[tuple[str, str]]    # (argument name, value) of the replied message, most explicit first
    references: list[str]
    attachments: list[Any]
    should_resolve: bool
    should_open: bool

    @classmethod
    def parse(cls, args: Any) -> SendRequest:
        if not isinstance(args, dict):
            raise RequestError("the send arguments must be an object")
        subject = args.get("subject")
        if not isinstance(subject, str):
            raise RequestError("subject is required")
        body = args.get("body")
        if body is not None and not isinstance(body, str):
            raise RequestError("body must be text (HTML)")
        senders = parse_addresses(args.get("from") or None, "from")
        to = parse_addresses(args.get("to"), "to")
        if not to:
            raise RequestError("to must name at least one recipient")
        references = args.get("references") or []
        if isinstance(references, str):
            references = references.split()
        if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
            raise RequestError("references must be a list of Message-IDs")
        if any(_CONTROL.search(r) for r in references):
            raise RequestError("references must not contain control characters")
        reply_ids = [(k, v) for k in ("replyToMessageId", "inReplyTo", "headerId") if (v := _text(args, k))]
        for key, value in reply_ids:
            if _CONTROL.search(value):  # refused at the door: nothing with one reaches a header or a query
                raise RequestError(f"{key} must not contain control characters")
        attachments = args.get("attachments") or []
        if not isinstance(attachments, list):
            raise RequestError("attachments must be a list")
        return cls(
            integration_id=_text(args, "integrationId"), conversation_id=_text(args, "conversationId"),
            customer_id=_text(args, "customerId"), sender=senders[0] if senders else None, to=to,
            cc=parse_addresses(args.get("cc"), "cc"), bcc=parse_addresses(args.get("bcc"), "bcc"),
            reply_to=parse_addresses(args.get("replyTo"), "replyTo"), subject=subject, body=body or "",
            reply_ids=reply_ids,
            references=references, attachments=attachments, should_resolve=bool(args.get("shouldResolve")),
            should_open=bool(args.get("shouldOpen")))


def check_sender(address: str, own: str, aliases: Any, inbox_id: str) -> None:
    """``from`` must be the integration's own address (``user``) or one of its ``aliases``: anything else would
    let any logged-in user send as anyone through the company's mail server."""
    allowed = {own.lower(), *(str(a).lower() for a in (aliases if isinstance(aliases, list) else []))}
    if address.strip().lower() not in allowed:
        raise RequestError(f"from {address} is neither the address of integration {inbox_id} ({own}) nor one of "
                           f"its aliases (doc.data.aliases): nothing was sent")


def _text(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RequestError(f"{key} must be text")
    return value.strip() or None
