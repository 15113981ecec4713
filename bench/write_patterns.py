"""What the writes of one stored mail cost the benchmark's SecantusDB, in its own CPU (ms per mail), for the
write pattern the runtime uses and for candidates: the evidence behind "what limits catch-up" in
docs/benchmarks.md.

    .venv/bin/python -m bench.write_patterns [--mails 3000] [--batch 25]

Each pattern writes ``--mails`` message documents shaped like the runtime's (~4 KiB, the product's own indexes:
``runtime.storage.Storage.ensure_indexes``) in batches of ``--batch`` (the conversation stage's mean batch in a
catch-up), one client, and reads SecantusDB's CPU time from /proc before and after:

- ``runtime``: what the conversation stage does today: the intents as one ``insert_many`` (``pending``), the
  ``stored`` states as one ``bulk_write`` of ``UpdateOne`` (a conversation id each), then ``update_many`` to
  ``done``: three writes of each 4 KiB document.
- ``intents``: a CANDIDATE, not the product: the intent as a small document in a collection of its own, the
  message inserted once with its conversation (``insert_many``), the intent deleted once announced: one write
  of each 4 KiB document.
- ``erxes``: what the emulated erxes writes per mail (``runtime/standalone.py``): one conversation (an insert
  for a new thread, an update for a reply: 70/30) and one notification, a call each, as its handlers do.
"""
from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from typing import Any

import pymongo
from bson import ObjectId
from pymongo import UpdateOne

from bench.common import (
    command_line,
    ensure_services,
    log,
    machine_info,
    mongo_pid,
    proc_cpu_seconds,
    round_floats,
    write_result,
)

BODY = "<p>" + "lorem ipsum " * 300 + "</p>"


def message(i: int, run: str) -> dict[str, Any]:
    return {"_id": ObjectId(), "inboxIntegrationId": "inbox-w", "inboxConversationId": None, "customerId": "c1",
            "messageId": f"<{run}-{i}@x>", "subject": f"mail {i}", "inReplyTo": "",
            "references": [f"<{run}-{i - 1}@x>"] if i % 3 == 0 and i else [], "body": BODY,
            "from": [{"name": "A", "address": "a@x"}], "to": [{"name": "", "address": "me@x"}], "cc": [], "bcc": [],
            "replyTo": [], "attachments": [], "type": "INBOX", "folder": "INBOX", "uid": i, "size": 4096}


def runtime_pattern(db: Any, batch: list[dict[str, Any]]) -> None:
    db.imap_messages.insert_many([{**d, "ingestState": "pending"} for d in batch], ordered=False)
    db.imap_messages.bulk_write([UpdateOne({"_id": d["_id"]}, {"$set": {"inboxConversationId": f"conv-{d['uid']}",
                                                                        "ingestState": "stored"}}) for d in batch])
    db.imap_messages.update_many({"_id": {"$in": [d["_id"] for d in batch]}}, {"$set": {"ingestState": "done"}})


def intents_pattern(db: Any, batch: list[dict[str, Any]]) -> None:
    db.imap_intents.insert_many([{"_id": d["_id"], "inboxIntegrationId": d["inboxIntegrationId"],
                                  "messageId": d["messageId"], "customerId": d["customerId"]} for d in batch],
                                ordered=False)
    db.imap_messages.insert_many([{**d, "inboxConversationId": f"conv-{d['uid']}", "ingestState": "done"}
                                  for d in batch], ordered=False)
    db.imap_intents.delete_many({"_id": {"$in": [d["_id"] for d in batch]}})


def erxes_pattern(db: Any, batch: list[dict[str, Any]]) -> None:
    for d in batch:
        if d["uid"] % 10 < 7:
            db.standalone_conversations.insert_one({"_id": str(ObjectId()), "integrationId": "inbox-w",
                                                    "customerId": "c1", "content": d["subject"], "status": "new",
                                                    "messageCount": 1, "idempotencyKey": f"inbox-w/{d['messageId']}"})
        else:
            db.standalone_conversations.update_one({"idempotencyKey": "inbox-w/first"},
                                                   {"$set": {"content": d["subject"], "status": "open"},
                                                    "$inc": {"messageCount": 1}}, upsert=True)
        db.standalone_message_notifications.insert_one({"messageId": str(d["_id"]), "conversationId": "c",
                                                        "content": d["body"], "deliveries": 1})


PATTERNS: dict[str, Callable[[Any, list[dict[str, Any]]], None]] = {
    "runtime": runtime_pattern, "intents": intents_pattern, "erxes": erxes_pattern}


def main() -> None:
    from runtime.standalone import Standalone
    from runtime.storage import Storage

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=25)
    args = parser.parse_args()
    services = ensure_services()
    pid = mongo_pid(services)
    if pid is None:
        raise SystemExit("no SecantusDB pid: is the bench profile's server running?")
    rows = []
    for name, pattern in PATTERNS.items():
        db_name = f"bench_wp{uuid.uuid4().hex[:8]}"
        url = services["MONGO_URL"].replace("/imap_runtime?", f"/{db_name}?")
        storage = Storage(url)
        storage.ensure_indexes()
        Standalone.ensure_indexes(storage)
        storage.db.imap_intents.create_index([("inboxIntegrationId", 1), ("messageId", 1)], unique=True)
        client: pymongo.MongoClient[Any] = pymongo.MongoClient(url)
        db = client.get_default_database()
        docs = [message(i, db_name) for i in range(args.mails)]
        cpu0 = proc_cpu_seconds(pid)
        for k in range(0, len(docs), args.batch):
            pattern(db, docs[k:k + args.batch])
        cpu_ms = (proc_cpu_seconds(pid) - cpu0) * 1000 / args.mails
        rows.append({"pattern": name, "secantusdb_cpu_ms_per_mail": cpu_ms})
        log(f"write patterns: {name:8s} {cpu_ms:.2f} ms of SecantusDB CPU per mail")
        client.drop_database(db_name)
        client.close()
        storage.close()
    write_result("write-patterns", round_floats({
        "benchmark": "write_patterns", "command": command_line(), "machine": machine_info(), "mails": args.mails,
        "batch": args.batch, "rows": rows}))


if __name__ == "__main__":
    main()
