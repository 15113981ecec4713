"""What every benchmark needs: the servers, mailbox users, the runtime as users run it, an erxes-like caller,
MongoDB change-stream watchers, statistics, CPU/memory meters, machine facts and the result files.

The runtime is started exactly as ``tests/e2e.py``'s ``RuntimeProcess`` does (``python -m runtime`` with
MONGO_URL, RABBITMQ_HOST, MESSAGE_BROKER_PREFIX, PORT, STANDALONE=true, IMAP_RUNTIME_CONFIG=configs.json): the
defaults of ``configs.json`` apply (e.g. ``idle_slice_seconds`` 1.0, ``fetch_batch`` 50), as in a deployment.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pymongo

from tests.conftest import read_env_file
from tests.e2e import health, stop_process

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
STATE_ROOT = Path(os.environ.get("BENCH_STATE_ROOT", "/tmp/imap-runtime"))

# Two server sets, each under its own state folder with its own ports (the test suite uses 11xxx; other
# engineers' runs used 12xxx and 14xxx; override any port with BENCH_<PROFILE>_<NAME>, e.g. BENCH_SCALE_IMAP_PORT):
#  - "bench": Dovecot as shipped (imap client_limit 1: one imap process per session), for everything but scale.
#  - "scale": imap client_limit 50, for 1,000 IDLE sessions: each imap process takes one of the mail uid's 128
#    inotify instances, so with one session per process IDLE silently degrades to 30 s polling beyond ~100.
# Both run their mail as a uid of their own (MAIL_UID), so that other Dovecots on the machine (uid 5000) do not
# eat into our 128 inotify instances, nor we into theirs. SYSTEM_REDIS_PORT points at nothing so that a private
# Redis is used: the runtime registers ``service:imap`` in Redis, and a shared one would let a benchmark overwrite
# another run's registration. RabbitMQ is the shared one (queues are isolated by a unique prefix).
PROFILES: dict[str, dict[str, str]] = {
    "bench": {"MONGO_PORT": "27417", "IMAP_PORT": "13143", "IMAPS_PORT": "13993", "LMTP_PORT": "13024",
              "SUBMISSION_PORT": "13587", "SMTP_PORT": "13025", "PRIVATE_AMQP_PORT": "13672",
              "PRIVATE_REDIS_PORT": "13379", "SYSTEM_REDIS_PORT": "13380", "IMAP_CLIENT_LIMIT": "1",
              "MAIL_UID": "5171", "NUSERS": "1"},
    "scale": {"MONGO_PORT": "27618", "IMAP_PORT": "16143", "IMAPS_PORT": "16993", "LMTP_PORT": "16024",
              "SUBMISSION_PORT": "16587", "SMTP_PORT": "16025", "PRIVATE_AMQP_PORT": "16672",
              "PRIVATE_REDIS_PORT": "16379", "SYSTEM_REDIS_PORT": "16380", "IMAP_CLIENT_LIMIT": "50",
              "MAIL_UID": "5172", "NUSERS": "1"},
}
LOG_DIR = STATE_ROOT / "bench-logs"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- servers

def state_dir(profile: str) -> Path:
    return STATE_ROOT / profile if profile == "bench" else STATE_ROOT / f"bench-{profile}"


def ensure_services(profile: str = "bench") -> dict[str, str]:
    """Start (or find running) the servers of ``profile``; returns its services.env as a dict (plus STATE_DIR)."""
    settings = {k: os.environ.get(f"BENCH_{profile.upper()}_{k}", v) for k, v in PROFILES[profile].items()}
    env = {**os.environ, **settings, "MAIL_GID": settings["MAIL_UID"]}
    directory = state_dir(profile)
    subprocess.run(["bash", str(REPO / "scripts" / "services.sh"), "start", str(directory)], env=env, check=True,
                   timeout=300, stdout=sys.stderr)
    services = read_env_file(directory / "services.env")
    services["STATE_DIR"] = str(directory)
    services["IMAP_CLIENT_LIMIT"] = settings["IMAP_CLIENT_LIMIT"]
    services["MAIL_UID"] = settings["MAIL_UID"]
    return services


def stop_services(profile: str) -> None:
    subprocess.run(["bash", str(REPO / "scripts" / "services.sh"), "stop", str(state_dir(profile))], check=False,
                   timeout=120, stdout=sys.stderr)


def add_users(services: dict[str, str], count: int, prefix: str = "b") -> list[tuple[str, str]]:
    """``count`` new Dovecot users in one write of the users file (``mailserver.sh adduser`` waits ~1 s per user,
    too slow for 1,000), in the format and under the lock ``adduser`` uses; returns once Dovecot accepts them."""
    if services.get("IMAP_SERVER") == "cyrus":
        return _add_cyrus_users(services, count, prefix)
    mail_dir = Path(services["MAIL_DIR"])
    tag = uuid.uuid4().hex[:6]
    users = [(f"{prefix}{tag}x{i}", f"pw{uuid.uuid4().hex[:10]}") for i in range(count)]
    users_file = mail_dir / "users"
    with open(mail_dir / "users.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = users_file.stat().st_mtime if users_file.exists() else 0
        text = users_file.read_text() if users_file.exists() else ""
        if text and not text.endswith("\n"):
            text += "\n"
        text += "".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in users)
        tmp = users_file.with_name(f"users.tmp.{os.getpid()}")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(users_file)
        stamp = max(time.time(), old + 1)  # Dovecot re-reads the file when its mtime (seconds) changes
        os.utime(users_file, (stamp, stamp))
    user, password = users[-1]
    deadline = time.monotonic() + 10
    while subprocess.run(["doveadm", "-c", str(mail_dir / "dovecot.conf"), "auth", "test", "-x", "service=imap",  # noqa: PLW1510
                          user, password], capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("Dovecot did not accept the new users within 10 s")
        time.sleep(0.1)
    return users


def on_server(services: dict[str, str], server: str) -> dict[str, str]:
    """``services`` aimed at ``server``: ``dovecot`` as it is, ``cyrus`` with the IMAP ports and CA of the Cyrus
    beside it (scripts/cyrus.sh; ``IMAP_SERVER`` says which, for add_users and imap_client)."""
    if server == "dovecot":
        return {**services, "IMAP_SERVER": "dovecot"}
    if "CYRUS_IMAP_PORT" not in services:
        raise SystemExit("no Cyrus in these services (scripts/services.sh starts one since issue 14)")
    return {**services, "IMAP_SERVER": "cyrus", "IMAP_PORT": services["CYRUS_IMAP_PORT"],
            "IMAPS_PORT": services["CYRUS_IMAPS_PORT"], "CA_CERT": services["CYRUS_CA_CERT"]}


def _add_cyrus_users(services: dict[str, str], count: int, prefix: str) -> list[tuple[str, str]]:
    users = [(f"{prefix}{uuid.uuid4().hex[:6]}x{i}", f"pw{uuid.uuid4().hex[:10]}") for i in range(count)]
    for user, password in users:  # a SASL secret and the mailbox user.NAME each (about 0.3 s)
        subprocess.run(["bash", str(REPO / "scripts" / "cyrus.sh"), "adduser", services["CYRUS_DIR"], user, password],
                       check=True, timeout=30, capture_output=True,
                       env={"CHECK_PYTHON": sys.executable, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return users


def imap_details(services: dict[str, str], user: str, password: str, *, tls: bool = False) -> dict[str, Any]:
    """The integration details erxes would send for a Dovecot user: plain IMAP on loopback (as the tests do), or
    ``tls``: implicit TLS on the IMAPS port, the server's self-signed certificate given as ``caCert``."""
    details: dict[str, Any] = {"host": "127.0.0.1", "port": int(services["IMAP_PORT"]), "tls": False,
                               "user": f"{user}@localhost", "mainUser": user, "password": password,
                               "smtpHost": "127.0.0.1", "smtpPort": services["SUBMISSION_PORT"]}
    if tls:
        details.update(port=int(services["IMAPS_PORT"]), tls=True, caCert=Path(services["CA_CERT"]).read_text())
    return details


