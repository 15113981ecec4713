"""Secrets at rest, end to end: passwords and webhook secrets are sealed in MongoDB, mailboxes still log in and
ingest, keys rotate with ``python -m runtime.admin reseal``, and erxes's plain records are migrated by it."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bson import json_util

from app.process import Runtime
from runtime.sealing import PREFIX, Sealer, new_key
from tests.conftest import MailServer, make_mail, wait_for
from tests.e2e import Caller, runtime_config

REPO = Path(__file__).resolve().parents[1]
OLD, NEW = new_key(), new_key()


@contextlib.contextmanager
def running(services: dict[str, str], mongo_url: str, prefix: str, keys: str, db: Any) -> Iterator[Runtime]:
    """A runtime with ``keys``; every stored mailbox is in IDLE when it is handed out (the state of the previous
    run is cleared first, so mail appended afterwards is announced by IDLE)."""
    db.imap_integrations.update_many({}, {"$set": {"state": "stopped"}})
    rt = Runtime(runtime_config(services, mongo_url=mongo_url, prefix=prefix, secret_keys=keys))
    try:
        rt.start()
        inbox_ids = [d["inboxId"] for d in db.imap_integrations.find({})]
        wait_for(lambda: all((db.imap_integrations.find_one({"inboxId": i}) or {}).get("state") == "idle"
                             for i in inbox_ids), timeout=15, message=f"{inbox_ids} to IDLE")
        yield rt
    finally:
        rt.stop()


def reseal(mongo_url: str, keys: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MONGO_URL": mongo_url, "SECRET_KEYS": keys}
    return subprocess.run([sys.executable, "-m", "runtime.admin", "--config", str(REPO / "configs.json"), "reseal"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False)


def raw_dump(db: Any) -> str:
    return "".join(json_util.dumps(list(db[name].find({}))) for name in db.list_collection_names())


def ingests(db: Any, mailserver: MailServer, user: str, password: str, inbox_id: str, subject: str) -> None:
    mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject=subject))
    wait_for(lambda: db.imap_messages.find_one({"inboxIntegrationId": inbox_id, "subject": subject,
                                                "ingestState": "done"}),
             timeout=15, message=f"{subject!r} to be ingested by {inbox_id}")


def key_id(value: str) -> str:
    assert value.startswith(PREFIX), value
    return value[len(PREFIX):].split(":")[0]


def test_sealed_at_rest_rotation_and_migration(services, mongo_url, prefix, amqp_url, mailserver, db):
    user, password = mailserver.add_user()
    legacy_user, legacy_password = mailserver.add_user()
    with running(services, mongo_url, prefix, OLD, db) as rt:
        caller = Caller(amqp_url, prefix)
        try:
            caller.create_integration("sealed-1", mailserver.details(user, password))
            details = caller.call("api_to_integrations", {"integrationId": "sealed-1", "action": "getDetails"})
        finally:
            caller.close()
        assert details["password"] is None
        wait_for(lambda: (db.imap_integrations.find_one({"inboxId": "sealed-1"}) or {}).get("state") == "idle",
                 timeout=10, message="the mailbox to IDLE")
        ingests(db, mailserver, user, password, "sealed-1", "first")
        webhook_secret = rt.storage.get_integration("sealed-1")["webhookSecret"]
        raw = db.imap_integrations.find_one({"inboxId": "sealed-1"})
        assert raw["password"].startswith(PREFIX) and raw["webhookSecret"].startswith(PREFIX)
        assert Sealer([OLD]).unseal(raw["password"], context="password:os:sealed-1") == password
        dump = raw_dump(db)
        assert password not in dump and webhook_secret not in dump

    # erxes's own plugin wrote this one: a plain string password, no webhook secret
    db.imap_integrations.insert_one({"inboxId": "legacy-1", "kind": "imap", "healthStatus": "healthy",
                                     **mailserver.details(legacy_user, legacy_password)})

    # rotation, step 1: the new key first, the old one still there; the plain record works too
    with running(services, mongo_url, prefix, f"{NEW},{OLD}", db):
        ingests(db, mailserver, user, password, "sealed-1", "second")
        ingests(db, mailserver, legacy_user, legacy_password, "legacy-1", "legacy works")
        done = reseal(mongo_url, f"{NEW},{OLD}")
        assert done.returncode == 0, done.stderr
        assert "2 integration(s) resealed" in done.stdout, done.stdout
        new_id = Sealer([NEW]).current_id
        for doc in db.imap_integrations.find({}):
            assert key_id(doc["password"]) == new_id
        assert key_id(db.imap_integrations.find_one({"inboxId": "sealed-1"})["webhookSecret"]) == new_id
        legacy = db.imap_integrations.find_one({"inboxId": "legacy-1"})
        assert legacy_password not in raw_dump(db) and password not in raw_dump(db)
        assert Sealer([NEW]).unseal(legacy["password"], context="password:os:legacy-1") == legacy_password
        again = reseal(mongo_url, f"{NEW},{OLD}")
        assert again.returncode == 0 and "0 integration(s) resealed" in again.stdout and "2 already" in again.stdout

    # step 2: the old key dropped; everything still works, the webhook secret is the same
    with running(services, mongo_url, prefix, NEW, db) as rt:
        ingests(db, mailserver, user, password, "sealed-1", "third")
        ingests(db, mailserver, legacy_user, legacy_password, "legacy-1", "legacy still works")
        assert rt.storage.get_integration("sealed-1")["webhookSecret"] == webhook_secret

    # the old key alone no longer unseals anything: reseal says so and fails
    failed = reseal(mongo_url, OLD)
    assert failed.returncode == 1 and "sealed-1" in failed.stderr and "legacy-1" in failed.stderr
    assert key_id(db.imap_integrations.find_one({"inboxId": "legacy-1"})["password"]) == new_id
