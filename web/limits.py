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

Slow clients (:class:`LimitedHTTPServer`, issue 12 item 9): Tornado's defaults wait an hour for a request's head
and forever for its body, with no cap on connections. The server built by :func:`make_server` closes a connection
whose first request head has not arrived ``header_timeout`` seconds after it connected, one whose body takes longer
than ``body_timeout``, and a kept-alive one idle for ``idle_timeout`` (Tornado's ``idle_connection_timeout``, which
also bounds the head of a kept-alive connection's next request); past ``max_connections`` open connections a new
one is answered ``503`` and closed at once, so the connections already served keep their share.
"""
from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import tornado.httpserver
import tornado.ioloop
import tornado.iostream
import tornado.web
from tornado import httputil

from runtime.broker._envelope import encode_error

__all__ = ["LimitedApplication", "LimitedHTTPServer", "Limits", "Refusal", "ServerLimits", "envelope_refusal",
           "graphql_refusal", "json_refusal", "make_server"]

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


@dataclass(frozen=True)
class ServerLimits:
    """What the HTTP server allows a connection (seconds, bytes, connections); ``from_config`` reads the
    ``http_*`` settings (runtime/config.py), a missing one keeps its default."""

    header_timeout: float = 10.0
    body_timeout: float = 120.0
    idle_timeout: float = 60.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 1000

    @classmethod
    def from_config(cls, config: Any) -> ServerLimits:
        default = cls()
        return cls(header_timeout=getattr(config, "http_header_timeout_seconds", default.header_timeout),
                   body_timeout=getattr(config, "http_body_timeout_seconds", default.body_timeout),
                   idle_timeout=getattr(config, "http_idle_timeout_seconds", default.idle_timeout),
                   max_header_bytes=getattr(config, "http_max_header_bytes", default.max_header_bytes),
                   max_connections=getattr(config, "http_max_connections", default.max_connections))


class LimitedApplication(tornado.web.Application):
    """A Tornado application whose every request is held to :class:`Limits`; ``server_limits`` is what
    :func:`make_server` gives its connections."""

    def __init__(self, handlers: list, *, limits: Limits,  # type: ignore[type-arg]
                 server_limits: ServerLimits | None = None, **settings: object) -> None:
        super().__init__(handlers, **settings)  # type: ignore[arg-type]
        self.limits = limits
        self.server_limits = server_limits or ServerLimits()

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


# -- the server: timeouts and a connection cap ---------------------------------------------------------------------

_BUSY_BODY = b'{"error": "too many connections to this server: retry later"}'
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY))


def make_server(app: Any) -> LimitedHTTPServer:
    """The HTTP server of ``app``, with the app's :class:`ServerLimits` (the defaults for a plain Application).
    ``max_body_size`` is only the outer bound: :class:`LimitedApplication` sets each request's own."""
    return LimitedHTTPServer(app, limits=getattr(app, "server_limits", None) or ServerLimits())


class LimitedHTTPServer(tornado.httpserver.HTTPServer):
    """Tornado's HTTPServer with a header deadline for a connection's first request and a connection cap."""

    LOG_EVERY = 60.0  # seconds between two WARNINGs about refused connections
    LINGER = 1.0  # seconds a refused connection stays half-closed, so that the client reads its 503

    def initialize(self, app: Any, *, limits: ServerLimits, **kwargs: Any) -> None:  # type: ignore[override]
        # HTTPServer is a tornado Configurable: its constructor calls initialize() with the arguments
        super().initialize(app, idle_connection_timeout=limits.idle_timeout, body_timeout=limits.body_timeout,
                         max_header_size=limits.max_header_bytes, max_body_size=1024 ** 3, **kwargs)
        self.limits = limits
        self.refused = 0  # connections refused past the cap since the last WARNING
        self._warned_at = -self.LOG_EVERY

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple[Any, ...]) -> None:
        if len(self._connections) >= self.limits.max_connections:
            self._refuse(stream, address)
            return
        super().handle_stream(stream, address)

    def start_request(self, server_conn: object, request_conn: httputil.HTTPConnection
                      ) -> httputil.HTTPMessageDelegate:
        delegate = super().start_request(server_conn, request_conn)
        if getattr(server_conn, "_imap_served", False):
            return delegate  # a kept-alive connection: the idle timeout bounds its next head
        setattr(server_conn, "_imap_served", True)
        return _HeaderDeadline(delegate, request_conn, self.limits.header_timeout)

    def _refuse(self, stream: tornado.iostream.IOStream, address: tuple[Any, ...]) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._warned_at >= self.LOG_EVERY:
            logger.warning("HTTP: %d connection(s) refused (the latest from %s): %d are open, the limit of "
                           "http_max_connections", self.refused, address[0] if address else "?",
                           len(self._connections))
            self._warned_at, self.refused = now, 0
        try:
            stream.write(BUSY).add_done_callback(lambda _f: self._linger(stream))
        except tornado.iostream.StreamClosedError:
            stream.close()

    def _linger(self, stream: tornado.iostream.IOStream) -> None:
        """Half-close after the 503 and close a second later: closing a socket with the client's request still
        unread sends a reset, which can destroy the answer before the client reads it."""
        try:
            stream.socket.shutdown(socket.SHUT_WR)
        except OSError:
            stream.close()
            return
        tornado.ioloop.IOLoop.current().call_later(self.LINGER, stream.close)


class _HeaderDeadline(httputil.HTTPMessageDelegate):
    """Closes the connection unless the request's head arrives within ``timeout`` seconds."""

    def __init__(self, inner: httputil.HTTPMessageDelegate, connection: httputil.HTTPConnection,
                 timeout: float) -> None:
        self.inner = inner
        self.connection = connection
        self._timer = tornado.ioloop.IOLoop.current().call_later(timeout, self._expired)

    def _expired(self) -> None:
        logger.debug("HTTP: a request head from %s did not arrive in time; connection closed",
                     getattr(getattr(self.connection, "context", None), "remote_ip", "?"))
        self.connection.close()  # type: ignore[attr-defined]

    def _cancel(self) -> None:
        if self._timer is not None:
            tornado.ioloop.IOLoop.current().remove_timeout(self._timer)
            self._timer = None

    def headers_received(self, start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
                         headers: httputil.HTTPHeaders) -> Awaitable[None] | None:
        self._cancel()
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.inner.finish()

    def on_connection_close(self) -> None:
        self._cancel()
        self.inner.on_connection_close()