def imap_client(services: dict[str, str], user: str, password: str, timeout: float = 30) -> Any:
    from imapclient import IMAPClient

    client = IMAPClient("127.0.0.1", port=int(services["IMAP_PORT"]), ssl=False, timeout=timeout)
    # imaplib writes an APPEND's literal as a second small segment, which Nagle holds until the server's delayed
    # ACK (Cyrus: ~74 ms per APPEND, tests/cyrus.py); the APPEND's return is the benchmarks' t0
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.login(user, password)
    return client


# ---------------------------------------------------------------------------------------------------- runtime

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Run:
    """One benchmark run's isolation: its own database and broker queue suffix (deleted afterwards)."""

    def __init__(self, services: dict[str, str], name: str) -> None:
        self.services = services
        self.id = f"{name}{uuid.uuid4().hex[:8]}"
        self.db_name = f"bench_{self.id}"
        self.mongo_url = services["MONGO_URL"].replace("/imap_runtime?", f"/{self.db_name}?")
        self.prefix = f".bench{self.id}"
        self.client: pymongo.MongoClient[Any] = pymongo.MongoClient(self.mongo_url, tz_aware=True,
                                                                     serverSelectionTimeoutMS=10000)
        self.db = self.client.get_default_database()

    def cleanup(self, keep: bool = False) -> None:
        if not keep:
            try:
                self.client.drop_database(self.db_name)
            except pymongo.errors.PyMongoError as exc:
                log(f"could not drop {self.db_name}: {exc}")
        self.client.close()
        try:
            delete_queues(self.services["RABBITMQ_HOST"], self.prefix)
        except Exception as exc:  # noqa: BLE001 - cleanup is best effort
            log(f"could not delete the queues of {self.prefix}: {exc}")


