"""``GET /read-mail-attachment?messageId=&integrationId=&filename=``: an attachment's bytes, fetched from the mail
server through the integration's own mailbox actor (its IMAP session), never from the file system.

Requires the same ``user`` header as GraphQL (401 otherwise). ``messageId`` is the stored document's ``_id`` or
the mail's Message-ID (with or without angle brackets); ``filename`` names the attachment in the message's
metadata (its ``attachmentId`` works too). Answers: 400 missing parameter, 404 unknown message or attachment (or
the mail is gone from the server), 503 the mailbox is not connected, 504 it did not answer in time, 502 the mail
server failed. The body is sent as a download (``Content-Disposition: attachment``, ``nosniff``, sandboxed).
"""
from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import pykka
import tornado.ioloop
import tornado.web

from runtime.errors import MailboxError, MailParseError, RequestError
from runtime.mail.parse import find_part, parse_mail, synthetic_message_id
from runtime.tenants import bind_request
from web.auth import LOGIN_REQUIRED, current_user, is_logged_in
from web.download import MIME_TYPE as _MIME_TYPE
from web.download import AttachmentError, content_disposition
from web.replies import fail_text

__all__ = ["AttachmentError", "AttachmentHandler", "content_disposition", "read_attachment", "routes"]

logger = logging.getLogger(__name__)

def read_attachment(storage: Any, supervisor: Any, *, integration_id: str, message_id: str, filename: str,
                    timeout: float = 30.0, subdomain: str = "os") -> tuple[str, str, bytes]:
    """``(filename, mimeType, bytes)`` of one stored message's attachment. Blocking: call it off the IOLoop."""
    doc = _find_message(storage, integration_id, message_id)
    if doc is None:
        raise AttachmentError(404, "message not found")
    listed = [a for a in doc.get("attachments") or [] if isinstance(a, dict)]
    meta = next((a for a in listed if a.get("filename") == filename), None) or next(
        (a for a in listed if a.get("attachmentId") == filename), None)
    if meta is None:
        raise AttachmentError(404, "attachment not found")
    if not meta.get("partIndex") or not doc.get("uid") or not doc.get("folder"):
        raise AttachmentError(404, "this message's attachments were not kept on the mail server")
    raw = _fetch_raw(supervisor, integration_id, doc["folder"], int(doc["uid"]), timeout, subdomain)
    if raw is None or not _same_mail(raw, doc):
        raise AttachmentError(404, "the mail is no longer on the mail server")
    try:
        found = find_part(raw, meta["partIndex"])
    except MailParseError as exc:
        raise AttachmentError(502, f"the mail server returned an unreadable mail: {exc}") from exc
    if found is None:
        raise AttachmentError(404, "attachment not found in the mail")
    _name, mime_type, data = found
    return meta.get("filename") or filename, mime_type, data


def _find_message(storage: Any, integration_id: str, message_id: str) -> dict[str, Any] | None:
    doc = storage.message_by_id(message_id, integration_id)
    if doc is None:
        stripped = message_id.strip().strip("<>")
        for candidate in dict.fromkeys((message_id, f"<{stripped}>")):
            doc = storage.find_message(integration_id, candidate)
            if doc is not None:
                break
    if doc is not None and doc.get("ingestState") == "pending":
        return None
    return doc


def _fetch_raw(supervisor: Any, integration_id: str, folder: str, uid: int, timeout: float,
               subdomain: str = "os") -> bytes | None:
    try:
        found = supervisor.mailbox(integration_id, subdomain)  # a SupervisorActor proxy answers with a future
        mailbox = found.get(timeout=timeout) if isinstance(found, pykka.Future) else found
        if mailbox is None:
            raise AttachmentError(503, "the mailbox is not connected")
        return mailbox.fetch_raw(folder, uid).get(timeout=timeout)
    except (MailboxError, pykka.ActorDeadError) as exc:
        raise AttachmentError(503, f"the mailbox is not connected: {exc}") from exc
    except pykka.Timeout as exc:
        raise AttachmentError(504, "the mailbox did not answer in time") from exc
    except AttachmentError:
        raise
    except Exception as exc:
        logger.warning("Fetching UID %d of %s (%s) for an attachment failed: %s", uid, integration_id, folder, exc)
        raise AttachmentError(502, "the mail server could not deliver the mail") from exc


def _same_mail(raw: bytes, doc: dict[str, Any]) -> bool:
    """Whether ``raw`` is the stored message (a UID can point at another mail after UIDVALIDITY changed)."""
    try:
        if doc.get("syntheticMessageId"):
            return synthetic_message_id(raw) == doc.get("messageId")
        ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
        head = raw[:min(ends)] if ends else raw
        return parse_mail(head + b"\r\n\r\n").message_id == doc.get("messageId")  # parsed as ingest did
    except MailParseError:
        return False


class AttachmentHandler(tornado.web.RequestHandler):
    def initialize(self, *, storage: Any, supervisor: Any, timeout: float = 30.0, tenants: Any = None) -> None:
        self.tenants = tenants
        self.storage = storage
        self.supervisor = supervisor
        self.timeout = timeout

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "private, no-store")

    async def get(self) -> None:
        if not is_logged_in(current_user(self.request.headers)):
            return fail_text(self, 401, LOGIN_REQUIRED)
        try:
            subdomain = bind_request(self.tenants, self.request.headers)
        except RequestError as exc:
            return fail_text(self, 400, str(exc))
        params = {name: self.get_query_argument(name, "").strip() for name in ("messageId", "integrationId")}
        params["filename"] = self.get_query_argument("filename", "")
        missing = [name for name, value in params.items() if not value]
        if missing:
            return fail_text(self, 400, f"missing parameter: {', '.join(missing)}")
        read = functools.partial(read_attachment, self.storage, self.supervisor, timeout=self.timeout,
                                 subdomain=subdomain, integration_id=params["integrationId"],
                                 message_id=params["messageId"], filename=params["filename"])
        try:
            filename, mime_type, data = await asyncio.to_thread(read)
        except AttachmentError as exc:
            return fail_text(self, exc.status, exc.reason)
        self.set_header("Content-Type", mime_type if _MIME_TYPE.fullmatch(mime_type) else "application/octet-stream")
        self.set_header("Content-Disposition", content_disposition(filename))
        self.set_header("Content-Security-Policy", "sandbox; default-src 'none'")
        self.finish(data)


def routes(deps: Any, config: Any = None) -> list[tuple[Any, ...]]:
    """``/read-mail-attachment``. ``deps`` carries ``storage``, ``supervisor`` (the SupervisorActor proxy) and
    ``tenants``; the mailbox is given ``config.imap_timeout_seconds`` to fetch the mail (30 without a config)."""
    return [(r"/read-mail-attachment", AttachmentHandler, {
        "storage": deps.storage, "supervisor": deps.supervisor,
        "timeout": float(getattr(config, "imap_timeout_seconds", 30.0)), "tenants": getattr(deps, "tenants", None)})]
