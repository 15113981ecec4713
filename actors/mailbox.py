"""The actor of one mailbox (integration): runs a :class:`runtime.mailbox.Mailbox` in its own thread.

It re-sends itself ``step`` after every tick, so stop and other messages (the pipeline's answers, the send path's
APPEND, the attachment route's fetch) get through between slices (pykka processes one message at a time).
"""
from __future__ import annotations

import logging
import weakref
from typing import Any

import pykka

from runtime.logctx import bind_thread
from runtime.mailbox import Mailbox
from runtime.tenants import bind_thread as bind_tenant

__all__ = ["Mailbox", "MailboxActor"]

logger = logging.getLogger(__name__)

_LIVE: weakref.WeakValueDictionary[str, MailboxActor] = weakref.WeakValueDictionary()  # actor URN -> actor


class MailboxActor(pykka.ThreadingActor, Mailbox):
    """Runs a :class:`Mailbox` in its own thread; tells ``supervisor.child_failed`` when it dies unexpectedly."""

    def __init__(self, integration: dict[str, Any], *, supervisor: Any = None, generation: int = 0,
                 **kwargs: Any) -> None:
        pykka.ThreadingActor.__init__(self)
        Mailbox.__init__(self, integration, **kwargs)
        self._supervisor = supervisor
        self._generation = generation

    @staticmethod
    def interrupt(ref: pykka.ActorRef[Any]) -> None:
        """From any thread: cut the connection of the mailbox behind ``ref`` (the lease fence). A command blocked on
        the server fails at once instead of after ``imap_timeout_seconds``; queue the stop first."""
        actor = _LIVE.get(ref.actor_urn)
        if actor is not None:
            actor.cut()

    def on_start(self) -> None:
        _LIVE[self.actor_urn] = self
        bind_thread(self.inbox_id, self._subdomain)
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
