"""The Tornado application: a pure ``make_app(config, *, deps)``; handlers get what they need via ``initialize``.

Routes now: ``GET /health`` (erxes-compatible ``ok`` once the runtime serves, 503 before). GraphQL, ``/rpc`` and
``/receive`` come with later issues.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import tornado.web

__all__ = ["WebDeps", "make_app"]


@dataclass(frozen=True)
class WebDeps:
    ready: Callable[[], bool]


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
    ], debug=False, xheaders=True)