def delete_queues(amqp_url: str, suffix: str) -> None:
    import pika

    from kinds.imap.procedures import ImapProcedures
    from runtime.standalone import Standalone

    procs = ImapProcedures(storage=None, supervisor=None)
    names = [*procs.rpc_procedures(), *procs.plain_procedures()]
    fake = Standalone.__new__(Standalone)
    for svc in ("core", "contacts"):
        fake._customer_service = svc  # type: ignore[attr-defined]
        names += [*Standalone.rpc_procedures(fake), *Standalone.plain_procedures(fake)]
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        channel = conn.channel()
        for name in dict.fromkeys(names):
            channel.queue_delete(name + suffix)
    finally:
        conn.close()


class RuntimeProcess:
    """``python -m runtime`` as users run it (the environment of tests/e2e.py's RuntimeProcess)."""

    def __init__(self, run: Run, log_name: str, extra_env: dict[str, str] | None = None,
                 module: str = "runtime") -> None:
        s = run.services
        self.module = module  # bench.patched_runtime only for clearly labelled experiments
        self.port = free_port()
        # BENCH_RUNTIME_CONFIG: EXPERIMENT with other settings (a copy of configs.json); bench.catchup records it
        config = os.environ.get("BENCH_RUNTIME_CONFIG") or str(REPO / "configs.json")
        self.env = {**os.environ, "IMAP_RUNTIME_CONFIG": config, "PORT": str(self.port),
                    "MONGO_URL": run.mongo_url, "RABBITMQ_HOST": s["RABBITMQ_HOST"],
                    "MESSAGE_BROKER_PREFIX": run.prefix, "REDIS_HOST": s.get("REDIS_HOST", "127.0.0.1"),
                    "REDIS_PORT": s.get("REDIS_PORT", "6379"), "STANDALONE": "true", "LOG_LEVEL": "INFO",
                    **(extra_env or {})}
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{log_name}-{run.id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_wall = 0.0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0, wait_healthy: bool = True) -> float:
        """Start the process; returns the wall-clock time of the start (before exec)."""
        log_file = open(self.log_path, "ab")  # noqa: SIM115
        self.started_wall = time.time()
        self.proc = subprocess.Popen([sys.executable, "-m", self.module], env=self.env, cwd=REPO, stdout=log_file,
                                     stderr=subprocess.STDOUT)
        log_file.close()
        if wait_healthy:
            self.wait_healthy(timeout)
        return self.started_wall

    def wait_healthy(self, timeout: float = 60.0) -> float:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"imap-runtime exited with {self.proc.returncode}: {self.log_tail()}")
            if self.health() == "ok":
                return time.time()
            time.sleep(0.05)
        raise RuntimeError(f"imap-runtime not healthy after {timeout} s: {self.log_tail()}")

    def health(self) -> str | None:
        return health(self.port)

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return stop_process(self.proc, timeout, warn=lambda text: log(f"imap-runtime: {text}"))

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict[str, int]:
        """VmRSS/VmHWM (kB) and Threads from /proc/PID/status."""
        return proc_status(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def proc_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads", "VmSize"):
                out[key] = int(value.split()[0])
    return out


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class Caller:
    """Plays erxes: calls the runtime's procedures over AMQP as erxes services do (as tests/e2e.py's Caller)."""

    def __init__(self, amqp_url: str, prefix: str) -> None:
        from runtime.broker.amqp import AmqpBroker

        self.broker = AmqpBroker(amqp_url, prefix=prefix)
        self.broker.start()

    def create_integration(self, inbox_id: str, details: dict[str, Any], timeout: float = 60.0) -> Any:
        return self.broker.call("imap:createIntegration", {"kind": "imap", "integrationId": inbox_id, "doc": {
            "accountId": "", "kind": "imap", "integrationId": inbox_id, "data": json.dumps(details)}},
            subdomain="os", timeout=timeout)

    def close(self) -> None:
        self.broker.stop()


# ---------------------------------------------------------------------------------------------------- watching

class Watcher:
    """Records change-stream events of a collection with the wall-clock time they arrived (SecantusDB delivers
    them about 1 ms after the write; an idle stream costs it nothing measurable)."""

    def __init__(self, collection: Any, on_event: Callable[[dict[str, Any], float], None]) -> None:
        self._collection = collection
        self._on_event = on_event
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"watch-{collection.name}", daemon=True)

    def start(self) -> Watcher:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"change stream on {self._collection.name} not open after 10 s: {self._error}")
        return self

    def _run(self) -> None:
        try:
            with self._collection.watch(max_await_time_ms=200) as stream:
                self._ready.set()
                while not self._stop.is_set():
                    change = stream.try_next()
                    if change is not None:
                        self._on_event(change, time.time())
        except BaseException as exc:  # noqa: BLE001 - reported by check()
            self._error = exc
            self._ready.set()

    def check(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"change stream on {self._collection.name} failed: {self._error!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class IdleProbe:
    """A bare imapclient IDLE client: records the wall-clock time each ``* n EXISTS`` arrives (the server's raw
    IDLE notification time, the floor for the runtime's latency)."""

    def __init__(self, services: dict[str, str], user: str, password: str) -> None:
        self.client = imap_client(services, user, password)
        info = self.client.select_folder("INBOX", readonly=True)
        self.base = int(info[b"EXISTS"])  # messages in the folder before the run
        self.exists: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idle-probe", daemon=True)
        self._error: BaseException | None = None

    def start(self) -> IdleProbe:
        self.client.idle()
        self._thread.start()
        return self

    def _run(self) -> None:
        renewed = time.monotonic()
        try:
            while not self._stop.is_set():
                responses = self.client.idle_check(timeout=0.5)
                now = time.time()
                for r in responses:
                    if len(r) > 1 and r[1] == b"EXISTS":
                        self.exists.setdefault(int(r[0]), now)
                if time.monotonic() - renewed > 300:
                    self.client.idle_done()
                    self.client.idle()
                    renewed = time.monotonic()
        except BaseException as exc:  # noqa: BLE001
            self._error = exc

    def check(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"the IDLE probe failed: {self._error!r}")

    def stop(self) -> None:
        self._stop.set()
        started = self._thread.is_alive() or self._thread.ident is not None
        if started:
            self._thread.join(5)
        try:
            if started:
                self.client.idle_done()
            self.client.logout()
        except Exception:  # noqa: BLE001, S110
            pass


# ---------------------------------------------------------------------------------------------------- statistics

def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "min": min(values), "p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99), "max": max(values), "mean": sum(values) / len(values)}


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


# ---------------------------------------------------------------------------------------------------- machine

def _cpu_times() -> tuple[float, float]:
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields), idle


