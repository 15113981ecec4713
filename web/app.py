"""The Tornado application: a pure ``make_app(config, *, deps)``; handlers get what they need via ``initialize``.

Routes: ``GET /health`` (erxes-compatible ``ok`` once the runtime serves, 503 before), ``POST /rpc/<procedure>``
(:mod:`web.rpc`), ``GET /ready`` and ``GET /metrics`` (:mod:`web.ops`), ``POST/GET /graphql`` (:mod:`web.graphql`),
the web console's shell at ``/console/...`` (:mod:`web.console`: sign-in, live stream, health), and each kind's own
routes (the IMAP kind's ``/receive``, ``/read-mail-attachment`` and ``/login``: kinds/imap/web.py; its console pages,
``/`` among them: kinds/imap/console).
Every route's request body is limited (:mod:`web.limits`): ``max_mail_bytes`` for ``/receive``,
``max_request_bytes`` for the others; ``/rpc`` callers are checked by :class:`web.rpc.RpcAccess`.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import tornado.web

from runtime.config import PRIVATE_NETWORKS
from web import console, graphql
from web.limits import (DEFAULT_MAX_BYTES, LimitedApplication, Limits, ServerLimits, envelope_refusal,
                        graphql_refusal, json_refusal)
from web.ops import Probe, ops_routes
from web.rpc import RpcAccess, rpc_routes

__all__ = ["WebDeps", "make_app"]


@dataclass(frozen=True)
class WebDeps:
    ready: Callable[[], bool]
    rpc: Mapping[str, tuple[str, Callable[[dict[str, Any]], Any]]] = field(default_factory=dict)  # web.rpc
    rpc_executor: concurrent.futures.Executor | None = None  # where RPC handlers run (None: the loop's default)
    probe: Probe | None = None  # the checks behind /ready and /metrics
    storage: Any = None  # runtime.storage.Storage
    supervisor: Any = None  # the SupervisorActor's proxy (mailbox sessions for attachments)
    tenants: Any = None  # runtime.tenants.Tenants: a request's tenant comes from its hostname header
    ownership: Any = None  # runtime.leases.Leases or SoleOwner: who holds each mailbox (the console shows it)
    # The kinds' parts (runtime/kinds.py Registry): route builders ``(patterns, build(deps, config))`` (None: no
    # kind's routes), the composed GraphQL schema (None: no kind's fields), and each other kind's RPC
    # table under its HTTP prefix (``{"/api": {"createIntegration": (...)}}``: ``POST /api/rpc/createIntegration``).
    routes: Sequence[tuple[Sequence[str], Callable[[Any, Any], list[Any]]]] | None = None
    schema: Any = None
    kind_rpc: Mapping[str, Mapping[str, tuple[str, Callable[[dict[str, Any]], Any]]]] = field(default_factory=dict)
    # What the kinds handed over (Services.extra, each key named by its kind: the IMAP kind's ``imap_sender`` and
    # ``imap_push``): their route builders read it, and the GraphQL context carries it (web/graphql.py).
    extra: Mapping[str, Any] = field(default_factory=dict)
    # The console's shell (web.console.base.Console) that make_app builds and hands the kinds' route builders, so
    # that a kind's console pages share its sign-in (None: the console is off; given: that one is used).
    console: Any = None


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
    max_request = getattr(config, "max_request_bytes", DEFAULT_MAX_BYTES)  # config None: the defaults (unit tests)
    limits = Limits(max_request, {"/rpc/": (max_request, envelope_refusal), "/graphql": (max_request, graphql_refusal),
                                  "/receive": (getattr(config, "max_mail_bytes", max_request), json_refusal),
                                  **{f"{prefix}/rpc/": (max_request, envelope_refusal) for prefix in deps.kind_rpc}})
    access = RpcAccess(getattr(config, "rpc_allowed_networks", PRIVATE_NETWORKS), getattr(config, "rpc_token", ""))
    if deps.console is None:
        deps = dataclasses.replace(deps, console=console.make_console(deps, config))
    kind_routes: list[Any] = []
    for patterns, build in (deps.routes or []):
        built = build(deps, config)
        unclaimed = [rule[0] for rule in built if rule[0] not in patterns]
        if unclaimed:
            raise ValueError(f"routes {unclaimed} were built but not claimed in the kinds' registry")
        kind_routes += built
    return LimitedApplication([
        (r"/health", HealthHandler, {"deps": deps}),
        *rpc_routes(deps.rpc, deps.rpc_executor, access),
        *(rule for prefix, table in deps.kind_rpc.items()
          for rule in rpc_routes(table, deps.rpc_executor, access, prefix=prefix)),
        *ops_routes(deps.ready, deps.probe),
        *(graphql.routes(deps, attachment_url_prefix=getattr(config, "attachment_url_prefix", ""), config=config)
          if deps.storage is not None else []),
        *kind_routes,
        # /console/...: web/console's shell (its own sign-in and CSRF tokens); GET / unless a kind's page claims it
        *console.routes(deps.console, claimed=[rule[0] for rule in kind_routes]),
    ], limits=limits, server_limits=ServerLimits.from_config(config), debug=False)
