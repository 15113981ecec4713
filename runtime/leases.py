"""Leases: which node listens to which mailbox, kept in Redis (``docs/scaling.md`` says why Redis and how).

Keys, in the deployment's Redis::

    <subdomain>:imap:integration:<_id>   the lease of one integration (``imap_integrations._id``): the owner's node
                                         id, expiring after ``lease_seconds``. erxes's own plugin-imap-api locks the
                                         same key (redlock, SET NX PX), so a Node replica and ours never both listen
                                         during a migration. ``subdomain`` is the tenant; ``os`` in single-tenant mode
    imap:nodes<suffix>                   the node ids that announced themselves (``suffix``: MESSAGE_BROKER_PREFIX)
    imap:node<suffix>:<node id>          a node's heartbeat: its running instance's token, expiring like a lease

A lease is a redis-py :class:`redis.lock.Lock` whose token is the node id: taken with ``SET NX PX``, renewed and
released with the Lock's Lua scripts (which check the token), so only the owner can extend or drop it. Because the
token is the node id, a node restarted after a crash (same ``NODE_ID``) takes its leases back at once instead of
waiting for them to expire; :meth:`Leases.join` first makes sure no other live process runs under that id.

:class:`Leases` keeps the book of the leases this process holds, each with the time its last successful renewal was
*sent* (the server's expiry is at least ``lease_seconds`` after that). A lease not renewed within ``deadline``
(60 % of the lease) is dropped locally and its mailbox stopped (the *fence*: :meth:`Leases.attach` registers the
mailbox actor), so a node cut off from Redis stops listening seconds before anyone else can take over.
:class:`SoleOwner` is the same interface without Redis (``LEASES=off``: one node owns everything).
"""
from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import pykka
import redis
from redis.lock import Lock

from runtime._share import Plan, fair_share, plan_share

__all__ = ["Balance", "Leases", "Plan", "SoleOwner", "Timings", "fair_share", "lease_key", "plan_share"]

logger = logging.getLogger(__name__)

SINGLE_TENANT = "os"  # the fixed subdomain of the lease keys in single-tenant mode


def lease_key(subdomain: str, object_id: Any) -> str:
    """erxes's lock key of an integration: ``<subdomain>:imap:integration:<imap_integrations._id>``."""
    return f"{subdomain}:imap:integration:{object_id}"


@dataclass(frozen=True)
class Timings:
    """All derived from the lease: renew every quarter, give up at 60 %, heartbeats expire with the lease."""

    lease: float
    renew_every: float
    deadline: float
    node_ttl: float

    @classmethod
    def from_lease(cls, lease: float) -> Timings:
        return cls(lease=lease, renew_every=lease / 4, deadline=lease * 0.6, node_ttl=lease)


@dataclass(frozen=True)
class Balance:
    """One rebalancing pass: the leases just acquired, the ones to hand over, and what it was based on."""

    acquired: list[str]
    release: list[str]
    target: int
    nodes: int


class SoleOwner:
    """No leases (``LEASES=off``, and tests): this process owns every integration."""

    joined = True
    leasing = False

    def __init__(self, node_id: str = "") -> None:
        self.node_id = node_id

    def key(self, subdomain: str, object_id: Any) -> str:
        return lease_key(subdomain, object_id)

    def holds(self, key: str) -> bool:
        return True

    def claim(self, key: str) -> bool:
        return True

    def attach(self, key: str, ref: Any) -> bool:
        return True

    def release(self, keys: Iterable[str]) -> None:
        pass

    def status(self) -> dict[str, Any]:
        return {"id": self.node_id, "leases": "off"}