def proc_cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return math.nan


def children_cpu_seconds(pid: int) -> float:
    """CPU of a process plus its live descendants (e.g. Dovecot's master and its imap processes)."""
    total = 0.0
    for p in [pid, *descendants(pid)]:
        v = proc_cpu_seconds(p)
        if not math.isnan(v):
            total += v
    return total


def descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


class CpuMeter:
    """CPU use between start() and stop(): the whole machine (busy cores) and each named process (cores)."""

    def __init__(self, pids: dict[str, Callable[[], float]]) -> None:
        self._pids = pids
        self.result: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self._t = time.monotonic()
        self._total, self._idle = _cpu_times()
        self._proc = {name: f() for name, f in self._pids.items()}
        return self

    def stop(self) -> dict[str, float]:
        elapsed = time.monotonic() - self._t
        total, idle = _cpu_times()
        busy = 1 - (idle - self._idle) / max(1e-9, total - self._total)
        ncpu = os.cpu_count() or 1
        self.result = {"seconds": elapsed, "machine_busy_cores": busy * ncpu}
        own = 0.0
        for name, f in self._pids.items():
            cores = (f() - self._proc[name]) / max(1e-9, elapsed)
            self.result[f"{name}_cores"] = cores
            own += cores if not math.isnan(cores) else 0
        self.result["other_processes_cores"] = max(0.0, busy * ncpu - own)
        return self.result


