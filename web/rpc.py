"""The HTTP transport of the erxes broker contract, server side: ``POST /rpc/<procedure>``.

Every RPC procedure of the service's table (``imap:createIntegration`` is served at ``/rpc/createIntegration``;
the broker suffix is not applied here) runs through the same envelope code as over AMQP
(:func:`runtime.broker._envelope.handle_rpc`), so both transports answer alike. The reply is always HTTP 200 with
the reply envelope as JSON: a body that is not a JSON object, an unknown procedure, a body over 15 MB and a
handler that raised all yield ``{"status": "error", "errorMessage": ...}``. Handlers block (MongoDB, actor asks),
so they run on an executor, never on the IOLoop. Plain (fire-and-forget) procedures stay AMQP-only, as in erxes.
"""
from __future__ import annotations

import concurrent.futures
import logging
from typing import Any, Callable, Mapping

import tornado.ioloop
import tornado.web

from runtime import metrics
from runtime.broker._envelope import encode_error, handle_rpc

__all__ = ["MAX_BODY_BYTES", "RpcHandler", "http_procedures", "rpc_routes"]

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 15 * 1024 * 1024  # erxes's express.json limit
Handler = Callable[[dict[str, Any]], Any]


def http_procedures(table: Mapping[str, Handler]) -> dict[str, tuple[str, Handler]]:
    """``{"imap:createIntegration": h}`` -> ``{"createIntegration": ("imap:createIntegration", h)}``."""
    out: dict[str, tuple[str, Handler]] = {}
    for queue, handler in table.items():
        _service, _, procedure = queue.partition(":")
        if not procedure or ":" in procedure:
            raise ValueError(f"{queue!r}: an RPC procedure name has one ':' after the service name")
        out[procedure] = (queue, handler)
    return out


class RpcHandler(tornado.web.RequestHandler):
    def initialize(self, procedures: Mapping[str, tuple[str, Handler]],
                   executor: concurrent.futures.Executor | None = None) -> None:
        self.procedures = procedures
        self.executor = executor

    async def post(self, procedure: str) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        found = self.procedures.get(procedure)
        if found is None:
            logger.info("POST /rpc/%s: no such procedure", procedure)
            self.finish(encode_error(f"Unknown procedure {procedure}"))
            return
        queue, handler = found
        body = self.request.body
        if len(body) > MAX_BODY_BYTES:
            self.finish(encode_error(f"Request body of {len(body)} bytes is over the 15 MB limit"))
            return
        run = metrics.timed(queue, "http", handler)
        reply = await tornado.ioloop.IOLoop.current().run_in_executor(self.executor, handle_rpc, queue, run, body)
        self.finish(reply)


def rpc_routes(procedures: Mapping[str, tuple[str, Handler]],
               executor: concurrent.futures.Executor | None = None) -> list[Any]:
    """The route of ``POST /rpc/<procedure>``; any name is taken, so an unknown one gets an error envelope."""
    return [(r"/rpc/(.+)", RpcHandler, {"procedures": procedures, "executor": executor})]
