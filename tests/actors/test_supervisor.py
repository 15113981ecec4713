"""The supervisor's decisions, with dummy mailbox actors and a captured timer (restart backoff runs instantly)."""
from __future__ import annotations

import random
from typing import Any

import pykka
import pytest

from actors.supervisor import SupervisorActor
from runtime.errors import RequestError


class DummyMailbox(pykka.ThreadingActor):
    def __init__(self, doc: dict[str, Any]) -> None:
        super().__init__()
        self.doc = doc


class Storage:
    def __init__(self, *ids: str) -> None:
        self.docs = {i: {"inboxId": i, "user": f"{i}@x"} for i in ids}
        self.logged: list[str] = []

    def list_integrations(self) -> list[dict[str, Any]]:
        return list(self.docs.values())

    def get_integration(self, inbox_id: str) -> dict[str, Any] | None:
        return self.docs.get(inbox_id)

    def log(self, kind: str, message: str, **kw: Any) -> None:
        self.logged.append(message)


class Timers:
    def __init__(self) -> None:
        self.pending: list[tuple[float, Any, tuple[Any, ...]]] = []

    def __call__(self, delay: float, fn: Any, args: tuple[Any, ...] = ()) -> Any:
        timers = self

        class T:
            daemon = True

            def start(self) -> None:
                timers.pending.append((delay, fn, args))

            def cancel(self) -> None:
                pass

        return T()

    def fire(self) -> float:
        delay, fn, args = self.pending.pop(0)
        fn(*args)
        return delay


@pytest.fixture
def started() -> list[tuple[str, int]]:
    return []


def make(storage: Storage, timers: Timers, started: list[tuple[str, int]], fail: set[str] | None = None) -> Any:
    def factory(doc: dict[str, Any], *, supervisor: Any, generation: int, subdomain: str = "os") -> Any:
        if doc["inboxId"] in (fail or set()):
            raise ValueError("broken settings")
        started.append((doc["inboxId"], generation))
        return DummyMailbox.start(doc)

    return SupervisorActor.start(storage=storage, mailbox_factory=factory, timer=timers, max_delay=4.0,
                                 rng=random.Random(1)).proxy()


def test_starts_every_stored_integration_and_skips_a_broken_one(started):
    sup = make(Storage("a", "b", "c"), Timers(), started, fail={"b"})
    assert sup.start_all().get(timeout=5) == 2
    assert sorted(i for i, _ in started) == ["a", "c"]
    assert sup.listening().get(timeout=5) == {"a": True, "c": True}


def test_ensure_listening_is_idempotent_and_restart_replaces(started):
    sup = make(Storage("a"), Timers(), started)
    assert sup.ensure_listening("a").get(timeout=5) is True
    assert sup.ensure_listening("a").get(timeout=5) is False
    sup.restart("a").get(timeout=5)
    assert [g for _, g in started] == [1, 2]
    assert len(pykka.ActorRegistry.get_by_class(DummyMailbox)) == 1
    with pytest.raises(RequestError, match="Integration not found."):
        sup.ensure_listening("zzz").get(timeout=5)


def test_crashed_child_restarts_with_capped_backoff(started):
    timers = Timers()
    sup = make(Storage("a"), timers, started)
    sup.ensure_listening("a").get(timeout=5)
    delays = []
    for _ in range(6):
        _, generation = started[-1]
        sup.child_failed("a", generation, "boom").get(timeout=5)
        sup.child_failed("a", generation - 1, "late message from an old child").get(timeout=5)
        delays.append(timers.fire())
        sup.listening().get(timeout=5)  # flush: the restart message was handled
    assert len(started) == 7
    for i, delay in enumerate(delays):  # 0.5 s doubling, capped at 4 s, with jitter in [50%, 100%]
        base = min(4.0, 0.5 * 2 ** i)
        assert base / 2 <= delay <= base, (i, delay)
    assert len(timers.pending) == 0


def test_stop_listening_cancels_a_pending_restart(started):
    timers = Timers()
    sup = make(Storage("a"), timers, started)
    sup.ensure_listening("a").get(timeout=5)
    sup.child_failed("a", 1, "boom").get(timeout=5)
    assert sup.stop_listening("a").get(timeout=5) is True
    timers.fire()  # the timer fires anyway (cancel may race): nothing may start
    sup.listening().get(timeout=5)
    assert len(started) == 1
