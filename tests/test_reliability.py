"""Issue 5 reliability properties, against the real servers (Dovecot, SecantusDB, RabbitMQ); docs/reliability.md
lists what each test proves and the numbers measured.

1. kill -9 at 10 random moments while a real ``imap-runtime`` process ingests 1,000 mails: everything exactly once.
2. UIDVALIDITY changes under a mailbox (doveadm, and a folder recreated with renumbered UIDs): no duplicates, no
   mail missed.
3. 20 mailboxes with wrong passwords next to 20 good ones: the good ones' latency is unaffected, and each bad one
   tries to log in at most twice before it is unHealthy.
4. A corpus of 300+ malformed and hostile mails: each is stored, quarantined or deduplicated, no actor crashes,
   the cursor reaches the end and later mail is still ingested.
5. Malformed RPC requests over AMQP (read with a raw pika client) and over HTTP: each gets an error envelope and the
   runtime keeps serving.

Numbers are printed (run with ``-s`` to see them). ``RELIABILITY_SEED=<n>`` replays the kill test's moments.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import random
import re
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pika
import pykka
import pytest
from pika.spec import BasicProperties

from actors.conversation import ConversationActor
from actors.customer import CustomerActor
from kinds.imap.actor import MailboxActor
from runtime.errors import MailParseError
from runtime.mail.parse import parse_mail
from app.process import Runtime
from tests import corpus
from tests.conftest import MailServer, make_mail, wait_for
from tests.e2e import Caller, RuntimeProcess, free_port, runtime_config
from tests.faultproxy import FaultProxy

LOG_DIR = Path("/tmp/imap-runtime/test-logs")
FAST = {"idle_watchdog_seconds": 2.0, "imap_timeout_seconds": 2.0}


# -- fixtures and helpers ----------------------------------------------------------------------------------------------

@pytest.fixture
def process(services: dict[str, str], mongo_url: str, prefix: str, request: Any) -> Iterator[RuntimeProcess]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{request.node.name}.log"
    log.unlink(missing_ok=True)
    proc = RuntimeProcess(services, mongo_url=mongo_url, prefix=prefix, log_path=log)
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.kill()


@pytest.fixture
def runtime_factory(services: dict[str, str], mongo_url: str, prefix: str) -> Iterator[Callable[..., Runtime]]:
    started: list[Runtime] = []

    def start(**overrides: Any) -> Runtime:
        rt = Runtime(runtime_config(services, mongo_url=mongo_url, prefix=prefix, **{**FAST, **overrides}))
        started.append(rt)
        rt.start()
        return rt

    yield start
    for rt in started:
        rt.stop()


def state(db: Any, inbox_id: str) -> str | None:
    return (db.imap_integrations.find_one({"inboxId": inbox_id}) or {}).get("state")


def done_count(db: Any, inbox_id: str) -> int:
    return db.imap_messages.count_documents({"inboxIntegrationId": inbox_id, "ingestState": "done"})


def cursor(db: Any, inbox_id: str, folder: str = "INBOX") -> dict[str, Any]:
    return db.imap_cursors.find_one({"integrationId": inbox_id, "folder": folder}) or {}


def connect(caller: Caller, mailserver: MailServer, db: Any, inbox_id: str, *, user: tuple[str, str] | None = None,
            wait: bool = True, **details: Any) -> tuple[str, str]:
    user, password = user or mailserver.add_user()
    caller.create_integration(inbox_id, {**mailserver.details(user, password), **details})
    if wait:
        wait_for(lambda: state(db, inbox_id) == "idle", timeout=15, message=f"{inbox_id} IDLE")
    return user, password


def crashes(db: Any) -> list[str]:
    return [e["message"] for e in db.imap_logs.find({"message": {"$regex": "crashed"}})]


def doveadm(mailserver: MailServer, *args: str) -> None:
    subprocess.run(["doveadm", "-c", f"{mailserver.env['MAIL_DIR']}/dovecot.conf", *args], check=True, timeout=30,
                   capture_output=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 1. kill -9 at 10 random moments while ingesting 1,000 mails ------------------------------------------------------

REPEATS_PER_KILL = 2  # announcements a kill may repeat, on average over the kills (at most one per lane: 4)


@pytest.mark.timeout(420)
def test_kill_9_at_10_random_moments_while_ingesting_1000_mails(process, caller, mailserver, db):
    seed = int(os.environ.get("RELIABILITY_SEED") or random.SystemRandom().randrange(1, 10 ** 6))
    print(f"\n[kill -9] seed {seed} (replay: RELIABILITY_SEED={seed})")
    rnd = random.Random(seed)
    inbox = "inbox-kill"
    process.start()
    user, password = connect(caller, mailserver, db, inbox)
    assert process.terminate(timeout=10) == 0

    mails = corpus.realistic_mix(1000, f"{user}@localhost", seed=seed)
    t0 = time.monotonic()
    mailserver.append_many(user, password, [m.raw for m in mails])
    print(f"[kill -9] appended {len(mails)} mails ({sum(len(m.raw) for m in mails) // 1024} KiB) in "
          f"{time.monotonic() - t0:.1f} s while stopped; {len({m.thread for m in mails})} threads, "
          f"{len({m.sender for m in mails})} senders")

    targets = sorted(rnd.sample(range(20, 980), 10))
    started = time.monotonic()
    runs: list[tuple[float, int, float, int]] = []  # (serving at, stored then, killed at, stored then)
    kills: list[tuple[int, int]] = []
    for target in [*targets, 1000]:
        process.start()
        serving, before = time.monotonic(), done_count(db, inbox)
        wait_for(lambda target=target: done_count(db, inbox) >= target, timeout=120, interval=0.02,
                 message=f"{target} mails stored")
        if target < 1000:
            time.sleep(rnd.uniform(0, 0.05))  # a random moment in the pipeline, not right on a write
            process.kill()
            kills.append((target, done_count(db, inbox)))
        runs.append((serving, before, time.monotonic(), done_count(db, inbox)))
    wall = time.monotonic() - started
    serving_s = sum(end - begin for begin, _b, end, _e in runs)
    longest = max(runs, key=lambda r: r[3] - r[1])
    print(f"[kill -9] kills at (target, stored): {kills}")
    print(f"[kill -9] all 1,000 stored {wall:.1f} s after the first start, across 11 starts "
          f"({wall - serving_s:.1f} s of start-up until /health); ingest rate {1000 / wall:.0f} mails/s overall, "
          f"{1000 / serving_s:.0f} mails/s while serving, {(longest[3] - longest[1]) / (longest[2] - longest[0]):.0f} "
          f"mails/s in the longest run ({longest[3] - longest[1]} mails in {longest[2] - longest[0]:.1f} s)")

    stored = list(db.imap_messages.find({"inboxIntegrationId": inbox}))
    assert len(stored) == 1000
    assert sorted(m["messageId"] for m in stored) == sorted(m.message_id for m in mails)  # each exactly once
    assert {m["ingestState"] for m in stored} == {"done"}

    # conversations: one per thread, created once, every mail in its thread's conversation
    by_id = {m["messageId"]: m for m in stored}
    thread_conversations: dict[int, set[str]] = {}
    for m in mails:
        thread_conversations.setdefault(m.thread, set()).add(by_id[m.message_id]["inboxConversationId"])
    assert all(len(c) == 1 for c in thread_conversations.values())
    assert len({next(iter(c)) for c in thread_conversations.values()}) == len(thread_conversations)
    assert db.standalone_conversations.count_documents({"integrationId": inbox}) == len(thread_conversations)

    # customers: one per sender, each mail on its sender's customer
    senders = {m.sender for m in mails}
    wait_for(lambda: {c["email"] for c in db.imap_customers.find({"inboxIntegrationId": inbox})} >= senders,
             timeout=10, message="every sender's customer to be remembered")
    customers = {c["email"]: c["contactsId"] for c in db.imap_customers.find({"inboxIntegrationId": inbox})}
    assert set(customers) == senders
    assert db.standalone_customers.count_documents({}) == len(senders)
    assert all(by_id[m.message_id]["customerId"] == customers[m.sender] for m in mails)

    announced = {str(m["_id"]) for m in stored}  # 'done' may be written before the emulation consumed the last
    wait_for(lambda: {n["messageId"] for n in db.standalone_message_notifications.find()} == announced, timeout=10,
             message="every message announced")
    notes = list(db.standalone_message_notifications.find())
    # a message published twice by the runtime has two AMQP message ids; one that RabbitMQ delivered twice (the
    # emulation runs in the killed process, so it dies before its ack too) has one
    repeated = sum(1 for n in notes if len(n["publishes"]) > 1)
    redelivered = sum(n["deliveries"] - len(n["publishes"]) for n in notes)
    print(f"[kill -9] conversationClientMessageInserted published again for {repeated} message(s) (at-least-once: "
          f"a kill between the confirmation and the deletion of the intent); {redelivered} redelivered by RabbitMQ")
    # each lane announces one mail at a time and deletes its intent right after the confirmation, before the next
    # publish (issue 14, finding 3), so a kill repeats at most the one published and not yet recorded in each lane at
    # that instant: 1 over the 10 kills in a quiet run on 2026-12-07; 44 when a batch's intents were deleted together
    # after its last announcement; 7-8 (52 on a loaded machine) with the deletes running beside the next publishes
    assert repeated <= REPEATS_PER_KILL * len(kills), f"{repeated} announcements repeated after {len(kills)} kills"
    wait_for(lambda: cursor(db, inbox).get("lastUid") == 1000, timeout=10, message="the cursor at UID 1000")
    assert db.imap_quarantine.count_documents({}) == 0
    assert crashes(db) == []
    assert process.terminate(timeout=10) == 0


# -- 2. UIDVALIDITY changes --------------------------------------------------------------------------------------------

def test_uidvalidity_change_rescans_without_duplicates(runtime_factory, caller, mailserver, db, proxies):
    imap = FaultProxy("127.0.0.1", mailserver.imap_port)
    proxies.append(imap)
    runtime_factory()
    inbox = "inbox-uv"
    user, password = connect(caller, mailserver, db, inbox, port=imap.port)
    to = f"{user}@localhost"
    mailserver.append_many(user, password, [make_mail(to=to, subject=f"before {i}", message_id=f"<uv{i}@example.com>")
                                            for i in range(3)])
    wait_for(lambda: cursor(db, inbox).get("lastUid") == 3, timeout=10, message="3 mails done")
    old = cursor(db, inbox)["uidvalidity"]
    new = old + 7919

    doveadm(mailserver, "mailbox", "update", "--uid-validity", str(new), "-u", user, "INBOX")
    imap.cut()  # the mailbox reconnects and SELECTs again (Dovecot also drops a session whose view went stale)
    wait_for(lambda: cursor(db, inbox).get("uidvalidity") == new and cursor(db, inbox).get("lastUid") == 3,
             timeout=20, message="the cursor under the new UIDVALIDITY")
    mailserver.append(user, password, make_mail(to=to, subject="after", message_id="<uv-after@example.com>"))
    wait_for(lambda: done_count(db, inbox) == 4, timeout=10, message="the new mail")
    time.sleep(1.0)  # a duplicate would show up right behind

    stored = list(db.imap_messages.find({"inboxIntegrationId": inbox}))
    assert sorted(m["subject"] for m in stored) == ["after", "before 0", "before 1", "before 2"]
    assert db.standalone_conversations.count_documents({"integrationId": inbox}) == 4
    notes = list(db.standalone_message_notifications.find())
    assert len(notes) == 4 and all(n["deliveries"] == 1 for n in notes)
    assert cursor(db, inbox)["lastUid"] == 4
    assert db.imap_logs.count_documents({"integrationId": inbox, "message": {"$regex": "UIDVALIDITY changed"}}) >= 1
    assert crashes(db) == []


def test_folder_recreated_with_renumbered_uids_misses_nothing(runtime_factory, caller, mailserver, db, proxies):
    """The harder case: new UIDVALIDITY *and* UIDs from 1 again, so new mail sits below the old cursor; old mail
    restored into the folder (same Message-IDs) must not be stored twice."""
    imap = FaultProxy("127.0.0.1", mailserver.imap_port)
    proxies.append(imap)
    runtime_factory()
    inbox, folder = "inbox-recreate", "Support"
    user, password = mailserver.add_user()
    with mailserver.client(user, password) as client:
        client.create_folder(folder)
    connect(caller, mailserver, db, inbox, user=(user, password), port=imap.port, folders=[folder])
    to = f"{user}@localhost"
    old = [make_mail(to=to, subject=f"old {i}", message_id=f"<old{i}@example.com>") for i in range(4)]
    mailserver.append_many(user, password, old, folder=folder)
    wait_for(lambda: cursor(db, inbox, folder).get("lastUid") == 4, timeout=10, message="4 mails done")
    before = cursor(db, inbox, folder)["uidvalidity"]

    imap.refuse(True)
    imap.cut()
    with mailserver.client(user, password) as client:
        client.delete_folder(folder)
        client.create_folder(folder)
        client.append(folder, make_mail(to=to, subject="new", message_id="<new@example.com>"))  # UID 1
        for raw in old:  # restored from a backup: UIDs 2..5
            client.append(folder, raw)
        info = client.select_folder(folder, readonly=True)
    assert int(info[b"UIDVALIDITY"]) != before and int(info[b"UIDNEXT"]) == 6
    imap.refuse(False)

    wait_for(lambda: done_count(db, inbox) == 5, timeout=30, message="the new mail at UID 1")
    wait_for(lambda: cursor(db, inbox, folder).get("lastUid") == 5, timeout=10, message="the cursor at UID 5")
    time.sleep(1.0)
    assert sorted(m["subject"] for m in db.imap_messages.find({"inboxIntegrationId": inbox})) == [
        "new", "old 0", "old 1", "old 2", "old 3"]
    assert db.standalone_conversations.count_documents({"integrationId": inbox}) == 5
    assert all(n["deliveries"] == 1 for n in db.standalone_message_notifications.find())
    assert crashes(db) == []


# -- 3. wrong passwords next to good mailboxes -------------------------------------------------------------------------

AUTH_FAILED = re.compile(r"auth failed, (\d+) attempts? in \d+ secs?\): user=<([^>]+)>")


def auth_failures(mailserver: MailServer, offset: int) -> dict[str, int]:
    """Failed login attempts per user in Dovecot's log since ``offset`` (one line per connection, with a count)."""
    counts: dict[str, int] = {}
    with open(Path(mailserver.env["MAIL_DIR"]) / "log" / "dovecot.log", "rb") as log:
        log.seek(offset)
        for line in log.read().decode(errors="replace").splitlines():
            if found := AUTH_FAILED.search(line):
                counts[found.group(2)] = counts.get(found.group(2), 0) + int(found.group(1))
    return counts


