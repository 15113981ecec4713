"""Lease keeper: keeps this node's heartbeat and leases alive in Redis, and fences what it could not keep.

First it joins the nodes (:meth:`runtime.leases.Leases.join`, retried while Redis is unreachable). Then every
``renew_every`` (a quarter of the lease) it sends the heartbeat and renews every held lease in one round trip
(:meth:`runtime.leases.Leases.renew`), then tells the supervisor to ``rebalance``. Every ``TICK`` it drops the
leases whose last renewal is older than the deadline (60 % of the lease): their mailboxes are stopped directly
(:meth:`runtime.leases.Leases.drop`), without waiting for the supervisor, so a node cut off from Redis stops
listening seconds before its leases expire and another node may take them. It never blocks on anything but Redis
calls with a short timeout.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

import pykka
import redis

__all__ = ["LeaseKeeper", "LeaseKeeperActor"]

logger = logging.getLogger(__name__)

TICK = 0.25  # how often the deadlines are checked


class LeaseKeeper:
    def __init__(self, *, leases: Any, supervisor: Any, node_id: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._leases = leases  # runtime.leases.Leases
        self._node_id = node_id
        self._supervisor = supervisor  # a SupervisorActor proxy (or a plain Supervisor in tests)
        self._clock = clock
        self._next_renewal = 0.0
        self._outage = False
        self._pending: Any = None  # the last rebalance's future: one at a time

    def tick(self) -> None:
        """Join, renew when due, fence what is overdue. Never raises for Redis trouble."""
        if not self._leases.joined and not self._join():
            return
        if self._clock() >= self._next_renewal:
            self._next_renewal = self._clock() + self._leases.timings.renew_every
            self._renew()
            self._rebalance()
        self._lost(self._leases.overdue())

    def _join(self) -> bool:
        try:
            self._leases.join(self._node_id)
        except redis.RedisError as exc:
            if not self._outage:
                logger.warning("Cannot join the nodes in Redis (%s): listening to no mailbox until it answers", exc)
            self._outage = True
            return False
        self._outage = False
        return True

    def _renew(self) -> None:
        try:
            lost = self._leases.renew()
        except redis.RedisError as exc:
            if not self._outage:
                logger.warning("Cannot renew the leases of node %s (%s); retrying, their mailboxes stop in %.1f s "
                               "without a renewal", self._leases.node_id, exc, self._leases.timings.deadline)
            self._outage = True
            return
        if self._outage:
            logger.info("Leases of node %s renewed again", self._leases.node_id)
        self._outage = False
        self._lost(lost)

    def _rebalance(self) -> None:
        if self._pending is not None:
            try:
                self._pending.get(timeout=0)
            except pykka.Timeout:
                return  # the last pass is still running
            except Exception as exc:  # noqa: BLE001 - the supervisor logs its own trouble; keep going
                logger.debug("rebalance failed: %s", exc)
        try:
            self._pending = self._supervisor.rebalance()
        except pykka.ActorDeadError:
            self._pending = None

    def _lost(self, keys: list[str]) -> None:
        if not keys:
            return
        try:
            self._supervisor.leases_lost(keys)
        except pykka.ActorDeadError:
            pass


class LeaseKeeperActor(pykka.ThreadingActor, LeaseKeeper):
    def __init__(self, *, sleep: Callable[[float], None] = time.sleep, **kwargs: Any) -> None:
        pykka.ThreadingActor.__init__(self)
        LeaseKeeper.__init__(self, **kwargs)
        self._sleep = sleep
        self._self: Any = None

    def on_start(self) -> None:
        self._self = self.actor_ref.proxy()
        self._self.step()

    def step(self) -> None:
        self.tick()
        self._sleep(TICK)
        self._self.step()
