"""kinds.imap.logs_collect: ``logs.collectItems`` against the real MongoDB-wire server."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from bson import ObjectId

from kinds.imap.logs_collect import collect_items
from runtime.storage import Storage

T0 = dt.datetime(2024, 1, 31, 9, 30, tzinfo=dt.UTC)


def message(storage: Storage, minutes: int, **fields: Any) -> ObjectId:
    doc = {"inboxIntegrationId": "inbox-1", "inboxConversationId": "c1", "messageId": f"<{ObjectId()}@x>",
           "subject": f"m{minutes}", "body": "<div>x</div>", "from": [], "to": [], "cc": [], "bcc": [],
           "createdAt": T0 + dt.timedelta(minutes=minutes), "ingestState": "done", "type": "INBOX", **fields}
    return storage.messages.insert_one(doc).inserted_id


def test_messages_from_or_to_the_customers_addresses_newest_first(storage):
    storage.save_customer("inbox-1", "alice@example.com", "core-alice")
    storage.save_customer("inbox-2", "alice@work.example", "core-alice")
    storage.save_customer("inbox-1", "bob@example.com", "core-bob")
    alice = {"name": "Alice", "address": "Alice@Example.com"}
    inbound = message(storage, 1, **{"from": [alice]})
    reply = message(storage, 2, type="SENT", to=[{"name": "", "address": "ALICE@EXAMPLE.COM"}])
    copied = message(storage, 3, cc=[{"name": "", "address": "alice@work.example"}], inboxIntegrationId="inbox-2")
    by_id = message(storage, 4, customerId="core-alice")
    message(storage, 5, **{"from": [alice]}, ingestState="pending")          # not stored yet
    message(storage, 6, **{"from": [{"name": "Bob", "address": "bob@example.com"}]})
    message(storage, 7, **{"from": [{"name": "", "address": "malice@example.com"}]})  # not a prefix match

    result = collect_items(storage, {"subdomain": "os", "data": {"contentId": "core-alice", "contentType": "customer"}})
    assert result["status"] == "success"
    items = result["data"]
    assert [i["_id"] for i in items] == [str(by_id), str(copied), str(reply), str(inbound)]
    assert {i["contentType"] for i in items} == {"imap:customer"}
    assert items[-1]["createdAt"] == "2024-01-31T09:31:00.000Z"
    assert items[-1]["contentTypeDetail"]["_id"] == str(inbound)
    assert items[-1]["contentTypeDetail"]["from"] == [alice]
    json.dumps(result)


@pytest.mark.parametrize("envelope", [{"data": {"contentId": "unknown"}}, {"data": {}}, {"data": "x"}, {}, None])
def test_unknown_customers_and_bad_envelopes_collect_nothing(storage, envelope):
    message(storage, 1, **{"from": [{"name": "", "address": "alice@example.com"}]})
    assert collect_items(storage, envelope) == {"status": "success", "data": []}


def test_bodies_leave_sanitised_and_the_runtimes_own_fields_stay_home(storage):
    """Issue 12 item 1: erxes's ActivityLog.tsx renders contentTypeDetail.body with dangerouslySetInnerHTML."""
    from tests.runtime.test_sanitize import FORBIDDEN, HOSTILE

    storage.save_customer("inbox-1", "mallory@example.com", "core-mallory")
    body = '<img src="cid:logo@x" alt="logo">' + "".join(HOSTILE)
    stored = message(storage, 1, **{"from": [{"name": "", "address": "mallory@example.com"}]}, body=body,
                     attachments=[{"filename": "logo.png", "contentId": "logo@x"}], split={"v": 2, "at": None})
    [item] = collect_items(storage, {"data": {"contentId": "core-mallory"}}, url_prefix="/pl:imap")["data"]
    detail = item["contentTypeDetail"]
    assert not FORBIDDEN.search(detail["body"]), detail["body"]
    assert "split" not in detail and detail["subject"] == "m1"
    assert (f'<img src="/pl:imap/read-mail-attachment?messageId={stored}&amp;integrationId=inbox-1&amp;'
            'filename=logo.png" alt="logo">') in detail["body"]
    assert storage.messages.find_one({"_id": stored})["body"] == body  # the stored original stays
