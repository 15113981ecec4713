"""Latency: mails appended one at a time to an IDLE-ing mailbox; from APPEND returning to the mail stored and to
``conversationClientMessageInserted`` consumed, next to the same server's raw IDLE notification time.

    .venv/bin/python -m bench.latency [--mails 200] [--pause 0.3] [--server cyrus] [--services FILE]

``--server cyrus``: the Cyrus beside Dovecot, which announces a mail in about 1 ms (no 0.5 s batching), so what
is measured is the runtime's own latency. ``--services``: servers already running (e.g. the test bed's
/tmp/imap-runtime/test/services.env) instead of the bench profile's own.

Per mail (all wall-clock, one machine):
  raw_idle   APPEND returned -> a bare imapclient IDLE client on the same mailbox saw ``* n EXISTS``
  fetched    APPEND returned -> the runtime's fetch of it returned (``imap_messages.receivedAt``)
  stored     APPEND returned -> its ``imap_messages`` document reached ``ingestState: done`` (change stream)
  announced  APPEND returned -> standalone mode consumed ``conversationClientMessageInserted``
             (``standalone_message_notifications.receivedAt``)
The bare client and the runtime run at the same time on the same mails, so the ratios compare like with like
even when the machine is busy.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    Caller,
    CpuMeter,
    IdleProbe,
    Run,
    RuntimeProcess,
    Watcher,
    add_users,
    command_line,
    ensure_services,
    imap_client,
    imap_details,
    log,
    machine_info,
    on_server,
    read_env_file,
    ratio,
    round_floats,
    server_meters,
    summary,
    wait_until,
    write_result,
)
from bench.corpus import realistic_mix
from bench.erxes import SeparateErxes

TARGET_P50_RATIO = 1.3
TARGET_P99_RATIO = 2.0


class StallMonitor:
    """Pings MongoDB every 50 ms on a connection of its own and records pings slower than 100 ms (wall time,
    duration): a storage stall shows up here and in the latency of the mails at that moment."""

    def __init__(self, mongo_url: str) -> None:
        import pymongo

        self._client: Any = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=10000)
        self.stalls: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mongo-stalls", daemon=True)

    def start(self) -> StallMonitor:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            t0 = time.time()
            try:
                self._client.admin.command("ping")
            except Exception:  # noqa: BLE001, S110
                pass
            took = time.time() - t0
            if took > 0.1:
                self.stalls.append((t0, took))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._client.close()


class MessageEvents:
    """imap_messages change events: document id -> Message-ID, and when each reached ``stored``/``done``."""

    def __init__(self) -> None:
        self.ids: dict[Any, str] = {}
        self.stored: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self._early: dict[Any, dict[str, float]] = {}

    def __call__(self, change: dict[str, Any], at: float) -> None:
        op = change.get("operationType")
        key = change.get("documentKey", {}).get("_id")
        if op == "insert":
            doc = change.get("fullDocument") or {}
            mid = doc.get("messageId")
            self.ids[key] = mid
            state = doc.get("ingestState")
            if state in ("stored", "done"):
                getattr(self, state).setdefault(mid, at)
            for state, t in self._early.pop(key, {}).items():
                getattr(self, state).setdefault(mid, t)
        elif op in ("update", "replace"):
            fields = (change.get("updateDescription") or {}).get("updatedFields") or change.get("fullDocument") or {}
            state = fields.get("ingestState")
            if state in ("stored", "done"):
                mid = self.ids.get(key)
                if mid is None:
                    self._early.setdefault(key, {})[state] = at
                else:
                    getattr(self, state).setdefault(mid, at)


def measure(run: Run, runtime: RuntimeProcess, user: str, password: str, *, mails: int, pause: float,
            seed: int = 7, timeout: float = 60.0, probe: IdleProbe | None = None,
            erxes: SeparateErxes | None = None) -> dict[str, Any]:
    """Append ``mails`` mails one at a time to ``user``'s INBOX, whose integration is IDLE in ``runtime``.
    ``probe``: a bare IDLE client already logged in as ``user`` (not yet IDLE-ing); by default one is made."""
    services = run.services
    corpus = realistic_mix(mails, f"{user}@localhost", seed=seed, tag=f"lat{run.id}")
    events = MessageEvents()
    watcher = Watcher(run.db.imap_messages, events).start()
    probe = probe or IdleProbe(services, user, password)
    base = probe.base
    probe.start()
    stalls = StallMonitor(run.mongo_url).start()
    appender = imap_client(services, user, password)
    rnd = random.Random(seed)
    appended: dict[str, float] = {}
    missing: list[str] = []
    time.sleep(1.0)  # let the probe's IDLE settle
    meter = CpuMeter({**server_meters(services, runtime), **(erxes.meters() if erxes else {})}).start()
    log(f"latency: appending {mails} mails one at a time to {user}")
    for i, mail in enumerate(corpus):
        appender.append("INBOX", mail.raw)
        t0 = time.time()
        appended[mail.message_id] = t0
        try:
            wait_until(lambda: mail.message_id in events.done and (base + i + 1) in probe.exists, timeout,  # noqa: B023
                       interval=0.002, what=f"mail {i}")
        except TimeoutError:
            missing.append(mail.message_id)
            log(f"latency: mail {i} not done within {timeout} s (done={mail.message_id in events.done}, "
                f"exists={(base + i + 1) in probe.exists})")
        watcher.check()
        probe.check()
        if (i + 1) % 50 == 0:
            log(f"latency: {i + 1}/{mails}")
        time.sleep(pause + rnd.uniform(0, pause))  # jitter: do not phase-lock with the server's notify batching
    # give the announcements a moment to be consumed, then read their times
    cpu = meter.stop()
    time.sleep(0.5)
    watcher.stop()
    probe.stop()
    stalls.stop()
    appender.logout()
    docs = {d["messageId"]: d for d in run.db.imap_messages.find(
        {"messageId": {"$in": list(appended)}}, {"messageId": 1, "receivedAt": 1})}
    erxes_db = erxes.db if erxes is not None else run.db
    notes = {n["messageId"]: n["receivedAt"] for n in erxes_db.standalone_message_notifications.find(
        {"messageId": {"$in": [str(d["_id"]) for d in docs.values()]}}, {"messageId": 1, "receivedAt": 1})}
    per_mail = []
    for i, mail in enumerate(corpus):
        mid = mail.message_id
        t0 = appended[mid]
        doc = docs.get(mid)
        note = notes.get(str(doc["_id"])) if doc else None
        exists_at = probe.exists.get(base + i + 1)
        per_mail.append({
            "i": i, "t0": t0,
            "raw_idle": exists_at - t0 if exists_at else None,
            "fetched": doc["receivedAt"].timestamp() - t0 if doc and doc.get("receivedAt") else None,
            "stored": events.done[mid] - t0 if mid in events.done else None,
            "announced": note.timestamp() - t0 if note else None,
        })
    out: dict[str, Any] = {"mails": mails, "pause_s": pause, "missing": len(missing), "cpu": cpu,
                           "mongo_ping_stalls_over_100ms": stalls.stalls}
    for key in ("raw_idle", "fetched", "stored", "announced"):
        out[key] = summary([m[key] for m in per_mail if m[key] is not None])
    for key in ("stored", "announced"):
        out[f"{key}_vs_raw"] = {"p50": ratio(out[key]["p50"], out["raw_idle"]["p50"]),
                                "p95": ratio(out[key]["p95"], out["raw_idle"]["p95"]),
                                "p99": ratio(out[key]["p99"], out["raw_idle"]["p99"])}
    # what the runtime adds per mail beyond the server's own notification, paired mail by mail
    out["added_after_raw_idle"] = summary([m["stored"] - m["raw_idle"] for m in per_mail
                                           if m["stored"] is not None and m["raw_idle"] is not None])
    out["targets"] = verdict(out)
    out["per_mail"] = per_mail
    return out


def verdict(out: dict[str, Any]) -> dict[str, Any]:
    worst50 = max(out["stored_vs_raw"]["p50"], out["announced_vs_raw"]["p50"])
    worst99 = max(out["stored_vs_raw"]["p99"], out["announced_vs_raw"]["p99"])
    return {"p50_ratio": {"target": f"<= {TARGET_P50_RATIO}x raw IDLE", "value": worst50,
                          "met": bool(worst50 <= TARGET_P50_RATIO) and out["missing"] == 0},
            "p99_ratio": {"target": f"<= {TARGET_P99_RATIO}x raw IDLE", "value": worst99,
                          "met": bool(worst99 <= TARGET_P99_RATIO) and out["missing"] == 0}}


def start_idle_runtime(run: Run, name: str, user: str, password: str, trace: str | None = None,
                       erxes: SeparateErxes | None = None) -> tuple[RuntimeProcess, Caller]:
    """``trace``: a file for bench.patched_runtime's ``trace`` probe (the time line of every step of a mail).
    ``erxes``: erxes in processes of its own (the runtime with STANDALONE=false), as production has it."""
    env = erxes.runtime_env() if erxes is not None else {}
    runtime = RuntimeProcess(run, name, env) if trace is None else RuntimeProcess(
        run, name, extra_env={**env, "BENCH_PATCHES": "trace", "BENCH_TRACE_FILE": trace},
        module="bench.patched_runtime")
    runtime.start()
    caller = Caller(run.services["RABBITMQ_HOST"], run.prefix)
    caller.create_integration("inbox-bench", imap_details(run.services, user, password))
    wait_until(lambda: (run.db.imap_integrations.find_one({"inboxId": "inbox-bench"}) or {}).get("state") == "idle",
               30, what="the integration IDLE")
    return runtime, caller


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=200)
    parser.add_argument("--pause", type=float, default=0.3,
                        help="pause after each mail is done, plus a random 0..pause (seconds)")
    parser.add_argument("--keep", action="store_true", help="keep the run's database")
    parser.add_argument("--out", default="latency", help="result name (bench/results/NAME.json)")
    parser.add_argument("--server", choices=["dovecot", "cyrus"], default="dovecot")
    parser.add_argument("--services", help="a services.env of servers already running (default: "
                                           "$IMAP_RUNTIME_SERVICES_ENV, else the bench profile's servers)")
    parser.add_argument("--trace", help="EXPERIMENT: run bench.patched_runtime with its trace probe, writing the "
                                        "time line of every step to this file (then: python -m bench.trace FILE)")
    parser.add_argument("--erxes", choices=("in-process", "separate"), default="in-process",
                        help="where the erxes emulation runs: in the runtime (standalone, the default) or, as in "
                             "production, in a process and a database of its own (bench/erxes.py)")
    args = parser.parse_args()
    env_file = args.services or os.environ.get("IMAP_RUNTIME_SERVICES_ENV")
    services = on_server(read_env_file(Path(env_file)) if env_file else ensure_services(), args.server)
    machine = machine_info()
    run = Run(services, "lat")
    (user, password), = add_users(services, 1, prefix="lat")
    with contextlib.ExitStack() as stack:
        erxes = stack.enter_context(SeparateErxes(run)) if args.erxes == "separate" else None
        runtime, caller = start_idle_runtime(run, "latency", user, password, trace=args.trace, erxes=erxes)
        try:
            result = measure(run, runtime, user, password, mails=args.mails, pause=args.pause, erxes=erxes)
            result["runtime_status"] = runtime.status()
            result["erxes"] = args.erxes
        finally:
            caller.close()
            code = runtime.terminate()
            run.cleanup(keep=args.keep)
    log(f"runtime exited with {code}; log: {runtime.log_path}")
    data = {"benchmark": "latency", "server": args.server, "command": command_line(), "machine": machine, **result}
    write_result(args.out, round_floats(data))
    print_summary(data)


def print_summary(data: dict[str, Any]) -> None:
    for key in ("raw_idle", "fetched", "stored", "announced"):
        s = data[key]
        if s.get("n"):
            print(f"{key:10s} n={s['n']:4d}  p50 {s['p50'] * 1000:7.1f} ms  p95 {s['p95'] * 1000:7.1f} ms  "
                  f"p99 {s['p99'] * 1000:7.1f} ms  max {s['max'] * 1000:7.1f} ms")
    for key in ("stored_vs_raw", "announced_vs_raw"):
        r = data[key]
        print(f"{key:17s} p50 {r['p50']:.2f}x  p95 {r['p95']:.2f}x  p99 {r['p99']:.2f}x")
    for name, t in data["targets"].items():
        print(f"target {name}: {t['target']}: {t['value']:.2f} -> {'met' if t['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
