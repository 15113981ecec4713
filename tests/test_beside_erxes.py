"""Issue 13 item 1: started with erxes's environment only (the shipped configs.json: ``standalone`` is ``auto``),
beside erxes-style consumers (``python -m runtime.emulator`` in a process of its own, on a database of its own),
the runtime leaves erxes's queues alone: one consumer on each, the mail reaches the erxes side, nothing lands in the
runtime's standalone collections. ``STANDALONE=true`` there stops start-up with one line (exit 2).

erxes's unprefixed Redis keys (``service:inbox``...) are never written into the shared Redis: each test runs a
redis-server of its own on a free port, so no other test's runtime in ``auto`` mode can see them.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pymongo
import pytest
import redis

from runtime.config import load_config
from runtime.detect import MARKER_QUEUE, emulation_queues, queue_consumers
from tests.conftest import MailServer, make_mail, wait_for
from tests.e2e import REPO, Caller, EmulatorProcess, RuntimeProcess, free_port

LOG_DIR = Path("/tmp/imap-runtime/test-logs")


class PrivateRedis:
    """A redis-server of the test's own (no persistence), so erxes's keys stay out of the shared one."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="imap-redis-")
        self.proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                                      "--appendonly", "no", "--dir", self.dir], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.client = redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)
        wait_for(self._answers, timeout=10, message=f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def close(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    yield server
    server.close()


@pytest.fixture
def erxes_db(services: dict[str, str]) -> Iterator[tuple[str, Any]]:
    name = f"erxes_{uuid.uuid4().hex[:10]}"
    url = services["MONGO_URL"].replace("/imap_runtime?", f"/{name}?")
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000, tz_aware=True)
    yield url, client.get_default_database()
    client.drop_database(name)
    client.close()


@pytest.fixture
def erxes(services: dict[str, str], erxes_db: tuple[str, Any], prefix: str, request: Any) -> Iterator[EmulatorProcess]:
    """erxes-style consumers of core:customers.*, inbox:integrations.receive, ... (with this test's suffix)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    proc = EmulatorProcess(services, mongo_url=erxes_db[0], prefix=prefix,
                           log_path=LOG_DIR / f"{request.node.name}-erxes.log")
    yield proc
    if proc.proc is not None:
        proc.terminate()


@pytest.fixture
def node(services: dict[str, str], mongo_url: str, prefix: str, private_redis: PrivateRedis,
         request: Any) -> Iterator[RuntimeProcess]:
    """imap-runtime with erxes's environment only: no STANDALONE, the shipped configs.json (``auto``)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    proc = RuntimeProcess(services, mongo_url=mongo_url, prefix=prefix, log_path=LOG_DIR / f"{request.node.name}.log")
    del proc.env["STANDALONE"]
    proc.env.pop("ENABLED_SERVICES_JSON", None)
    proc.env.update(REDIS_PORT=str(private_redis.port), RPC_TIMEOUT="5000")
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.kill()


def ready(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def consumers(amqp_url: str, prefix: str) -> dict[str, int]:
    config = load_config(REPO / "configs.json", environ={}).with_overrides(message_broker_prefix=prefix)
    return queue_consumers(amqp_url, emulation_queues(config))


def assert_mail_reaches_erxes(node: RuntimeProcess, caller: Caller, mailserver: MailServer, db: Any,
                              erxes_data: Any, amqp_url: str, prefix: str) -> None:
    # one consumer on each queue the emulation would consume: erxes's, not a second one of ours
    assert set(consumers(amqp_url, prefix).values()) == {1}, consumers(amqp_url, prefix)
    user, password = mailserver.add_user()
    caller.create_integration("inbox-b", mailserver.details(user, password))
    wait_for(lambda: (db.imap_integrations.find_one({"inboxId": "inbox-b"}) or {}).get("state") == "idle",
             timeout=15, message="IDLE")
    mails = [make_mail(to=f"{user}@localhost", sender=f"Dana{i} <dana{i}@example.com>", subject=f"Order {i}",
                       message_id=f"<beside{i}@example.com>") for i in range(6)]
    mailserver.append_many(user, password, mails)
    wait_for(lambda: db.imap_messages.count_documents({"inboxIntegrationId": "inbox-b", "ingestState": "done"}) == 6,
             timeout=30, message="six mails stored")
    stored = list(db.imap_messages.find({"inboxIntegrationId": "inbox-b"}))
    # every conversation and customer is erxes's: with a second consumer, half of them would be in our database
    assert erxes_data.standalone_conversations.count_documents(
        {"_id": {"$in": [m["inboxConversationId"] for m in stored]}}) == 6
    assert erxes_data.standalone_customers.count_documents({}) == 6
    wait_for(lambda: erxes_data.standalone_message_notifications.count_documents({}) == 6, timeout=10,
             message="six announcements at erxes")
    assert not [name for name in db.list_collection_names() if name.startswith("standalone_")]
    assert set(consumers(amqp_url, prefix).values()) == {1}
    assert "Stored" in node.log_tail(200)  # the INFO line per stored batch


def test_enabled_services_names_erxes_so_the_emulation_stays_off(
        node: RuntimeProcess, erxes: EmulatorProcess, erxes_db: tuple[str, Any], caller: Caller,
        mailserver: MailServer, db: Any, amqp_url: str, prefix: str):
    erxes.start()
    node.env["ENABLED_SERVICES_JSON"] = '["core", "inbox", "imap"]'
    node.start()
    status, report = ready(node.port)
    assert status == 200, report
    assert report["mode"]["standalone"] is False and report["mode"]["setting"] == "auto"
    assert "ENABLED_SERVICES_JSON names core, inbox" in report["mode"]["reason"]
    assert "ENABLED_SERVICES_JSON names core, inbox" in node.log_tail(100)
    assert_mail_reaches_erxes(node, caller, mailserver, db, erxes_db[1], amqp_url, prefix)
    assert node.terminate(timeout=15) == 0


def test_redis_listing_service_inbox_keeps_the_emulation_off(
        node: RuntimeProcess, erxes: EmulatorProcess, erxes_db: tuple[str, Any], caller: Caller,
        mailserver: MailServer, db: Any, amqp_url: str, prefix: str, private_redis: PrivateRedis):
    private_redis.client.set("service:inbox", "http://inbox:80")
    erxes.start()
    node.start()
    status, report = ready(node.port)
    assert status == 200 and report["mode"]["standalone"] is False, report
    assert "Redis holds service:inbox" in report["mode"]["reason"]
    assert_mail_reaches_erxes(node, caller, mailserver, db, erxes_db[1], amqp_url, prefix)
    assert node.terminate(timeout=15) == 0


def test_a_consumer_already_on_the_queues_alone_keeps_the_emulation_off(
        node: RuntimeProcess, erxes: EmulatorProcess, erxes_db: tuple[str, Any], caller: Caller,
        mailserver: MailServer, db: Any, amqp_url: str, prefix: str):
    erxes.start()  # no ENABLED_SERVICES_JSON, no service:* in Redis: only the consumers tell
    node.start()
    status, report = ready(node.port)
    assert status == 200 and report["mode"]["standalone"] is False, report
    assert f"inbox:integrations.receive{prefix} (1)" in report["mode"]["reason"]
    assert_mail_reaches_erxes(node, caller, mailserver, db, erxes_db[1], amqp_url, prefix)
    assert node.terminate(timeout=15) == 0


def test_standalone_true_beside_erxes_exits_2_with_one_line(
        node: RuntimeProcess, erxes: EmulatorProcess, amqp_url: str, prefix: str):
    erxes.start()
    node.env["STANDALONE"] = "true"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "runtime"], env=node.env, cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "true, but erxes runs here" in errors[0], result.stderr
    assert f"core:customers.findOne{prefix} (1)" in errors[0]
    assert time.monotonic() - started < 30
    assert set(consumers(amqp_url, prefix).values()) == {1}  # it never consumed erxes's queues meanwhile


def test_without_erxes_auto_runs_the_emulation_and_a_second_node_joins_it(
        node: RuntimeProcess, services: dict[str, str], mongo_url: str, prefix: str, private_redis: PrivateRedis,
        caller: Caller, mailserver: MailServer, db: Any, amqp_url: str, tmp_path: Path):
    node.start()
    status, report = ready(node.port)
    assert status == 200 and report["mode"] == {"standalone": True, "setting": "auto",
                                                "reason": report["mode"]["reason"]}
    assert "no erxes found" in report["mode"]["reason"]
    # a second node of ours (STANDALONE=true, as scripts/nodes.sh runs them) tells our emulation from erxes's
    second = RuntimeProcess(services, mongo_url=mongo_url, prefix=prefix, log_path=tmp_path / "second.log")
    second.env.update(REDIS_PORT=str(private_redis.port), NODE_ID="second")
    second.start()
    try:
        counts = queue_consumers(amqp_url, [MARKER_QUEUE + prefix])
        assert counts[MARKER_QUEUE + prefix] == 2
        assert set(consumers(amqp_url, prefix).values()) == {2}
        user, password = mailserver.add_user()
        caller.create_integration("inbox-s", mailserver.details(user, password))
        mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="Standalone"))
        wait_for(lambda: db.standalone_conversations.count_documents({"integrationId": "inbox-s"}) == 1,
                 timeout=30, message="the conversation in the runtime's own emulation")
    finally:
        assert second.terminate(timeout=15) == 0
    assert node.terminate(timeout=15) == 0
