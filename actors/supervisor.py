"""Supervisor: the one place that decides which integrations this process listens to, and keeps them listened to.

It starts a mailbox actor per stored integration, starts/restarts/stops them on the procedures' requests, and
restarts a crashed one (pykka actors cannot restart) with capped exponential backoff and jitter; the backoff is
reset after a healthy run. Children tell ``child_failed`` from ``on_failure``; the generation number makes late
messages from a replaced child harmless.

``_should_listen`` is the single ownership decision: today every stored integration; with several nodes, a lease.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import pykka

from runtime.errors import RequestError
from runtime.tenants import bound

__all__ = ["Supervisor", "SupervisorActor"]

logger = logging.getLogger(__name__)

HEALTHY_RUN_SECONDS = 60.0


@dataclass
class _Child:
    ref: pykka.ActorRef[Any] | None
    generation: int
    started_at: float
    failures: int = 0
    timer: Any = None


class Supervisor:
    def __init__(self, *, storage: Any, mailbox_factory: Callable[..., pykka.ActorRef[Any]],
                 tenants: Callable[[], list[str]] = lambda: ["os"], max_delay: float = 30.0, stop_timeout: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 timer: Callable[..., Any] = threading.Timer, rng: random.Random | None = None) -> None:
        self._storage = storage
        self._factory = mailbox_factory
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
        for doc in self._storage.list_integrations():
            if self._should_listen(doc) and not self._alive((subdomain, doc["inboxId"])):
                try:
                    self._start(doc, subdomain)
                except Exception as exc:  # noqa: BLE001 - one broken integration must not stop the others
                    logger.error("Cannot start the mailbox of integration %s: %s", doc.get("inboxId"), exc)
                    self._storage.log("error", f"cannot start: {exc}", inbox_id=doc.get("inboxId"))
                    continue
                started += 1
        return started

    def ensure_listening(self, inbox_id: str, subdomain: str = "os") -> bool:
        """Listen to ``inbox_id`` if not already; returns True when a mailbox was started."""
        with bound(subdomain):
            doc = self._storage.get_integration(inbox_id)
            if doc is None:
                raise RequestError("Integration not found.")
            if not self._should_listen(doc) or self._alive((subdomain, inbox_id)):
                return False
            self._start(doc, subdomain)
            return True

    def restart(self, inbox_id: str, subdomain: str = "os") -> None:
        """Stop the mailbox (if any) and start a fresh one with the stored settings."""
        with bound(subdomain):
            doc = self._storage.get_integration(inbox_id)
            if doc is None:
                raise RequestError("Integration not found.")
            self.stop_listening(inbox_id, subdomain)
            if self._should_listen(doc):
                self._start(doc, subdomain)

    def stop_listening(self, inbox_id: str, subdomain: str = "os") -> bool:
        child = self._children.pop((subdomain, inbox_id), None)
        if child is None:
            return False
        self._stop_children([child])
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
        logger.warning("Mailbox %s failed (%s); restarting in %.1f s", inbox_id, error, delay)
        child.timer = self._timer(delay, self._restart_failed_later, args=(inbox_id, generation, subdomain))
        child.timer.daemon = True
        child.timer.start()

    def restart_failed(self, inbox_id: str, generation: int, subdomain: str = "os") -> None:
        child = self._children.get((subdomain, inbox_id))
        if child is None or child.generation != generation:
            return  # removed or replaced meanwhile
        try:
            with bound(subdomain):
                doc = self._storage.get_integration(inbox_id)
                if doc is None or not self._should_listen(doc):
                    self._children.pop((subdomain, inbox_id), None)
                    return
                self._start(doc, subdomain, failures=child.failures)
        except Exception as exc:  # noqa: BLE001 - e.g. MongoDB down: try again later, never give up silently
            self.child_failed(inbox_id, generation, f"restart failed: {exc}", subdomain)

    # -- internals ----------------------------------------------------------------------------------------------------
    def _restart_failed_later(self, inbox_id: str, generation: int, subdomain: str) -> None:
        try:
            self._self.restart_failed(inbox_id, generation, subdomain)
        except pykka.ActorDeadError:
            pass

    def _should_listen(self, doc: dict[str, Any]) -> bool:
        return True

    def _alive(self, key: tuple[str, str]) -> bool:
        child = self._children.get(key)
        return child is not None and (child.ref is None or child.ref.is_alive())  # None: restart scheduled

    def _start(self, doc: dict[str, Any], subdomain: str = "os", failures: int = 0) -> None:
        self._generation += 1
        ref = self._factory(doc, supervisor=self._self, generation=self._generation, subdomain=subdomain)
        self._children[(subdomain, doc["inboxId"])] = _Child(ref, self._generation, self._clock(), failures)
        logger.info("Listening to integration %s (%s)", doc["inboxId"], doc.get("user", ""))

    def _stop_children(self, children: list[_Child]) -> None:
        futures = []
        for child in children:
            if child.timer is not None:
                child.timer.cancel()
            if child.ref is not None:
                try:
                    futures.append(child.ref.stop(block=False))
                except pykka.ActorDeadError:
                    pass
        for future in futures:
            try:
                future.get(timeout=self._stop_timeout)
            except (pykka.Timeout, pykka.ActorDeadError):
                logger.warning("A mailbox did not stop within %.0f s", self._stop_timeout)


class SupervisorActor(pykka.ThreadingActor, Supervisor):
    def __init__(self, **kwargs: Any) -> None:
        pykka.ThreadingActor.__init__(self)
        Supervisor.__init__(self, **kwargs)

    def on_start(self) -> None:
        self._self = self.actor_ref.proxy()

    def on_stop(self) -> None:
        self.stop_all()
