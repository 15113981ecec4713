"""What one MongoDB operation of the ingest path costs on the benchmark's SecantusDB, by collection size: the
evidence behind the catch-up analysis in docs/benchmarks.md.

    .venv/bin/python -m bench.storage_ops [--sizes 1000,5000,10000] [--reps 30]

Uses the product's own ``runtime.storage.Storage`` (its indexes and queries) on a scratch database, with
message documents shaped like the runtime's (~4 KiB body). Besides the product's operations it times the
thread lookup as it was until commit 726bb5a (one ``$or`` + ``inboxConversationId $nin`` + sort: a collection
scan on SecantusDB), the same lookup as two plain indexed queries (what 726bb5a adopted), and bulk writes of a
whole fetch batch (50) instead of one round trip per mail.
"""
from __future__ import annotations

import argparse
import datetime as dt
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import pymongo

from bench.common import (
    command_line,
    ensure_services,
    log,
    machine_info,
    round_floats,
    write_result,
)


def former_thread_lookup(storage: Any, inbox_id: str, ids: list[str]) -> str | None:
    """The thread lookup (``Storage.find_thread_conversation``, since replaced by ``thread_candidates`` and
    ``runtime.pipeline.pick_thread``) before commit 726bb5a."""
    doc = storage.messages.find_one(
        {"inboxIntegrationId": inbox_id, "inboxConversationId": {"$nin": [None, ""]},
         "$or": [{"messageId": {"$in": ids}}, {"references": {"$in": ids}}]},
        projection={"inboxConversationId": 1}, sort=[("createdAt", 1)])
    return doc["inboxConversationId"] if doc else None


def split_thread_lookup(storage: Any, inbox_id: str, ids: list[str]) -> str | None:
    """The alternative: two indexed lookups (messageId, then references), the earliest with a conversation."""
    found = []
    for field in ("messageId", "references"):
        found += storage.messages.find({"inboxIntegrationId": inbox_id, field: {"$in": ids}},
                                       {"inboxConversationId": 1, "createdAt": 1})
    found = [d for d in found if d.get("inboxConversationId")]
    return min(found, key=lambda d: d["createdAt"])["inboxConversationId"] if found else None


def timed(reps: int, fn: Callable[[int], Any]) -> float:
    t0 = time.perf_counter()
    for i in range(reps):
        fn(i)
    return (time.perf_counter() - t0) / reps * 1000


def main() -> None:
    from runtime.pipeline import pick_thread
    from runtime.storage import Storage

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    services = ensure_services()
    machine = machine_info()
    name = f"bench_ops{uuid.uuid4().hex[:8]}"
    url = services["MONGO_URL"].replace("/imap_runtime?", f"/{name}?")
    storage = Storage(url)
    storage.ensure_indexes()
    rnd = random.Random(5)
    inbox = "inbox-ops"
    body = "<p>" + "lorem ipsum " * 330 + "</p>"
    n = 0
    rows = []

    def doc(i: int) -> dict[str, Any]:
        refs = [f"<ops-{rnd.randrange(i)}@x>"] if i and rnd.random() < 0.3 else []
        return {"inboxIntegrationId": inbox, "inboxConversationId": f"c{i}", "customerId": "cust",
                "messageId": f"<ops-{i}@x>", "subject": "Order", "inReplyTo": refs[-1] if refs else None,
                "references": refs, "body": body, "from": [{"name": "A", "address": "a@example.com"}],
                "to": [], "cc": [], "bcc": [], "replyTo": [], "attachments": [],
                "createdAt": dt.datetime.now(dt.UTC), "ingestState": "done", "folder": "INBOX",
                "uid": i}

    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            if size > n:
                for start in range(n, size, 500):
                    storage.messages.insert_many([doc(i) for i in range(start, min(size, start + 500))])
                n = size
            ids = [[f"<ops-{rnd.randrange(n)}@x>"] for _ in range(args.reps)]
            new = [doc(10_000_000 + n * 10 + i) for i in range(args.reps)]
            r: dict[str, Any] = {"messages": n}
            r["find_message"] = timed(args.reps, lambda i: storage.find_message(inbox, ids[i][0]))  # noqa: B023
            r["thread lookup as before 726bb5a ($or + $nin + sort)"] = timed(
                args.reps, lambda i: former_thread_lookup(storage, inbox, ids[i]))  # noqa: B023
            r["thread_candidates + pick_thread (the product now)"] = timed(
                args.reps, lambda i: pick_thread(storage.thread_candidates(inbox, ids[i]), ids[i]))  # noqa: B023
            r["thread lookup split in two indexed queries"] = timed(
                args.reps, lambda i: split_thread_lookup(storage, inbox, ids[i]))  # noqa: B023
            r["insert_one of a message"] = timed(args.reps, lambda i: storage.messages.insert_one(dict(new[i])))  # noqa: B023
            oids = [storage.find_message(inbox, d["messageId"])["_id"] for d in new]
            r["update_one by _id (a state)"] = timed(args.reps, lambda i: storage.messages.update_one(  # noqa: B023
                {"_id": oids[i]}, {"$set": {"ingestState": "done"}}))  # noqa: B023
            r["save_cursor (upsert)"] = timed(args.reps, lambda i: storage.save_cursor(inbox, "INBOX", 1, n + i))  # noqa: B023
            r["find_customer"] = timed(args.reps, lambda i: storage.find_customer(inbox, f"c{i}@example.com"))
            batch = [doc(20_000_000 + n * 100 + i) for i in range(50)]
            t0 = time.perf_counter()
            res = storage.messages.insert_many(batch, ordered=False)
            r["insert_many of 50, per mail"] = (time.perf_counter() - t0) / 50 * 1000
            t0 = time.perf_counter()
            storage.messages.bulk_write([pymongo.UpdateOne({"_id": oid}, {"$set": {"ingestState": "done"}})
                                         for oid in res.inserted_ids], ordered=False)
            r["bulk_write of 50 updates, per mail"] = (time.perf_counter() - t0) / 50 * 1000
            rows.append(r)
            log("; ".join(f"{k} {v:.2f} ms" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
    finally:
        storage.db.client.drop_database(name)
        storage.close()
    write_result("storage_ops", round_floats({"benchmark": "storage_ops", "command": command_line(),
                                              "machine": machine, "unit": "ms per operation", "rows": rows}, 3))
    keys = [k for k in rows[0] if k != "messages"]
    print("ms per operation | " + " | ".join(f"{r['messages']} msgs" for r in rows))
    for k in keys:
        print(f"{k:55s} " + " ".join(f"{r[k]:9.2f}" for r in rows))


if __name__ == "__main__":
    main()
