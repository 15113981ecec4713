"""Tenants: ``VERSION=os`` is one tenant in the database of ``MONGO_URL``; ``VERSION=saas`` gives each
organisation (erxes's ``subdomain``) a database of its own, ``<database>_<subdomain>``.

Work is bound to its tenant where it enters (a procedure's envelope, a pipeline job, a mailbox's thread, an HTTP
request's ``hostname`` header, as erxes's ``getSubdomain`` reads it), and :class:`TenantStorage` sends every
storage call to the bound tenant's database. In saas mode a call with no tenant bound raises instead of guessing,
so one organisation's data can never land in another's database. ``imap_tenants`` in the base database lists the
tenants that have integrations, so a restart resumes every one of them.

Known tenants (issue 12 item 7): a tenant is *known* once an integration was created for it through the
authenticated RPC path (``createIntegration``, which calls :meth:`Tenants.remember`), i.e. once it is in
``imap_tenants``. That record lives in MongoDB, so it survives restarts and every node sees it. Routes that anyone
can reach without a login (``/receive``, ``/login``) serve only known tenants (:meth:`Tenants.is_known`): any other
``hostname`` is refused before a database, an index or a cache entry is made for it.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import threading
from typing import Any, Callable, Iterator


from runtime.errors import RequestError, StorageError
from runtime.sealing import Sealer
from runtime.storage import Storage

__all__ = ["Tenants", "TenantStorage", "UnknownTenant", "bound", "current", "start_tenants", "subdomain_of_host"]

logger = logging.getLogger(__name__)

OS = "os"
_VALID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_current: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)


class UnknownTenant(RequestError):
    """A request for an organisation the runtime does not know (no integration was ever created for it)."""

    def __init__(self, subdomain: str) -> None:
        super().__init__(f"no organisation {subdomain!r} is served here")
        self.subdomain = subdomain


def current() -> str | None:
    return _current.get()


@contextlib.contextmanager
def bound(subdomain: str) -> Iterator[None]:
    token = _current.set(subdomain)
    try:
        yield
    finally:
        _current.reset(token)


def bind_thread(subdomain: str) -> None:
    _current.set(subdomain)


def subdomain_of_host(hostname: str | None) -> str:
    """erxes's ``getSubdomain``: the first label of the ``hostname`` header, without a scheme."""
    host = re.sub(r"^\w+://", "", (hostname or "").strip())
    return host.split(".")[0].split(":")[0].lower()


class Tenants:
    def __init__(self, mongo_url: str, *, database: str, saas: bool, timeout_ms: int = 10000,
                 sealer: Sealer | None = None) -> None:
        self.saas = saas
        self.sealer = sealer
        self.base = Storage(mongo_url, database=database, timeout_ms=timeout_ms, sealer=sealer)
        self._database = database
        self._storages: dict[str, Storage] = {OS: self.base} if not saas else {}
        self._lock = threading.Lock()
        self._index_hooks: list[Callable[[Storage], None]] = []
        self._known: set[str] = set()  # tenants seen in imap_tenants (never forgotten: a record is never removed)

    def on_new_tenant(self, hook: Callable[[Storage], None]) -> None:
        """Run ``hook(storage)`` for every tenant database (indexes of other parts), now and when one appears."""
        self._index_hooks.append(hook)
        with self._lock:
            existing = list(self._storages.values())
        for storage in existing:
            hook(storage)

    def key(self, subdomain: Any) -> str:
        """The tenant a request belongs to: always ``os`` in single-tenant mode."""
        if not self.saas:
            return OS
        name = str(subdomain or "").strip().lower()
        if not _VALID.match(name):
            raise RequestError(f"subdomain {subdomain!r} is not a valid organisation name")
        return name

    def storage(self, subdomain: Any) -> Storage:
        key = self.key(subdomain)
        with self._lock:
            found = self._storages.get(key)
            if found is None:
                found = self.base.sibling(f"{self._database}_{key}", tenant=key)
                found.ensure_indexes()
                for hook in self._index_hooks:
                    hook(found)
                self._storages[key] = found
            return found

    def remember(self, subdomain: str) -> None:
        """Record a tenant with integrations (saas), so a restart resumes its mailboxes."""
        if self.saas:
            self.base.record_tenant(subdomain)
            with self._lock:
                self._known.add(subdomain)

    def is_known(self, subdomain: Any) -> bool:
        """Whether the tenant is in ``imap_tenants`` (always, in single-tenant mode). One indexed read the first
        time per process; blocking: call it off the IOLoop. Opens nothing for an unknown tenant."""
        if not self.saas:
            return True
        key = self.key(subdomain)
        with self._lock:
            if key in self._known:
                return True
        if not self.base.tenant_recorded(key):
            return False
        with self._lock:
            self._known.add(key)
        return True

    def require_known(self, subdomain: Any) -> None:
        """Raise :class:`UnknownTenant` unless :meth:`is_known`."""
        if not self.is_known(subdomain):
            raise UnknownTenant(self.key(subdomain))

    def known(self) -> list[str]:
        if not self.saas:
            return [OS]
        return self.base.recorded_tenants()

    def facade(self) -> Storage | TenantStorage:
        """What the rest of the runtime uses as "the storage": the plain one in single-tenant mode."""
        return TenantStorage(self) if self.saas else self.base

    def ensure_indexes(self) -> None:
        self.base.ensure_indexes()
        if self.saas:
            self.base.ensure_tenant_index()

    def close(self) -> None:
        self.base.close()


class TenantStorage:
    """Looks like :class:`Storage`; every attribute is the bound tenant's."""

    def __init__(self, tenants: Tenants) -> None:
        self._tenants = tenants

    def __getattr__(self, name: str) -> Any:
        subdomain = _current.get()
        if subdomain is None:
            raise StorageError(f"no tenant is bound for storage.{name} (VERSION=saas)")
        return getattr(self._tenants.storage(subdomain), name)


def with_tenant(tenants: Tenants, handler: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """Wrap a procedure handler: bind the envelope's tenant while it runs."""
    def run(envelope: dict[str, Any]) -> Any:
        subdomain = envelope.get("subdomain") if isinstance(envelope, dict) else None
        with bound(tenants.key(subdomain or OS)):
            return handler(envelope)

    run.__name__ = getattr(handler, "__name__", "handler")
    return run


def bind_request(tenants: Tenants | None, headers: Any) -> str:
    """Bind an HTTP request's tenant (from erxes's ``hostname`` header) for the rest of its task; the work it
    hands to threads with ``asyncio.to_thread`` inherits it. Raises RequestError for a bad name (saas)."""
    if tenants is None or not tenants.saas:
        _current.set(OS)
        return OS
    key = tenants.key(subdomain_of_host(headers.get("hostname") or headers.get("Host")))
    _current.set(key)
    return key


def start_tenants(config: Any, *, announce: bool = True) -> Tenants:
    """The tenants of ``config`` (its MongoDB, one database or one per organisation), MongoDB answering and the
    indexes made; ``announce`` logs that MongoDB is ready."""
    tenants = Tenants(config.mongo_url, database=config.mongo_database, saas=config.version == "saas",
                      sealer=Sealer.from_setting(config.secret_keys))
    tenants.base.ping()
    tenants.ensure_indexes()
    if announce:
        logger.info("MongoDB ready (database %s%s)", config.mongo_database,
                    ", one more per organisation: VERSION=saas" if tenants.saas else "")
    return tenants
