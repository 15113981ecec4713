"""The console's conversations (standalone mode): the list (newest first, searchable by sender and subject), a
thread with each message's sanitised HTML in a sandboxed frame, attachments, a reply box and open/resolved.

A message's HTML is served by :class:`MessageBodyHandler` (``runtime.mail.sanitize.sanitize_html``, the function
GraphQL uses) with ``Content-Security-Policy: sandbox; default-src 'none'; ...``, inside an ``<iframe sandbox>``
without ``allow-scripts`` or ``allow-same-origin``: a script that survived the sanitiser still could not run, nor
reach the console's origin. Replies go through the kind's ``MailSender`` (``Services.extra["imap_sender"]``), the
``imapSendMail`` path.
"""
from __future__ import annotations

import base64
import functools
import html
import logging
import re
from typing import Any

import tornado.web

from kinds.imap.attachments import read_attachment
from kinds.imap.console.mailboxes import ImapPage
from runtime.errors import MailboxError, RequestError
from runtime.mail.sanitize import sanitize_html
from runtime.standalone import Standalone
from web.download import MIME_TYPE, AttachmentError, content_disposition

__all__ = ["AttachmentHandler", "ConversationHandler", "ConversationsHandler", "MessageBodyHandler",
           "ReplyHandler", "StatusHandler", "conversation_rows"]

logger = logging.getLogger(__name__)

LISTED = 50
BODY_CSP = "sandbox; default-src 'none'; img-src 'self'; style-src 'unsafe-inline'"


def conversation_rows(storage: Any, query: str = "", limit: int = LISTED) -> list[dict[str, Any]]:
    """The newest conversations (by last activity), each with its newest message's sender and subject; ``query``
    keeps those with a message whose sender (name or address) or subject contains it (case-insensitive)."""
    among = storage.conversations_mentioning(query.strip()) if query.strip() else None
    rows = []
    for conv in Standalone(storage).recent_conversations(among, limit=limit):
        last = storage.last_message_of_conversation(conv["_id"])
        sender = ((last or {}).get("from") or [{}])[0]
        rows.append({"_id": conv["_id"], "status": conv.get("status") or "new", "updatedAt": conv.get("updatedAt"),
                     "count": conv.get("messageCount") or 0, "integrationId": conv.get("integrationId") or "",
                     "sender": sender.get("name") or sender.get("address") or "",
                     "address": sender.get("address") or "", "subject": (last or {}).get("subject") or "",
                     "snippet": (conv.get("content") or "")[:140]})
    return rows


class ConversationsHandler(ImapPage):
    async def get(self) -> None:
        if not self.console.full:
            raise tornado.web.HTTPError(404)
        query = self.get_query_argument("q", "")
        rows = await self.blocking(conversation_rows, self.deps.storage, query)
        if self.get_query_argument("fragment", "") == "rows":
            self.render("conversation_rows.html", rows=rows, q=query)
            return
        self.render("conversations.html", rows=rows, q=query, page="conversations")


class ConversationHandler(ImapPage):
    async def get(self, conversation_id: str, *, error: str = "", reply: dict[str, str] | None = None) -> None:
        if not self.console.full:
            raise tornado.web.HTTPError(404)
        conv, messages = await self.blocking(self._load, conversation_id)
        if conv is None:
            raise tornado.web.HTTPError(404)
        inbound = [m for m in messages if m.get("type") != "SENT"] or messages
        last = inbound[-1] if inbound else {}
        to = ", ".join(a.get("address") or "" for a in (last.get("from") or []) if a.get("address"))
        self.render("conversation.html", conv=conv, messages=messages, error=error, page="conversations",
                    reply=reply or {"to": to, "cc": "", "bcc": "", "body": ""},
                    subject=last.get("subject") or "", sent=self.get_query_argument("sent", ""))

    def _load(self, conversation_id: str) -> tuple[Any, list[dict[str, Any]]]:
        storage = self.deps.storage
        conv = Standalone(storage).conversation(conversation_id)
        return conv, storage.conversation_messages(conversation_id) if conv else []


class MessageBodyHandler(ImapPage):
    """``GET /console/messages/<_id>/body``: one message's sanitised HTML, for its sandboxed frame only."""

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Security-Policy", BODY_CSP)
        self.set_header("X-Frame-Options", "SAMEORIGIN")

    async def get(self, message_id: str) -> None:
        doc = await self.blocking(self.deps.storage.message_by_id, message_id)
        if doc is None:
            raise tornado.web.HTTPError(404)
        body = sanitize_html(doc.get("body") or "", attachments=doc.get("attachments") or [],
                             message_id=str(doc["_id"]), integration_id=str(doc.get("inboxIntegrationId") or ""),
                             url_prefix="/console")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish("<!doctype html><meta charset=utf-8><style>body{font:14px/1.45 system-ui,sans-serif;"
                    "margin:8px;color:#111;word-wrap:break-word}img{max-width:100%}</style>" + body)


