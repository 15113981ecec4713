"""How many leases a node aims at, and which ones (runtime/leases.py runs the plan against Redis).

Plain arithmetic, no Redis: every node computes the same fair share from the same counts, and rendezvous hashing
of (node, integration) picks the keys, so nodes agree on who takes what without talking to each other
(docs/scaling.md).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Iterable

__all__ = ["Plan", "fair_share", "plan_share"]


def fair_share(integrations: int, nodes: int) -> int:
    """How many mailboxes each node aims at: ``ceil(integrations / nodes)``."""
    return math.ceil(integrations / max(1, nodes))


@dataclass(frozen=True)
class Plan:
    release: list[str] = field(default_factory=list)
    acquire: list[str] = field(default_factory=list)


def _score(node_id: str, key: str) -> int:
    """Rendezvous (highest-random-weight) score: each node prefers the keys it scores highest, so moves are few and
    the same keys go back to a node that rejoins."""
    return int.from_bytes(hashlib.blake2b(f"{node_id}|{key}".encode(), digest_size=8).digest(), "big")


def plan_share(*, node_id: str, held: Iterable[str], free: Iterable[str], target: int) -> Plan:
    """Above ``target``: hand over the extras this node scores lowest. Below: take free ones, highest first."""
    held, free = list(held), list(free)
    if len(held) > target:
        return Plan(release=sorted(held, key=lambda k: _score(node_id, k))[:len(held) - target])
    return Plan(acquire=sorted(free, key=lambda k: _score(node_id, k), reverse=True)[:target - len(held)])
