"""Supervisor: the one place that decides which integrations this process listens to, and keeps them listened to.

It starts a mailbox actor per integration it owns, starts/restarts/stops them on the procedures' requests, and
restarts a crashed one (pykka actors cannot restart) with capped exponential backoff and jitter; the backoff is
reset after a healthy run. Children tell ``child_failed`` from ``on_failure``; the generation number makes late
messages from a replaced child harmless.

Kinds (:mod:`runtime.kinds`): ``listeners`` maps each kind to its listener factory and the source of its
integrations; an integration is started with the listener of the kind whose source holds it. Without ``listeners``
the one kind is ``imap``: ``mailbox_factory`` over ``storage``. The mapping may be filled (by the kinds' setup) after
the actor starts and before ``start_all``.

Ownership (``_should_listen``) is a lease per integration (:mod:`runtime.leases`): this process listens to an
integration only while it holds the lease; with ``LEASES=off`` (:class:`~runtime.leases.SoleOwner`) it owns every
one. ``rebalance`` (told every few seconds by the lease keeper) takes free leases up to the fair share, hands the
extras over (stop the mailbox, let the pipeline finish its mail, release), restarts a mailbox whose settings another
node changed, and stops one whose integration another node removed. Stopping on a lost lease does not wait for this
actor: the lease keeper stops the mailbox actor directly (the fence in :class:`~runtime.leases.Leases`).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import pykka
import pymongo
import redis
from pymongo.errors import PyMongoError

from runtime.errors import RequestError, StorageError
from runtime.leases import SoleOwner
from runtime.tenants import bound

__all__ = ["Supervisor", "SupervisorActor"]

logger = logging.getLogger(__name__)

HEALTHY_RUN_SECONDS = 60.0
INVENTORY_TIMEOUT = 5.0  # a rebalancing pass waits this long for MongoDB at most
DRAIN_TIMEOUT = 5.0  # a hand-over waits this long for the pipeline to finish the mailbox's mail
STOP_GRACE = 1.0  # a stopping mailbox gets this long to finish its command before its connection is cut


@dataclass
class _Child:
    ref: pykka.ActorRef[Any] | None
    generation: int
    started_at: float
    failures: int = 0
    timer: Any = None
    key: str = ""  # the lease key
    kind: str = "imap"  # the integration's kind (runtime/kinds.py)
    version: Any = None  # the integration's updatedAt when started: another node's update changes it


class Supervisor:
    def __init__(self, *, storage: Any, mailbox_factory: Callable[..., pykka.ActorRef[Any]] | None = None,
                 listeners: Mapping[str, Any] | None = None,
                 tenants: Callable[[], list[str]] = lambda: ["os"], max_delay: float = 30.0, stop_timeout: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 timer: Callable[..., Any] = threading.Timer, rng: random.Random | None = None,
                 ownership: Any = None, drain: Callable[[float], None] = lambda timeout: None,
                 interrupt: Callable[[Any], None] = lambda ref: None) -> None:
        self._ownership = ownership or SoleOwner()  # runtime.leases.Leases, or SoleOwner
        self._interrupt = interrupt  # cuts a mailbox's connection from outside (actors/interrupt.py)
        self._drain = drain  # returns once the pipeline finished the mail handed to it so far (bounded)
        self._storage = storage
        # kind -> an object with .factory and .integrations (runtime.kinds.Registry.listeners)
        self._listeners: Mapping[str, Any] = listeners if listeners is not None else {
            "imap": _Listener(mailbox_factory, storage)}
        self._tenants = tenants  # the subdomains to resume at start (one, "os", in single-tenant mode)
        self._max_delay = max_delay
        self._stop_timeout = stop_timeout
        self._clock = clock
        self._timer = timer
        self._rng = rng or random.Random()
        self._children: dict[tuple[str, str], _Child] = {}  # (subdomain, inboxId) -> child
        self._generation = 0
        self._self: Any = self  # the actor replaces this with its proxy

    # -- requests (asked by procedures and the process) -------------------------------------------------------------
    def start_all(self) -> int:
        """Start a mailbox for every stored integration this process should listen to; returns how many."""
        started = 0
        try:
            for subdomain in self._tenants():
                with bound(subdomain):
                    started += self._start_tenant(subdomain)
        except Exception:  # noqa: BLE001 - told at start-up: nobody reads the future, so say it here
            logger.exception("Could not start every stored integration (%d started)", started)
            raise
        logger.info("Started %d mailbox(es)", started)
        return started

    def _start_tenant(self, subdomain: str) -> int:
        started = 0
        for kind, listener in list(self._listeners.items()):
            for doc in listener.integrations.list_integrations():
                if self._should_listen(doc, subdomain) and not self._alive((subdomain, doc["inboxId"])):
                    try:
                        self._start(doc, subdomain, kind=kind)
                    except Exception as exc:  # noqa: BLE001 - one broken integration must not stop the others
                        logger.error("Cannot start the %s listener of integration %s: %s", kind, doc.get("inboxId"),
                                     exc)
                        if kind == "imap":
                            self._storage.log("error", f"cannot start: {exc}", inbox_id=doc.get("inboxId"))
                        continue
                    started += 1
        return started

    def _find(self, inbox_id: str) -> tuple[str, dict[str, Any] | None]:
        """The kind and stored document of ``inbox_id`` in the bound tenant (``("", None)`` when none has it)."""
        for kind, listener in list(self._listeners.items()):
            doc = listener.integrations.get_integration(inbox_id)
            if doc is not None:
                return kind, doc
        return "", None

    def ensure_listening(self, inbox_id: str, subdomain: str = "os") -> bool:
        """Listen to ``inbox_id`` if not already; returns True when a mailbox was started."""
        with bound(subdomain):
            kind, doc = self._find(inbox_id)
            if doc is None:
                raise RequestError("Integration not found.")
            if self._alive((subdomain, inbox_id)) or not self._claim(doc, subdomain):
                return False
            self._start(doc, subdomain, kind=kind)
            return True

    def restart(self, inbox_id: str, subdomain: str = "os", *, unless_current: bool = False) -> None:
        """Stop the mailbox (if any) and start a fresh one with the stored settings. ``unless_current`` (after a
        request saved the settings): leave a mailbox alone that already runs with exactly these (a rebalancing
        pass may have started it from the same save a moment ago)."""
        with bound(subdomain):
            kind, doc = self._find(inbox_id)
            if doc is None:
                raise RequestError("Integration not found.")
            child = self._children.get((subdomain, inbox_id))
            if unless_current and child is not None and child.ref is not None and child.ref.is_alive() and \
                    child.version == doc.get("updatedAt"):
                return
            self._children.pop((subdomain, inbox_id), None)
            if child is not None:
                self._stop_children([child])
            if self._claim(doc, subdomain):
                self._start(doc, subdomain, kind=kind)

    def stop_listening(self, inbox_id: str, subdomain: str = "os") -> bool:
        """Stop the mailbox (removal) and give its lease up."""
        child = self._children.pop((subdomain, inbox_id), None)
        if child is None:
            return False
        self._stop_children([child])
        self._ownership.release([child.key])
        return True

    def mailbox(self, inbox_id: str, subdomain: str = "os") -> Any:
        """The running mailbox actor's proxy for ``inbox_id`` (for requests that need its IMAP session), or None."""
        child = self._children.get((subdomain, inbox_id))
        if child is None or child.ref is None or not child.ref.is_alive():
            return None
        return child.ref.proxy()

    def listening(self) -> dict[str, bool]:
        """``{inboxId: alive}`` (``subdomain/inboxId`` for tenants other than ``os``)."""
        return {(i if s == "os" else f"{s}/{i}"): self._alive((s, i)) for s, i in self._children}

    def stop_all(self) -> None:
        children, self._children = list(self._children.values()), {}
        self._stop_children(children)

    def rebalance(self) -> None:
        """One pass of the lease-based ownership (told by the lease keeper every few seconds); see the module
        docstring. MongoDB or Redis trouble skips the pass: held leases keep being renewed meanwhile."""
        if not self._ownership.leasing or not self._ownership.joined:
            return
        try:
            inventory = self._inventory()
            balance = self._ownership.balance(list(inventory))
        except (PyMongoError, StorageError, redis.RedisError) as exc:
            logger.warning("Rebalancing skipped: %s", exc)
            return
        gone = [c for c in self._children.values() if c.key not in inventory]
        lost = [c.key for c in self._children.values() if c.key in inventory and not self._ownership.holds(c.key)]
        if gone:
            logger.info("Stopping %d mailbox(es) whose integration was removed", len(gone))
            self._hand_over([c.key for c in gone], drain=False)
        self.leases_lost(lost)
        if balance.release:
            logger.info("Handing %d mailbox(es) over: %d held, fair share %d of %d on %d node(s)",
                        len(balance.release), len(self._ownership.held()), balance.target, len(inventory),
                        balance.nodes)
            self._hand_over(balance.release)
        by_key = {c.key: c for c in self._children.values()}
        for key in self._ownership.held():
            if key not in inventory:
                continue
            subdomain, inbox_id, version = inventory[key][:3]
            child = by_key.get(key)
            if child is not None and child.version == version:
                continue
            try:
                with bound(subdomain):
                    kind, doc = self._find(inbox_id)
                    if doc is None:
                        continue
                    if child is not None:
                        logger.info("Integration %s (%s) changed on another node: restarting its listener",
                                    inbox_id, kind)
                        self._stop_children([self._children.pop((subdomain, inbox_id))])
                    self._start(doc, subdomain, kind=kind)
            except Exception as exc:  # noqa: BLE001 - one broken integration must not stop the others
                logger.error("Cannot start the mailbox of integration %s: %s", inbox_id, exc)

    def leases_lost(self, keys: list[str]) -> None:
        """Forget the mailboxes of leases this node lost (the lease keeper already stopped them)."""
        lost = set(keys)
        children = [self._children.pop(k) for k, c in list(self._children.items()) if c.key in lost]
        if children:
            logger.warning("Stopped listening to %d mailbox(es) whose lease was lost", len(children))
            self._stop_children(children)

    # -- events (told by children and timers) -----------------------------------------------------------------------
    def child_failed(self, inbox_id: str, generation: int, error: str, subdomain: str = "os") -> None:
        child = self._children.get((subdomain, inbox_id))
        if child is None or child.generation != generation:
            return
        if self._clock() - child.started_at >= HEALTHY_RUN_SECONDS:
            child.failures = 0
        child.failures += 1
        child.ref = None
        delay = min(self._max_delay, 0.5 * 2 ** (child.failures - 1)) * self._rng.uniform(0.5, 1.0)
        logger.warning("Listener of %s integration %s failed (%s); restarting in %.1f s", child.kind, inbox_id, error,
                       delay)
        child.timer = self._timer(delay, self._restart_failed_later, args=(inbox_id, generation, subdomain))
        child.timer.daemon = True
        child.timer.start()

    def restart_failed(self, inbox_id: str, generation: int, subdomain: str = "os") -> None:
        child = self._children.get((subdomain, inbox_id))
        if child is None or child.generation != generation:
            return  # removed or replaced meanwhile
        try:
            with bound(subdomain):
                kind, doc = self._find(inbox_id)
                if doc is None or not self._should_listen(doc, subdomain):
                    self._children.pop((subdomain, inbox_id), None)
                    return
                self._start(doc, subdomain, failures=child.failures, kind=kind)
        except Exception as exc:  # noqa: BLE001 - e.g. MongoDB down: try again later, never give up silently
            self.child_failed(inbox_id, generation, f"restart failed: {exc}", subdomain)

    # -- internals ----------------------------------------------------------------------------------------------------
    def _restart_failed_later(self, inbox_id: str, generation: int, subdomain: str) -> None:
        try:
            self._self.restart_failed(inbox_id, generation, subdomain)
        except pykka.ActorDeadError:
            pass

    def _key(self, doc: dict[str, Any], subdomain: str) -> str:
        return self._ownership.key(subdomain, doc.get("_id", doc["inboxId"]))

    def _should_listen(self, doc: dict[str, Any], subdomain: str) -> bool:
        """The single ownership decision: this process holds the integration's lease."""
        return self._ownership.holds(self._key(doc, subdomain))

    def _claim(self, doc: dict[str, Any], subdomain: str) -> bool:
        """For a request: hold the lease, or take it now if it is free and this node is below its share."""
        return self._ownership.claim(self._key(doc, subdomain))

    def _inventory(self) -> dict[str, tuple[str, str, Any]]:
        """Every integration of every tenant: lease key -> (subdomain, inboxId, updatedAt)."""
        found: dict[str, tuple[str, str, Any]] = {}
        with pymongo.timeout(INVENTORY_TIMEOUT):
            for subdomain in self._tenants():
                with bound(subdomain):
                    for listener in list(self._listeners.values()):
                        for doc in listener.integrations.inventory():
                            found[self._key(doc, subdomain)] = (subdomain, doc["inboxId"], doc.get("updatedAt"))
        return found

    def _hand_over(self, keys: list[str], drain: bool = True) -> None:
        """Stop the mailboxes of ``keys``, let the pipeline finish their mail (so the next owner finds it done, and
        the cursor as far as it can go), then release the leases for another node to take."""
        wanted = set(keys)
        children = [self._children.pop(k) for k, c in list(self._children.items()) if c.key in wanted]
        self._stop_children(children)
        if children and drain:
            try:
                self._drain(DRAIN_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - released anyway: the next owner re-fetches from the cursor
                logger.warning("The pipeline did not finish within %.0f s (%s); releasing anyway", DRAIN_TIMEOUT,
                               exc)
        self._ownership.release(keys)

    def _alive(self, key: tuple[str, str]) -> bool:
        child = self._children.get(key)
        return child is not None and (child.ref is None or child.ref.is_alive())  # None: restart scheduled

    def _start(self, doc: dict[str, Any], subdomain: str = "os", failures: int = 0, *, kind: str = "imap") -> None:
        listener = self._listeners.get(kind)
        if listener is None:
            raise RequestError(f"no listener for integrations of kind {kind!r}")
        self._generation += 1
        ref = listener.factory(doc, supervisor=self._self, generation=self._generation, subdomain=subdomain)
        key = self._key(doc, subdomain)
        child = _Child(ref, self._generation, self._clock(), failures, key=key, version=doc.get("updatedAt"),
                       kind=kind)
        self._children[(subdomain, doc["inboxId"])] = child
        if not self._ownership.attach(key, ref):  # the lease was lost meanwhile: the fence did not see this one
            self._stop_children([self._children.pop((subdomain, doc["inboxId"]))])
            return
        logger.info("Listening to %s integration %s (%s)", kind, doc["inboxId"],
                    doc.get("user") or doc.get("name", ""))

    def _stop_children(self, children: list[_Child]) -> None:
        futures = []
        for child in children:
            if child.timer is not None:
                child.timer.cancel()
            if child.ref is not None:
                try:
                    futures.append((child.ref, child.ref.stop(block=False)))
                except pykka.ActorDeadError:
                    pass
        deadline = self._clock() + self._stop_timeout
        for ref, future in futures:
            try:
                future.get(timeout=min(STOP_GRACE, self._stop_timeout))
                continue
            except (pykka.Timeout, pykka.ActorDeadError):
                pass
            self._interrupt(ref)  # busy on its server (a slow login, a stalled fetch): its command fails at once
            try:
                future.get(timeout=max(0.0, deadline - self._clock()))
            except (pykka.Timeout, pykka.ActorDeadError):
                logger.warning("A mailbox did not stop within %.0f s", self._stop_timeout)


@dataclass
class _Listener:
    factory: Callable[..., pykka.ActorRef[Any]] | None
    integrations: Any


class SupervisorActor(pykka.ThreadingActor, Supervisor):
    def __init__(self, **kwargs: Any) -> None:
        pykka.ThreadingActor.__init__(self)
        Supervisor.__init__(self, **kwargs)

    def on_start(self) -> None:
        self._self = self.actor_ref.proxy()

    def on_stop(self) -> None:
        self.stop_all()
