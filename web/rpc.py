"""The HTTP transport of the erxes broker contract, server side: ``POST /rpc/<procedure>``.

Every RPC procedure of the service's table (``imap:createIntegration`` is served at ``/rpc/createIntegration``;
the broker suffix is not applied here) runs through the same envelope code as over AMQP
(:func:`runtime.broker._envelope.handle_rpc`), so both transports answer alike. The reply is always HTTP 200 with
the reply envelope as JSON: a body that is not a JSON object, an unknown procedure, a body over
``max_request_bytes`` (15 MiB; :mod:`web.limits` answers before reading it) and a handler that raised all yield
``{"status": "error", "errorMessage": ...}``. Handlers block (MongoDB, actor asks), so they run on an executor,
never on the IOLoop. Plain (fire-and-forget) procedures stay AMQP-only, as in erxes.

Who may call (:class:`RpcAccess`): callers whose socket address is in ``rpc_allowed_networks`` (default: loopback
and the private ranges, where erxes services call each other without credentials) and, when ``rpc_token`` is set,
who send ``Authorization: Bearer <token>``. Anyone else gets HTTP 403 with an error envelope naming the reason,
before the body is read; each caller's refusal is logged once (WARNING), the token never.

A request that came through a proxy is refused as well (issue 12 item 6): erxes's gateway proxy adds ``userid``
and ``hostname`` to every request it forwards (and ``user`` for a logged-in one), while erxes's internal HTTP RPC
callers send only ``Content-Type``. Behind a proxy inside the private network the address rule alone would let a
browser's request in; these headers give it away.
"""
from __future__ import annotations

import concurrent.futures
import hmac
import ipaddress
import logging
from collections.abc import Iterable
from typing import Any, Callable, Mapping

import tornado.ioloop
import tornado.web

from runtime import metrics
from runtime.broker._envelope import encode_error, handle_rpc
from runtime.config import PRIVATE_NETWORKS

__all__ = ["PROXY_HEADERS", "RpcAccess", "RpcHandler", "http_procedures", "proxied", "rpc_routes"]

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Any]

PROXY_HEADERS = ("userid", "hostname", "user")  # what erxes's gateway proxy adds; its internal callers never send


def proxied(headers: Mapping[str, str]) -> str | None:
    """Why a request looks proxied (the first gateway header it carries), or None."""
    found = next((name for name in PROXY_HEADERS if headers.get(name) is not None), None)
    if found is None:
        return None
    return (f"a proxied request (header {found!r}, as erxes's gateway adds) may not call /rpc: erxes services "
            f"call it directly")


def http_procedures(table: Mapping[str, Handler]) -> dict[str, tuple[str, Handler]]:
    """``{"imap:createIntegration": h}`` -> ``{"createIntegration": ("imap:createIntegration", h)}``."""
    out: dict[str, tuple[str, Handler]] = {}
    for queue, handler in table.items():
        _service, _, procedure = queue.partition(":")
        if not procedure or ":" in procedure:
            raise ValueError(f"{queue!r}: an RPC procedure name has one ':' after the service name")
        out[procedure] = (queue, handler)
    return out


class RpcAccess:
    """Who may call ``POST /rpc``: an address in ``networks`` (CIDR strings) and, when ``token`` is set, the
    matching ``Authorization: Bearer <token>`` (compared in constant time)."""

    MAX_REMEMBERED = 1024  # distinct (caller, reason) pairs logged at WARNING; later ones at DEBUG

    def __init__(self, networks: Iterable[str] = PRIVATE_NETWORKS, token: str = "") -> None:
        self.networks = tuple(ipaddress.ip_network(n) for n in networks)
        self._token = token.encode()
        self._logged: set[tuple[str, str]] = set()

    def refusal(self, remote_ip: str | None, authorization: str | None) -> str | None:
        """Why this caller is refused, or None when it may call."""
        try:
            address = ipaddress.ip_address(remote_ip or "")
        except ValueError:
            return "the caller's address is unknown"
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not any(address in network for network in self.networks):
            return f"{address} is not in RPC_ALLOWED_NETWORKS"
        if self._token:
            scheme, _, given = (authorization or "").strip().partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
                return "missing or wrong RPC_TOKEN (Authorization: Bearer <token>)"
        return None

    def log_once(self, caller: str | None, request: str, reason: str) -> None:
        """One WARNING per caller and reason (the first :data:`MAX_REMEMBERED` pairs), DEBUG after that."""
        key = (caller or "?", reason)
        if key in self._logged or len(self._logged) >= self.MAX_REMEMBERED:
            logger.debug("%s from %s refused: %s", request, caller, reason)
            return
        self._logged.add(key)
        logger.warning("%s from %s refused: %s (this caller's next refusals for it: DEBUG)", request, caller, reason)


@tornado.web.stream_request_body  # so prepare() refuses a caller before its body is read
class RpcHandler(tornado.web.RequestHandler):
    def initialize(self, procedures: Mapping[str, tuple[str, Handler]],
                   executor: concurrent.futures.Executor | None = None, access: RpcAccess | None = None) -> None:
        self.procedures = procedures
        self.executor = executor
        self.access = access or RpcAccess()
        self.chunks: list[bytes] = []  # web.limits keeps the total under max_request_bytes

    def prepare(self) -> None:
        reason = proxied(self.request.headers) or self.access.refusal(self.request.remote_ip,
                                                                     self.request.headers.get("Authorization"))
        if reason is not None:
            self.access.log_once(self.request.remote_ip, f"{self.request.method} {self.request.path[:200]}", reason)
            self.self_logged = True  # no access log line too: a refused caller is logged once (web.limits)
            self.set_status(403)
            self.set_header("Content-Type", "application/json; charset=utf-8")
            self.finish(encode_error(f"Forbidden: {reason}"))

    def data_received(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    async def post(self, procedure: str) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        found = self.procedures.get(procedure)
        if found is None:
            logger.info("POST /rpc/%s: no such procedure", procedure[:200])
            self.finish(encode_error(f"Unknown procedure {procedure}"))
            return
        queue, handler = found
        body = b"".join(self.chunks)
        run = metrics.timed(queue, "http", handler)
        reply = await tornado.ioloop.IOLoop.current().run_in_executor(self.executor, handle_rpc, queue, run, body)
        self.finish(reply)


def rpc_routes(procedures: Mapping[str, tuple[str, Handler]], executor: concurrent.futures.Executor | None = None,
               access: RpcAccess | None = None, *, prefix: str = "") -> list[Any]:
    """The route of ``POST <prefix>/rpc/<procedure>``; any name is taken, so an unknown one gets an error envelope.
    ``prefix``: where a kind's service address points (``/api`` for ``service:api``; ``""`` for ``imap``)."""
    return [(rf"{prefix}/rpc/(.+)", RpcHandler, {"procedures": procedures, "executor": executor, "access": access})]
