"""The named operations other modules call instead of reaching a collection (issue 15), against the real
MongoDB-wire server (conftest's ``storage``); the collections themselves are used here only to set up and inspect."""
from __future__ import annotations

import datetime as dt

from bson import ObjectId

from runtime.storage import PENDING, Storage, utcnow


def test_message_by_id_scopes_to_the_integration_and_refuses_what_is_no_object_id(storage: Storage):
    oid = storage.messages.insert_one({"inboxIntegrationId": "inbox-1", "messageId": "<a>"}).inserted_id
    assert storage.message_by_id(str(oid), "inbox-1")["messageId"] == "<a>"
    assert storage.message_by_id(oid)["messageId"] == "<a>"
    assert storage.message_by_id(str(oid), "inbox-2") is None
    assert storage.message_by_id("<a>", "inbox-1") is None and storage.message_by_id(None) is None


def test_a_sent_message_is_inserted_then_located_and_names_its_conversation_s_customer(storage: Storage):
    t0 = utcnow()
    storage.messages.insert_many([
        {"inboxIntegrationId": "inbox-1", "messageId": "<o>", "inboxConversationId": "conv", "customerId": "old",
         "createdAt": t0},
        {"inboxIntegrationId": "inbox-1", "messageId": "<n>", "inboxConversationId": "conv", "customerId": "",
         "createdAt": t0 + dt.timedelta(seconds=2)}])
    doc = {"inboxIntegrationId": "inbox-1", "inboxConversationId": "conv", "customerId": "new", "messageId": "<s>",
           "createdAt": t0 + dt.timedelta(seconds=1)}
    storage.insert_message(doc)
    storage.set_message_location(doc["_id"], "Sent", 9)
    assert storage.messages.find_one({"_id": doc["_id"]}, {"_id": 0, "folder": 1, "uid": 1}) == {
        "folder": "Sent", "uid": 9}
    assert storage.conversation_customer("inbox-1", "conv") == "new"  # the newest that names one
    assert storage.conversation_customer("inbox-2", "conv") is None


def test_a_customer_s_messages_by_id_or_address_newest_first_without_pending(storage: Storage):
    storage.customers.insert_many([{"inboxIntegrationId": "a", "email": "ann@x.org", "contactsId": "c1"},
                                   {"inboxIntegrationId": "b", "email": "", "contactsId": "c1"}])
    t0 = utcnow()
    storage.messages.insert_many([
        {"messageId": "1", "to": [{"address": "ANN@x.org"}], "createdAt": t0},
        {"messageId": "2", "customerId": "c1", "createdAt": t0 + dt.timedelta(seconds=1)},
        {"messageId": "3", "from": [{"address": "ann@x.org"}], "ingestState": PENDING, "createdAt": t0},
        {"messageId": "4", "from": [{"address": "bob@x.org"}], "createdAt": t0}])
    assert storage.customer_emails("c1") == ["ann@x.org"]
    found = storage.messages_about("c1", ["ann@x.org"], ("from", "to"), limit=10)
    assert [m["messageId"] for m in found] == ["2", "1"]


def test_the_console_s_reads_of_messages(storage: Storage):
    t0 = utcnow()
    storage.messages.insert_many([
        {"inboxIntegrationId": "i", "messageId": "<1>", "inboxConversationId": "c1", "subject": "Invoice",
         "createdAt": t0,
         "from": [{"name": "Ann", "address": "ann@x.org"}]},
        {"inboxIntegrationId": "i", "messageId": "<2>", "inboxConversationId": "c1", "subject": "later",
         "createdAt": t0 +
         dt.timedelta(seconds=1), "ingestState": PENDING},
        {"inboxIntegrationId": "i", "messageId": "<3>", "inboxConversationId": "c2", "subject": "hello",
         "createdAt": t0,
         "from": [{"address": "bob@x.org"}]}])
    assert storage.newest_message("i")["subject"] == "later" and storage.count_messages("i") == 3
    assert storage.last_message_of_conversation("c1")["subject"] == "Invoice"
    assert sorted(storage.conversations_mentioning("INVOICE")) == ["c1"]
    assert sorted(storage.conversations_mentioning("bob@")) == ["c2"]
    before = storage.messages_mark()
    storage.messages.insert_one({"inboxIntegrationId": "i", "messageId": "<4>"})
    assert storage.messages_mark() != before


