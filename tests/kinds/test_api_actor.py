"""The api kind's delivery actor under pykka's failure rule (no servers): an unexpected error kills it and tells the
supervisor, which starts a fresh one; MongoDB trouble only waits for the next poll."""
from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest
from pymongo.errors import AutoReconnect

from kinds.api.actor import DeliveryActor


class Supervisor:
    def __init__(self) -> None:
        self.failed: list[tuple[str, int, str, str]] = []
        self.told = threading.Event()

    def child_failed(self, inbox_id: str, generation: int, error: str, subdomain: str) -> None:
        self.failed.append((inbox_id, generation, error, subdomain))
        self.told.set()


class Runs:
    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = errors
        self.calls = 0

    def run_once(self) -> float | None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return None


class Actor(DeliveryActor):
    def __init__(self, *args: Any, runs: Runs, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._delivery = runs  # type: ignore[assignment]  # the plain part, swapped for the test


def start(supervisor: Supervisor, runs: Runs) -> pykka.ActorRef[Any]:
    return Actor.start({"inboxId": "api-1"}, supervisor=supervisor, generation=3, store=None, fence=None,
                       retry=None, poll=0.05, runs=runs)


@pytest.fixture(autouse=True)
def _stop_actors():
    yield
    pykka.ActorRegistry.stop_all()


def test_an_unexpected_error_kills_the_actor_and_tells_the_supervisor():
    supervisor, runs = Supervisor(), Runs([RuntimeError("bug")])
    ref = start(supervisor, runs)
    assert supervisor.told.wait(5), "on_failure never ran: the error went into a future nobody reads"
    assert supervisor.failed == [("api-1", 3, "RuntimeError('bug')", "os")]
    ref.actor_stopped.wait(5)
    assert not ref.is_alive()


def test_mongodb_trouble_is_retried_at_the_next_poll_and_a_stop_gets_through():
    supervisor, runs = Supervisor(), Runs([AutoReconnect("down"), AutoReconnect("down")])
    ref = start(supervisor, runs)
    for _ in range(100):
        if runs.calls >= 3:
            break
        threading.Event().wait(0.05)
    assert runs.calls >= 3 and supervisor.failed == []
    ref.stop(timeout=5)
