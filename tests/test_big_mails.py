"""Issue 12 item 8, against Dovecot: memory is bounded by bytes, not by count. Batches are sized from RFC822.SIZE
before fetching (``fetch_batch_bytes``), and a mail whose message document is over MongoDB's 16 MiB fails alone:
quarantined at once, the rest of its batch stored and announced, inbox not called again for any of them."""
from __future__ import annotations

import os
import threading
from email.message import EmailMessage
from typing import Any, Iterator

import pytest

from runtime.erxes import ErxesClient
from kinds.imap.connection import connect
from app.process import Runtime
from tests.conftest import make_mail, wait_for
from tests.e2e import runtime_config

MB = 1000 * 1000
BUDGET = 32 * 1024 * 1024  # the default fetch_batch_bytes


def big_mail(to: str, n: int, size: int = 20 * MB) -> bytes:
    """A mail of about ``size`` bytes: a short text and a base64 attachment."""
    msg = EmailMessage()
    msg["From"] = f"Sender {n} <sender{n}@example.com>"
    msg["To"] = to
    msg["Subject"] = f"big {n}"
    msg["Message-ID"] = f"<big-{n}-{os.urandom(4).hex()}@example.com>"
    msg.set_content(f"mail {n} carries a large attachment")
    msg.add_attachment(os.urandom(size * 3 // 4 - 2000), maintype="application", subtype="octet-stream",
                       filename=f"blob{n}.bin")
    return bytes(msg)


def huge_text_mail(to: str) -> bytes:
    """A mail of ~17 MB of text: its message document (the body as HTML) cannot be held by MongoDB (16 MiB)."""
    line = "x" * 70 + "\n"
    msg = EmailMessage()
    msg["From"] = "Huge Sender <huge@example.com>"
    msg["To"] = to
    msg["Subject"] = "huge text"
    msg["Message-ID"] = "<huge@example.com>"
    msg.set_content(line * (17 * MB // len(line)), cte="7bit")
    return bytes(msg)


class FetchLog:
    """Wraps the IMAP factory: every ``UID FETCH`` of mail bodies, with the UIDs it asked for."""

    def __init__(self) -> None:
        self.body_fetches: list[list[int]] = []
        self.sizes: dict[int, int] = {}
        self.lock = threading.Lock()

    def factory(self, settings: Any) -> Any:
        client = connect(settings)
        original = client.fetch

        def fetch(uids: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(uids, data, *args, **kwargs)
            with self.lock:
                if any(b"BODY" in (d if isinstance(d, bytes) else str(d).encode()) for d in data):
                    self.body_fetches.append(sorted(result))
                for uid, item in result.items():
                    if b"RFC822.SIZE" in item:
                        self.sizes[uid] = int(item[b"RFC822.SIZE"])
            return result

        client.fetch = fetch
        return client


@pytest.fixture
def conversation_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The subject of every inbox create-or-update-conversation call the runtime makes."""
    calls: list[str] = []
    original = ErxesClient.create_or_update_conversation

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(str(kwargs.get("content")))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ErxesClient, "create_or_update_conversation", counted)
    return calls


@pytest.fixture
def big_runtime(services: dict[str, str], mongo_url: str, prefix: str) -> Iterator[tuple[Runtime, FetchLog]]:
    fetches = FetchLog()
    rt = Runtime(runtime_config(services, mongo_url=mongo_url, prefix=prefix, pipeline_lanes=1))
    rt.imap_factory = fetches.factory
    try:
        rt.start()
        yield rt, fetches
    finally:
        rt.stop()


def done(db: Any, inbox_id: str) -> list[dict[str, Any]]:
    return list(db.imap_messages.find({"inboxIntegrationId": inbox_id, "ingestState": "done"}, {"body": 0}))


def test_six_20_mb_mails_are_fetched_in_batches_within_the_byte_budget(big_runtime, caller, mailserver, db):
    rt, fetches = big_runtime
    user, password = mailserver.add_user()
    mailserver.append_many(user, password, [big_mail(f"{user}@localhost", n) for n in range(6)])
    caller.create_integration("inbox-big", mailserver.details(user, password))  # all six wait: one search finds them
    wait_for(lambda: len(done(db, "inbox-big")) == 6, timeout=120, message=lambda: (
        f"six stored mails; fetches {fetches.body_fetches}, state "
        f"{db.imap_integrations.find_one({'inboxId': 'inbox-big'}, {'state': 1, 'error': 1, '_id': 0})}"))
    assert len(fetches.body_fetches) == 6, fetches.body_fetches
    for uids in fetches.body_fetches:
        assert sum(fetches.sizes[u] for u in uids) <= max(BUDGET, max(fetches.sizes[u] for u in uids))
    assert all(19 * MB < fetches.sizes[u] < 21 * MB for u in fetches.sizes)
    last = max(fetches.sizes)
    wait_for(lambda: db.imap_cursors.find_one({"integrationId": "inbox-big", "lastUid": last}), timeout=10,
             message="the cursor past the last mail")
    assert db.imap_quarantine.count_documents({}) == 0


def test_a_mail_too_large_for_a_document_fails_alone_and_is_quarantined_at_once(big_runtime, caller, mailserver, db,
                                                                                conversation_calls):
    rt, fetches = big_runtime
    user, password = mailserver.add_user()
    to = f"{user}@localhost"
    mailserver.append_many(user, password, [make_mail(to=to, subject="before", message_id="<before@example.com>"),
                                            huge_text_mail(to),
                                            make_mail(to=to, subject="after", message_id="<after@example.com>")])
    caller.create_integration("inbox-huge", mailserver.details(user, password))
    [entry] = wait_for(lambda: list(db.imap_quarantine.find({"integrationId": "inbox-huge"}, {"raw": 0})),
                       timeout=60, message="the huge mail in quarantine")
    assert "DocumentTooLarge" in entry["reason"] and entry["times"] == 1, entry
    assert entry["uid"] == 2 and entry["size"] > 16 * 1024 * 1024
    stored = wait_for(lambda: (d := done(db, "inbox-huge")) and len(d) == 2 and d, timeout=30,
                      message="the other two stored")
    assert sorted(m["messageId"] for m in stored) == ["<after@example.com>", "<before@example.com>"]
    wait_for(lambda: db.imap_cursors.find_one({"integrationId": "inbox-huge", "lastUid": 3}), timeout=10,
             message="the cursor past all three")
    notes = list(db.standalone_message_notifications.find())
    assert sorted(n["messageId"] for n in notes) == sorted(str(m["_id"]) for m in stored)
    assert all(n["deliveries"] == 1 for n in notes)
    # inbox was asked once per stored mail, and never for the huge one (it would get a conversation whose message
    # is never stored: an empty conversation in erxes); no retry of the batch, nothing called again
    assert sorted(conversation_calls) == ["after", "before"], conversation_calls
    assert db.imap_messages.count_documents({"messageId": "<huge@example.com>"}) == 0
    assert db.imap_intents.count_documents({}) == 0
    assert not any("UID 2 failed" in str(e.get("message")) for e in db.imap_logs.find())


def test_store_messages_isolates_a_document_pymongo_refuses_before_sending(storage):
    """pymongo's own DocumentTooLarge (no PyMongoError; raised for a document over the 48 MB message size) fails
    only its document; the server's write error for one over 16 MiB does the same (the Dovecot test above)."""
    def doc(n: int, body: str) -> dict[str, Any]:
        return {"inboxIntegrationId": "i", "messageId": f"<m{n}>", "body": body, "ingestState": "done"}

    stored = storage.store_messages([doc(1, "a"), doc(2, "x" * (50 * MB)), doc(3, "c"), doc(4, "y" * (17 * MB))])
    assert [d and d["messageId"] for d in stored] == ["<m1>", None, "<m3>", None]
    assert sorted(d["messageId"] for d in storage.messages.find({}, {"messageId": 1})) == ["<m1>", "<m3>"]


def test_the_byte_budget_counts_mails_in_flight_and_keeps_the_cursor_behind_them() -> None:
    """Unit (the fake IMAP of tests/actors/test_mailbox.py): with a budget of 2.5 mails, the mailbox fetches two,
    waits while the pipeline holds them, and fetches the next as soon as one is done; a mail over max_mail_bytes
    costs nothing (never downloaded); the cursor never passes a mail that is not done."""
    from types import SimpleNamespace

    from tests.actors.test_mailbox import CONFIG, FakeImap, MemoryStorage, Pipeline, clock, mailbox

    body = "y" * 3000
    mails = {u: make_mail(to="u@x", subject=f"s{u}", body=body) for u in (1, 2, 3, 4)}
    mails[5] = make_mail(to="u@x", subject="huge", body="z" * 20_000)  # over max_mail_bytes (10,000)
    mails[6] = make_mail(to="u@x", subject="s6", body=body)
    size = len(mails[1])
    imap = FakeImap(mails)
    storage, pipeline = MemoryStorage(), Pipeline()
    config = SimpleNamespace(**{**vars(CONFIG), "fetch_batch": 10, "fetch_batch_bytes": int(size * 2.5)})
    box = mailbox(lambda settings: imap, storage, pipeline, config)
    box.tick()  # connect
    box.tick()
    assert [j.uid for j in pipeline.jobs] == [1, 2] and imap.downloaded == [1, 2]
    box.tick()  # the two in flight fill the budget: nothing is fetched
    assert imap.downloaded == [1, 2]
    box.mail_done("INBOX", 2)
    assert ("i1", "INBOX") not in storage.cursors  # 1 is not done
    box.tick()  # room for one more
    assert imap.downloaded == [1, 2, 3]
    box.mail_done("INBOX", 1)
    box.mail_done("INBOX", 3)  # mail is waiting: the cursor is saved after its fetch, not in its way
    box.tick()  # 4, then 5 (quarantined unread: costs nothing), then 6
    assert imap.downloaded == [1, 2, 3, 4, 6] and [q["uid"] for q in storage.quarantined] == [5]
    # the move to 3 waits while 4 and 6 are in flight (one write later saves it), and never passes them
    assert storage.cursors.get(("i1", "INBOX"), (7, 0))[1] <= 3
    clock.now += 1.0  # once the move waited CURSOR_EVERY, the next tick saves it
    box.tick()
    assert storage.cursors[("i1", "INBOX")] == (7, 3)  # not past 4 and 6, which are in flight
    for uid in (4, 6):
        box.mail_done("INBOX", uid)
    assert storage.cursors[("i1", "INBOX")] == (7, 6)


def test_a_single_mail_over_the_budget_goes_alone() -> None:
    from types import SimpleNamespace

    from tests.actors.test_mailbox import CONFIG, FakeImap, MemoryStorage, Pipeline, mailbox

    imap = FakeImap({u: make_mail(to="u@x", subject=f"s{u}", body="y" * 3000) for u in (1, 2)})
    storage, pipeline = MemoryStorage(), Pipeline()
    config = SimpleNamespace(**{**vars(CONFIG), "fetch_batch": 10, "fetch_batch_bytes": 100})
    box = mailbox(lambda settings: imap, storage, pipeline, config)
    box.tick()
    box.tick()
    assert imap.downloaded == [1]
    box.tick()
    assert imap.downloaded == [1]  # 1 is still held
    box.mail_done("INBOX", 1)
    box.tick()
    assert imap.downloaded == [1, 2]