def ingest_latencies(db: Any, boxes: dict[str, tuple[str, Any]], tag: str, rounds: int) -> list[float]:
    """Append one mail to each good mailbox per round; seconds from APPEND done to ``ingestState: done``."""
    out: list[float] = []
    for r in range(rounds):
        appended: dict[str, float] = {}
        for inbox, (user, client) in boxes.items():
            subject = f"{tag} {r} {inbox}"
            client.append("INBOX", make_mail(to=f"{user}@localhost", subject=subject))
            appended[subject] = time.monotonic()
        seen: dict[str, float] = {}
        deadline = time.monotonic() + 30
        while len(seen) < len(appended) and time.monotonic() < deadline:
            for m in db.imap_messages.find({"ingestState": "done", "subject": {"$in": list(appended)}},
                                           {"subject": 1}):
                seen.setdefault(m["subject"], time.monotonic())
            time.sleep(0.01)
        assert len(seen) == len(appended), f"{tag}: {sorted(set(appended) - set(seen))} not stored within 30 s"
        out += [seen[s] - appended[s] for s in appended]
        time.sleep(0.3)
    return out


def describe(values: list[float]) -> str:
    return (f"n={len(values)} median {statistics.median(values):.2f} s, p90 {pct(values, 0.9):.2f} s, "
            f"max {max(values):.2f} s")


