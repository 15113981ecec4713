"""``imap-runtime`` as users run it (a separate process): restarts, kill -9, SIGTERM."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import MailServer, both_servers, make_mail, wait_for
from tests.e2e import Caller, RuntimeProcess

LOG_DIR = Path("/tmp/imap-runtime/test-logs")


@pytest.fixture
def process(services: dict[str, str], mongo_url: str, prefix: str, request: Any) -> Iterator[RuntimeProcess]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    proc = RuntimeProcess(services, mongo_url=mongo_url, prefix=prefix, log_path=LOG_DIR / f"{request.node.name}.log")
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.kill()


def done_count(db: Any, inbox_id: str) -> int:
    return db.imap_messages.count_documents({"inboxIntegrationId": inbox_id, "ingestState": "done"})


@both_servers
def test_mail_arriving_while_stopped_and_a_kill_9_midway_lose_and_duplicate_nothing(
        process: RuntimeProcess, caller: Caller, mailserver: MailServer, db: Any):
    process.start()
    user, password = mailserver.add_user()
    caller.create_integration("inbox-k", mailserver.details(user, password))
    wait_for(lambda: (db.imap_integrations.find_one({"inboxId": "inbox-k"}) or {}).get("state") == "idle",
             timeout=10, message="IDLE")

    started = time.monotonic()
    assert process.terminate(timeout=10) == 0  # SIGTERM: a clean stop, well within 10 s
    assert time.monotonic() - started < 10
    assert "Stopped" in process.log_tail()

    senders = [f"customer{i}@example.com" for i in range(20)]
    mails = [make_mail(to=f"{user}@localhost", sender=senders[i % 20], subject=f"mail {i}",
                       message_id=f"<m{i}@example.com>") for i in range(200)]
    mailserver.append_many(user, password, mails)

    process.start()
    wait_for(lambda: done_count(db, "inbox-k") >= 40, timeout=30, interval=0.01, message="40 mails stored")
    process.kill()  # kill -9 in the middle of ingesting
    interrupted_at = done_count(db, "inbox-k")
    assert interrupted_at < 200, "ingest finished before the kill: the test proves nothing"

    process.start()
    wait_for(lambda: done_count(db, "inbox-k") == 200, timeout=60, message="all 200 mails")
    stored = list(db.imap_messages.find({"inboxIntegrationId": "inbox-k"}))
    assert sorted(m["messageId"] for m in stored) == sorted(f"<m{i}@example.com>" for i in range(200))
    conversations = {m["inboxConversationId"] for m in stored}
    assert len(conversations) == 200
    assert db.standalone_conversations.count_documents({"integrationId": "inbox-k"}) == 200  # each created once
    wait_for(lambda: db.imap_customers.count_documents({"inboxIntegrationId": "inbox-k"}) == 20, timeout=10,
             message="the 20 customers to be remembered")
    assert db.standalone_customers.count_documents({}) == 20
    # `done` follows RabbitMQ's confirmation of the announcement; the emulation consumes it a moment later
    wait_for(lambda: {n["messageId"] for n in db.standalone_message_notifications.find()} == {
        str(m["_id"]) for m in stored}, timeout=10, message="every stored message announced once")
    wait_for(lambda: (db.imap_cursors.find_one({"integrationId": "inbox-k"}) or {}).get("lastUid") == 200,
             timeout=5, message="the cursor at the last UID")
    assert process.terminate(timeout=10) == 0
