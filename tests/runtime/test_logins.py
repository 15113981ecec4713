"""The login pacer (plain logic, a fake clock)."""
from __future__ import annotations

import pytest

from kinds.imap.logins import LoginPacer, shared_pacer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_mailbox_gets_at_most_n_logins_in_any_window():
    clock = Clock()
    pacer = LoginPacer(per_mailbox=3, window=60.0, per_host_per_second=1000.0, clock=clock)
    for _ in range(3):
        assert pacer.reserve("a", "h") == 0.0
        clock.now += 1.0
    assert pacer.reserve("a", "h") == pytest.approx(57.0)  # the first login leaves the window at 1060
    assert pacer.at_limit("a") and not pacer.at_limit("b")
    assert pacer.reserve("b", "h") == 0.0  # another mailbox is not held back
    clock.now = 1060.0
    assert pacer.reserve("a", "h") == 0.0
    assert pacer.reserve("a", "h") == pytest.approx(1.0)  # the second one leaves at 1061


def test_logins_to_one_host_are_spread_out_and_other_hosts_are_not_held_back():
    clock = Clock()
    pacer = LoginPacer(per_mailbox=10, window=600.0, per_host_per_second=4.0, clock=clock)
    assert [pacer.reserve(f"m{i}", "imap.example.com") for i in range(3)] == [0.0, pytest.approx(0.25),
                                                                              pytest.approx(0.25)]
    assert pacer.reserve("m9", "other.example.com") == 0.0
    clock.now += 0.25
    assert pacer.reserve("m1", "imap.example.com") == 0.0
    assert pacer.reserve("m2", "imap.example.com") == pytest.approx(0.25)
    clock.now += 10.0  # an idle host does not bank a burst
    assert pacer.reserve("m2", "imap.example.com") == 0.0
    assert pacer.reserve("m3", "imap.example.com") == pytest.approx(0.25)


def test_a_wait_is_not_counted_as_a_login():
    clock = Clock()
    pacer = LoginPacer(per_mailbox=1, window=10.0, per_host_per_second=1.0, clock=clock)
    assert pacer.reserve("a", "h") == 0.0
    for _ in range(5):
        assert pacer.reserve("a", "h") > 0
    clock.now += 10.0
    assert pacer.reserve("a", "h") == 0.0


def test_limits_must_be_positive_and_the_process_shares_one_pacer():
    with pytest.raises(ValueError):
        LoginPacer(per_mailbox=0)
    first = shared_pacer(per_mailbox=7, window=600.0, per_host_per_second=50.0, per_host_in_flight=5)
    assert shared_pacer(per_mailbox=7, window=600.0, per_host_per_second=50.0, per_host_in_flight=5) is first


def test_at_most_n_logins_to_a_host_are_under_way_at_once():
    clock = Clock()
    pacer = LoginPacer(per_mailbox=10, window=600.0, per_host_per_second=1000.0, per_host_in_flight=2,
                       clock=clock)
    assert pacer.reserve("a", "slow.example.com") == 0.0
    clock.now += 1.0
    assert pacer.reserve("b", "slow.example.com") == 0.0
    clock.now += 1.0
    assert pacer.reserve("c", "slow.example.com") > 0  # both slots taken: the handshakes are still running
    assert pacer.reserve("c", "other.example.com") == 0.0
    pacer.done("slow.example.com")
    assert pacer.reserve("c", "slow.example.com") == 0.0
    assert pacer.reserve("d", "slow.example.com") > 0
