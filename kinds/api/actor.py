"""The ``api`` kind's listener: one delivery actor per integration, started by the supervisor (runtime/kinds.py).

It runs :meth:`kinds.api.delivery.Delivery.run_once` when something is due (and at least every ``poll`` seconds,
so replies queued on any node are picked up), waiting in short slices and re-sending itself ``step`` so a stop
gets through within one slice. MongoDB trouble is logged and retried at the next poll; anything unexpected kills
the actor, which tells the supervisor (``child_failed``): it starts a fresh one with backoff.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import pykka
from pymongo.errors import PyMongoError

from kinds.api.delivery import Delivery
from runtime.logctx import bind_thread
from runtime.tenants import bind_thread as bind_tenant

__all__ = ["DeliveryActor"]

logger = logging.getLogger(__name__)

SLICE = 0.2  # seconds: the longest a stop waits


class DeliveryActor(pykka.ThreadingActor):
    def __init__(self, integration: dict[str, Any], *, supervisor: Any = None, generation: int = 0,
                 subdomain: str = "os", store: Any, fence: Any, retry: Any, poll: float = 1.0) -> None:
        super().__init__()
        self.inbox_id = integration["inboxId"]
        self._subdomain = subdomain
        self._supervisor = supervisor
        self._generation = generation
        self._delivery = Delivery(self.inbox_id, store=store, fence=fence, retry=retry)
        self._poll = poll
        self._next_run = 0.0

    def on_start(self) -> None:
        bind_thread(self.inbox_id, self._subdomain, kind="api")
        bind_tenant(self._subdomain)
        self._self = self.actor_ref.proxy()
        self._self.step.defer()

    def step(self) -> None:
        now = time.monotonic()
        if now >= self._next_run:
            try:
                due = self._delivery.run_once()
            except PyMongoError as exc:
                logger.warning("api integration %s: the outbox cannot be read (%s); trying again", self.inbox_id, exc)
                due = None
            self._next_run = time.monotonic() + min(self._poll, due if due is not None else self._poll)
        time.sleep(max(0.0, min(SLICE, self._next_run - time.monotonic())))
        self._self.step.defer()

    def on_failure(self, exception_type: Any, exception_value: BaseException | None, traceback: Any) -> None:
        logger.error("Delivery actor of api integration %s crashed: %r", self.inbox_id, exception_value)
        if self._supervisor is not None:
            try:
                self._supervisor.child_failed(self.inbox_id, self._generation, repr(exception_value),
                                              self._subdomain)
            except pykka.ActorDeadError:
                pass