@pytest.mark.timeout(240)
def test_wrong_passwords_do_not_slow_the_good_mailboxes(runtime_factory, caller, mailserver, db):
    """Each bad mailbox logs in as one of the good users with a stale password (Dovecot refuses it exactly as
    for any wrong password; no extra users to create, which costs ~1 s each on the test server)."""
    rt = runtime_factory()
    t0 = time.monotonic()
    good = {f"good-{i}": mailserver.add_user() for i in range(20)}
    for inbox, (user, password) in good.items():
        caller.create_integration(inbox, mailserver.details(user, password))
    wait_for(lambda: all(state(db, i) == "idle" for i in good), timeout=30, message="20 good mailboxes IDLE")
    print(f"\n[auth] 20 good mailboxes created and IDLE in {time.monotonic() - t0:.1f} s")
    clients = {inbox: (user, mailserver.client(user, password)) for inbox, (user, password) in good.items()}
    bad = {f"bad-{i}": (user, f"stale-{password}") for i, (user, password) in enumerate(good.values())}
    try:
        alone = ingest_latencies(db, clients, "alone", rounds=3)

        log_offset = (Path(mailserver.env["MAIL_DIR"]) / "log" / "dovecot.log").stat().st_size
        creating = threading.Thread(target=lambda: [
            caller.create_integration(inbox, mailserver.details(user, password))
            for inbox, (user, password) in bad.items()])
        t0 = time.monotonic()
        creating.start()
        during = ingest_latencies(db, clients, "during", rounds=3)  # while the bad ones are created and refused
        creating.join(30)
        wait_for(lambda: all((db.imap_integrations.find_one({"inboxId": i}) or {}).get("healthStatus") == "unHealthy"
                             for i in bad), timeout=30, message="20 bad mailboxes unHealthy")
        print(f"[auth] 20 bad mailboxes created and unHealthy in {time.monotonic() - t0:.1f} s")
        after = ingest_latencies(db, clients, "after", rounds=2)
        time.sleep(3.0)  # a retry loop would add attempts now
        attempts = auth_failures(mailserver, log_offset)
    finally:
        for _user, client in clients.values():
            client.logout()

    print(f"[auth] 20 good alone:            {describe(alone)}")
    print(f"[auth] next to 20 being refused: {describe(during)}")
    print(f"[auth] next to 20 unHealthy:     {describe(after)}")
    per_bad = {inbox: attempts.get(user, 0) for inbox, (user, _pw) in bad.items()}
    print(f"[auth] login attempts per bad mailbox (Dovecot log): {sorted(per_bad.values())}")

    for inbox in bad:
        doc = db.imap_integrations.find_one({"inboxId": inbox})
        assert doc["state"] == "unhealthy" and "uthentication" in (doc["error"] or ""), doc
    assert all(1 <= n <= 2 for n in per_bad.values()), per_bad
    for measured in (during, after):
        assert statistics.median(measured) <= 2 * statistics.median(alone) + 0.3
        assert max(measured) <= 2 * max(alone) + 1.0
    assert all(rt.supervisor.listening().get().values())
    assert crashes(db) == []


