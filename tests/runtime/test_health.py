"""Honest health (issue 14 finding 2), tick by tick against a fake server (no servers): an error that outlasts its
backoff, or an unverifiable certificate, makes the mailbox unHealthy with the server's words, through its retries,
until it fetches again; a single blip stays healthy; a skipped folder is a reason while the mailbox stays healthy."""
from __future__ import annotations

from typing import Any

from runtime.errors import MailboxError
from tests.actors.test_mailbox import FakeImap, MemoryStorage, Pipeline, mailbox
from tests.conftest import make_mail
from tests.runtime.test_folders import CyrusLikeImap, folder_mailbox

CERT = ("127.0.0.1:993: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate "
        "(_ssl.c:992)")


class Flaky:
    """An imap_factory that fails with ``errors`` (one per connect) and then connects to ``imap``."""

    def __init__(self, imap: FakeImap, errors: list[str]) -> None:
        self.imap, self.errors = imap, list(errors)

    def __call__(self, settings: Any) -> FakeImap:
        if self.errors:
            raise MailboxError(self.errors.pop(0))
        return self.imap


def run(box: Any, ticks: int) -> None:
    for _ in range(ticks):
        box.tick()


def test_an_unverifiable_certificate_is_unhealthy_at_once_and_stays_so_through_the_retries():
    storage, pipeline = MemoryStorage(), Pipeline()
    box = mailbox(Flaky(FakeImap({}), [CERT] * 4), storage, pipeline)
    box.tick()
    assert storage.health[-1] == {"state": "backoff", "healthy": False, "error": CERT, "synced": False}
    run(box, 40)  # the retries: connecting/backoff in turn, never healthy in between
    attempts = [h for h in storage.health if h["state"] == "connecting"]
    assert len(attempts) >= 4 and all(h["healthy"] is False and h["error"] == CERT for h in attempts[1:])
    assert box.status()["state"] == "idle"  # the certificate was fixed: fetching again, healthy
    assert storage.health[-1]["healthy"] is True and storage.health[-1]["error"] is None


def test_one_blip_stays_healthy_but_an_error_that_outlasts_its_backoff_is_unhealthy():
    storage, pipeline = MemoryStorage(), Pipeline()
    box = mailbox(Flaky(FakeImap({}), ["cannot connect to h:993: Connection refused"]), storage, pipeline)
    run(box, 10)
    assert [h["healthy"] for h in storage.health if h["state"] == "backoff"] == [True]
    assert box.status()["state"] == "idle"
    storage.health.clear()
    box2 = mailbox(Flaky(FakeImap({}), ["cannot connect to h:993: Connection refused"] * 3), storage, pipeline)
    run(box2, 3)
    backoffs = [h for h in storage.health if h["state"] == "backoff"]
    assert [h["healthy"] for h in backoffs[:2]] == [True, False]
    assert backoffs[1]["error"] == "cannot connect to h:993: Connection refused"


def test_a_skipped_folder_is_a_reason_while_the_mailbox_stays_healthy():
    imap = CyrusLikeImap({1: make_mail(to="u@x")}, support=False)
    storage = MemoryStorage()
    box = folder_mailbox(lambda settings: imap, storage, Pipeline())
    run(box, 6)
    assert storage.health[-1]["state"] == "idle" and storage.health[-1]["healthy"] is True
    assert storage.health[-1]["error"].startswith("folder 'Support' skipped")
