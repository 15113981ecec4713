"""The plain lease logic without servers: fair share, the hand-over plan, timings, and the book with its fence
(time injected; a dictionary stands in for the few Redis commands the book uses besides the Lua scripts, which the
multi-node test runs against the real Redis)."""
from __future__ import annotations

from typing import Any

import pytest
from redis.commands.core import Script
from redis.connection import Encoder
from redis.lock import Lock

from runtime.leases import Leases, SoleOwner, Timings, fair_share, lease_key, plan_share


class DictRedis:
    """SET NX, GET/MGET, the node set, the Lock's renew and release scripts and a pipeline of them; keys never
    expire here (expiry is Redis's job)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get_encoder(self) -> Encoder:
        return Encoder("utf-8", "strict", False)

    def register_script(self, script: str) -> Script:
        return Script(self, script)

    def set(self, name: str, value: Any, nx: bool = False, px: int | None = None) -> bool:
        if nx and name in self.data:
            return False
        self.data[name] = value if isinstance(value, bytes) else str(value).encode()
        return True

    def evalsha(self, sha: str, numkeys: int, key: str, token: Any, *rest: Any) -> int:
        owned = self.data.get(key) == (token if isinstance(token, bytes) else str(token).encode())
        if owned and sha == Lock.lua_release.sha:  # type: ignore[union-attr]
            del self.data[key]
        return int(owned)

    def pipeline(self, transaction: bool = True) -> Any:
        client, calls = self, []

        class Pipe:
            def __getattr__(self, name: str) -> Any:
                return lambda *args, **kwargs: calls.append(lambda: getattr(client, name)(*args, **kwargs))

            def execute(self) -> list[Any]:
                return [call() for call in calls]

        return Pipe()

    def get(self, name: str) -> Any:
        return self.data.get(name)

    def mget(self, names: list[str]) -> list[Any]:
        return [self.data.get(n) for n in names]

    def smembers(self, name: str) -> set[bytes]:
        return set(self.data.get(name, set()))

    def sadd(self, name: str, *members: str) -> None:
        self.data.setdefault(name, set()).update(m.encode() for m in members)

    def delete(self, name: str) -> None:
        self.data.pop(name, None)

    def srem(self, name: str, *members: str) -> None:
        self.data.get(name, set()).difference_update(m.encode() for m in members)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Ref:
    def __init__(self) -> None:
        self.stopped = False

    def stop(self, block: bool = True) -> None:
        self.stopped = True


def book(client: DictRedis, clock: Clock, node: str = "n1") -> Leases:
    leases = Leases(client, timings=Timings.from_lease(10), suffix=".t", clock=clock)  # type: ignore[arg-type]
    leases.node_id = node  # joined (join() itself watches a heartbeat over time: the multi-node test covers it)
    return leases


@pytest.mark.parametrize(("mailboxes", "nodes", "share"), [(30, 3, 10), (31, 3, 11), (31, 4, 8), (30, 4, 8),
                                                         (0, 2, 0), (5, 0, 5), (1, 3, 1)])
def test_fair_share_is_the_ceiling_of_mailboxes_per_node(mailboxes, nodes, share):
    assert fair_share(mailboxes, nodes) == share


def test_plan_hands_over_the_extras_and_takes_free_ones_up_to_the_share():
    keys = [lease_key("os", i) for i in range(12)]
    over = plan_share(node_id="a", held=keys[:10], free=[], target=8)
    assert len(over.release) == 2 and set(over.release) <= set(keys[:10]) and over.acquire == []
    under = plan_share(node_id="a", held=keys[:6], free=keys[6:], target=8)
    assert len(under.acquire) == 2 and set(under.acquire) <= set(keys[6:]) and under.release == []
    assert plan_share(node_id="a", held=keys[:8], free=keys[8:], target=8) == plan_share(node_id="a", held=[],
                                                                                       free=[], target=0)
    # deterministic, and nodes prefer different keys (rendezvous hashing), so a node that rejoins gets its own back
    assert plan_share(node_id="a", held=[], free=keys, target=4) == plan_share(node_id="a", held=[], free=keys[::-1],
                                                                                target=4)
    choices = {n: set(plan_share(node_id=n, held=[], free=keys, target=4).acquire) for n in ("a", "b", "c")}
    assert len(set.union(*choices.values())) > 4


def test_timings_renew_twice_before_the_deadline_and_stop_before_expiry():
    t = Timings.from_lease(10)
    assert 2 * t.renew_every < t.deadline < t.lease
    assert t.lease - t.deadline >= 3  # time left for the mailboxes to stop before another node may take over


def test_lease_key_is_erxes_lock_key_with_a_fixed_subdomain_in_single_tenant_mode():
    single = book(DictRedis(), Clock())
    assert single.key("acme", "65a1") == "os:imap:integration:65a1"
    saas = Leases(DictRedis(), timings=Timings.from_lease(10), saas=True)  # type: ignore[arg-type]
    assert saas.key("acme", "65a1") == "acme:imap:integration:65a1"


def test_claim_takes_a_free_lease_and_refuses_one_held_by_another_node():
    client, clock = DictRedis(), Clock()
    mine, theirs = book(client, clock, "n1"), book(client, clock, "n2")
    assert mine.claim("os:imap:integration:1") and mine.holds("os:imap:integration:1")
    assert client.data["os:imap:integration:1"] == b"n1"  # the owner's node id: the admin command reads it
    assert not theirs.claim("os:imap:integration:1")
    assert SoleOwner().claim("anything") and SoleOwner().holds("anything")


def test_an_unjoined_node_claims_nothing():
    leases = book(DictRedis(), Clock())
    leases.node_id = ""
    assert not leases.claim("os:imap:integration:1")


def test_balance_takes_up_to_the_share_and_names_the_extras():
    client, clock = DictRedis(), Clock()
    keys = [f"os:imap:integration:{i}" for i in range(9)]
    a, b, c = (book(client, clock, n) for n in ("a", "b", "c"))
    client.sadd(a.nodes_key, "a")
    client.set(a.node_key("a"), "i")
    first = a.balance(keys)  # alone: everything
    assert (len(first.acquired), first.release, first.target, first.nodes) == (9, [], 9, 1)
    for n in ("b", "c"):
        client.sadd(a.nodes_key, n)
        client.set(a.node_key(n), "i")
    again = a.balance(keys)
    assert (again.acquired, len(again.release), again.target) == ([], 6, 3)
    a.release(again.release)
    assert b.balance(keys).acquired and c.balance(keys).acquired
    assert sorted(len(x.held()) for x in (a, b, c)) == [3, 3, 3]
    assert not a.claim(next(k for k in keys if not a.holds(k)))  # at its share: a request does not take more

def test_a_request_for_a_new_integration_takes_it_at_once_when_the_share_allows():
    client, clock = DictRedis(), Clock()
    keys = [f"os:imap:integration:{i}" for i in range(4)]
    a, b = (book(client, clock, n) for n in ("a", "b"))
    for n in ("a", "b"):
        client.sadd(a.nodes_key, n)
        client.set(a.node_key(n), "i")
    assert a.balance(keys).target == 2 and b.balance(keys).target == 2
    assert (len(a.held()), len(b.held())) == (2, 2)
    freed = b.held()[0]
    b.release([freed])
    assert not a.claim(freed)  # free, but counted by the last pass: a is at its share (2 of 4)
    # a fifth integration raises the share to 3: the node its createIntegration reaches listens now, not at the
    # next pass (2.5 s later)
    assert a.claim("os:imap:integration:new") and a.holds("os:imap:integration:new")
    assert not a.claim("os:imap:integration:newer")  # 3 held: its share with one more new one is still 3


def test_a_lone_node_takes_every_new_integration_at_once():
    client, clock = DictRedis(), Clock()
    leases = book(client, clock, "a")
    client.sadd(leases.nodes_key, "a")
    client.set(leases.node_key("a"), "i")
    assert leases.balance(["os:imap:integration:0"]).target == 1
    assert all(leases.claim(f"os:imap:integration:new{i}") for i in range(5))  # created one after another
    assert len(leases.held()) == 6


def test_a_lease_not_renewed_by_the_deadline_is_dropped_and_its_mailbox_stopped():
    client, clock = DictRedis(), Clock()
    leases = book(client, clock)
    ref = Ref()
    assert leases.claim("k1") and leases.attach("k1", ref)
    clock.now += leases.timings.deadline - 0.1
    assert leases.overdue() == [] and not ref.stopped
    clock.now += 0.2
    assert leases.overdue() == ["k1"]
    assert ref.stopped and not leases.holds("k1")
    assert not leases.attach("k1", Ref())  # a mailbox started meanwhile must be stopped by its starter


def test_a_dropped_lease_cuts_its_listener_after_queueing_its_stop():
    client, clock = DictRedis(), Clock()
    order: list[str] = []
    leases = Leases(client, timings=Timings.from_lease(10), clock=clock,  # type: ignore[arg-type]
                    interrupt=lambda ref: order.append(f"cut {'after' if ref.stopped else 'before'} stop"))
    leases.join("n1")
    assert leases.claim("k1") and leases.attach("k1", Ref())
    clock.now += leases.timings.deadline + 0.1
    assert leases.overdue() == ["k1"] and order == ["cut after stop"]
    assert leases.status()["leases"] == 0


def test_renewal_moves_the_deadline_and_finds_a_lease_another_node_took():
    client, clock = DictRedis(), Clock()
    leases = book(client, clock)
    kept, taken = Ref(), Ref()
    assert leases.claim("k1") and leases.attach("k1", kept) and leases.claim("k2") and leases.attach("k2", taken)
    clock.now += leases.timings.deadline - 1
    client.data["k2"] = b"n2"  # expired meanwhile and taken by another node
    assert leases.renew() == ["k2"]
    assert taken.stopped and not kept.stopped and leases.held() == ["k1"]
    assert client.data[leases.node_key("n1")] and b"n1" in client.data[leases.nodes_key]  # the heartbeat
    clock.now += leases.timings.deadline - 1
    assert leases.overdue() == []  # renewed a moment ago, not at the first claim


def test_leaving_releases_every_lease_and_the_heartbeat():
    client, clock = DictRedis(), Clock()
    leases = book(client, clock)
    leases.renew()
    assert leases.claim("k1") and leases.claim("k2")
    client.data["k3"] = b"n2"
    leases.leave()
    assert "k1" not in client.data and "k2" not in client.data and client.data["k3"] == b"n2"
    assert leases.node_key("n1") not in client.data and b"n1" not in client.data[leases.nodes_key]
