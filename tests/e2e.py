"""Helpers for end-to-end tests: a runtime in this process or as a real ``imap-runtime`` process, and an erxes-like
caller on the broker."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from runtime.broker.amqp import AmqpBroker
from runtime.config import Config, load_config
from tests.secretscan import watch_log_file

REPO = Path(__file__).resolve().parent.parent


def runtime_config(services: dict[str, str], *, mongo_url: str, prefix: str, **overrides: Any) -> Config:
    """The suite's runtime: standalone (the erxes emulation in-process) unless a test says otherwise. The outbound
    fence lets loopback through (the OAuth2 server of tests/oauthserver.py and the attachment servers run on
    127.0.0.1); a test of the fence turns it off."""
    overrides = {"outbound_allow_loopback_http": True, **overrides}
    overrides.setdefault("standalone", True)
    return load_config(REPO / "configs.json", environ={}).with_overrides(
        port=0, mongo_url=mongo_url, rabbitmq_url=services["RABBITMQ_HOST"], message_broker_prefix=prefix,
        redis_host=services.get("REDIS_HOST", "127.0.0.1"), redis_port=int(services.get("REDIS_PORT", 6379)),
        idle_slice_seconds=0.2, rpc_timeout_ms=10000, **overrides)


def health(port: int) -> str | None:
    """What ``GET /health`` of a runtime on ``port`` answers (``ok``), or None while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
            return resp.read().decode()
    except OSError:
        return None


class Caller:
    """Plays erxes: calls the runtime's procedures over AMQP exactly as erxes services do."""

    def __init__(self, amqp_url: str, prefix: str) -> None:
        self.broker = AmqpBroker(amqp_url, prefix=prefix)
        self.broker.start()

    def call(self, procedure: str, data: Any, timeout: float = 20.0, subdomain: str = "os") -> Any:
        return self.broker.call(f"imap:{procedure}", data, subdomain=subdomain, timeout=timeout)

    def publish(self, procedure: str, data: Any, subdomain: str = "os") -> None:
        self.broker.publish(f"imap:{procedure}", data, subdomain=subdomain)

    def create_integration(self, inbox_id: str, details: dict[str, Any], subdomain: str = "os") -> Any:
        return self.call("createIntegration", {"kind": "imap", "integrationId": inbox_id, "doc": {
            "accountId": "", "kind": "imap", "integrationId": inbox_id, "data": json.dumps(details)}},
            subdomain=subdomain)

    def update_integration(self, inbox_id: str, details: dict[str, Any]) -> Any:
        return self.call("updateIntegration", {"kind": "imap", "integrationId": inbox_id, "doc": {
            "accountId": "", "kind": "imap", "integrationId": inbox_id, "data": json.dumps(details)}})

    def close(self) -> None:
        self.broker.stop()


def connect_mailbox(caller: Caller, mailserver: Any, db: Any, inbox_id: str) -> tuple[str, str]:
    """A new Dovecot user connected as integration ``inbox_id`` over the broker; returns once it IDLEs."""
    from tests.conftest import wait_for

    user, password = mailserver.add_user()
    caller.create_integration(inbox_id, mailserver.details(user, password))
    wait_for(lambda: (db.imap_integrations.find_one({"inboxId": inbox_id}) or {}).get("state") == "idle",
             timeout=10, message=f"{inbox_id} to IDLE")
    return user, password


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen[bytes], timeout: float,
                 warn: Callable[[str], object] = lambda text: None) -> int:
    """SIGTERM, and SIGKILL (told to ``warn``) if it still runs after ``timeout`` s; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        warn(f"pid {proc.pid} still running {timeout} s after SIGTERM: SIGKILL")
        proc.kill()
        return proc.wait(timeout=10)


class RuntimeProcess:
    """``imap-runtime`` as users run it: a separate process, configured by environment variables."""

    def __init__(self, services: dict[str, str], *, mongo_url: str, prefix: str, log_path: Path) -> None:
        self.port = free_port()
        self.env = {**os.environ, "IMAP_RUNTIME_CONFIG": str(REPO / "configs.json"), "PORT": str(self.port),
                    "MONGO_URL": mongo_url, "RABBITMQ_HOST": services["RABBITMQ_HOST"],
                    "MESSAGE_BROKER_PREFIX": prefix, "REDIS_HOST": services.get("REDIS_HOST", "127.0.0.1"),
                    "REDIS_PORT": services.get("REDIS_PORT", "6379"), "STANDALONE": "true", "LOG_LEVEL": "INFO"}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        watch_log_file(self.log_path)  # the suite-wide secrets check reads what this run writes
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "runtime"], env=self.env, cwd=REPO, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"imap-runtime exited with {self.proc.returncode}: {self.log_tail()}")
            if self.health() == "ok":
                return
            time.sleep(0.1)
        raise AssertionError(f"imap-runtime not healthy after {timeout} s: {self.log_tail()}")

    def health(self) -> str | None:
        return health(self.port)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class EmulatorProcess:
    """erxes as production has it: ``python -m runtime.emulator`` (the standalone emulation of the core/contacts
    and inbox procedures) in a process of its own, on the database of ``mongo_url``; a runtime then runs with
    ``STANDALONE=false`` and the same broker prefix."""

    READY = b"erxes emulation serving"

    def __init__(self, services: dict[str, str], *, mongo_url: str, prefix: str, log_path: Path) -> None:
        self.env = {**os.environ, "IMAP_RUNTIME_CONFIG": str(REPO / "configs.json"), "PORT": str(free_port()),
                    "MONGO_URL": mongo_url, "RABBITMQ_HOST": services["RABBITMQ_HOST"],
                    "MESSAGE_BROKER_PREFIX": prefix, "REDIS_HOST": services.get("REDIS_HOST", "127.0.0.1"),
                    "REDIS_PORT": services.get("REDIS_PORT", "6379"), "LOG_LEVEL": "INFO"}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> None:
        watch_log_file(self.log_path)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "runtime.emulator"], env=self.env, cwd=REPO,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # its queues are declared once it says it serves
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime.emulator exited with {self.proc.returncode}: {self.log_tail()}")
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                if self.READY in log.read():
                    return
            time.sleep(0.1)
        raise AssertionError(f"runtime.emulator not serving after {timeout} s: {self.log_tail()}")

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return stop_process(self.proc, timeout)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
