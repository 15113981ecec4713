"""The supervisor's decisions, with dummy mailbox actors and a captured timer (restart backoff runs instantly); the
lease-based ownership with a stand-in for runtime.leases.Leases (its Redis side is tested in tests/runtime and
tests/test_multinode.py)."""
from __future__ import annotations

import random
from typing import Any

import pykka
import pytest

from actors.supervisor import SupervisorActor
from runtime.errors import RequestError
from runtime.leases import Balance


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

    def inventory(self) -> list[dict[str, Any]]:
        return list(self.docs.values())

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


class Ownership:
    """Leases as the supervisor sees them: ``balance`` answers with ``next`` and holds what it says was acquired."""

    leasing = joined = True

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.released: list[str] = []
        self.refused: set[str] = set()  # attach() says the lease was lost meanwhile
        self.next = Balance(acquired=[], release=[], target=0, nodes=1)

    def key(self, subdomain: str, object_id: Any) -> str:
        return f"{subdomain}:imap:integration:{object_id}"

    def holds(self, key: str) -> bool:
        return key in self.keys

    def held(self) -> list[str]:
        return sorted(self.keys)

    def claim(self, key: str) -> bool:
        return key in self.keys

    def attach(self, key: str, ref: Any) -> bool:
        return key not in self.refused

    def release(self, keys: list[str]) -> None:
        self.released += keys
        self.keys -= set(keys)

    def balance(self, keys: list[str]) -> Balance:
        self.keys |= set(self.next.acquired)
        return self.next


def make(storage: Storage, timers: Timers, started: list[tuple[str, int]], fail: set[str] | None = None,
         **kwargs: Any) -> Any:
    def factory(doc: dict[str, Any], *, supervisor: Any, generation: int, subdomain: str = "os") -> Any:
        if doc["inboxId"] in (fail or set()):
            raise ValueError("broken settings")
        started.append((doc["inboxId"], generation))
        return DummyMailbox.start(doc)

    return SupervisorActor.start(storage=storage, mailbox_factory=factory, timer=timers, max_delay=4.0,
                                 rng=random.Random(1), **kwargs).proxy()


def test_starts_every_stored_integration_and_skips_a_broken_one(started):
    sup = make(Storage("a", "b", "c"), Timers(), started, fail={"b"})
    assert sup.start_all().get(timeout=5) == 2
    assert sorted(i for i, _ in started) == ["a", "c"]
    assert sup.listening().get(timeout=5) == {"a": True, "c": True}


def test_ensure_listening_is_idempotent_and_restart_replaces(started):
    storage = Storage("a")
    sup = make(storage, Timers(), started)
    assert sup.ensure_listening("a").get(timeout=5) is True
    assert sup.ensure_listening("a").get(timeout=5) is False
    sup.restart("a", unless_current=True).get(timeout=5)
    assert [g for _, g in started] == [1]  # a request's save found the same settings (updatedAt) running
    storage.docs["a"]["updatedAt"] = 2  # new settings saved
    sup.restart("a", unless_current=True).get(timeout=5)
    assert [g for _, g in started] == [1, 2]
    sup.restart("a").get(timeout=5)  # asked for a reconnect: always
    assert [g for _, g in started] == [1, 2, 3]
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


def alive() -> list[str]:
    return sorted(r.proxy().doc.get().get("inboxId") for r in pykka.ActorRegistry.get_by_class(DummyMailbox)
                  if r.is_alive())


def test_listens_only_where_it_holds_the_lease_and_hands_extras_over_after_the_pipeline_drained(started):
    owner, drained = Ownership(), []
    sup = make(Storage("a", "b", "c"), Timers(), started, ownership=owner, drain=drained.append)
    assert sup.start_all().get(timeout=5) == 0  # no lease yet
    assert sup.ensure_listening("a").get(timeout=5) is False  # a request cannot take what another node holds
    owner.next = Balance(acquired=["os:imap:integration:a", "os:imap:integration:b"], release=[], target=2, nodes=2)
    sup.rebalance().get(timeout=5)
    assert alive() == ["a", "b"]
    owner.next = Balance(acquired=[], release=["os:imap:integration:b"], target=1, nodes=3)
    sup.rebalance().get(timeout=5)
    assert alive() == ["a"] and owner.released == ["os:imap:integration:b"] and len(drained) == 1
    assert sup.listening().get(timeout=5) == {"a": True}


