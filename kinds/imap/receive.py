"""``POST /receive?integrationId=<inboxId>``: a mail gateway pushes a raw RFC 822 mail (the seed guide's receive
webhook). 401 for a missing/bad signature, 413 past the size limit, 400 for a body that is not a mail, 404 for an
unknown integration or (``VERSION=saas``) an organisation the runtime does not know (nothing is opened for it);
200 with ``{messageId, conversationId, duplicate}`` once stored. Work runs off the IOLoop.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any

import tornado.web

from kinds.imap.push import verify
from runtime.errors import MailParseError, MailRejected, RequestError, RuntimeFault
from runtime.tenants import UnknownTenant, bind_request
from web.replies import fail_json

__all__ = ["routes"]

SIGNATURE_HEADER = "X-Imap-Runtime-Signature"


class ReceiveHandler(tornado.web.RequestHandler):
    """The body is at most ``max_mail_bytes``: :mod:`web.limits` answers 413 before a larger one is read."""

    def initialize(self, storage: Any, push: Any, tenants: Any = None) -> None:
        self.tenants = tenants
        self.storage = storage
        self.push = push

    async def post(self) -> None:
        inbox_id = self.get_query_argument("integrationId", "") or self.request.headers.get("X-Integration-Id", "")
        if not inbox_id:
            return fail_json(self, 400, "integrationId is required")
        body = self.request.body
        try:
            subdomain = bind_request(self.tenants, self.request.headers)
        except RequestError as exc:
            return fail_json(self, 400, str(exc))
        if self.tenants is not None:
            try:
                await asyncio.to_thread(self.tenants.require_known, subdomain)
            except UnknownTenant as exc:
                return fail_json(self, 404, str(exc))
        doc = await asyncio.to_thread(self.storage.get_integration, inbox_id)
        if doc is None:
            return fail_json(self, 404, f"integration {inbox_id} not found")
        if not verify(doc.get("webhookSecret"), body, self.request.headers.get(SIGNATURE_HEADER)):
            return fail_json(self, 401, f"missing or bad {SIGNATURE_HEADER}")
        try:
            result = await asyncio.to_thread(self.push.ingest, inbox_id, body, subdomain)
        except MailParseError as exc:
            return fail_json(self, 400, f"the body is not a mail: {exc}")
        except MailRejected as exc:
            return fail_json(self, 400, str(exc))
        except RuntimeFault as exc:
            return fail_json(self, 503, str(exc))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(result))


def routes(*, storage: Any, push: Any, tenants: Any = None) -> list[Any]:
    return [(r"/receive", ReceiveHandler, {"storage": storage, "push": push, "tenants": tenants})]
