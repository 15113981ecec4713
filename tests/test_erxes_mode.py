"""``STANDALONE=false``, as production runs: erxes (here ``python -m runtime.emulator``, the emulation of its
procedures) is another process with another database, reached only over the broker."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Iterator

import pymongo
import pytest

from tests.conftest import MailServer, make_mail, wait_for
from tests.e2e import Caller, EmulatorProcess, RuntimeProcess

LOG_DIR = Path("/tmp/imap-runtime/test-logs")


@pytest.fixture
def erxes_db(services: dict[str, str]) -> Iterator[tuple[str, Any]]:
    """A database of erxes's own (on the same server, another name): (its URL, the database)."""
    name = f"erxes_{uuid.uuid4().hex[:10]}"
    url = services["MONGO_URL"].replace("/imap_runtime?", f"/{name}?")
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000, tz_aware=True)
    yield url, client.get_default_database()
    client.drop_database(name)
    client.close()


@pytest.fixture
def erxes(services: dict[str, str], erxes_db: tuple[str, Any], prefix: str,
          request: Any) -> Iterator[EmulatorProcess]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    proc = EmulatorProcess(services, mongo_url=erxes_db[0], prefix=prefix,
                           log_path=LOG_DIR / f"{request.node.name}-erxes.log")
    yield proc
    if proc.proc is not None:
        proc.terminate()


@pytest.fixture
def node(services: dict[str, str], mongo_url: str, prefix: str, request: Any) -> Iterator[RuntimeProcess]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    proc = RuntimeProcess(services, mongo_url=mongo_url, prefix=prefix, log_path=LOG_DIR / f"{request.node.name}.log")
    proc.env.update(STANDALONE="false", RPC_TIMEOUT="3000")
    yield proc
    if proc.proc is not None and proc.proc.poll() is None:
        proc.kill()


def test_mail_becomes_a_conversation_in_erxes_s_own_process_and_waits_out_an_erxes_restart(
        node: RuntimeProcess, erxes: EmulatorProcess, erxes_db: tuple[str, Any], caller: Caller,
        mailserver: MailServer, db: Any):
    _, erxes_data = erxes_db
    erxes.start()
    node.start()
    user, password = mailserver.add_user()
    caller.create_integration("inbox-e", mailserver.details(user, password))
    wait_for(lambda: (db.imap_integrations.find_one({"inboxId": "inbox-e"}) or {}).get("state") == "idle",
             timeout=10, message="IDLE")

    mailserver.append(user, password, make_mail(to=f"{user}@localhost", sender="Bob <bob@example.com>",
                                                 subject="Order 7", message_id="<o7@example.com>"))
    mailserver.append(user, password, make_mail(to=f"{user}@localhost", sender="Bob <bob@example.com>",
                                                subject="Re: Order 7", message_id="<o7r@example.com>",
                                                in_reply_to="<o7@example.com>"))
    wait_for(lambda: db.imap_messages.count_documents({"inboxIntegrationId": "inbox-e", "ingestState": "done"}) == 2,
             timeout=15, message="both mails stored")
    stored = list(db.imap_messages.find({"inboxIntegrationId": "inbox-e"}))
    conversations = {m["inboxConversationId"] for m in stored}
    assert len(conversations) == 1  # the reply joined its thread
    conversation = erxes_data.standalone_conversations.find_one({"_id": conversations.pop()})
    assert conversation is not None and conversation["messageCount"] == 2
    customer = erxes_data.standalone_customers.find_one({"primaryEmail": "bob@example.com"})
    assert customer is not None and {m["customerId"] for m in stored} == {customer["_id"]}
    wait_for(lambda: {n["messageId"] for n in erxes_data.standalone_message_notifications.find()} == {
        str(m["_id"]) for m in stored}, timeout=10, message="both announced to erxes")
    # the emulation is erxes's, not ours: nothing of it in the runtime's database
    assert not [name for name in db.list_collection_names() if name.startswith("standalone_")]

    # erxes restarts: a mail that arrives meanwhile waits (the inbox call fails, the mailbox retries), and is
    # stored once erxes is back
    assert erxes.terminate() == 0
    mailserver.append(user, password, make_mail(to=f"{user}@localhost", sender="Carol <carol@example.com>",
                                                subject="While erxes restarts", message_id="<gap@example.com>"))
    wait_for(lambda: db.imap_messages.find_one({"messageId": "<gap@example.com>"}) is not None or
             "failed" in node.log_tail(60), timeout=15, message="the mail seen while erxes is down")
    assert db.imap_messages.count_documents({"messageId": "<gap@example.com>", "ingestState": "done"}) == 0
    erxes.start()
    wait_for(lambda: db.imap_messages.count_documents({"messageId": "<gap@example.com>", "ingestState": "done"}) == 1,
             timeout=60, message="the mail stored once erxes is back")
    gap = db.imap_messages.find_one({"messageId": "<gap@example.com>"})
    assert erxes_data.standalone_conversations.count_documents({"_id": gap["inboxConversationId"]}) == 1
    assert erxes_data.standalone_customers.count_documents({"primaryEmail": "carol@example.com"}) == 1
    assert node.health() == "ok"
    assert node.terminate(timeout=15) == 0
