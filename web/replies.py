"""How a plain route (neither GraphQL nor ``/rpc``) of any kind answers a request it refuses: its status and the
reason, as JSON ``{"error": reason}`` (the webhooks: the IMAP kind's ``/receive``, the api kind's ``/api/receive``;
web/limits.py's 413 has the same shape) or as plain text (the routes a browser opens: ``/read-mail-attachment``,
``/login``)."""
from __future__ import annotations

import json

import tornado.web

__all__ = ["fail_json", "fail_text"]


def fail_json(handler: tornado.web.RequestHandler, status: int, reason: str) -> None:
    handler.set_status(status)
    handler.set_header("Content-Type", "application/json")
    handler.finish(json.dumps({"error": reason}))


def fail_text(handler: tornado.web.RequestHandler, status: int, reason: str) -> None:
    handler.set_status(status)
    handler.set_header("Content-Type", "text/plain; charset=utf-8")
    handler.finish(reason)
