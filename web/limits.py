"""Request body limits for every route, answered clearly instead of a dropped connection.

Tornado's ``HTTPServer(max_body_size=...)`` refuses a larger body by closing the connection (the client sees a
reset, or a bare ``400 Bad Request``). :class:`LimitedApplication` wraps each request's message delegate instead:
it looks up the route's limit when the headers arrive, before any of the body is read, and

- a declared ``Content-Length`` over the limit never reaches a handler: the body is read and thrown away (so any
  client, not only one that sent ``Expect: 100-continue``, gets to read the answer), then the route's refusal is
  sent. A body over twice the limit is not worth reading: the answer goes out at once and the connection closes.
- a chunked body is counted as it arrives; past the limit the handler is told the connection closed, the rest is
  thrown away (up to twice the limit) and the refusal is sent.

Nothing over the limit is ever buffered. Handlers keep using ``self.request.body`` as usual.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import tornado.web
from tornado import httputil

from runtime.broker._envelope import encode_error

__all__ = ["LimitedApplication", "Limits", "Refusal", "envelope_refusal", "graphql_refusal", "json_refusal"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 15 * 1024 * 1024  # erxes's express.json limit

Refusal = Callable[[str], tuple[int, bytes]]  # reason -> (HTTP status, JSON body)


def json_refusal(reason: str) -> tuple[int, bytes]:
    """413 ``{"error": reason}``, as ``/receive`` answers its other refusals."""
    return 413, json.dumps({"error": reason}).encode()


def graphql_refusal(reason: str) -> tuple[int, bytes]:
    """413 ``{"errors": [{"message": reason}]}``, a GraphQL client's error shape."""
    return 413, json.dumps({"errors": [{"message": reason}]}).encode()


def envelope_refusal(reason: str) -> tuple[int, bytes]:
    """HTTP 200 with the erxes error envelope: ``POST /rpc`` always answers 200 (the contract)."""
    return 200, encode_error(reason)


@dataclass(frozen=True)
class Limits:
    """The body limit and refusal of each route: ``routes`` maps a path (or a prefix ending in ``/``) to them;
    every other path gets ``default_bytes`` and :func:`json_refusal`."""

    default_bytes: int = DEFAULT_MAX_BYTES
    routes: Mapping[str, tuple[int, Refusal]] = field(default_factory=dict)

    def for_path(self, path: str) -> tuple[int, Refusal]:
        path = path.partition("?")[0]
        for route, limit in self.routes.items():
            if path == route or (route.endswith("/") and path.startswith(route)):
                return limit
        return self.default_bytes, json_refusal


class LimitedApplication(tornado.web.Application):
    """A Tornado application whose every request is held to :class:`Limits`."""

    def __init__(self, handlers: list, *, limits: Limits, **settings: object) -> None:  # type: ignore[type-arg]
        super().__init__(handlers, **settings)  # type: ignore[arg-type]
        self.limits = limits

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection
                      ) -> httputil.HTTPMessageDelegate:
        return _LimitedDelegate(super().start_request(server_conn, request_conn), request_conn, self.limits)

    def log_request(self, handler: tornado.web.RequestHandler) -> None:
        """Tornado's access log line, unless the handler logged the request itself (``self_logged``)."""
        if not getattr(handler, "self_logged", False):
            super().log_request(handler)


class _LimitedDelegate(httputil.HTTPMessageDelegate):
    def __init__(self, inner: httputil.HTTPMessageDelegate, connection: httputil.HTTPConnection,
                 limits: Limits) -> None:
        self.inner = inner
        self.connection = connection
        self.limits = limits
        self.max_bytes = limits.default_bytes
        self.refusal: Refusal = json_refusal
        self.received = 0
        self.refused: str | None = None  # the reason, once the body is over the limit
        self.answered = False
        self.forwarded = False  # the inner delegate got the headers (and must hear of a close)
        self.start_line: httputil.RequestStartLine | None = None

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> Awaitable[None] | None:
        assert isinstance(start_line, httputil.RequestStartLine)
        self.start_line = start_line
        self.max_bytes, self.refusal = self.limits.for_path(start_line.path)
        drain = 2 * self.max_bytes
        declared = _content_length(headers)
        if declared is not None and declared > self.max_bytes:
            self.refused = f"the request body is {declared} bytes, over the limit of {self.max_bytes} bytes"
            self.connection.set_max_body_size(declared)  # type: ignore[attr-defined]  # read, never kept
            if declared > drain or headers.get("Expect", "").lower() == "100-continue":
                self._answer()  # the connection closes after the answer
            return None
        self.connection.set_max_body_size(drain)  # type: ignore[attr-defined]  # chunked: counted below
        self.forwarded = True
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.refused is not None:
            return None
        self.received += len(chunk)
        if self.received > self.max_bytes:
            self.refused = f"the request body is over the limit of {self.max_bytes} bytes"
            self.forwarded = False
            self.inner.on_connection_close()  # the handler stops waiting; it never sees this body
            return None
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        if self.refused is None:
            self.inner.finish()
        elif not self.answered:
            self._answer()

    def on_connection_close(self) -> None:
        if self.forwarded:
            self.inner.on_connection_close()

    def _answer(self) -> None:
        self.answered = True
        assert self.start_line is not None and self.refused is not None
        status, body = self.refusal(self.refused)
        context = getattr(self.connection, "context", None)
        logger.info("%s %s from %s refused: %s", self.start_line.method, self.start_line.path.partition("?")[0],
                    getattr(context, "remote_ip", "?"), self.refused)
        headers = httputil.HTTPHeaders({"Content-Type": "application/json; charset=utf-8",
                                        "Content-Length": str(len(body))})
        reason = httputil.responses.get(status, "Unknown")
        self.connection.write_headers(httputil.ResponseStartLine("HTTP/1.1", status, reason), headers,
                                      None if self.start_line.method == "HEAD" else body)
        self.connection.finish()


def _content_length(headers: httputil.HTTPHeaders) -> int | None:
    """The declared body size; None when absent or unreadable (Tornado itself refuses a bad one)."""
    value = headers.get("Content-Length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)
