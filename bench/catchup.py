"""Catch-up throughput: mails that arrived while the runtime was stopped, from its start to all stored; next to a
bare imapclient loop that fetches (UID FETCH BODY.PEEK[] in batches) and parses (runtime.mail.parse.parse_mail)
the same mails without storing them.

    .venv/bin/python -m bench.catchup [--mails 10000] [--profile] [--erxes separate]

1. The runtime runs, the integration is created and reaches IDLE (empty mailbox, cursor saved), the runtime is
   stopped (SIGTERM).
2. M mails of the realistic mix (bench/corpus.py, ~4 KiB) are appended (MULTIAPPEND).
3. The bare loop runs; then the runtime is started and timed from process start until its cursor
   (``imap_cursors.lastUid``, which moves only once a mail is stored and announced) reaches the last UID; then
   the bare loop runs again. Its rate is the mean of both runs, taken around the runtime's run on a machine
   shared with others.
``--erxes separate``: erxes as in production, a process and a database of its own (``bench/erxes.py``), the
runtime with ``STANDALONE=false``; by default the runtime serves the emulation itself (standalone mode, one
process, one database), as a newcomer runs it.
``--profile``: py-spy samples the runtime during the catch-up (the GIL holder's stacks, i.e. Python code
running -> bench/results/catchup-profiled-cpu.txt; every thread including waiting ones -> ...-wall.txt);
``python -m bench.profile`` summarises them and draws bench/results/catchup.svg. Profiling slows the runtime: a profiled run's rate is not the headline figure.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import time
from typing import Any

from bench.common import (
    RESULTS,
    Caller,
    CpuMeter,
    Run,
    RuntimeProcess,
    add_users,
    chunks,
    command_line,
    ensure_services,
    have_tool,
    imap_client,
    imap_details,
    log,
    machine_info,
    ratio,
    round_floats,
    server_meters,
    summary,
    wait_until,
    write_result,
)
from bench.corpus import realistic_mix
from bench.erxes import SeparateErxes

TARGET_RATIO = 0.5
TARGET_RATE = 300.0


def append_all(services: dict[str, str], user: str, password: str, raws: list[bytes]) -> float:
    t0 = time.perf_counter()
    with imap_client(services, user, password, timeout=120) as client:
        for part in chunks(raws, 250):
            client.multiappend("INBOX", part)
    return time.perf_counter() - t0


def bare_loop(services: dict[str, str], user: str, password: str, batch: int) -> dict[str, Any]:
    """Fetch every mail of INBOX in batches of ``batch`` UIDs and parse it; nothing is stored."""
    from runtime.mail.parse import parse_mail

    t0 = time.perf_counter()
    parse_s = 0.0
    n = 0
    with imap_client(services, user, password, timeout=120) as client:
        client.select_folder("INBOX", readonly=True)
        uids = sorted(client.search(["UID", "1:*"]))
        for part in chunks(uids, batch):
            fetched = client.fetch(part, [b"BODY.PEEK[]"])
            p0 = time.perf_counter()
            for uid in part:
                parse_mail(fetched[uid][b"BODY[]"])
                n += 1
            parse_s += time.perf_counter() - p0
    elapsed = time.perf_counter() - t0
    return {"mails": n, "seconds": elapsed, "mails_per_s": n / elapsed, "parse_seconds": parse_s,
            "fetch_seconds": elapsed - parse_s}


def start_profilers(pid: int, stem: str, rate: int = 100) -> list[subprocess.Popen[bytes]]:
    spy = have_tool("py-spy")
    if spy is None:
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    RESULTS.mkdir(parents=True, exist_ok=True)
    common = [spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--threads"]
    # CPU: only samples of the thread holding the GIL (py-spy's idle detection counts threads blocked in
    # Condition.wait or socket reads as active; the GIL holder is the Python code actually running)
    return [subprocess.Popen([*common, "--gil", "-o", str(RESULTS / f"{stem}-cpu.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            subprocess.Popen([*common, "--idle", "-o", str(RESULTS / f"{stem}-wall.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]


def stop_profilers(procs: list[subprocess.Popen[bytes]]) -> None:
    import signal

    for p in procs:
        p.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def cpu_per_mail(cpu: dict[str, float], mails: int) -> dict[str, float]:
    """Each process's CPU per stored mail (ms), from the cores it used over the catch-up: the budget a 2-core
    machine spends per mail, and where."""
    return {name.removesuffix("_cores"): cores * cpu["seconds"] * 1000 / mails
            for name, cores in cpu.items() if name.endswith("_cores") and mails}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=50, help="bare loop UIDs per FETCH (the runtime's fetch_batch)")
    parser.add_argument("--profile", action="store_true", help="py-spy the runtime during the catch-up")
    parser.add_argument("--patch", default="", help="EXPERIMENT: run bench.patched_runtime with these patches "
                                                    "(comma-separated, see bench/patched_runtime.py)")
    parser.add_argument("--erxes", choices=("in-process", "separate"), default="in-process",
                        help="where the erxes emulation runs (see above)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", default=None, help="result name (default catchup, or catchup-profiled)")
    args = parser.parse_args()
    out_name = args.out or ("catchup-profiled" if args.profile else
                            f"catchup-patched-{args.patch.replace(',', '+')}" if args.patch else
                            "catchup-erxes-separate" if args.erxes == "separate" else "catchup")
    services = ensure_services()
    machine = machine_info()
    run = Run(services, "cu")
    (user, password), = add_users(services, 1, prefix="cu")
    corpus = realistic_mix(args.mails, f"{user}@localhost", seed=11, tag=f"cu{run.id}")
    sizes = [len(m.raw) for m in corpus]
    with contextlib.ExitStack() as stack:
        erxes = stack.enter_context(SeparateErxes(run)) if args.erxes == "separate" else None
        measure(args, out_name, services, machine, run, user, password, corpus, sizes, erxes)


def measure(args: argparse.Namespace, out_name: str, services: dict[str, str], machine: dict[str, Any], run: Run,
            user: str, password: str, corpus: list[Any], sizes: list[int], erxes: SeparateErxes | None) -> None:
    erxes_env = erxes.runtime_env() if erxes is not None else {}
    erxes_db = erxes.db if erxes is not None else run.db
    runtime = RuntimeProcess(run, "catchup", erxes_env)
    runtime.start()
    caller = Caller(services["RABBITMQ_HOST"], run.prefix)
    try:
        caller.create_integration("inbox-cu", imap_details(services, user, password))
        wait_until(lambda: (run.db.imap_integrations.find_one({"inboxId": "inbox-cu"}) or {}).get("state") == "idle",
                   30, what="IDLE")
        wait_until(lambda: run.db.imap_cursors.find_one({"integrationId": "inbox-cu"}), 10, what="a cursor")
    finally:
        caller.close()
        runtime.terminate()
    log(f"catch-up: appending {args.mails} mails ({sum(sizes) / len(sizes):.0f} B mean) while the runtime is stopped")
    append_s = append_all(services, user, password, [m.raw for m in corpus])
    log(f"catch-up: appended in {append_s:.1f} s; bare loop (before)")
    bare = [bare_loop(services, user, password, args.batch)]
    log(f"catch-up: bare loop {bare[0]['mails_per_s']:.0f} mails/s; starting the runtime")

    with imap_client(services, user, password) as client:
        client.select_folder("INBOX", readonly=True)
        last_uid = max(client.search(["UID", "1:*"]))
    timeline: list[tuple[float, int]] = []
    rss: list[tuple[float, int]] = []
    runtime = (RuntimeProcess(run, "catchup-patched", {"BENCH_PATCHES": args.patch, **erxes_env},
                              module="bench.patched_runtime")
               if args.patch else RuntimeProcess(run, "catchup", erxes_env))
    profilers: list[subprocess.Popen[bytes]] = []
    t_start = runtime.start(wait_healthy=False)
    meters = {**server_meters(services, runtime, bench_self=False), **(erxes.meters() if erxes else {})}
    meter = CpuMeter(meters).start()
    try:
        if args.profile:
            profilers = start_profilers(runtime.pid, out_name)
        t_healthy = runtime.wait_healthy(60) - t_start
        deadline = time.monotonic() + max(600.0, args.mails / 10)
        while True:
            doc = run.db.imap_cursors.find_one({"integrationId": "inbox-cu"}) or {}
            now = time.time()
            timeline.append((now - t_start, int(doc.get("lastUid", 0))))
            if len(timeline) % 8 == 0:
                rss.append((now - t_start, runtime.status().get("VmRSS", 0)))
            if timeline[-1][1] >= last_uid:
                break
            if not runtime.alive():
                raise RuntimeError(f"the runtime died: {runtime.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"catch-up not done: cursor at {timeline[-1][1]} of {last_uid}")
            time.sleep(0.25)
        t_done = timeline[-1][0]
        cpu = meter.stop()
        status = runtime.status()
    finally:
        if profilers:
            stop_profilers(profilers)
        runtime.terminate()
    stored = run.db.imap_messages.count_documents({"inboxIntegrationId": "inbox-cu", "ingestState": "done"})
    notified = erxes_db.standalone_message_notifications.count_documents({})
    conversations = erxes_db.standalone_conversations.count_documents({})
    log(f"catch-up: runtime done in {t_done:.1f} s; bare loop (after)")
    bare.append(bare_loop(services, user, password, args.batch))
    run.cleanup(keep=args.keep)

    first = next((t for t, uid in timeline if uid > 0), t_done)
    lo = next((t for t, uid in timeline if uid >= 0.1 * last_uid), first)
    hi = next((t for t, uid in timeline if uid >= 0.9 * last_uid), t_done)
    rate = args.mails / t_done
    steady = 0.8 * last_uid / (hi - lo) if hi > lo else rate
    bare_rate = sum(b["mails_per_s"] for b in bare) / len(bare)
    data = {
        "benchmark": "catchup", "command": command_line(), "machine": machine, "profiled": args.profile,
        "erxes": args.erxes,
        "experiment_patches": args.patch or None,
        "experiment_config": os.environ.get("BENCH_RUNTIME_CONFIG") or None,
        "mails": args.mails, "mail_bytes": summary([float(s) for s in sizes]), "append_seconds": append_s,
        "runtime": {"seconds_from_start": t_done, "mails_per_s": rate, "seconds_to_healthy": t_healthy,
                    "seconds_to_first_stored": first, "steady_mails_per_s_10_to_90pct": steady,
                    "stored_done": stored, "announced": notified, "conversations": conversations,
                    "cpu": cpu, "status_at_end": status, "rss_kb_timeline": rss},
        "bare_loop": {"runs": bare, "mails_per_s": bare_rate, "batch": args.batch},
        "ratio_runtime_to_bare": ratio(rate, bare_rate),
        "cpu_ms_per_mail": cpu_per_mail(cpu, args.mails),
        "targets": {
            "ratio": {"target": f">= {TARGET_RATIO:.0%} of the bare loop", "value": ratio(rate, bare_rate),
                      "met": bool(ratio(rate, bare_rate) >= TARGET_RATIO)},
            "rate": {"target": f">= {TARGET_RATE:.0f} mails/s", "value": rate, "met": bool(rate >= TARGET_RATE)}},
        "cursor_timeline": timeline,
    }
    write_result(out_name, round_floats(data))
    print(f"runtime   {rate:7.1f} mails/s ({args.mails} in {t_done:.1f} s from process start; healthy after "
          f"{t_healthy:.1f} s; steady 10-90% {steady:.1f} mails/s); stored {stored}, announced {notified}")
    runs = ", ".join(f"{b['mails_per_s']:.0f}" for b in bare)
    print(f"bare loop {bare_rate:7.1f} mails/s (runs: {runs})")
    print(f"ratio     {ratio(rate, bare_rate):.2f}  cpu: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    print("cpu ms per mail: " + ", ".join(f"{k} {v:.2f}" for k, v in data["cpu_ms_per_mail"].items()))
    for name, t in data["targets"].items():
        print(f"target {name}: {t['target']}: {t['value']:.2f} -> {'met' if t['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
