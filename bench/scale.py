"""Scale: K mailboxes IDLE-ing in one runtime process.

    .venv/bin/python -m bench.scale [--mailboxes 1000] [--mails 50]

Runs on its own server set (profile "scale": Dovecot with imap client_limit 50, so 1,000 IDLE sessions fit in
the mail uid's 128 inotify instances). Steps:
1. K users; the runtime starts empty; K ``createIntegration`` calls (8 callers at a time) until all K
   integrations say ``state: idle``.
2. Settled: process RSS, thread count, open fds (/proc/PID) and the CPU the runtime burns while merely IDLE-ing.
3. Latency (bench.latency's measurement, ``--mails`` mails) on one of the K mailboxes while all are connected.
   Dovecot quirk: two IDLE sessions of one user inside one imap process (client_limit > 1) share one inotify
   watch and only one of them is notified; so the bare IDLE client is placed (checked with ``doveadm who``) in
   another imap process than the runtime's session of that user.
4. Restart: SIGTERM (timed), start again, time from process start until all K are ``idle`` again
   (``stateChangedAt`` after the start): the time to bring them all to IDLE. RSS/threads again.
CPU of the runtime, SecantusDB and Dovecot is measured over steps 1 and 4; the restart's start-up phases are
read from the runtime's log. ``--profile``: py-spy (20 Hz, GIL holder + all threads) records the restart ->
bench/results/scale-restart-{cpu,wall}.txt (``python -m bench.profile --stem scale-restart``). Careful: py-spy
slows a 1,000-thread process a lot; in one such run the supervisor's start_all overran start-up's 30 s ask
timeout and the runtime exited 1. Never the headline figure.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import latency
from bench.catchup import start_profilers, stop_profilers
from bench.common import (
    Caller,
    CpuMeter,
    IdleProbe,
    Run,
    RuntimeProcess,
    add_users,
    command_line,
    ensure_services,
    imap_details,
    log,
    machine_info,
    open_fds,
    round_floats,
    server_meters,
    summary,
    write_result,
)

TARGET_IDLE_S = 60.0
TARGET_RSS_MB = 500.0


def sessions_by_user(services: dict[str, str]) -> dict[str, list[int]]:
    """user -> imap process ids of its sessions (``doveadm who -1``)."""
    out = subprocess.run(["doveadm", "-c", str(Path(services["MAIL_DIR"]) / "dovecot.conf"), "who", "-1"],  # noqa: PLW1510
                         capture_output=True, text=True, timeout=60).stdout
    sessions: dict[str, list[int]] = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[2].isdigit():
            sessions.setdefault(parts[0], []).append(int(parts[2]))
    return sessions


def place_probe(services: dict[str, str], users: list[tuple[str, str]]) -> tuple[str, str, IdleProbe, dict]:
    """A bare IDLE client on a user whose runtime session lives in another imap process than the client. A
    client that lands in the runtime's session's process is kept open (not IDLE-ing) as a filler, so that the
    next one goes elsewhere once that process is full; fillers are closed at the end."""
    user, password = users[0]
    before = sessions_by_user(services).get(user, [])
    if len(before) != 1:
        raise RuntimeError(f"expected one runtime session of {user}, found {before}")
    limit = int(services.get("IMAP_CLIENT_LIMIT", "50"))
    fillers: list[IdleProbe] = []
    try:
        for _ in range(limit + 5):
            probe = IdleProbe(services, user, password)
            after = sessions_by_user(services).get(user, [])
            mine = sorted(set(after) - {before[0]})
            if mine:  # the probe is in a process of its own choosing, not the runtime session's
                return user, password, probe, {"runtime_imap_pid": before[0], "probe_imap_pid": mine[0],
                                               "fillers": len(fillers)}
            fillers.append(probe)
    finally:
        for filler in fillers:
            filler.stop()
    raise RuntimeError("could not place the IDLE probe in another imap process than the runtime's session")


class Progress:
    """Samples the count of integrations in ``idle`` (changed since ``since``) with RSS and threads."""

    def __init__(self, run: Run, runtime: RuntimeProcess, since: dt.datetime | None) -> None:
        self.run, self.runtime, self.since = run, runtime, since
        self.timeline: list[dict[str, Any]] = []

    def sample(self, t0: float) -> int:
        query: dict[str, Any] = {"state": "idle"}
        if self.since is not None:
            query["stateChangedAt"] = {"$gte": self.since}
        idle = self.run.db.imap_integrations.count_documents(query)
        status = self.runtime.status() if self.runtime.alive() else {}
        self.timeline.append({"t": time.time() - t0, "idle": idle, "rss_kb": status.get("VmRSS"),
                              "threads": status.get("Threads")})
        return idle

    def wait_all(self, k: int, t0: float, timeout: float, tick: Any = None) -> float | None:
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            if tick is not None:
                tick()
            idle = self.sample(t0)
            if idle != last and len(self.timeline) % 10 == 0:
                log(f"scale: {idle}/{k} idle after {self.timeline[-1]['t']:.1f} s")
            last = idle
            if idle >= k:
                return self.timeline[-1]["t"]
            if not self.runtime.alive():
                raise RuntimeError(f"the runtime died: {self.runtime.log_tail()}")
            time.sleep(0.5)
        return None


def startup_phases(log_path: Path) -> dict[str, float | None]:
    """From the runtime's log: seconds from its first line to the standalone emulation being served, to
    ``Started N mailbox(es)`` (the supervisor's start_all, which start-up waits for, with a 30 s ask timeout),
    and to ``is serving`` (/health ok, procedures served)."""
    import re

    stamps: dict[str, float] = {}
    pattern = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
    for line in log_path.read_text(errors="replace").splitlines():
        m = pattern.match(line)
        if not m:
            continue
        t = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        stamps.setdefault("first", t)
        for key, marker in (("broker", "Standalone mode: serving"), ("started_all", "mailbox(es)"),
                            ("serving", "is serving")):
            if marker in line:
                stamps.setdefault(key, t)
    first = stamps.get("first")
    return {f"{k}_s": (stamps[k] - first if k in stamps and first else None)
            for k in ("broker", "started_all", "serving")} | {
        "start_all_s": (stamps["started_all"] - stamps["broker"]) if {"started_all", "broker"} <= stamps.keys()
        else None}


def states(run: Run) -> dict[str, int]:
    out: dict[str, int] = {}
    for doc in run.db.imap_integrations.find({}, {"state": 1}):
        out[doc.get("state", "?")] = out.get(doc.get("state", "?"), 0) + 1
    return out


def settle_stats(services: dict[str, str], runtime: RuntimeProcess, seconds: float) -> dict[str, Any]:
    meter = CpuMeter(server_meters(services, runtime)).start()
    time.sleep(seconds)
    cpu = meter.stop()
    return {"status": runtime.status(), "open_fds": open_fds(runtime.pid), "idle_cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mailboxes", type=int, default=1000)
    parser.add_argument("--mails", type=int, default=50, help="mails of the latency measurement")
    parser.add_argument("--pause", type=float, default=0.3)
    parser.add_argument("--callers", type=int, default=8, help="createIntegration calls in flight")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds over which idle CPU is measured")
    parser.add_argument("--profile", action="store_true", help="py-spy the restart (see above)")
    parser.add_argument("--tls", action="store_true", help="integrations over implicit TLS (IMAPS, caCert), as "
                                                           "production mailboxes on 993")
    parser.add_argument("--patch", default="", help="EXPERIMENT: run bench.patched_runtime with these patches")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", default="scale")
    args = parser.parse_args()
    k = args.mailboxes
    services = ensure_services("scale")
    machine = machine_info()
    run = Run(services, "sc")
    log(f"scale: creating {k} users")
    users = add_users(services, k, prefix="sc")
    data: dict[str, Any] = {"benchmark": "scale", "command": command_line(), "machine": machine, "mailboxes": k,
                            "imap_client_limit": services["IMAP_CLIENT_LIMIT"]}
    def runtime_process(name: str) -> RuntimeProcess:
        if args.patch:
            return RuntimeProcess(run, name, {"BENCH_PATCHES": args.patch}, module="bench.patched_runtime")
        return RuntimeProcess(run, name)

    data["tls"] = args.tls
    data["experiment_patches"] = args.patch or None
    runtime = runtime_process("scale")
    runtime.start()
    caller = Caller(services["RABBITMQ_HOST"], run.prefix)
    try:
        # 1. create K integrations
        progress = Progress(run, runtime, None)
        rpc_times: list[float] = []

        def create(i: int) -> None:
            user, password = users[i]
            t = time.perf_counter()
            caller.create_integration(f"inbox-sc-{i}", imap_details(services, user, password, tls=args.tls),
                                      timeout=120)
            rpc_times.append(time.perf_counter() - t)

        log(f"scale: {k} createIntegration calls, {args.callers} at a time")
        meter = CpuMeter(server_meters(services, runtime)).start()
        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(args.callers) as pool:
            futures = [pool.submit(create, i) for i in range(k)]
            while not all(f.done() for f in futures):
                progress.sample(t0)
                time.sleep(0.5)
            for f in futures:
                f.result()
        calls_s = time.time() - t0
        all_idle = progress.wait_all(k, t0, timeout=600)
        data["create"] = {"calls_seconds": calls_s, "rpc_reply": summary(rpc_times), "all_idle_seconds": all_idle,
                          "cpu": meter.stop(),
                          "states_at_end": states(run), "timeline": progress.timeline}
        log(f"scale: created {k} in {calls_s:.1f} s; all idle after {all_idle} s")
        if all_idle is None:
            raise RuntimeError(f"not all {k} mailboxes reached idle: {states(run)}")

        # 2. settled
        time.sleep(5)
        data["settled"] = settle_stats(services, runtime, args.settle)
        log(f"scale: settled: {data['settled']}")

        # 3. latency while all are connected
        user, password, probe, placement = place_probe(services, users)
        idx = [u for u, _ in users].index(user)
        log(f"scale: latency on {user} (inbox-sc-{idx}); imap processes {placement}")
        lat = latency.measure(run, runtime, user, password, mails=args.mails, pause=args.pause, probe=probe)
        lat["placement"] = placement
        data["latency"] = lat
        latency.print_summary({**lat})
        data["after_latency"] = {"status": runtime.status(), "open_fds": open_fds(runtime.pid)}

        # 4. restart: time to bring all K to IDLE from process start
        t_stop = time.perf_counter()
        code = runtime.terminate(timeout=120)
        data["stop"] = {"seconds": time.perf_counter() - t_stop, "exit_code": code}
        log(f"scale: stopped in {data['stop']['seconds']:.1f} s (exit {code}); restarting")
        runtime = runtime_process("scale-restart")
        since = dt.datetime.now(dt.UTC)
        t0 = runtime.start(wait_healthy=False)
        meter = CpuMeter(server_meters(services, runtime)).start()
        profilers = start_profilers(runtime.pid, "scale-restart", rate=20) if args.profile else []
        progress = Progress(run, runtime, since)
        healthy_at: list[float] = []

        def check_health() -> None:
            if not healthy_at and runtime.health() == "ok":
                healthy_at.append(time.time() - t0)

        try:
            all_idle = progress.wait_all(k, t0, timeout=600, tick=check_health)  # sampled from the start
            healthy = healthy_at[0] if healthy_at else runtime.wait_healthy(120) - t0
            error = None
        except RuntimeError as exc:  # e.g. start-up gave up: recorded, not fatal for the other results
            healthy = all_idle = None
            error = str(exc)[:2000]
            log(f"scale: the restarted runtime failed: {error[:300]}")
        finally:
            stop_profilers(profilers)
        peak = max((p["rss_kb"] or 0 for p in progress.timeline), default=0)
        data["restart"] = {"seconds_to_healthy": healthy, "all_idle_seconds": all_idle, "states_at_end": states(run),
                           "cpu": meter.stop(), "profiled": args.profile, "error": error,
                           "exit_code": None if runtime.alive() else runtime.proc.returncode,  # type: ignore[union-attr]
                           "timeline": progress.timeline, "peak_rss_kb_sampled": peak}
        data["restart"]["startup_log"] = startup_phases(runtime.log_path)
        log(f"scale: after restart all idle in {all_idle} s; start-up phases {data['restart']['startup_log']}")
        if runtime.alive():
            time.sleep(5)
            data["restart"]["settled"] = settle_stats(services, runtime, args.settle)
    finally:
        caller.close()
        if runtime.alive():
            code = runtime.terminate(timeout=120)
        run.cleanup(keep=args.keep)
    rss_mb = max(data["settled"]["status"]["VmHWM"], data["after_latency"]["status"]["VmHWM"],
                 data["restart"].get("settled", {}).get("status", {}).get("VmHWM", 0)) / 1024
    idle_s = data["restart"]["all_idle_seconds"]
    lat_t = data["latency"]["targets"]
    data["targets"] = {
        "all_idle": {"target": f"all {k} IDLE within {TARGET_IDLE_S:.0f} s (process start -> all idle)",
                     "value": idle_s, "met": bool(idle_s is not None and idle_s <= TARGET_IDLE_S)},
        "all_idle_create": {"target": f"(also) {k} createIntegration -> all IDLE within {TARGET_IDLE_S:.0f} s",
                            "value": data["create"]["all_idle_seconds"],
                            "met": bool(data["create"]["all_idle_seconds"] <= TARGET_IDLE_S)},
        "rss": {"target": f"RSS < {TARGET_RSS_MB:.0f} MB (VmHWM, peak)", "value": rss_mb,
                "met": bool(rss_mb < TARGET_RSS_MB)},
        "latency_p50": {**lat_t["p50_ratio"], "target": lat_t["p50_ratio"]["target"] + f" with {k} connected"},
        "latency_p99": {**lat_t["p99_ratio"], "target": lat_t["p99_ratio"]["target"] + f" with {k} connected"},
    }
    write_result(args.out, round_floats(data))
    st = data["settled"]["status"]
    print(f"{k} mailboxes: createIntegration x{k} in {data['create']['calls_seconds']:.1f} s, all idle after "
          f"{data['create']['all_idle_seconds']:.1f} s; restart: all idle {idle_s} s after process start")
    print(f"settled: RSS {st['VmRSS'] / 1024:.0f} MB (peak {rss_mb:.0f} MB), {st['Threads']} threads, "
          f"{data['settled']['open_fds']} fds, idle CPU {data['settled']['idle_cpu'].get('runtime_cores', 0):.2f} cores")
    for name, t in data["targets"].items():
        print(f"target {name}: {t['target']}: {t['value']} -> {'met' if t['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
