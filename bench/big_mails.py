"""RSS while six 20 MB mails are fetched (issue 12 item 8): the runtime's peak RSS, before and after, in one run.

    .venv/bin/python -m bench.big_mails [--mails 6] [--mb 20] [--services PATH]

Six mails of ~20 MB (a base64 attachment each) are appended to a fresh Dovecot user; then a real ``python -m
runtime`` process (standalone, as deployed) connects the mailbox and ingests them. Its peak RSS (``VmHWM`` from
/proc) is read once all six are stored and announced. Two runs, one process each, same mails:

- ``count-only``: ``fetch_batch_bytes: 0``, the batching before issue 12 (up to ``fetch_batch`` = 50 mails in one
  ``UID FETCH``, whatever their size);
- ``byte-budget``: the default ``fetch_batch_bytes`` (32 MiB by RFC822.SIZE, counting mails the pipeline still
  holds; a single mail over it goes alone).

Servers: the test servers of ``$IMAP_RUNTIME_SERVICES_ENV`` (or ``--services``) when given, else the "bench"
profile's (bench/common.py). Results: bench/results/big_mails.json and docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import json
import os
import threading
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from bench.common import (REPO, Caller, Run, RuntimeProcess, command_line, ensure_services, imap_client, imap_details,
                          log, machine_info, proc_status, wait_until, write_result)
from tests.conftest import MailServer, read_env_file

MB = 1000 * 1000


def big_mail(to: str, n: int, size: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Sender {n} <sender{n}@example.com>"
    msg["To"] = to
    msg["Subject"] = f"big mail {n}"
    msg["Message-ID"] = f"<bench-big-{n}-{os.urandom(6).hex()}@example.com>"
    msg.set_content(f"mail {n}: a large attachment")
    msg.add_attachment(os.urandom(size * 3 // 4 - 2000), maintype="application", subtype="octet-stream",
                       filename=f"blob{n}.bin")
    return bytes(msg)


def config_file(run: Run, fetch_batch_bytes: int | None) -> Path:
    """A copy of configs.json with ``fetch_batch_bytes`` set (None: as shipped)."""
    doc = json.loads((REPO / "configs.json").read_text())
    if fetch_batch_bytes is not None:
        doc["imap_runtime"]["fetch_batch_bytes"] = fetch_batch_bytes
    path = Path(f"/tmp/imap-runtime/bench-big-mails-{run.id}.json")
    path.write_text(json.dumps(doc))
    return path


def measure(services: dict[str, str], mode: str, fetch_batch_bytes: int | None, mails: int,
            size: int) -> dict[str, Any]:
    run = Run(services, f"big{mode[:4]}")
    rt: RuntimeProcess | None = None
    caller: Caller | None = None
    path = config_file(run, fetch_batch_bytes)
    try:
        user, password = MailServer(services).add_user("big")  # scripts/mailserver.sh adduser, as the tests do
        raws = [big_mail(f"{user}@localhost", n, size) for n in range(mails)]
        client = imap_client(services, user, password, timeout=120)
        try:
            for raw in raws:
                client.append("INBOX", raw)
        finally:
            client.logout()
        total = sum(len(r) for r in raws)
        del raws
        log(f"{mode}: {mails} mails, {total / MB:.1f} MB appended")
        rt = RuntimeProcess(run, f"big-mails-{mode}", extra_env={"IMAP_RUNTIME_CONFIG": str(path)})
        rt.start()
        time.sleep(1.0)
        baseline = rt.status()
        peak_rss = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.02):
                try:
                    peak_rss[0] = max(peak_rss[0], proc_status(rt.pid)["VmRSS"])
                except (OSError, KeyError):
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        caller = Caller(services["RABBITMQ_HOST"], run.prefix)
        started = time.monotonic()
        caller.create_integration("bench-big", imap_details(services, user, password))
        wait_until(lambda: run.db.imap_messages.count_documents({"inboxIntegrationId": "bench-big",
                                                                 "ingestState": "done"}) == mails,
                   timeout=600, what=f"{mails} stored mails")
        wait_until(lambda: run.db.standalone_message_notifications.count_documents({}) >= mails, timeout=60,
                   what="the announcements")
        elapsed = time.monotonic() - started
        stop.set()
        sampler.join(timeout=5)
        end = rt.status()
        result = {"mode": mode, "fetch_batch_bytes": fetch_batch_bytes, "mails": mails, "bytes": total,
                  "seconds_to_ingest": round(elapsed, 2), "rss_before_kb": baseline["VmRSS"],
                  "peak_rss_kb": end["VmHWM"], "peak_rss_sampled_kb": peak_rss[0],
                  "peak_over_baseline_mb": round((end["VmHWM"] - baseline["VmRSS"]) / 1024, 1)}
        log(f"{mode}: peak RSS {end['VmHWM'] / 1024:.0f} MiB (baseline {baseline['VmRSS'] / 1024:.0f} MiB), "
            f"{elapsed:.1f} s")
        return result
    finally:
        if caller is not None:
            caller.close()
        if rt is not None and rt.alive():
            rt.terminate()
        run.cleanup()
        path.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=6)
    parser.add_argument("--mb", type=float, default=20.0, help="size of each mail in MB (10^6 bytes)")
    parser.add_argument("--services", help="a services.env (default: $IMAP_RUNTIME_SERVICES_ENV, else the bench "
                                           "profile's servers)")
    args = parser.parse_args()
    env_file = args.services or os.environ.get("IMAP_RUNTIME_SERVICES_ENV")
    services = read_env_file(Path(env_file)) if env_file else ensure_services("bench")
    size = int(args.mb * MB)
    results = [measure(services, "count-only", 0, args.mails, size),
               measure(services, "byte-budget", None, args.mails, size)]
    before, after = results
    write_result("big_mails", {"command": command_line(), "machine": machine_info(), "results": results,
                               "peak_ratio_before_over_after": round(before["peak_rss_kb"] / after["peak_rss_kb"], 2)})
    for r in results:
        print(f"{r['mode']:12s} fetch_batch_bytes={r['fetch_batch_bytes']!s:9s} "
              f"peak RSS {r['peak_rss_kb'] / 1024:7.0f} MiB (+{r['peak_over_baseline_mb']:.0f} MiB over "
              f"{r['rss_before_kb'] / 1024:.0f} MiB at start), "
              f"{r['seconds_to_ingest']:.1f} s for {r['mails']} mails of {r['bytes'] / r['mails'] / MB:.1f} MB")


if __name__ == "__main__":
    main()