class AttachmentHandler(ImapPage):
    """``GET /console/read-mail-attachment?messageId=&integrationId=&filename=``: the attachment route's logic
    (the IMAP kind's ``read_attachment``) behind the console's session."""

    async def get(self) -> None:
        params = {n: self.get_query_argument(n, "").strip() for n in ("messageId", "integrationId", "filename")}
        if not all(params.values()):
            raise tornado.web.HTTPError(400)
        read = functools.partial(read_attachment, self.deps.storage, self.deps.supervisor,
                                 timeout=self.timeout, subdomain=self.subdomain,
                                 integration_id=params["integrationId"], message_id=params["messageId"],
                                 filename=params["filename"])
        try:
            filename, mime_type, data = await self.blocking(read)
        except AttachmentError as exc:
            self.set_status(exc.status)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(exc.reason)
            return
        self.set_header("Content-Type", mime_type if MIME_TYPE.fullmatch(mime_type) else "application/octet-stream")
        self.set_header("Content-Disposition", content_disposition(filename))
        self.set_header("Content-Security-Policy", "sandbox; default-src 'none'")
        self.finish(data)


class ReplyHandler(ConversationHandler):
    """``POST /console/conversations/<id>/reply``: to, cc, bcc, body (text), attachments (files)."""

    async def post(self, conversation_id: str) -> None:
        if not self.console.full:
            raise tornado.web.HTTPError(404)
        reply = {k: self.get_body_argument(k, "") for k in ("to", "cc", "bcc", "body")}
        conv, messages = await self.blocking(self._load, conversation_id)
        if conv is None:
            raise tornado.web.HTTPError(404)
        if self.sender is None:
            raise tornado.web.HTTPError(503)
        inbound = [m for m in messages if m.get("type") != "SENT"] or messages
        last = inbound[-1] if inbound else {}
        args: dict[str, Any] = {
            "integrationId": conv.get("integrationId"), "conversationId": conversation_id,
            "to": reply["to"], "cc": reply["cc"] or None, "bcc": reply["bcc"] or None,
            "subject": last.get("subject") or "", "body": _text_to_html(reply["body"]),
            "attachments": [{"filename": f.filename or "attachment", "mimeType": f.content_type or
                             "application/octet-stream", "data": base64.b64encode(f.body).decode()}
                            for f in self.request.files.get("attachments", []) if f.body]}
        if last.get("_id") is not None:
            args["replyToMessageId"] = str(last["_id"])
        if not reply["body"].strip():
            self.set_status(400)
            await self.get(conversation_id, error="Write a reply first.", reply=reply)
            return
        try:
            result = await self.blocking(self.sender.send, self.subdomain, args)
        except RequestError as exc:
            self.set_status(400)
            await self.get(conversation_id, error=str(exc), reply=reply)
            return
        except MailboxError as exc:
            self.set_status(502)
            await self.get(conversation_id, error=f"The mail server did not take the reply: {exc}", reply=reply)
            return
        logger.info("Console: replied in conversation %s (%s)", conversation_id,
                    (result or {}).get("info", {}).get("messageId"))
        self.redirect(f"/console/conversations/{conversation_id}?sent=1")


class StatusHandler(ImapPage):
    """``POST /console/conversations/<id>/status``: ``status=closed`` (resolved) or ``open``."""

    async def post(self, conversation_id: str) -> None:
        if not self.console.full:
            raise tornado.web.HTTPError(404)
        status = self.get_body_argument("status", "")
        if status not in ("closed", "open"):
            raise tornado.web.HTTPError(400)
        emulation = Standalone(self.deps.storage)
        await self.blocking(emulation.change_status, {"data": {"id": conversation_id, "status": status}})
        self.redirect(f"/console/conversations/{conversation_id}")


def _text_to_html(text: str) -> str:
    paragraphs = [p for p in re.split(r"\r?\n\s*\r?\n", text.strip()) if p.strip()]
    return "".join("<p>" + html.escape(p).replace("\r\n", "<br>").replace("\n", "<br>") + "</p>"
                   for p in paragraphs)