def mongo_pid(services: dict[str, str]) -> int | None:
    try:
        state = services.get("STATE_DIR") or str(Path(services.get("MAIL_DIR", "/nonexistent")).parent)
        return int((Path(state) / "mongo.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def dovecot_pid(services: dict[str, str]) -> int | None:
    try:
        return int((Path(services["MAIL_DIR"]) / "run" / "master.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def cyrus_pid(services: dict[str, str]) -> int | None:
    try:
        return int((Path(services["CYRUS_DIR"]) / "master.pid").read_text().strip())
    except (KeyError, OSError, ValueError):
        return None


def server_meters(services: dict[str, str], runtime: RuntimeProcess | None = None,
                  bench_self: bool = True) -> dict[str, Callable[[], float]]:
    meters: dict[str, Callable[[], float]] = {}
    if runtime is not None:
        meters["runtime"] = lambda: proc_cpu_seconds(runtime.pid)
    mpid = mongo_pid(services)
    if mpid:
        meters["secantusdb"] = lambda: proc_cpu_seconds(mpid)
    dpid = dovecot_pid(services)
    if services.get("IMAP_SERVER") == "cyrus":
        dpid = cyrus_pid(services)
        if dpid:
            meters["cyrus"] = lambda: children_cpu_seconds(dpid)
    elif dpid:
        meters["dovecot"] = lambda: children_cpu_seconds(dpid)
    if bench_self:
        meters["bench"] = lambda: proc_cpu_seconds(os.getpid())
    return meters


def machine_info() -> dict[str, Any]:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()  # noqa: PLW1510
        except (OSError, subprocess.SubprocessError):
            return ""

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = sh(f"git -C {REPO} rev-parse --short HEAD")
    dirty = sh(f"git -C {REPO} status --porcelain -- runtime actors web configs.json setup.cfg")
    # the code a run measured: HEAD plus a fingerprint of uncommitted product changes (others work in the tree)
    diff_sha = sh(f"cd {REPO} && {{ git diff HEAD -- runtime actors web configs.json; git ls-files -o "
                  f"--exclude-standard -- runtime actors web | xargs -r cat; }} | sha1sum | cut -c1-12")
    return {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "nproc": os.cpu_count(),
            "free_h": sh("free -h"), "cpu_model": model, "kernel": platform.release(),
            "python": platform.python_version(), "loadavg": os.getloadavg(), "ulimit_n": sh("ulimit -n"),
            "inotify_max_user_instances": sh("cat /proc/sys/fs/inotify/max_user_instances"),
            "git_commit": commit, "product_tree_dirty": bool(dirty),
            "product_diff_sha1": diff_sha if dirty else None, "product_tree_changes": dirty.splitlines()[:30]}


# ---------------------------------------------------------------------------------------------------- results

def write_result(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    log(f"wrote {path.relative_to(REPO)}")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def command_line() -> str:
    module = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "?"
    return " ".join([".venv/bin/python -m bench." + module, *sys.argv[1:]])


def round_floats(obj: Any, digits: int = 4) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) else round(obj, digits)
    if isinstance(obj, dict):
        return {k: round_floats(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [round_floats(v, digits) for v in obj]
    return obj


def have_tool(name: str) -> str | None:
    venv_bin = Path(sys.executable).parent / name
    return str(venv_bin) if venv_bin.exists() else shutil.which(name)


def chunks(seq: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]

