"""The seam where integration kinds plug in (issue 15 item 1), modeled on mopidy's ``Extension`` and ``Registry``.

A kind is a package with one :class:`Kind` subclass: its name (``imap``, ``api``), its label in erxes's inbox, its
settings' defaults, and :meth:`Kind.setup`, which adds to the :class:`Registry` what the kind brings:

- procedures, served as ``<kind>:<procedure>`` on both transports and registered as ``service:<kind>`` in Redis;
- HTTP routes (added to ``make_app``), GraphQL query and mutation fields (added to the schema);
- a listener factory (an actor per integration, started by the supervisor for the integrations of this kind) and
  the source of those integrations; a push-only kind registers none.

The registry refuses a kind, procedure, route, GraphQL field or listener claimed twice, naming both claimants
(:class:`KindConflict`). Kinds are found among the built-in ones (:data:`BUILTIN`) and the setuptools entry points
of group ``imap_runtime.kinds`` (:func:`load_kinds`), so a kind can live outside this repository. This module is
plain: it imports no kind, no actor and no web code (kinds are imported by name when loaded).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from runtime.errors import ConfigError

__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "Kind", "KindConflict", "Registry", "Services", "load_kinds"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "imap_runtime.kinds"
BUILTIN = {"imap": "kinds.imap:ImapKind", "api": "kinds.api:ApiKind"}

Handler = Callable[[dict[str, Any]], Any]
RouteBuilder = Callable[[Any, Any], list[tuple[Any, ...]]]  # (web deps, config) -> tornado routes


class KindConflict(ConfigError):
    """Two kinds (or one kind twice) claim the same name."""

    def __init__(self, what: str, name: str, first: str, second: str) -> None:
        super().__init__("kinds", f"{what} {name!r} is claimed by kind {first!r} and by kind {second!r}")
        self.what, self.name, self.claimants = what, name, (first, second)


class Kind:
    """One integration kind (mopidy's ``Extension``). Subclasses set :attr:`name` and implement :meth:`setup`."""

    name: str = ""  # the service name: procedures are <name>:<procedure>, Redis has service:<name>
    label: str = ""  # meta.inboxIntegrations' label in service:config:<name>
    provides_activity_log: bool = False  # meta.logs.providesActivityLog
    http_prefix: str | None = None  # where /rpc is served for service:<name> (None: /<name>, e.g. /api/rpc)

    def get_default_config(self) -> dict[str, Any]:
        """The kind's settings and their defaults (documented in its package and the README)."""
        return {}

    def setup(self, registry: Registry, services: Services) -> None:
        """Add the kind's procedures, routes, GraphQL fields and listener to ``registry``."""
        raise NotImplementedError

    def check(self, config: Any, *, timeout: float) -> list[tuple[bool, str, str]]:
        """``imap-runtime check``'s lines for this kind, ``(ok, item, detail)`` each (IMAP: every stored mailbox's
        login); run after the servers answered."""
        return []

    def service_config(self, config: Any) -> dict[str, Any]:
        """The ``service:config:<name>`` document erxes's gateway and core read."""
        return {"dbConnectionString": getattr(config, "mongo_url", ""), "hasSubscriptions": False,
                "meta": {"inboxIntegrations": [{"kind": self.name, "label": self.label or self.name}],
                         "logs": {"providesActivityLog": self.provides_activity_log, "consumers": {}}}}


@dataclass
class Services:
    """What the composition root shares with every kind's :meth:`Kind.setup` (built before any kind sets up)."""

    config: Any
    tenants: Any = None  # runtime.tenants.Tenants
    storage: Any = None  # the tenant-bound storage facade (runtime.storage.Storage or TenantStorage)
    broker: Any = None  # runtime.broker.amqp.AmqpBroker
    erxes: Any = None  # runtime.erxes.ErxesClient
    fence: Any = None  # runtime.fence.Fence
    supervisor: Any = None  # the SupervisorActor's proxy
    ownership: Any = None  # runtime.leases.Leases or SoleOwner
    pipeline: Any = None  # the IMAP pipeline's lanes (actors/router.py)
    timeout: float = 30.0  # how long a procedure waits for an actor
    extra: dict[str, Any] = field(default_factory=dict)  # what one kind hands the web layer (web deps)


@dataclass
class _Listener:
    kind: str
    factory: Callable[..., Any]  # (doc, *, supervisor, generation, subdomain) -> pykka.ActorRef
    integrations: Any  # list_integrations(), get_integration(inbox_id), inventory() of the bound tenant


class Registry:
    """Everything the kinds brought, each name with its claimant (mopidy's ``Registry``)."""

    def __init__(self) -> None:
        self.kinds: dict[str, Kind] = {}
        self.rpc: dict[str, tuple[str, Handler]] = {}  # "<kind>:<procedure>" -> (kind, handler)
        self.plain: dict[str, tuple[str, Handler]] = {}
        self.routes: dict[str, tuple[str, RouteBuilder]] = {}  # path pattern -> (kind, builder)
        self.queries: dict[str, tuple[str, Any]] = {}  # GraphQL Query field name -> (kind, graphene field)
        self.mutations: dict[str, tuple[str, Any]] = {}
        self.listeners: dict[str, _Listener] = {}
        self._current: str | None = None

    # -- claims -------------------------------------------------------------------------------------------------------
    def add_kind(self, kind: Kind) -> None:
        if not kind.name or ":" in kind.name or "/" in kind.name:
            raise ConfigError("kinds", f"a kind needs a name without ':' or '/', got {kind.name!r}")
        if kind.name in self.kinds:
            raise KindConflict("the kind name", kind.name, _where(self.kinds[kind.name]), _where(kind))
        self.kinds[kind.name] = kind

    def setup(self, kind: Kind, services: Services) -> None:
        """Add ``kind`` and run its :meth:`Kind.setup`; its claims are made in its name."""
        self.add_kind(kind)
        self._current = kind.name
        try:
            kind.setup(self, services)
        finally:
            self._current = None

    def add_procedure(self, name: str, handler: Handler, *, plain: bool = False, kind: str | None = None) -> str:
        """Serve ``handler`` as ``<kind>:<name>`` (RPC, or a plain fire-and-forget consumer). A ``name`` with a
        ``:`` is taken as the full queue name (another kind's one is refused as claimed by it)."""
        owner = self._owner(kind)
        full = name if ":" in name else f"{owner}:{name}"
        if full.count(":") != 1 and not plain:
            raise ConfigError("kinds", f"{full!r}: a procedure name has no ':' of its own")
        self._claim("the procedure", full, owner, self.rpc, self.plain)
        (self.plain if plain else self.rpc)[full] = (owner, handler)
        return full

    def add_routes(self, patterns: Iterable[str], build: RouteBuilder, *, kind: str | None = None) -> None:
        """HTTP routes: ``build(deps, config)`` returns tornado rules whose patterns are exactly ``patterns``."""
        owner = self._owner(kind)
        patterns = list(patterns)
        for pattern in patterns:
            self._claim("the route", pattern, owner, self.routes)
        for pattern in patterns:
            self.routes[pattern] = (owner, build)

    def add_query(self, name: str, graphene_field: Any, *, kind: str | None = None) -> None:
        owner = self._owner(kind)
        self._claim("the GraphQL field", name, owner, self.queries, self.mutations)
        self.queries[name] = (owner, graphene_field)

    def add_mutation(self, name: str, graphene_field: Any, *, kind: str | None = None) -> None:
        owner = self._owner(kind)
        self._claim("the GraphQL field", name, owner, self.queries, self.mutations)
        self.mutations[name] = (owner, graphene_field)

    def add_listener(self, factory: Callable[..., Any], *, integrations: Any, kind: str | None = None) -> None:
        """The actor the supervisor starts for each integration of this kind, and where those integrations are."""
        owner = self._owner(kind)
        self._claim("the listener of kind", owner, owner, self.listeners)
        self.listeners[owner] = _Listener(owner, factory, integrations)

    # -- what the composition root reads ------------------------------------------------------------------------------
    def procedures_of(self, kind: str, *, plain: bool = False) -> dict[str, Handler]:
        return {name: handler for name, (owner, handler) in (self.plain if plain else self.rpc).items()
                if owner == kind}

    def route_builders(self) -> list[tuple[list[str], RouteBuilder]]:
        """Each distinct builder once, with its patterns, in registration order."""
        out: dict[int, tuple[list[str], RouteBuilder]] = {}
        for pattern, (_owner, build) in self.routes.items():
            out.setdefault(id(build), ([], build))[0].append(pattern)
        return list(out.values())

    def graphql_fields(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return ({n: f for n, (_k, f) in self.queries.items()}, {n: f for n, (_k, f) in self.mutations.items()})

    def _owner(self, kind: str | None) -> str:
        owner = kind or self._current
        if owner is None:
            raise ConfigError("kinds", "a claim outside a kind's setup must name its kind")
        return owner

    @staticmethod
    def _claim(what: str, name: str, owner: str, *tables: dict[str, Any]) -> None:
        for table in tables:
            if name in table:
                held = table[name]
                first = held.kind if isinstance(held, _Listener) else held[0]
                raise KindConflict(what, name, first, owner)


def _where(kind: Kind) -> str:
    return f"{kind.name} ({type(kind).__module__}.{type(kind).__qualname__})"


def _load(target: str) -> type[Kind]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def load_kinds(enabled: Iterable[str], *, builtin: dict[str, str] | None = None,
               entry_points: Iterable[Any] | None = None) -> list[Kind]:
    """The enabled kinds, in the order given: built-in ones (:data:`BUILTIN`) and those of the entry point group
    :data:`ENTRY_POINT_GROUP`. An entry point that names a built-in kind differently is a conflict; an enabled
    kind found nowhere is a ConfigError."""
    found: dict[str, tuple[str, Callable[[], type[Kind]]]] = {}
    for name, target in (BUILTIN if builtin is None else builtin).items():
        found[name] = (target, lambda target=target: _load(target))
    points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP) if entry_points is None else entry_points
    for point in points:
        if point.name in found and found[point.name][0] != point.value:
            raise KindConflict("the kind name", point.name, f"{point.name} ({found[point.name][0]})",
                               f"{point.name} ({point.value})")
        found[point.name] = (point.value, point.load)
    kinds = []
    for name in enabled:
        if name not in found:
            raise ConfigError("kinds", f"no kind {name!r} is installed (known: {', '.join(sorted(found))})")
        kind = found[name][1]()()
        if kind.name != name:
            raise ConfigError("kinds", f"the kind found as {name!r} calls itself {kind.name!r}")
        kinds.append(kind)
    return kinds
