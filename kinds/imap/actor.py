"""The actor of one mailbox (integration): runs a :class:`kinds.imap.mailbox.Mailbox` in its own thread.

It re-sends itself ``step`` after every tick, so stop and other messages (the pipeline's answers, the send path's
APPEND, the attachment route's fetch) get through between slices (pykka processes one message at a time).
"""
from __future__ import annotations

import logging
from typing import Any

import pykka

from actors.interrupt import interrupt, interruptible
from kinds.imap.mailbox import Mailbox
from runtime.logctx import bind_thread
from runtime.tenants import bind_thread as bind_tenant

__all__ = ["Mailbox", "MailboxActor"]

logger = logging.getLogger(__name__)

class MailboxActor(pykka.ThreadingActor, Mailbox):
    """Runs a :class:`Mailbox` in its own thread; tells ``supervisor.child_failed`` when it dies unexpectedly."""

    def __init__(self, integration: dict[str, Any], *, supervisor: Any = None, generation: int = 0,
                 **kwargs: Any) -> None:
        pykka.ThreadingActor.__init__(self)
        Mailbox.__init__(self, integration, **kwargs)
        self._supervisor = supervisor
        self._generation = generation

    interrupt = staticmethod(interrupt)  # actors/interrupt.py: cuts a mailbox's connection from any thread

    def on_start(self) -> None:
        interruptible(self)
        bind_thread(self.inbox_id, self._subdomain, kind="imap")
        bind_tenant(self._subdomain)
        self._reply_to = self.actor_ref.proxy()
        self._reply_to.step()

    def step(self) -> None:
        self.tick()
        self._reply_to.step()

    def on_stop(self) -> None:
        self.close()

    def on_failure(self, exception_type: Any, exception_value: BaseException | None, traceback: Any) -> None:
        self._disconnect()
        logger.error("Mailbox %s crashed: %r", self.inbox_id, exception_value)
        self._storage.log("error", f"mailbox crashed: {exception_value!r}", inbox_id=self.inbox_id)
        if self._supervisor is not None:
            try:
                self._supervisor.child_failed(self.inbox_id, self._generation, repr(exception_value), self._subdomain)
            except pykka.ActorDeadError:
                pass