def test_mail_arriving_just_before_idle_is_ingested_promptly(services, mongo_url, prefix, caller, mailserver, db):
    """Deterministic: the IMAP client's ``idle()`` appends a mail (from another session) right before it sends
    IDLE, as if it had arrived in that window. Production timings (watchdog 55 s)."""
    from kinds.imap.connection import connect as real_connect

    user, password = mailserver.add_user()
    armed = threading.Event()

    def factory(settings: Any) -> Any:
        client = real_connect(settings)
        idle = client.idle

        def idle_after_an_arrival() -> Any:
            if armed.is_set():
                armed.clear()
                mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="in the window"))
            return idle()
        client.idle = idle_after_an_arrival
        return client

    rt = Runtime(runtime_config(services, mongo_url=mongo_url, prefix=prefix), imap_factory=factory)
    rt.start()
    try:
        caller.create_integration("inbox-window", mailserver.details(user, password))
        wait_for(lambda: state(db, "inbox-window") == "idle", timeout=10)
        armed.set()
        mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="wakes the mailbox"))
        wait_for(lambda: done_count(db, "inbox-window") == 2, timeout=5,
                 message="the mail that arrived just before IDLE")
    finally:
        rt.stop()


# -- 4. malformed and hostile mails ------------------------------------------------------------------------------------

CORPUS_SEED = 20251125


@pytest.mark.timeout(300)
def test_hostile_corpus_is_stored_or_quarantined_and_nothing_crashes(runtime_factory, caller, mailserver, db):
    rt = runtime_factory(max_mail_bytes=corpus.OVERSIZE_LIMIT)
    inbox = "inbox-hostile"
    user, password = connect(caller, mailserver, db, inbox)
    to = f"{user}@localhost"
    mails = corpus.hostile_mails(to, seed=CORPUS_SEED)
    started = time.monotonic()
    mailserver.append_many(user, password, [m.raw for m in mails])
    appended = len(mails)
    print(f"\n[corpus] appended {appended} hostile mails ({sum(len(m.raw) for m in mails) // 1024} KiB) in "
          f"{time.monotonic() - started:.1f} s")
    wait_for(lambda: cursor(db, inbox).get("lastUid") == appended, timeout=240, interval=0.1,
             message=f"the cursor at UID {appended} (at {cursor(db, inbox).get('lastUid')})")
    elapsed = time.monotonic() - started
    mailserver.append(user, password, make_mail(to=to, subject="a normal mail afterwards"))
    wait_for(lambda: db.imap_messages.find_one({"inboxIntegrationId": inbox, "ingestState": "done",
                                                "subject": "a normal mail afterwards"}), timeout=10)

    # every UID ends stored, quarantined or deduplicated (its Message-ID is stored under an earlier UID)
    with mailserver.client(user, password) as client:
        client.select_folder("INBOX", readonly=True)
        fetched = {uid: d[b"BODY[]"] for uid, d in client.fetch(list(range(1, appended + 1)), [b"BODY.PEEK[]"]).items()}
    stored = {m["uid"]: m for m in db.imap_messages.find({"inboxIntegrationId": inbox}) if m["uid"] <= appended}
    stored_ids = {m["messageId"]: uid for uid, m in stored.items()}
    quarantined = {q["uid"]: q for q in db.imap_quarantine.find({"integrationId": inbox})}
    outcome: dict[int, str] = {}
    for uid in range(1, appended + 1):
        kinds = []
        if uid in stored:
            kinds.append("stored")
        if uid in quarantined:
            kinds.append("quarantined")
        if uid not in stored and uid not in quarantined and uid in fetched:
            try:
                message_id = parse_mail(fetched[uid]).message_id
            except MailParseError:
                message_id = None
            if message_id in stored_ids and stored_ids[message_id] < uid:
                kinds.append("deduplicated")
        assert len(kinds) == 1, f"UID {uid} ({mails[uid - 1].kind}): {kinds or 'lost'}"
        outcome[uid] = kinds[0]
    counts = {k: sum(1 for v in outcome.values() if v == k) for k in ("stored", "quarantined", "deduplicated")}
    assert sum(counts.values()) == appended
    assert all(m["ingestState"] == "done" for m in stored.values())
    reasons: dict[str, int] = {}
    for q in quarantined.values():
        reason = re.sub(r"\d+", "N", q["reason"])[:70]
        reasons[reason] = reasons.get(reason, 0) + 1
    by_kind: dict[str, dict[str, int]] = {}
    for uid, what in outcome.items():
        kind = mails[uid - 1].kind.split(":")[0]
        by_kind.setdefault(kind, {}).setdefault(what, 0)
        by_kind[kind][what] += 1
    print(f"[corpus] all {appended} processed in {elapsed:.1f} s: {counts}")
    print(f"[corpus] quarantine reasons: {reasons}")
    print(f"[corpus] by kind: {json.dumps(by_kind, sort_keys=True)}")

    oversized = [uid for uid, m in enumerate(mails, 1) if m.kind == "oversized"]
    assert oversized and all(outcome[u] == "quarantined" and "raw" not in quarantined[u] for u in oversized)
    assert all(outcome[u] == "quarantined" for u, m in enumerate(mails, 1) if m.kind.startswith("handmade: not a"))
    assert counts["stored"] > appended * 0.8  # hostile, not hopeless: most of it is readable mail
    assert crashes(db) == []
    assert rt.supervisor.listening().get() == {inbox: True}
    boxes = [r for r in pykka.ActorRegistry.get_by_class(MailboxActor) if r.is_alive()]
    assert len(boxes) == 1 and boxes[0].proxy().status().get(timeout=5)["state"] == "idle"
    pipeline = [r for cls in (CustomerActor, ConversationActor) for r in pykka.ActorRegistry.get_by_class(cls)]
    assert pipeline and all(r.is_alive() for r in pipeline)


def test_mail_without_a_usable_sender_is_quarantined_without_stalling(runtime_factory, caller, mailserver, db):
    runtime_factory()
    inbox = "inbox-nofrom"
    user, password = connect(caller, mailserver, db, inbox)
    to = f"{user}@localhost"
    mailserver.append_many(user, password, [raw for _name, raw in corpus.unusable_sender_mails(to)])
    mailserver.append(user, password, make_mail(to=to, subject="behind it"))
    wait_for(lambda: done_count(db, inbox) == 1, timeout=5)
    time.sleep(1.0)
    mailserver.append(user, password, make_mail(to=to, subject="a second later"))
    wait_for(lambda: done_count(db, inbox) == 2, timeout=3, message="new mail while the sender-less ones fail")
    wait_for(lambda: db.imap_quarantine.count_documents({"integrationId": inbox}) == 3, timeout=3,
             message="the sender-less mails quarantined")


# -- 5. malformed RPC requests -----------------------------------------------------------------------------------------

class RawRpc:
    """A bare pika client: publishes request bodies as-is and collects the raw reply bodies (direct reply-to)."""

    def __init__(self, amqp_url: str) -> None:
        self.conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.ch = self.conn.channel()
        self.replies: dict[str, bytes] = {}
        self.ch.basic_consume("amq.rabbitmq.reply-to", self._on_reply, auto_ack=True)

    def _on_reply(self, _ch: Any, _method: Any, props: BasicProperties, body: bytes) -> None:
        self.replies[props.correlation_id] = body

    def send(self, queue: str, body: bytes, *, reply: bool = True) -> str:
        corr = uuid.uuid4().hex
        props = BasicProperties(correlation_id=corr, reply_to="amq.rabbitmq.reply-to") if reply else BasicProperties()
        self.ch.basic_publish("", queue, body, props)
        return corr

    def collect(self, wanted: list[str], timeout: float) -> dict[str, bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(c in self.replies for c in wanted):
            self.conn.process_data_events(time_limit=0.1)
        return {c: self.replies[c] for c in wanted if c in self.replies}

    def close(self) -> None:
        self.conn.close()


def http_rpc(port: int, procedure: str, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/rpc/{procedure}", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


HUGE = "x" * 300_000
MESSAGE_ID_FIELDS = ("references", "replyToMessageId", "inReplyTo", "headerId")
JUNK = "\u202e\u0000\ufeff\U0001f4a9\udcff\u2028'\"\\<>&;--" * 50
WRONG = [None, 0, 1, -1, 1.5, True, False, [], [1, "a"], {}, {"$gt": ""}, "", "   ", HUGE, JUNK,
         {"a": {"b": {"c": [[[[{}]]]]}}}]


def _wrong_type(kind: str, value: Any) -> bool:
    """Whether ``value`` is of the wrong kind for a field (strictly: a bool is no number, a float no port)."""
    if kind == "str":
        return not isinstance(value, str)
    if kind == "nonempty":
        return not isinstance(value, str) or not value.strip()
    if kind == "obj":
        return not isinstance(value, dict)
    if kind == "bool":
        return not isinstance(value, bool)
    if kind == "port":
        return not (isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536) and not (
            isinstance(value, str) and value.isdigit() and 0 < int(value) < 65536)
    if kind == "folders":
        return not (isinstance(value, list) and value and all(isinstance(f, str) and f for f in value))
    if kind == "addrs":
        return not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)))
    if kind == "list":
        return not isinstance(value, list)
    raise AssertionError(kind)


def _set(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(base))
    node = out
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    return out