def test_restarts_a_mailbox_changed_on_another_node_and_stops_one_removed_there(started):
    owner, storage = Ownership(), Storage("a", "b")
    sup = make(storage, Timers(), started, ownership=owner)
    owner.next = Balance(acquired=["os:imap:integration:a", "os:imap:integration:b"], release=[], target=2, nodes=1)
    sup.rebalance().get(timeout=5)
    owner.next = Balance(acquired=[], release=[], target=2, nodes=1)
    storage.docs["a"]["updatedAt"] = 2  # updateIntegration served elsewhere
    del storage.docs["b"]  # removeIntegrations served elsewhere
    sup.rebalance().get(timeout=5)
    assert [i for i, _ in started] == ["a", "b", "a"] and alive() == ["a"]
    assert owner.released == ["os:imap:integration:b"]
    sup.rebalance().get(timeout=5)
    assert len(started) == 3  # nothing changed: nothing restarted


def test_a_lost_lease_stops_its_mailbox_and_a_mailbox_started_as_it_is_lost_is_stopped(started):
    owner = Ownership()
    sup = make(Storage("a", "b"), Timers(), started, ownership=owner)
    owner.keys = {"os:imap:integration:a", "os:imap:integration:b"}
    owner.refused = {"os:imap:integration:b"}  # lost between the check and the start: the fence missed it
    assert sup.ensure_listening("a").get(timeout=5) and sup.ensure_listening("b").get(timeout=5)
    assert alive() == ["a"] and sup.listening().get(timeout=5) == {"a": True}
    owner.keys.discard("os:imap:integration:a")
    sup.leases_lost(["os:imap:integration:a"]).get(timeout=5)
    assert alive() == [] and sup.listening().get(timeout=5) == {}
    assert owner.released == []  # a lost lease is not ours to release


class BusyMailbox(pykka.ThreadingActor):
    """Stuck in a command on its server until its connection is cut (the interrupt releases it)."""

    def __init__(self, released: Any) -> None:
        super().__init__()
        self.released = released

    def on_start(self) -> None:
        self.actor_ref.proxy().work()

    def work(self) -> None:
        self.released.wait(10)


def test_a_mailbox_busy_on_its_server_is_cut_so_a_restart_does_not_wait_out_its_command():
    import threading

    released = threading.Event()
    cut: list[Any] = []

    def factory(doc: dict[str, Any], *, supervisor: Any, generation: int, subdomain: str = "os") -> Any:
        return BusyMailbox.start(released)

    def interrupt(ref: Any) -> None:
        cut.append(ref)
        released.set()

    storage = Storage("a")
    sup = SupervisorActor.start(storage=storage, mailbox_factory=factory, timer=Timers(), interrupt=interrupt,
                                stop_timeout=5.0).proxy()
    assert sup.ensure_listening("a").get(timeout=5) is True
    storage.docs["a"]["updatedAt"] = 2
    sup.restart("a").get(timeout=10)
    assert len(cut) == 1 and not cut[0].is_alive()  # cut after the grace, and stopped then: no leftover session
    released.clear()
    sup.stop_listening("a").get(timeout=10)


class KindListener:
    """What runtime.kinds.Registry.listeners holds: a factory and the source of its kind's integrations."""

    def __init__(self, kind: str, storage: Storage, started: list[tuple[str, str]]) -> None:
        self.integrations = storage

        def factory(doc: dict[str, Any], *, supervisor: Any, generation: int, subdomain: str = "os") -> Any:
            started.append((kind, doc["inboxId"]))
            return DummyMailbox.start(doc)

        self.factory = factory


def test_each_integration_gets_the_listener_of_its_kind():
    started: list[tuple[str, str]] = []
    listeners = {"imap": KindListener("imap", Storage("m1", "m2"), started),
                 "api": KindListener("api", Storage("a1"), started)}
    proxy = SupervisorActor.start(storage=listeners["imap"].integrations, listeners=listeners).proxy()
    assert proxy.start_all().get(timeout=5) == 3
    assert sorted(started) == [("api", "a1"), ("imap", "m1"), ("imap", "m2")]
    started.clear()
    proxy.restart("a1").get(timeout=5)  # a procedure of the api kind asks
    assert started == [("api", "a1")]
    assert proxy.listening().get(timeout=5) == {"m1": True, "m2": True, "a1": True}
    assert proxy.stop_listening("a1").get(timeout=5) is True
    with pytest.raises(RequestError):
        proxy.restart("unknown").get(timeout=5)
