"""The plain pieces of the ingest pipeline's lanes: which lane a mail takes, the work waiting for a lane's actor,
and how a batch of mails is threaded among itself. No I/O, no actors (those are in ``actors/``).

A process runs N lanes, each a customer actor feeding a conversation actor. A mail's lane is fixed when it
enters: the lane of its parent (In-Reply-To, then References from the nearest) while that parent is still in
the pipeline, else a hash of (integration, thread root). So the mails of one thread pass one lane in the order
the mailbox fetched them: a reply is stored after its parent and lands in its conversation ("one new thread ->
one conversation"), and different threads' round trips overlap in different lanes.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Backlog", "InFlight", "Incoming", "Later", "Stripes", "ThreadMap", "grouped", "lane_of", "pick_thread",
           "thread_ids", "thread_root", "unique_rounds"]


@dataclass(frozen=True)
class Incoming:
    """One fetched mail on its way through the pipeline (listener -> customer -> conversation -> listener)."""

    inbox_id: str
    subdomain: str
    folder: str  # where the listener found it (IMAP: the folder; a push: its own marker)
    uid: int  # its position there, what the listener's progress counts (IMAP: the UID)
    mail: object  # runtime.mail.parse.ParsedMail
    mailbox: object  # whom to tell ``mail_done(folder, uid)`` / ``mail_failed(folder, uid, error)``
    fetched_at: dt.datetime | None = None
    kind: str = "-"  # the listener's kind (its logs and the pipeline's lines about this mail carry it)


@dataclass(frozen=True)
class Later:
    """Work a stage hands to the next stage of its lane, to be done after the mails handed over before it (the
    customer stage's cache writes: out of the way of those mails' own writes, which decide when they are stored)."""

    run: Callable[[], None]


def thread_ids(mail: Any) -> list[str]:
    """The ids a mail's thread is known by: In-Reply-To first, then References from the nearest ancestor."""
    return [m for m in dict.fromkeys([mail.in_reply_to, *reversed(list(mail.references))]) if m]


def thread_root(mail: Any) -> str:
    """The first References id, else In-Reply-To, else the mail's own Message-ID."""
    refs = list(mail.references)
    return (refs[0] if refs else "") or mail.in_reply_to or mail.message_id or ""


