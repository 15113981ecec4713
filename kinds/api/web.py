"""``POST /api/receive?integrationId=<id>``: a signed inbound message (spec api-kind.md). 401 bad or missing
signature, 404 unknown integration (or organisation), 400 a body of the wrong shape, 413 over
``max_request_bytes`` (web/limits.py answers before the body is read), 503 when erxes or MongoDB failed (the
sender posts again: the message is stored once). Never 500 for bad input. The work runs off the IOLoop."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import tornado.web
from pymongo.errors import PyMongoError

from kinds.api.details import SIGNATURE_HEADER, parse_inbound, verify
from runtime.errors import RequestError, RuntimeFault
from runtime.tenants import UnknownTenant, bind_request
from web.replies import fail_json

__all__ = ["RECEIVE", "routes"]

logger = logging.getLogger(__name__)

RECEIVE = "/api/receive"


class ApiReceiveHandler(tornado.web.RequestHandler):
    def initialize(self, *, store: Any, ingest: Any, tenants: Any = None) -> None:
        self.store = store
        self.ingest = ingest
        self.tenants = tenants

    async def post(self) -> None:
        inbox_id = self.get_query_argument("integrationId", "").strip()
        if not inbox_id:
            return fail_json(self, 400, "integrationId is required")
        try:
            subdomain = bind_request(self.tenants, self.request.headers)
            if self.tenants is not None:
                await asyncio.to_thread(self.tenants.require_known, subdomain)
        except UnknownTenant as exc:
            return fail_json(self, 404, str(exc))
        except RequestError as exc:
            return fail_json(self, 400, str(exc))
        try:
            doc = await asyncio.to_thread(self.store.get_integration, inbox_id)
        except (PyMongoError, RuntimeFault) as exc:  # its words stay in the log: the caller is not signed in yet
            logger.warning("api integration %s: cannot read it: %s", inbox_id, exc)
            return fail_json(self, 503, "the database did not answer; post again")
        if doc is None:
            return fail_json(self, 404, f"integration {inbox_id} not found")
        body = self.request.body
        if not verify(doc.get("secret"), body, self.request.headers.get(SIGNATURE_HEADER)):
            return fail_json(self, 401, f"missing or bad {SIGNATURE_HEADER} (sha256=<hex HMAC-SHA256 of the body>)")
        try:
            message = parse_inbound(body)
        except RequestError as exc:
            return fail_json(self, 400, str(exc))
        try:
            result = await asyncio.to_thread(self.ingest.ingest, subdomain, inbox_id, message)
        except (RuntimeFault, PyMongoError) as exc:
            logger.warning("api integration %s: message %s not stored yet: %s", inbox_id, message.message_id, exc)
            return fail_json(self, 503, "not stored yet (erxes or the database did not answer); post again")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(result))


def routes(*, store: Any, ingest: Any) -> Any:
    """The route builder registered with the kinds' registry: ``build(deps, config)``."""
    def build(deps: Any, config: Any) -> list[tuple[Any, ...]]:
        return [(RECEIVE, ApiReceiveHandler, {"store": store, "ingest": ingest,
                                              "tenants": getattr(deps, "tenants", None)})]
    return build
