"""Issue 13 items 2, 3 and 6: ``/ready`` tells the truth (503 naming Redis while the leases cannot be kept, 200
again once it answers), start-up waits for servers that are not up yet within a bound and then says which one in one
line, a clean stop removes ``service:imap`` when it still points at itself, and ``imap-runtime check`` says per
item what works. Redis and RabbitMQ are reached through tests/faultproxy.py, which can refuse connections."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from app.process import Runtime
from tests.conftest import MailServer, wait_for
from tests.e2e import REPO, Caller, RuntimeProcess, runtime_config
from tests.faultproxy import FaultProxy
from tests.test_beside_erxes import PrivateRedis, private_redis  # noqa: F401 - a fixture

LOG_DIR = Path("/tmp/imap-runtime/test-logs")


def ready(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def docker_healthcheck(port: int) -> int:
    """The Dockerfile's HEALTHCHECK command, run as Docker runs it (exit status 0: healthy)."""
    text = (REPO / "Dockerfile").read_text()
    command = text.split("HEALTHCHECK", 1)[1].split("CMD", 1)[1].split("\nSTOPSIGNAL")[0].strip()
    return subprocess.run(["sh", "-c", command.replace("python ", f"{sys.executable} ", 1)],
                          env={"PORT": str(port), "PATH": "/usr/bin:/bin"}, capture_output=True,
                          timeout=30).returncode


def test_ready_is_503_naming_redis_while_it_is_unreachable_and_200_once_it_answers(
        services: dict[str, str], mongo_url: str, prefix: str, proxies: list[FaultProxy], caplog: Any):
    proxy = FaultProxy(services.get("REDIS_HOST", "127.0.0.1"), int(services.get("REDIS_PORT", 6379)))
    proxies.append(proxy)
    rt = Runtime(runtime_config(services, mongo_url=mongo_url, prefix=prefix,
                                lease_seconds=4).with_overrides(redis_port=proxy.port))
    rt.start()
    try:
        assert rt.web_port is not None
        status, report = ready(rt.web_port)
        assert status == 200 and report["redis"] == "ok", report
        assert report["mode"]["standalone"] is True and report["mode"]["setting"] == "true"
        assert docker_healthcheck(rt.web_port) == 0
        with caplog.at_level(logging.WARNING, logger="web.ops"):
            proxy.refuse(True)
            proxy.cut()
            status, report = wait_for(lambda: (lambda r: r if r[0] == 503 else None)(ready(rt.web_port)),
                                      timeout=15, message="/ready 503 with Redis unreachable")
            assert report["redis"] != "ok" and report["mongo"] == "ok" and report["rabbitmq"] == "ok"
            assert [m for m in report["missing"] if m.startswith("Redis")], report
            assert docker_healthcheck(rt.web_port) != 0  # the container is unhealthy while it listens to nothing
            wait_for(lambda: [r for r in caplog.records if r.getMessage().startswith("Not ready: Redis")],
                     timeout=15, message="the log saying Redis is missing")
        proxy.refuse(False)
        wait_for(lambda: ready(rt.web_port)[0] == 200, timeout=20, message="/ready 200 once Redis answers")
        assert "missing" not in ready(rt.web_port)[1]
        assert docker_healthcheck(rt.web_port) == 0
    finally:
        rt.stop()


def test_start_up_waits_for_rabbitmq_with_progress_then_serves_once_it_answers(
        services: dict[str, str], mongo_url: str, prefix: str, proxies: list[FaultProxy], tmp_path: Path):
    amqp = services["RABBITMQ_HOST"]
    port = int(amqp.rsplit(":", 1)[1].split("/")[0])
    proxy = FaultProxy("127.0.0.1", port)
    proxies.append(proxy)
    proxy.refuse(True)
    node = RuntimeProcess(services, mongo_url=mongo_url, prefix=prefix, log_path=tmp_path / "node.log")
    node.env.update(RABBITMQ_HOST=amqp.replace(f":{port}/", f":{proxy.port}/"), STARTUP_WAIT_SECONDS="60")
    opener = threading.Timer(4.0, proxy.refuse, (False,))
    opener.start()
    try:
        node.start(timeout=40)
        assert f"waiting for RabbitMQ at 127.0.0.1:{proxy.port}" in node.log_tail(200)
        assert node.terminate(timeout=15) == 0
    finally:
        opener.cancel()
        if node.proc is not None and node.proc.poll() is None:
            node.kill()


