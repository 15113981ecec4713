"""``logs.collectItems`` (contract section 3): a core customer's mail, for erxes's activity log.

``data.contentId`` is a core customer id. Its addresses are those of our ``imap_customers`` records with that
``contactsId``; the items are the stored messages from or to (To, Cc, Bcc) one of them, newest first, plus the
messages ingested for that customer (``customerId``). The reply's ``data`` is wrapped once more, as core reads it:
``{"status": "success", "data": [{_id, contentType: "imap:customer", createdAt, contentTypeDetail}]}``.

erxes's ``ActivityLog.tsx`` renders ``contentTypeDetail.body`` as HTML (``dangerouslySetInnerHTML``): the body goes
out through ``runtime.mail.sanitize.outward_html``, as ``imapConversationDetail``'s does (the stored body stays
raw), and the runtime's own fields (``split``) stay home.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from runtime.mail.sanitize import outward_message_html

__all__ = ["CONTENT_TYPE", "MAX_ITEMS", "collect_items"]

CONTENT_TYPE = "imap:customer"
MAX_ITEMS = 500  # newest first; keeps one reply well under the transports' size limits
ADDRESS_FIELDS = ("from", "to", "cc", "bcc")
INTERNAL_FIELDS = ("split",)  # the runtime's own bookkeeping, not erxes's message


def collect_items(storage: Any, envelope: dict[str, Any], *, url_prefix: str = "") -> dict[str, Any]:
    data = envelope.get("data") if isinstance(envelope, dict) else None
    content_id = data.get("contentId") if isinstance(data, dict) else None
    if not isinstance(content_id, str) or not content_id.strip():
        return {"status": "success", "data": []}
    content_id = content_id.strip()
    emails = sorted({str(email).strip().lower() for email in storage.customer_emails(content_id)})
    if not emails:
        return {"status": "success", "data": []}
    messages = storage.messages_about(content_id, emails, ADDRESS_FIELDS, limit=MAX_ITEMS)
    items = [{"_id": str(m["_id"]), "contentType": CONTENT_TYPE, "createdAt": _plain(m.get("createdAt")),
              "contentTypeDetail": _plain(outward_message(m, url_prefix))} for m in messages]
    return {"status": "success", "data": items}


def outward_message(doc: dict[str, Any], url_prefix: str = "") -> dict[str, Any]:
    """A stored message as it may leave the runtime: its body sanitised, without the runtime's own fields."""
    out = {k: v for k, v in doc.items() if k not in INTERNAL_FIELDS}
    if "body" in out:
        out["body"] = outward_message_html(doc, url_prefix=url_prefix)
    return out


def _plain(value: Any) -> Any:
    """JSON-ready: ObjectIds as hex, dates as JavaScript ISO strings."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    if type(value).__name__ == "ObjectId":
        return str(value)
    return value