def test_quarantined_mails_listed_without_raw_then_read_and_released(storage: Storage):
    storage.quarantine_mail("i", "INBOX", 1, 7, "unparsable", raw=b"raw mail")
    storage.quarantine_mail("j", "INBOX", 1, 8, "unparsable", raw=b"other")
    listed = list(storage.quarantined("i"))
    assert [e["uid"] for e in listed] == [7] and "raw" not in listed[0]
    assert len(list(storage.quarantined())) == 2
    entry = storage.quarantined_mail(str(listed[0]["_id"]))
    assert bytes(entry["raw"]) == b"raw mail"
    assert storage.quarantined_mail("not-an-id") is None and storage.quarantined_mail(str(ObjectId())) is None
    storage.release_quarantined(entry["_id"])
    assert [e["uid"] for e in storage.quarantined()] == [8]


def test_integrations_without_secrets_and_the_mark_that_changes_with_them(storage: Storage):
    before = storage.integrations_mark()
    storage.save_integration("i", {"user": "me@x.org", "password": "secret"})
    assert [set(d) for d in storage.inventory()] == [{"_id", "inboxId", "updatedAt"}]
    assert [set(d) for d in storage.integration_users()] == [{"_id", "inboxId", "user"}]
    [health] = storage.integration_health()
    assert health == {"inboxId": "i", "healthStatus": "healthy", "error": None}
    assert storage.integrations_mark() != before
    marked = storage.integrations_mark()
    storage.set_health("i", state="listening", healthy=True, error=None)
    assert storage.integrations_mark() != marked


def test_logs_newest_first_optionally_of_one_integration(storage: Storage):
    for i in range(3):
        storage.log("info", f"m{i}", inbox_id="a" if i % 2 else "b")
    assert [e["message"] for e in storage.logs_of(limit=2)] == ["m2", "m1"]
    assert [e["message"] for e in storage.logs_of("a", limit=10)] == ["m1"]


def test_tenants_sign_ins_and_the_console_key(storage: Storage):
    storage.ensure_tenant_index()
    storage.record_tenant("acme")
    storage.record_tenant("acme")
    assert storage.recorded_tenants() == ["acme"]
    assert storage.tenant_recorded("acme") and not storage.tenant_recorded("globex")

    now = utcnow()
    storage.keep_sign_in({"_id": "old", "createdAt": now, "expiresAt": now - dt.timedelta(seconds=1)})
    storage.keep_sign_in({"_id": "s1", "createdAt": now, "expiresAt": now + dt.timedelta(minutes=10)})
    assert sorted(d["_id"] for d in storage.collection("imap_oauth_states").find()) == ["s1"]  # expired dropped
    assert storage.take_sign_in("s1")["_id"] == "s1"
    assert storage.take_sign_in("s1") is None  # a state serves once

    assert storage.console_key("first") == "first"
    assert storage.console_key("second") == "first"  # the first one written stays
    storage.replace_console_key("not-it", "third")
    assert storage.console_key("x") == "first"
    storage.replace_console_key("first", "third")
    assert storage.console_key("x") == "third"


def test_a_sibling_shares_the_client_and_has_a_database_of_its_own(storage: Storage):
    other = storage.sibling(f"{storage.database_name}_acme", tenant="acme")
    try:
        assert other.database_name == f"{storage.database_name}_acme" and other.tenant == "acme"
        assert other.db.client is storage.db.client and other.sealer is storage.sealer
    finally:
        storage.db.client.drop_database(other.database_name)