def test_start_up_gives_up_after_the_bound_with_one_line_naming_the_server(
        services: dict[str, str], mongo_url: str, prefix: str, proxies: list[FaultProxy], tmp_path: Path):
    amqp = services["RABBITMQ_HOST"]
    port = int(amqp.rsplit(":", 1)[1].split("/")[0])
    proxy = FaultProxy("127.0.0.1", port)
    proxies.append(proxy)
    proxy.refuse(True)
    node = RuntimeProcess(services, mongo_url=mongo_url, prefix=prefix, log_path=tmp_path / "node.log")
    env = {**node.env, "RABBITMQ_HOST": amqp.replace(f":{port}/", f":{proxy.port}/"), "STARTUP_WAIT_SECONDS": "3"}
    result = subprocess.run([sys.executable, "-m", "runtime"], env=env, cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert f"RabbitMQ at 127.0.0.1:{proxy.port} did not answer within 3 s (STARTUP_WAIT_SECONDS)" in errors[0]
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) < 10, result.stderr


def test_a_clean_stop_removes_service_imap_only_while_it_points_at_itself(
        services: dict[str, str], mongo_url: str, prefix: str, private_redis: PrivateRedis):  # noqa: F811
    config = runtime_config(services, mongo_url=mongo_url, prefix=prefix).with_overrides(
        redis_port=private_redis.port)
    rt = Runtime(config)
    rt.start()
    address = f"http://localhost:{rt.web_port}"
    assert private_redis.client.get("service:imap") == address
    rt.stop()
    assert private_redis.client.get("service:imap") is None
    assert private_redis.client.get("service:config:imap") is not None  # as erxes's leave: the rest stays

    rt = Runtime(config)
    rt.start()
    private_redis.client.set("service:imap", "http://another-replica:80")  # a replica registered since
    rt.stop()
    assert private_redis.client.get("service:imap") == "http://another-replica:80"


def test_check_prints_one_line_per_item_and_fails_on_a_refused_login(
        services: dict[str, str], mongo_url: str, prefix: str, caller: Caller, mailserver: MailServer, db: Any,
        runtime: Runtime, tmp_path: Path):
    good, good_pw = mailserver.add_user()
    bad, bad_pw = mailserver.add_user()
    caller.create_integration("inbox-good", mailserver.details(good, good_pw))
    caller.create_integration("inbox-bad", mailserver.details(bad, bad_pw))
    wait_for(lambda: db.imap_integrations.count_documents({}) == 2, timeout=10, message="two integrations")
    mailserver.set_password(bad, bad_pw + "-changed")  # the stored password no longer works
    env = {"PATH": "/usr/bin:/bin", "IMAP_RUNTIME_CONFIG": str(REPO / "configs.json"), "MONGO_URL": mongo_url,
           "RABBITMQ_HOST": services["RABBITMQ_HOST"], "REDIS_PORT": services.get("REDIS_PORT", "6379"),
           "MESSAGE_BROKER_PREFIX": prefix}
    result = subprocess.run([sys.executable, "-m", "runtime", "check"], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert result.returncode == 1, result.stdout + result.stderr
    assert lines[0] == "ok    configuration: valid"
    assert [line.split(":")[0] for line in lines[1:4]] == [
        "ok    MongoDB at 127.0.0.1", "ok    RabbitMQ at 127.0.0.1", "ok    Redis at 127.0.0.1"]
    assert [line for line in lines if line.startswith("ok    mailbox inbox-good") and "accepted" in line]
    assert [line for line in lines if line.startswith("FAIL  mailbox inbox-bad") and "refused the login" in line]
    assert len(lines) == 6 and result.stderr == ""

    env["MONGO_URL"] = mongo_url.replace(mongo_url.split("://")[1].split("/")[0], "127.0.0.1:1")
    result = subprocess.run([sys.executable, "-m", "runtime", "check"], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert [line for line in result.stdout.splitlines() if line.startswith("FAIL  MongoDB at 127.0.0.1:1:")]


@pytest.mark.parametrize("argv", [["--help"]])
def test_help_lists_every_setting(argv: list[str]):
    from runtime.config import DEFAULTS, ENV_SETTINGS

    out = subprocess.run([sys.executable, "-m", "runtime", *argv], cwd=REPO, capture_output=True, text=True,
                         timeout=60).stdout
    assert "check" in out
    for key in DEFAULTS:
        assert f"  {key} " in out, key
    for env in ENV_SETTINGS:
        assert f" {env} " in out, env