def lane_of(inbox_id: str, root: str, lanes: int) -> int:
    """A stable lane for (integration, thread root): the same in every process and run."""
    digest = hashlib.blake2b(f"{inbox_id}\x00{root}".encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % lanes


class InFlight:
    """Which lane each mail in the pipeline took, by (integration, Message-ID), until the lane finished it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lanes: dict[tuple[str, str], list[int]] = {}  # [lane, how many copies are in flight]

    def route(self, inbox_id: str, mail: Any, lanes: int) -> int:
        """The lane for ``mail``, recorded as in flight (call :meth:`finished` once for each call)."""
        with self._lock:
            lane = next((self._lanes[(inbox_id, m)][0] for m in thread_ids(mail) if (inbox_id, m) in self._lanes),
                        None)
            if lane is None:
                lane = lane_of(inbox_id, thread_root(mail), lanes)
            entry = self._lanes.setdefault((inbox_id, mail.message_id), [lane, 0])
            entry[1] += 1
            return entry[0]  # a copy of a mail already in flight follows it

    def finished(self, inbox_id: str, message_id: str) -> None:
        with self._lock:
            entry = self._lanes.get((inbox_id, message_id))
            if entry is not None:
                entry[1] -= 1
                if entry[1] <= 0:
                    del self._lanes[(inbox_id, message_id)]

    def __len__(self) -> int:
        return len(self._lanes)


class Backlog:
    """Work waiting for one actor. :meth:`put` from any thread; the first item put while none is scheduled tells
    the actor (``wake``) to come and :meth:`take` everything waiting at once, so whatever queued up while it was
    busy becomes its next batch. ``wake`` is told under the lock, so an item put before a later message to the
    actor (e.g. a drain's) is always taken before that message is handled."""

    def __init__(self, wake: Callable[[], Any] | None = None) -> None:
        self.wake = wake
        self._lock = threading.Lock()
        self._items: list[Any] = []
        self._scheduled = False

    def put(self, item: Any) -> None:
        self.put_many([item])

    def put_many(self, items: Iterable[Any]) -> None:
        with self._lock:
            self._items.extend(items)
            if self._scheduled or not self._items:
                return
            assert self.wake is not None, "the backlog's actor is not attached"
            try:
                self.wake()
            except Exception:  # the actor is gone: nothing will take these (the mailbox re-fetches them)
                self._items.clear()
                raise
            self._scheduled = True

    def take(self) -> list[Any]:
        with self._lock:
            items, self._items = self._items, []
            self._scheduled = False
            return items

    def __len__(self) -> int:
        return len(self._items)


def unique_rounds(items: list[Any], key: Callable[[Any], Any]) -> list[list[Any]]:
    """Split ``items`` (in order) into rounds in which no key repeats: a second copy of a mail waits for the
    first to be finished, and is then recognised as done."""
    rounds: list[list[Any]] = []
    seen: list[set[Any]] = []
    for item in items:
        k = key(item)
        i = next((n for n, keys in enumerate(seen) if k not in keys), len(rounds))
        if i == len(rounds):
            rounds.append([])
            seen.append(set())
        rounds[i].append(item)
        seen[i].add(k)
    return rounds


class ThreadMap:
    """The conversations of the mails of one batch, as they get one, by every id each mail is known by (its own
    Message-ID and its thread ids): a reply handled after its parent in the same batch finds the parent's."""

    def __init__(self) -> None:
        self._by_id: dict[str, str] = {}

    def add(self, mail: Any, conversation_id: str) -> None:
        for m in [mail.message_id, *thread_ids(mail)]:
            if m:
                self._by_id.setdefault(m, conversation_id)

    def find(self, mail: Any) -> str | None:
        return next((self._by_id[m] for m in thread_ids(mail) if m in self._by_id), None)


def pick_thread(found: Iterable[dict[str, Any]], ids: Iterable[str]) -> str | None:
    """Among stored ``found`` messages, the conversation of the earliest one that is one of ``ids`` or shares one
    of them as a reference (for one mail of a batch; ``Storage.thread_candidates`` finds them for a whole batch)."""
    wanted = set(ids)
    matches = [doc for doc in found if doc.get("inboxConversationId") and (
        doc.get("messageId") in wanted or wanted.intersection(doc.get("references") or ()))]
    if not matches:
        return None
    return min(matches, key=lambda d: (d.get("createdAt") is None, d.get("createdAt") or 0))["inboxConversationId"]


class Stripes:
    """Locks by key for threads of different lanes, e.g. around creating a new sender's customer: ``n`` locks,
    a key's lock chosen by hash (two keys may share one; that only makes one wait)."""

    def __init__(self, n: int = 64) -> None:
        self._locks = [threading.Lock() for _ in range(n)]
        self._saves = 0  # how many times a lane noted a save (see :meth:`saved`)

    def lock(self, key: Any) -> threading.Lock:
        return self._locks[hash(key) % len(self._locks)]

    def saved(self) -> None:
        """A lane created and is saving something the others may look for (a new customer)."""
        self._saves += 1  # one bytecode under the GIL; a lost race only costs a lookup

    @property
    def saves(self) -> int:
        """Saves noted so far: unchanged since a lookup means no lane of this process added anything since."""
        return self._saves


def grouped(items: Iterable[Any], key: Callable[[Any], Any]) -> dict[Any, list[Any]]:
    """``items`` grouped by ``key`` (first appearance first, order kept within each group)."""
    groups: dict[Any, list[Any]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups
