"""Soak run: the real ``imap-runtime`` process under a steady stream of mail while faults are injected.

    .venv/bin/python -m tests.soak --minutes 30 [--mailboxes 6] [--rate 4] [--fault-every 60]

Servers come from ``scripts/services.sh`` in /tmp/imap-runtime/soak on ports of their own (so a test run can go
on beside it). Faults, in turn: kill -9 and restart of the runtime, IMAP connections cut, IMAP stalled for 15 s,
MongoDB refusing connections for 15 s. At the end it waits for every appended mail and reports (JSON, also to
``--out``): mails appended, stored, lost, duplicated, conversations created more than once, announcements
repeated, faults injected, and the runtime's peak RSS.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pymongo

from tests.conftest import REPO, MailServer, make_mail, read_env_file
from tests.e2e import Caller, RuntimeProcess
from tests.faultproxy import FaultProxy

STATE = Path("/tmp/imap-runtime/soak")
PORTS = {"MONGO_PORT": "27517", "IMAP_PORT": "14143", "IMAPS_PORT": "14993", "LMTP_PORT": "14024",
         "SUBMISSION_PORT": "14587", "SMTP_PORT": "14025", "PRIVATE_AMQP_PORT": "14672", "PRIVATE_REDIS_PORT": "14379"}


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--mailboxes", type=int, default=6)
    parser.add_argument("--rate", type=float, default=4.0, help="mails appended per second, in all")
    parser.add_argument("--fault-every", type=float, default=60.0, help="seconds between faults")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--out", default=str(REPO / "docs" / "soak-result.json"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    Path("/tmp/imap-runtime").mkdir(exist_ok=True, mode=0o755)
    subprocess.run(["bash", str(REPO / "scripts" / "services.sh"), "start", str(STATE)],
                   env={**os.environ, **PORTS, "IMAP_CLIENT_LIMIT": "50"}, check=True, timeout=300)
    services = read_env_file(STATE / "services.env")
    mailserver = MailServer(services)
    database = f"soak_{uuid.uuid4().hex[:8]}"
    mongo_port = int(PORTS["MONGO_PORT"])
    mongo_proxy = FaultProxy("127.0.0.1", mongo_port, max_connections=512)
    imap_proxy = FaultProxy("127.0.0.1", mailserver.imap_port, max_connections=512)
    prefix = f".soak{uuid.uuid4().hex[:6]}"
    mongo_url = f"mongodb://127.0.0.1:{mongo_proxy.port}/{database}?retryWrites=false&directConnection=true"
    db = pymongo.MongoClient(f"mongodb://127.0.0.1:{mongo_port}/{database}?retryWrites=false",
                             serverSelectionTimeoutMS=10000)[database]
    log_dir = Path("/tmp/imap-runtime/soak-logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    runtime = RuntimeProcess(services, mongo_url=mongo_url, prefix=prefix, log_path=log_dir / f"{database}.log")
    runtime.start(timeout=60)
    caller = Caller(services["RABBITMQ_HOST"], prefix)
    boxes = []
    for i in range(args.mailboxes):
        user, password = mailserver.add_user("soak")
        details = mailserver.details(user, password)
        if i % 2 == 0:
            details["port"] = imap_proxy.port  # half the mailboxes see the IMAP faults
        caller.create_integration(f"soak-{i}", details)
        boxes.append((f"soak-{i}", user, password))

    appended: dict[str, str] = {}  # Message-ID -> inbox id
    threads: dict[str, set[str]] = {}  # inbox id -> thread roots
    peak = {"rss_kib": 0}
    faults: list[dict[str, Any]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(2):
            if runtime.proc is not None:
                peak["rss_kib"] = max(peak["rss_kib"], rss_kib(runtime.proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    next_fault = started + args.fault_every
    kinds = ["kill-9", "imap-cut", "imap-stall", "mongo-refuse"]
    n = 0
    while time.monotonic() - started < args.minutes * 60:
        inbox_id, user, password = rng.choice(boxes)
        message_id = f"<soak{n}-{uuid.uuid4().hex[:6]}@example.com>"
        roots = threads.setdefault(inbox_id, set())
        if roots and rng.random() < 0.3:
            root = rng.choice(sorted(roots))
            raw = make_mail(to=f"{user}@localhost", sender=f"c{n % 40}@example.com", subject="Re: thread",
                            message_id=message_id, in_reply_to=root, references=[root])
        else:
            roots.add(message_id)
            raw = make_mail(to=f"{user}@localhost", sender=f"c{n % 40}@example.com", subject=f"mail {n}",
                            message_id=message_id)
        mailserver.append(user, password, raw)
        appended[message_id] = inbox_id
        n += 1
        if time.monotonic() >= next_fault:
            kind = kinds[len(faults) % len(kinds)]
            t0 = time.monotonic()
            if kind == "kill-9":
                runtime.kill()
                runtime.start(timeout=60)
            elif kind == "imap-cut":
                imap_proxy.cut()
            elif kind == "imap-stall":
                imap_proxy.stall(True)
                time.sleep(15)
                imap_proxy.stall(False)
                imap_proxy.cut()
            else:
                mongo_proxy.refuse(True)
                mongo_proxy.cut()
                time.sleep(15)
                mongo_proxy.refuse(False)
            faults.append({"kind": kind, "at_s": round(t0 - started, 1), "seconds": round(time.monotonic() - t0, 1)})
            print(f"[{time.monotonic() - started:7.1f}s] fault {kind}; {n} mails appended", flush=True)
            next_fault = time.monotonic() + args.fault_every
        time.sleep(max(0.0, 1.0 / args.rate))

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        done = db.imap_messages.count_documents({"ingestState": "done"})
        if done >= len(appended):
            break
        time.sleep(2)
    stop.set()
    stored = {m["messageId"]: m for m in db.imap_messages.find({}, projection={"messageId": 1, "ingestState": 1,
                                                                               "inboxIntegrationId": 1})}
    lost = sorted(mid for mid in appended if stored.get(mid, {}).get("ingestState") != "done")
    pipeline = [{"$group": {"_id": {"i": "$inboxIntegrationId", "m": "$messageId"}, "n": {"$sum": 1}}},
                {"$match": {"n": {"$gt": 1}}}]
    duplicated = list(db.imap_messages.aggregate(pipeline))
    expected_conversations = sum(len(r) for r in threads.values())
    conversations = db.standalone_conversations.count_documents({})
    repeated = db.standalone_message_notifications.count_documents({"deliveries": {"$gt": 1}})
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "seed": args.seed, "minutes": args.minutes,
        "mailboxes": args.mailboxes, "appended": len(appended), "stored": len(stored), "lost": len(lost),
        "lost_examples": lost[:10], "duplicated": len(duplicated), "threads": expected_conversations,
        "conversations": conversations, "announcements_repeated": repeated, "faults": faults,
        "peak_rss_mib": round(peak["rss_kib"] / 1024, 1),
        "quarantined": db.imap_quarantine.count_documents({}),
        "command": "python -m tests.soak " + " ".join(sys.argv[1:]),
    }
    print(json.dumps(result, indent=2))
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    runtime.terminate(timeout=15)
    caller.close()
    mongo_proxy.close()
    imap_proxy.close()
    db.client.drop_database(database)
    subprocess.run(["bash", str(REPO / "scripts" / "services.sh"), "stop", str(STATE)], timeout=120)
    return 0 if not lost and not duplicated and conversations == expected_conversations else 1


if __name__ == "__main__":
    sys.exit(main())
