"""Honest health against the real servers (issue 14 finding 2), Dovecot and Cyrus: a mailbox whose server's
certificate cannot be verified fetches nothing and says so: getStatus is unHealthy with the TLS error, through its
retries; the same mailbox given the server's CA becomes healthy and ingests."""
from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

from tests.conftest import both_servers, make_mail, wait_for


def ready(runtime: Any) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{runtime.web_port}/ready", timeout=5) as reply:
        return json.loads(reply.read())  # type: ignore[no-any-return]


def integration(db: Any, inbox_id: str) -> dict[str, Any]:
    return db.imap_integrations.find_one({"inboxId": inbox_id}) or {}


@both_servers
def test_an_unverifiable_certificate_is_unhealthy_with_the_servers_words(runtime, caller, mailserver, db):
    user, password = mailserver.add_user()
    details = {**mailserver.details(user, password), "port": mailserver.imaps_port, "tls": True}
    caller.create_integration("inbox-tls", details)
    status = wait_for(lambda: (s := caller.call("getStatus", {"integrationId": "inbox-tls"}))["status"] == "unHealthy"
                      and s, timeout=10, message=lambda: f"unHealthy (have {integration(db, 'inbox-tls')})")
    assert "CERTIFICATE_VERIFY_FAILED" in status["error"]
    assert ready(runtime)["mailboxHealth"]["unHealthyInboxes"] == ["inbox-tls"]  # /ready says the same
    for _ in range(30):  # about 3 s of retries: never healthy in between
        doc = integration(db, "inbox-tls")
        assert doc["healthStatus"] == "unHealthy" and "CERTIFICATE_VERIFY_FAILED" in doc["error"], doc
        time.sleep(0.1)
    caller.update_integration("inbox-tls", {**details, "caCert": mailserver.ca_cert})
    mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="over TLS"))
    wait_for(lambda: db.imap_messages.count_documents({"inboxIntegrationId": "inbox-tls", "ingestState": "done"}),
             timeout=15, message="the mail, once the CA is given")
    wait_for(lambda: caller.call("getStatus", {"integrationId": "inbox-tls"}) == {"status": "healthy", "error": None},
             timeout=5, message="healthy again")
    health = ready(runtime)["mailboxHealth"]
    assert health["unHealthy"] == 0 and health["healthy"] == 1
