"""Per-folder progress of a mailbox: which UIDs were handed to the pipeline and how far the cursor may move.

The cursor is the highest UID such that every UID dispatched up to it is done, so after a crash a re-fetch from
the cursor can only repeat work (which the pipeline makes idempotent), never skip it. Pure logic, no I/O.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["FolderProgress"]


@dataclass
class FolderProgress:
    name: str
    uidvalidity: int | None = None
    cursor: int = 0  # last UID fully processed (persisted)
    high: int = 0  # highest UID dispatched or known to need nothing
    uidnext: int = 1  # as the server last said on SELECT
    initial: bool = False  # no cursor yet: import the last few days
    need_sync: bool = True
    caught_up: bool = False  # the last search found everything new (so the next one finds only what came since)
    pending: deque[int] = field(default_factory=deque)
    done: set[int] = field(default_factory=set)
    attempts: dict[int, int] = field(default_factory=dict)

    @property
    def inflight(self) -> int:
        return len(self.pending) - len(self.done)

    def dispatched(self, uid: int) -> None:
        if self.pending and uid <= self.pending[-1]:
            raise ValueError(f"UID {uid} dispatched out of order after {self.pending[-1]}")
        self.pending.append(uid)
        self.high = max(self.high, uid)

    def complete(self, uid: int) -> bool:
        """Mark ``uid`` done; returns True when the cursor moved."""
        if uid not in self.pending or uid in self.done:
            return False  # a late answer for work that was reset, or a duplicate answer
        self.done.add(uid)
        self.attempts.pop(uid, None)
        moved = False
        while self.pending and self.pending[0] in self.done:
            self.cursor = self.pending.popleft()
            self.done.discard(self.cursor)
            moved = True
        return moved

    def skip_to(self, uid: int) -> None:
        """Nothing to do up to ``uid`` (an empty folder or import window): move the cursor when nothing is pending."""
        self.high = max(self.high, uid)
        if not self.pending:
            self.cursor = max(self.cursor, uid)

    def reset(self, uidvalidity: int | None = None, cursor: int | None = None) -> None:
        """Forget what is in flight and start again from the cursor (or from ``cursor``)."""
        if uidvalidity is not None:
            self.uidvalidity = uidvalidity
        if cursor is not None:
            self.cursor = cursor
        self.high = self.cursor
        self.pending.clear()
        self.done.clear()
        self.need_sync = True
        self.caught_up = False
