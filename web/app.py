"""The Tornado application: a pure ``make_app(config, *, deps)``; handlers get what they need via ``initialize``.

Routes now: ``GET /health`` (erxes-compatible ``ok`` once the runtime serves, 503 before), ``POST /rpc/<procedure>``
(:mod:`web.rpc`), ``GET /ready`` and ``GET /metrics`` (:mod:`web.ops`), ``POST /receive`` (:mod:`web.receive`),
``POST/GET /graphql`` (:mod:`web.graphql`) and ``GET /read-mail-attachment`` (:mod:`web.attachments`).
"""
from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import tornado.web

from web import attachments, graphql
from web.ops import Probe, ops_routes
from web.receive import routes as receive_routes
from web.rpc import rpc_routes

__all__ = ["WebDeps", "make_app"]


@dataclass(frozen=True)
class WebDeps:
    ready: Callable[[], bool]
    rpc: Mapping[str, tuple[str, Callable[[dict[str, Any]], Any]]] = field(default_factory=dict)  # web.rpc
    rpc_executor: concurrent.futures.Executor | None = None  # where RPC handlers run (None: the loop's default)
    probe: Probe | None = None  # the checks behind /ready and /metrics
    storage: Any = None  # runtime.storage.Storage
    supervisor: Any = None  # the SupervisorActor's proxy (mailbox sessions for attachments)
    sender: Any = None  # runtime.sending.MailSender
    push: Any = None  # runtime.push.PushIngest, behind POST /receive
    tenants: Any = None  # runtime.tenants.Tenants: a request's tenant comes from its hostname header


class HealthHandler(tornado.web.RequestHandler):
    def initialize(self, deps: WebDeps) -> None:
        self.deps = deps

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if self.deps.ready():
            self.write("ok")
        else:
            self.set_status(503)
            self.write("starting")


def make_app(config: Any, *, deps: WebDeps) -> tornado.web.Application:
    return tornado.web.Application([
        (r"/health", HealthHandler, {"deps": deps}),
        *rpc_routes(deps.rpc, deps.rpc_executor),
        *ops_routes(deps.ready, deps.probe),
        *(receive_routes(storage=deps.storage, push=deps.push, max_bytes=config.max_mail_bytes, tenants=deps.tenants)
          if deps.push is not None else []),
        *(graphql.routes(deps, attachment_url_prefix=getattr(config, "attachment_url_prefix", ""))
          + attachments.routes(deps) if deps.storage is not None else []),
    ], debug=False, xheaders=True)
