"""Cutting a listener's connection from outside its thread (the lease fence, a stop that must not wait): a listener
actor that can be cut registers itself here on start; :func:`interrupt` then calls its ``cut()`` from any thread,
so a command blocked on its server fails at once instead of after its timeout. Kind-neutral: the supervisor and the
leases hold this function, not a kind's actor class."""
from __future__ import annotations

import weakref
from typing import Any, Protocol

import pykka

__all__ = ["Cuttable", "interrupt", "interruptible"]


class Cuttable(Protocol):
    actor_urn: str

    def cut(self) -> None: ...


_LIVE: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()  # actor URN -> actor


def interruptible(actor: Cuttable) -> None:
    """Called by the actor itself (its ``on_start``); forgotten when it is collected."""
    _LIVE[actor.actor_urn] = actor


def interrupt(ref: pykka.ActorRef[Any]) -> None:
    """From any thread: cut the connection of the listener behind ``ref``, if it registered; queue the stop first."""
    actor = _LIVE.get(ref.actor_urn)
    if actor is not None:
        actor.cut()
