"""What IDLE-ing mailboxes do while no mail arrives: MongoDB writes (change streams on ``imap_integrations`` and
``imap_cursors``) per mailbox over a quiet period, and when they happen.

    .venv/bin/python -m bench.idle_writes [--mailboxes 200] [--quiet 180]

Explains the periodic latency outliers of the scale benchmark: with Dovecot (``* OK Still here`` every 2
minutes) every mailbox hits the 55 s ``idle_watchdog_seconds``, ends IDLE, searches and records its state and
cursor again; mailboxes started together do it together.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import time
from collections import Counter
from typing import Any

from bench.common import (
    Caller,
    Run,
    RuntimeProcess,
    Watcher,
    add_users,
    command_line,
    ensure_services,
    imap_details,
    log,
    machine_info,
    round_floats,
    wait_until,
    write_result,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mailboxes", type=int, default=200)
    parser.add_argument("--quiet", type=float, default=180.0, help="seconds observed after all are idle")
    args = parser.parse_args()
    services = ensure_services("scale")
    run = Run(services, "iw")
    users = add_users(services, args.mailboxes, prefix="iw")
    runtime = RuntimeProcess(run, "idle-writes")
    runtime.start()
    caller = Caller(services["RABBITMQ_HOST"], run.prefix)
    events: list[tuple[float, str, str]] = []

    def record(collection: str) -> Any:
        def on_event(change: dict[str, Any], at: float) -> None:
            events.append((at, collection, change.get("operationType", "?")))
        return on_event

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: caller.create_integration(f"inbox-iw-{i}", imap_details(services, *users[i])),
                          range(args.mailboxes)))
        wait_until(lambda: run.db.imap_integrations.count_documents({"state": "idle"}) >= args.mailboxes, 120,
                   interval=0.5, what="all idle")
        time.sleep(2)
        watchers = [Watcher(run.db.imap_integrations, record("imap_integrations")).start(),
                    Watcher(run.db.imap_cursors, record("imap_cursors")).start(),
                    Watcher(run.db.imap_logs, record("imap_logs")).start()]
        t0 = time.time()
        log(f"idle_writes: {args.mailboxes} mailboxes idle; watching {args.quiet:.0f} s of quiet")
        time.sleep(args.quiet)
        for w in watchers:
            w.stop()
    finally:
        caller.close()
        runtime.terminate()
        run.cleanup()
    seen = [(t - t0, c, op) for t, c, op in events if t >= t0]
    per_10s = Counter(int(t // 10) * 10 for t, _, _ in seen)
    by_collection = Counter(c for _, c, _ in seen)
    data = {"benchmark": "idle_writes", "command": command_line(), "machine": machine_info(),
            "mailboxes": args.mailboxes, "quiet_seconds": args.quiet,
            "writes": len(seen), "writes_per_mailbox_per_minute": len(seen) / args.mailboxes / (args.quiet / 60),
            "by_collection": dict(by_collection),
            "writes_per_10s_window": {f"{k}-{k + 10}s": v for k, v in sorted(per_10s.items())}}
    write_result("idle_writes", round_floats(data))
    print(f"{len(seen)} writes in {args.quiet:.0f} s from {args.mailboxes} idle mailboxes "
          f"({data['writes_per_mailbox_per_minute']:.2f} per mailbox per minute): {dict(by_collection)}")
    print("per 10 s:", " ".join(f"{k}s:{v}" for k, v in sorted(per_10s.items())))


if __name__ == "__main__":
    main()
