"""Faults between the runtime and its servers (through tests/faultproxy.py), and a real Dovecot restart: mail sent
during the fault arrives exactly once afterwards, and a mailbox whose connection is fine keeps working."""
from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import pytest

from app.process import Runtime
from tests.conftest import REPO, MailServer, both_servers, make_mail, wait_for
from tests.e2e import Caller, runtime_config
from tests.faultproxy import FaultProxy

FAST = {"idle_watchdog_seconds": 2.0, "imap_timeout_seconds": 2.0}


def start_runtime(services: dict[str, str], mongo_url: str, prefix: str, **overrides: Any) -> Runtime:
    rt = Runtime(runtime_config(services, mongo_url=mongo_url, prefix=prefix, **{**FAST, **overrides}))
    rt.start()
    return rt


def connect(caller: Caller, mailserver: MailServer, db: Any, inbox_id: str, port: int | None = None
            ) -> tuple[str, str]:
    user, password = mailserver.add_user()
    details = mailserver.details(user, password)
    if port is not None:
        details["port"] = port
    caller.create_integration(inbox_id, details)
    wait_for(lambda: state(db, inbox_id) == "idle", timeout=10, message=f"{inbox_id} IDLE")
    return user, password


def state(db: Any, inbox_id: str) -> str | None:
    return (db.imap_integrations.find_one({"inboxId": inbox_id}) or {}).get("state")


def subjects(db: Any, inbox_id: str) -> list[str]:
    return sorted(m["subject"] for m in db.imap_messages.find({"inboxIntegrationId": inbox_id,
                                                               "ingestState": "done"}))


def assert_arrives_once(db: Any, inbox_id: str, expected: list[str], timeout: float) -> None:
    wait_for(lambda: subjects(db, inbox_id) == sorted(expected), timeout=timeout,
             message=f"{expected} in {inbox_id} (have {subjects(db, inbox_id)})")
    time.sleep(1.0)  # a duplicate would show up right behind
    assert subjects(db, inbox_id) == sorted(expected)
    assert db.standalone_conversations.count_documents({"integrationId": inbox_id}) == len(expected)


def test_stalled_imap_connection_is_noticed_and_other_mailboxes_keep_working(
        services, mongo_url, prefix, caller, mailserver, db, proxies):
    imap = FaultProxy("127.0.0.1", mailserver.imap_port)
    proxies.append(imap)
    rt = start_runtime(services, mongo_url, prefix)
    try:
        user_a, pw_a = connect(caller, mailserver, db, "stalled", port=imap.port)
        user_b, pw_b = connect(caller, mailserver, db, "healthy")
        imap.stall(True)
        mailserver.append(user_a, pw_a, make_mail(to=f"{user_a}@localhost", subject="during the stall"))
        wait_for(lambda: state(db, "stalled") == "backoff", timeout=10, message="the stall to be noticed")
        mailserver.append(user_b, pw_b, make_mail(to=f"{user_b}@localhost", subject="unaffected"))
        wait_for(lambda: subjects(db, "healthy") == ["unaffected"], timeout=10)
        # the healthy mailbox worked while the other was still stalled (retrying: connecting/backoff in turn)
        assert state(db, "stalled") in ("backoff", "connecting") and subjects(db, "stalled") == []
        assert state(db, "healthy") == "idle"
        imap.stall(False)
        imap.cut()  # the stalled sessions are useless; fresh ones go through
        assert_arrives_once(db, "stalled", ["during the stall"], timeout=30)
    finally:
        rt.stop()


@both_servers
def test_cut_imap_connection_reconnects_and_catches_up(services, mongo_url, prefix, caller, mailserver, db,
                                                        proxies):
    imap = FaultProxy("127.0.0.1", mailserver.imap_port)
    proxies.append(imap)
    rt = start_runtime(services, mongo_url, prefix)
    try:
        user, password = connect(caller, mailserver, db, "cut", port=imap.port)
        imap.refuse(True)
        imap.cut()
        mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="while cut"))
        wait_for(lambda: state(db, "cut") == "backoff", timeout=10)
        imap.refuse(False)
        assert_arrives_once(db, "cut", ["while cut"], timeout=30)
        mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="after"))
        assert_arrives_once(db, "cut", ["after", "while cut"], timeout=5)
    finally:
        rt.stop()


def test_imap_server_restart(services, mongo_url, prefix, caller, mailserver, db):
    rt = start_runtime(services, mongo_url, prefix)
    try:
        user, password = connect(caller, mailserver, db, "restart")
        env = {**os.environ, **{k: services[k] for k in ("IMAP_PORT", "IMAPS_PORT", "LMTP_PORT", "SUBMISSION_PORT",
                                                         "SMTP_PORT", "OAUTH_PORT")}}  # all of them: a restart
        # with one missing would rewrite Dovecot's configuration with that port's default
        script = str(REPO / "scripts" / "mailserver.sh")
        subprocess.run(["bash", script, "stop", services["MAIL_DIR"]], env=env, check=True, timeout=60,
                       capture_output=True)
        wait_for(lambda: state(db, "restart") == "backoff", timeout=10, message="the BYE to be noticed")
        subprocess.run(["bash", script, "start", services["MAIL_DIR"]], env=env, check=True, timeout=60,
                       capture_output=True)
        mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="after the restart"))
        assert_arrives_once(db, "restart", ["after the restart"], timeout=30)
    finally:
        rt.stop()


@pytest.mark.parametrize("server", ["mongodb", "rabbitmq"])
def test_infrastructure_cut_for_20_seconds(server, services, mongo_url, prefix, caller, mailserver, db, proxies):
    if server == "mongodb":
        port = int(mongo_url.split("://127.0.0.1:")[1].split("/")[0])
        proxy = FaultProxy("127.0.0.1", port, max_connections=256)
        overrides = {"mongo_url": mongo_url.replace(f":{port}/", f":{proxy.port}/") + "&directConnection=true"}
    else:
        amqp = services["RABBITMQ_HOST"]
        port = int(amqp.rsplit(":", 1)[1].split("/")[0])
        proxy = FaultProxy("127.0.0.1", port)
        overrides = {"rabbitmq_url": amqp.replace(f":{port}/", f":{proxy.port}/")}
    proxies.append(proxy)
    config = runtime_config(services, mongo_url=mongo_url, prefix=prefix, **FAST)
    rt = Runtime(config.with_overrides(**overrides))
    rt.start()
    try:
        user, password = connect(caller, mailserver, db, "infra")
        mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="before"))
        assert_arrives_once(db, "infra", ["before"], timeout=5)
        proxy.refuse(True)
        proxy.cut()
        mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="during"))
        time.sleep(20)  # the outage
        assert subjects(db, "infra") == ["before"]
        proxy.refuse(False)
        mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="after"))
        assert_arrives_once(db, "infra", ["after", "before", "during"], timeout=60)
    finally:
        rt.stop()