def rpc_fuzz_cases(valid_details: dict[str, Any], update_id: str, closed: int) -> list[tuple[str, str, bytes, bool]]:
    """``(procedure, label, body, must_fail)`` for every procedure of kinds/imap/procedures.py; the integrations point
    at ``closed``, a port nobody listens on, for IMAP and SMTP."""
    procedures = ["createIntegration", "updateIntegration", "removeIntegrations", "removeIntegration",
                  "api_to_integrations", "getStatus", "imapMessage.create"]
    cases: list[tuple[str, str, bytes, bool]] = []
    envelopes: list[tuple[str, bytes]] = [
        ("empty body", b""), ("not JSON", b"not json at all"), ("truncated JSON", b'{"data": {"integ'),
        ("invalid UTF-8", b"\xff\xfe\x00{}"), ("JSON array", b"[1, 2]"), ("JSON null", b"null"),
        ("JSON number", b"42"), ("JSON string", b'"data"'), ("JSON true", b"true"), ("NaN", b'{"data": NaN}'),
        ("no data", b'{"subdomain": "os"}'), ("data null", b'{"data": null}'), ("data list", b'{"data": []}'),
        ("data string", b'{"data": "x"}'), ("data number", b'{"data": 1}'),
        ("huge string", json.dumps({"data": "y" * 3_000_000}).encode()),
        ("subdomain junk", json.dumps({"subdomain": {"$ne": 1}, "data": []}).encode()),
        ("UTF-16 JSON", json.dumps({"data": 5}).encode("utf-16")),
        ("duplicate keys", b'{"data": {}, "data": 7}'),
    ]
    for procedure in procedures:
        cases += [(procedure, label, body, True) for label, body in envelopes]

    def data_cases(procedure: str, base: dict[str, Any], fields: dict[str, tuple[str, bool]]) -> None:
        for path, (kind, required) in fields.items():
            for value in WRONG:
                if path.endswith(".host") and isinstance(value, str):
                    continue  # string junk in host: test_integration_with_an_invalid_host_name_... (a known bug)
                if path in MESSAGE_ID_FIELDS and value is HUGE:
                    continue  # test_send_request_with_a_long_reference_is_answered_quickly (a known bug)
                wrong = _wrong_type(kind, value)
                absent = value in (None, "", 0, False, [], {}) and not required and kind not in ("bool", "folders")
                cases.append((procedure, f"{path}={json.dumps(value)[:30]}",
                              json.dumps({"subdomain": "os", "data": _set(base, path, value)}).encode(),
                              wrong and not absent))

    details = {**valid_details, "port": closed, "smtpHost": "127.0.0.1", "smtpPort": str(closed)}
    create = {"kind": "imap", "integrationId": "fuzz-new", "doc": {"accountId": "", "kind": "imap",
                                                                   "integrationId": "fuzz-new", "data": details}}
    detail_fields = {"doc.data.host": ("nonempty", True), "doc.data.user": ("nonempty", True),
                     "doc.data.password": ("nonempty", True), "doc.data.port": ("port", False),
                     "doc.data.tls": ("bool", False), "doc.data.starttls": ("bool", False),
                     "doc.data.folders": ("folders", False), "doc.data.smtpHost": ("str", False),
                     "doc.data.smtpPort": ("port", False), "doc.data.mainUser": ("str", False)}
    data_cases("createIntegration", create, {"integrationId": ("nonempty", True), "doc": ("obj", True),
                                             "doc.data": ("obj", True), **detail_fields})
    update = _set(_set(create, "integrationId", update_id), "doc.integrationId", update_id)
    data_cases("updateIntegration", update, {"doc": ("obj", True), "doc.data": ("obj", True),
                                             **{k: v for k, v in detail_fields.items() if k != "doc.data.password"}})
    for procedure in ("removeIntegrations", "removeIntegration", "getStatus"):
        data_cases(procedure, {"integrationId": "fuzz-none"}, {"integrationId": ("nonempty", True)})
    data_cases("api_to_integrations", {"integrationId": "fuzz-none", "action": "getDetails"},
               {"integrationId": ("nonempty", True)})
    send = {"integrationId": update_id, "to": "someone@example.org", "subject": "s", "body": "<p>b</p>"}
    data_cases("imapMessage.create", send, {
        "subject": ("str", True), "to": ("addrs", True), "body": ("str", False), "cc": ("addrs", False),
        "bcc": ("addrs", False), "references": ("addrs", False), "attachments": ("list", False),
        "integrationId": ("str", False), "conversationId": ("str", False), "customerId": ("str", False),
        "replyToMessageId": ("str", False)})
    return cases


def check_reply(body: bytes) -> dict[str, Any]:
    reply = json.loads(body)
    assert isinstance(reply, dict), body[:200]
    if reply.get("status") == "error":
        assert set(reply) == {"status", "errorMessage"} and isinstance(reply["errorMessage"], str) and \
            reply["errorMessage"], reply
    else:
        assert reply.get("status") == "success" and set(reply) <= {"status", "data"}, reply
    return reply


def run_fuzz(cases: list[tuple[str, str, bytes, bool]], replies: dict[str, bytes], keys: list[str],
             closed_port_marker: str) -> list[str]:
    """Check every reply; returns the labels of wrong-typed requests that were not refused."""
    accepted: list[str] = []
    for (procedure, label, _body, must_fail), key in zip(cases, keys):
        assert key in replies, f"no reply to {procedure} {label}"
        reply = check_reply(replies[key])
        went_on = reply["status"] == "error" and closed_port_marker in reply["errorMessage"]
        if must_fail and (reply["status"] == "success" or went_on):
            accepted.append(f"{procedure} {label}")
    return accepted