class Leases:
    """This process's leases and heartbeat in Redis (thread-safe). See the module docstring."""

    leasing = True

    def __init__(self, client: redis.Redis, *, timings: Timings, suffix: str = "", saas: bool = False,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 interrupt: Callable[[Any], None] | None = None) -> None:
        self._client = client
        self._interrupt = interrupt  # cuts a listener's connection at once (a command blocked on the server ends)
        self.timings = timings
        self._suffix = suffix
        self._saas = saas
        self._clock = clock
        self._sleep = sleep
        self.node_id = ""
        self._instance = secrets.token_hex(8)
        self._mutex = threading.Lock()
        self._held: dict[str, float] = {}  # lease key -> when its last successful renewal was sent
        self._refs: dict[str, Any] = {}  # lease key -> the mailbox actor listening under it (the fence)
        self._nodes: list[str] = []
        self._target: int | None = None  # the fair share found by the last rebalancing pass
        self._inventory: set[str] = set()  # the lease keys that pass counted
        Lock(client, "imap:leases:scripts")  # registers the Lock's Lua scripts, which renew() runs in a pipeline

    @property
    def joined(self) -> bool:
        return bool(self.node_id)

    @property
    def nodes_key(self) -> str:
        return f"imap:nodes{self._suffix}"

    def node_key(self, node_id: str) -> str:
        return f"imap:node{self._suffix}:{node_id}"

    def key(self, subdomain: str, object_id: Any) -> str:
        return lease_key(subdomain if self._saas else SINGLE_TENANT, object_id)

    # -- the node ------------------------------------------------------------------------------------------------
    def join(self, node_id: str) -> str:
        """Announce this node. If a heartbeat of ``node_id`` from another instance exists, watch it for a renewal
        period: a dead predecessor's (kill -9) stays still and we take its place and leases; a live twin renews it,
        and then we run under ``<node_id>-<instance>`` instead. Returns the node id in use. Raises RedisError."""
        key = self.node_key(node_id)
        other = self._client.get(key)
        if other is not None and other.decode() != self._instance:
            first = self._client.pttl(key)
            waited = max(0.0, self.timings.renew_every * 1.5 - (self.timings.node_ttl * 1000 - first) / 1000)
            self._sleep(waited)
            again, left = self._client.get(key), self._client.pttl(key)
            if again is not None and (again != other or left > first - waited * 1000 + 500):
                logger.error("Another live process runs as node %s: running as %s-%s instead (set NODE_ID)",
                             node_id, node_id, self._instance[:6])
                node_id = f"{node_id}-{self._instance[:6]}"
                key = self.node_key(node_id)
            else:
                logger.info("Node %s: a previous instance stopped without releasing; taking its leases back",
                            node_id)
        self.node_id = node_id
        self._beat(self._client)
        logger.info("Node %s joined (leases of %.0f s, renewed every %.1f s)", node_id, self.timings.lease,
                    self.timings.renew_every)
        return node_id

    def leave(self) -> None:
        """Release every lease at once and remove the heartbeat (SIGTERM). Call once the mailboxes stopped."""
        if not self.joined:
            return
        with self._mutex:
            keys, self._held, self._refs = list(self._held), {}, {}
        try:
            self._release_in_redis(keys)
            pipe = self._client.pipeline(transaction=False)
            pipe.delete(self.node_key(self.node_id))
            pipe.srem(self.nodes_key, self.node_id)
            pipe.execute()
            logger.info("Node %s left: %d lease(s) released", self.node_id, len(keys))
        except redis.RedisError as exc:
            logger.warning("Node %s: cannot release its leases (%s); they expire in %.0f s", self.node_id, exc,
                           self.timings.lease)

    def nodes(self) -> list[str]:
        """The live nodes (heartbeat not expired); forgets dead ones. Raises RedisError."""
        ids = sorted(m.decode() for m in self._client.smembers(self.nodes_key))
        beats = self._client.mget([self.node_key(i) for i in ids]) if ids else []
        alive = [i for i, beat in zip(ids, beats) if beat is not None]
        dead = [i for i, beat in zip(ids, beats) if beat is None]
        if dead:
            self._client.srem(self.nodes_key, *dead)
        if self.joined and self.node_id not in alive:
            alive.append(self.node_id)
        self._nodes = sorted(alive)
        return self._nodes

    def status(self) -> dict[str, Any]:
        with self._mutex:
            held = len(self._held)
        return {"id": self.node_id, "leases": held, "nodes": len(self._nodes), "target": self._target}

    # -- leases ----------------------------------------------------------------------------------------------
    def holds(self, key: str) -> bool:
        with self._mutex:
            return key in self._held

    def held(self) -> list[str]:
        with self._mutex:
            return list(self._held)

    def claim(self, key: str) -> bool:
        """For a request (create, update, listen): True if this node holds ``key``, or is below its fair share and
        could take it now (it was free, or still ours from before a restart)."""
        if self.holds(key):
            return True
        if not self.joined or len(self.held()) >= self._share_with(key):
            return False
        try:
            taken = self._take(key) or self._take_back(key)
        except redis.RedisError as exc:
            logger.warning("Cannot take the lease %s: %s", key, exc)
            return False
        if taken:
            self._inventory.add(key)  # counted until the next pass counts it anyway
        return taken

    def _share_with(self, key: str) -> float:
        """The fair share once ``key`` counts: a new integration (not in the last pass's inventory) raises it, so
        the node a request reaches takes a new mailbox at once rather than at the next pass (2.5 s later)."""
        if self._target is None:
            return math.inf
        return fair_share(len(self._inventory | {key}), len(self._nodes))

    def owners(self, keys: list[str]) -> dict[str, str | None]:
        """Who holds each lease (a node id, erxes's redlock token, or None). Raises RedisError."""
        values = self._client.mget(keys) if keys else []
        return {k: (v.decode(errors="replace") if v is not None else None) for k, v in zip(keys, values)}

    def balance(self, keys: list[str]) -> Balance:
        """A rebalancing pass over every integration's lease key: take back our own, compute the fair share, and
        take free ones up to it or name the extras to hand over. Raises RedisError."""
        nodes = self.nodes()
        owners = self.owners(keys)
        target = fair_share(len(keys), len(nodes))
        self._target = target
        self._inventory = set(keys)
        mine = [k for k, owner in owners.items() if owner == self.node_id]
        acquired = [k for k in mine if not self.holds(k) and self._take_back(k)]
        with self._mutex:
            gone = [k for k in self._held if owners.get(k) not in (None, self.node_id)]  # someone else's now
        self.drop(gone)
        plan = plan_share(node_id=self.node_id, held=mine, free=[k for k, o in owners.items() if o is None],
                          target=target)
        acquired += [k for k in plan.acquire if self._take(k)]
        return Balance(acquired=acquired, release=plan.release, target=target, nodes=len(nodes))

    def renew(self) -> list[str]:
        """Heartbeat and renew every held lease in one round trip; returns (and drops) the leases found lost.
        Raises RedisError (the leases then age towards their deadline)."""
        with self._mutex:
            keys = list(self._held)
        sent = self._clock()
        pipe = self._client.pipeline(transaction=False)
        self._beat(pipe)
        for key in keys:
            Lock.lua_reacquire(keys=[key], args=[self.node_id, int(self.timings.lease * 1000)],  # type: ignore[misc]
                               client=pipe)
        renewed = pipe.execute()[2:]
        lost = [k for k, ok in zip(keys, renewed) if not ok]
        with self._mutex:
            for key, ok in zip(keys, renewed):
                if ok and key in self._held:
                    self._held[key] = sent
        if lost:
            logger.warning("Node %s lost %d lease(s) to expiry or another owner: %s", self.node_id, len(lost),
                           ", ".join(lost[:5]))
        return self.drop(lost)

    def overdue(self) -> list[str]:
        """Drop (and fence) the leases not renewed within the deadline; returns them."""
        now = self._clock()
        with self._mutex:
            late = [k for k, sent in self._held.items() if now - sent > self.timings.deadline]
        if late:
            logger.error("Node %s: %d lease(s) not renewed for %.1f s (Redis unreachable?): stopping their "
                         "mailboxes before the leases can expire", self.node_id, len(late), self.timings.deadline)
        return self.drop(late)

    def attach(self, key: str, ref: Any) -> bool:
        """Register the mailbox actor listening under ``key``; False (and nothing registered) if the lease is no
        longer held, in which case the caller must stop it."""
        with self._mutex:
            if key not in self._held:
                return False
            self._refs[key] = ref
            return True

    def drop(self, keys: Iterable[str]) -> list[str]:
        """Forget leases without asking Redis, and stop their mailboxes now (the fence)."""
        refs = []
        with self._mutex:
            for key in keys:
                self._held.pop(key, None)
                refs.append(self._refs.pop(key, None))
        for ref in refs:
            if ref is not None:
                try:
                    ref.stop(block=False)
                except pykka.ActorDeadError:
                    pass
                if self._interrupt is not None:
                    self._interrupt(ref)  # after the stop is queued: the failed command is its last
        return list(keys)

    def release(self, keys: Iterable[str]) -> None:
        """Give leases up (after their mailboxes stopped): another node can take them at once."""
        keys = list(keys)
        with self._mutex:
            for key in keys:
                self._held.pop(key, None)
                self._refs.pop(key, None)
        try:
            self._release_in_redis(keys)
        except redis.RedisError as exc:
            logger.warning("Cannot release %d lease(s) (%s); they expire in %.0f s", len(keys), exc,
                           self.timings.lease)

    def wait_released(self, key: str, timeout: float) -> bool:
        """Wait until nobody holds ``key`` (or we do); False after ``timeout``."""
        deadline = self._clock() + timeout
        while True:
            try:
                owner = self.owners([key])[key]
            except redis.RedisError:
                owner = "?"
            if owner is None or owner == self.node_id:
                return True
            if self._clock() > deadline:
                return False
            self._sleep(0.2)

    # -- internals -------------------------------------------------------------------------------------------------
    def _beat(self, client: Any) -> None:
        client.set(self.node_key(self.node_id), self._instance, px=int(self.timings.node_ttl * 1000))
        client.sadd(self.nodes_key, self.node_id)

    def _lock(self, key: str) -> Lock:
        lock = Lock(self._client, key, timeout=self.timings.lease, thread_local=False)
        lock.local.token = self.node_id.encode()
        return lock

    def _take(self, key: str) -> bool:
        """SET NX PX: the lease if it is free."""
        sent = self._clock()
        if not self._lock(key).acquire(blocking=False, token=self.node_id):
            return False
        with self._mutex:
            self._held[key] = sent
        return True

    def _take_back(self, key: str) -> bool:
        """Renew a lease whose token is our node id: held by a previous instance of this node."""
        sent = self._clock()
        try:
            self._lock(key).reacquire()
        except redis.exceptions.LockNotOwnedError:
            return False
        with self._mutex:
            self._held[key] = sent
        return True

    def _release_in_redis(self, keys: list[str]) -> None:
        if not keys:
            return
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            Lock.lua_release(keys=[key], args=[self.node_id], client=pipe)  # type: ignore[misc]
        pipe.execute()
