"""The ``api`` kind's plain pieces: integration details, signatures, the inbound body's shape (spec api-kind.md)."""
from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from runtime.errors import RequestError
from runtime.signing import sign, verify

__all__ = ["Inbound", "MIN_SECRET", "SIGNATURE_HEADER", "parse_details", "parse_inbound", "sign", "verify"]

SIGNATURE_HEADER = "X-Api-Signature"
MIN_SECRET = 16
DETAIL_FIELDS = ("callbackUrl", "name")  # what callers see (never the secret)


def parse_details(raw: Any, *, creating: bool) -> dict[str, Any]:
    """``doc.data`` (a JSON string, or an object) -> ``{callbackUrl?, secret?, name?}``. Creating: ``secret`` is
    required; updating: an empty ``secret`` keeps the stored one (left out here), fields not given are left out."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw or "{}")
        except (ValueError, RecursionError):
            raise RequestError("doc.data must be a JSON string of {callbackUrl, secret, name}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise RequestError("doc.data must be a JSON object of {callbackUrl, secret, name}")
    out: dict[str, Any] = {}
    if "callbackUrl" in raw:
        url = raw["callbackUrl"]
        if url in (None, ""):
            out["callbackUrl"] = ""
        elif not isinstance(url, str) or urllib.parse.urlsplit(url.strip()).scheme.lower() not in ("http", "https") \
                or not urllib.parse.urlsplit(url.strip()).hostname:
            raise RequestError("callbackUrl must be an http(s) URL")
        else:
            out["callbackUrl"] = url.strip()
    secret = raw.get("secret")
    if secret not in (None, ""):
        if not isinstance(secret, str) or len(secret) < MIN_SECRET:
            raise RequestError(f"secret must be a string of at least {MIN_SECRET} characters")
        out["secret"] = secret
    elif creating:
        raise RequestError(f"secret is required (a string of at least {MIN_SECRET} characters)")
    if "name" in raw:
        if raw["name"] is not None and not isinstance(raw["name"], str):
            raise RequestError("name must be a string")
        out["name"] = raw["name"] or ""
    return out


@dataclass(frozen=True)
class Inbound:
    message_id: str
    sender: dict[str, str]  # id, and name/email/phone when given
    text: str | None
    html: str | None
    thread_id: str | None
    created_at: dt.datetime | None
    attachments: list[dict[str, Any]]

    @property
    def thread_key(self) -> str:
        """One conversation per threadId, else per sender."""
        return f"thread:{self.thread_id}" if self.thread_id else f"from:{self.sender['id']}"


def _text(body: dict[str, Any], key: str, *, required: bool = False, where: str = "") -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise RequestError(f"{where}{key} is required (a string)")
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise RequestError(f"{where}{key} must be a {'non-empty ' if required else ''}string")
    return value


def parse_inbound(raw: bytes) -> Inbound:
    """The body of ``POST /api/receive``; RequestError naming what is wrong (the route answers 400 with it)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestError("the body must be a JSON object (UTF-8)") from None
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    message_id = _text(body, "messageId", required=True)
    sender = body.get("from")
    if not isinstance(sender, dict):
        raise RequestError("from is required: {id, name?, email?, phone?}")
    who = {"id": _text(sender, "id", required=True, where="from.")}
    for key in ("name", "email", "phone"):
        value = _text(sender, key, where="from.")
        if value and value.strip():
            who[key] = value.strip()
    if "email" in who and "@" not in who["email"]:
        raise RequestError("from.email must be an email address")
    text, html = _text(body, "text"), _text(body, "html")
    thread_id = _text(body, "threadId")
    created_at = None
    if body.get("createdAt") is not None:
        stamp = _text(body, "createdAt")
        try:
            created_at = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        except ValueError:
            raise RequestError("createdAt must be an ISO-8601 date") from None
        if created_at.tzinfo is None:
            created_at = created_at.replace(tzinfo=dt.timezone.utc)
    attachments = body.get("attachments")
    if attachments is None:
        attachments = []
    if not isinstance(attachments, list) or not all(isinstance(a, dict) for a in attachments):
        raise RequestError("attachments must be a list of {name, url, type, size}")
    cleaned = []
    for item in attachments:
        url = item.get("url")
        if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme.lower() not in ("http", "https"):
            raise RequestError("attachments[].url must be an http(s) URL")
        size = item.get("size")
        if size is not None and (not isinstance(size, (int, float)) or isinstance(size, bool) or size < 0):
            raise RequestError("attachments[].size must be a number of bytes")
        cleaned.append({"name": str(item.get("name") or ""), "url": url, "type": str(item.get("type") or ""),
                        "size": size})
    if not (text and text.strip()) and not (html and html.strip()) and not cleaned:
        raise RequestError("text, html or attachments must be present")
    return Inbound(message_id.strip(), who, text, html, thread_id.strip() if thread_id else None, created_at,
                   cleaned)


def public_details(doc: dict[str, Any]) -> dict[str, Any]:
    """An integration as callers see it: never its secret."""
    out = {"_id": str(doc["_id"]), "inboxId": doc["inboxId"], "kind": "api"}
    out.update({k: doc.get(k) for k in DETAIL_FIELDS})
    out["healthStatus"] = doc.get("healthStatus", "healthy")
    out["error"] = doc.get("error")
    return out