@pytest.mark.timeout(240)
def test_malformed_rpc_requests_get_error_replies_and_the_runtime_keeps_serving(
        runtime_factory, caller, mailserver, db, amqp_url, prefix):
    rt = runtime_factory()
    user, password = mailserver.add_user()
    valid = mailserver.details(user, password)
    closed = free_port()
    caller.create_integration("fuzz-upd", {**valid, "port": closed, "smtpHost": "127.0.0.1", "smtpPort": str(closed)})
    cases = rpc_fuzz_cases(valid, "fuzz-upd", closed)
    marker = f"127.0.0.1:{closed}"

    raw = RawRpc(amqp_url)
    try:
        started = time.monotonic()
        keys = [raw.send(f"imap:{procedure}{prefix}", body) for procedure, _label, body, _ in cases]
        replies = raw.collect(keys, timeout=120)
        amqp_s = time.monotonic() - started
        plain = [b"", b"not json", b"[]", b'{"data": null}', b'{"data": {"_id": 5}}', b'{"data": {"_id": "zz"}}',
                 json.dumps({"data": {"_id": HUGE}}).encode(), json.dumps({"data": {"_id": {"$ne": ""}}}).encode()]
        for body in plain:  # fire-and-forget: no reply expected, but the queue must drain
            raw.send(f"imap:listen{prefix}", body, reply=False)
        raw.send(f"imap:getStatus{prefix}", b'{"data": {"integrationId": "x"}}', reply=False)  # no reply_to
        raw.ch.basic_publish("", f"imap:getStatus{prefix}", b'{"data": {"integrationId": "x"}}',  # unroutable reply
                             BasicProperties(correlation_id="c", reply_to="no-such-queue-" + uuid.uuid4().hex))
        wait_for(lambda: all(raw.ch.queue_declare(f"imap:{q}{prefix}", passive=True).method.message_count == 0
                             for q in ("listen", "getStatus")), timeout=10, message="the queues to drain")
    finally:
        raw.close()
    accepted_amqp = run_fuzz(cases, replies, keys, marker)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda case: http_rpc(rt.web_port, case[0], case[2]), cases))
    for (procedure, label, _body, _must), (status, reply) in zip(cases, answers):
        assert status == 200, (procedure, label, status, reply[:300])
    http_keys = [str(i) for i in range(len(cases))]
    http_replies = {str(i): reply for i, (_status, reply) in enumerate(answers)}
    for path in ("noSuchProcedure", "imap:getStatus", "%00", "a" * 5000, "createIntegration/../getStatus"):
        status, reply = http_rpc(rt.web_port, path, b"{}")
        assert status in (200, 404) and (status == 404 or check_reply(reply)["status"] == "error"), (path, status)
    # over max_request_bytes (15 MiB): web/limits.py answers with an error envelope (HTTP 200, the contract)
    status, reply = http_rpc(rt.web_port, "getStatus", b"{" + b" " * (15 * 1024 * 1024 + 10) + b"}")
    assert status == 200 and "over the limit of 15728640 bytes" in check_reply(reply)["errorMessage"]
    http_s = time.monotonic() - started
    accepted_http = run_fuzz(cases, http_replies, http_keys, marker)

    print(f"\n[rpc] {len(cases)} malformed requests over AMQP answered in {amqp_s:.1f} s, over HTTP in {http_s:.1f} s")
    print(f"[rpc] wrong types accepted: {sorted(set(accepted_amqp))}")
    assert accepted_amqp == accepted_http
    assert accepted_amqp == []

    # still serving: a valid createIntegration works, and its mail is ingested
    junk = {d["inboxId"] for d in db.imap_integrations.find()} - {"fuzz-upd"}
    print(f"[rpc] integrations stored by the fuzz: {sorted(junk)}")
    good_user, good_password = connect(caller, mailserver, db, "fuzz-ok")
    mailserver.append(good_user, good_password, make_mail(to=f"{good_user}@localhost", subject="after the fuzz"))
    wait_for(lambda: done_count(db, "fuzz-ok") == 1, timeout=10)
    assert crashes(db) == []


def test_deeply_nested_json_request_gets_an_error_reply(runtime_factory, amqp_url, prefix):
    rt = runtime_factory()
    body = b'{"data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    raw = RawRpc(amqp_url)
    try:
        key = raw.send(f"imap:getStatus{prefix}", body)
        replies = raw.collect([key], timeout=5)
    finally:
        raw.close()
    status, reply = http_rpc(rt.web_port, "getStatus", body)
    assert status == 200 and check_reply(reply)["status"] == "error"
    assert key in replies and check_reply(replies[key])["status"] == "error"


@pytest.mark.parametrize("field", MESSAGE_ID_FIELDS)
def test_send_request_with_a_long_reference_is_answered_quickly(field, runtime_factory, caller, amqp_url, prefix):
    runtime_factory()
    closed = free_port()
    caller.create_integration("inbox-send", {"host": "127.0.0.1", "port": closed, "tls": False, "user": "a@localhost",
                                             "password": "p", "smtpHost": "127.0.0.1", "smtpPort": str(closed)})
    value: Any = "x" * 150_000  # quadratic before the fix: about a minute; a Message-ID is at most a line
    raw = RawRpc(amqp_url)
    try:
        started = time.monotonic()
        key = raw.send(f"imap:imapMessage.create{prefix}", json.dumps({"subdomain": "os", "data": {
            "integrationId": "inbox-send", "to": "someone@example.org", "subject": "s", "body": "b",
            field: [value] if field == "references" else value}}).encode())
        replies = raw.collect([key], timeout=10)
        elapsed = time.monotonic() - started
    finally:
        raw.close()
    assert key in replies and check_reply(replies[key])
    assert elapsed < 5.0, f"{elapsed:.1f} s for one request"


@pytest.mark.parametrize("host", ["imap..example.com", "a" * 64 + ".example.com"])
def test_integration_with_an_invalid_host_name_is_refused_or_backs_off(host, runtime_factory, caller, mailserver,
                                                                       db):
    runtime_factory()
    user, password = mailserver.add_user()
    details = {**mailserver.details(user, password), "host": host}
    try:
        caller.create_integration("inbox-host", details)
    except Exception:  # noqa: BLE001 - refusing it with an error reply is fine
        return
    wait_for(lambda: state(db, "inbox-host") in ("backoff", "unhealthy"), timeout=5,
             message=f"backoff (state {state(db, 'inbox-host')})")
    time.sleep(2.0)
    assert crashes(db) == []
