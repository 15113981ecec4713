"""Storage's batch operations for the pipeline's lanes, against the real MongoDB-wire server (conftest's ``storage``)."""
from __future__ import annotations

from typing import Any

from runtime.storage import DONE, PENDING, STORED


def message(message_id: str, references: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"inboxIntegrationId": "inbox-1", "messageId": message_id, "references": references or [], **extra}


def test_record_pending_many_keeps_order_and_returns_the_earlier_document_of_a_duplicate(storage):
    [first] = storage.record_pending_many([message("<a>")])
    docs = storage.record_pending_many([message("<b>"), message("<a>", ["<other>"]), message("<c>")])
    assert [d["messageId"] for d in docs] == ["<b>", "<a>", "<c>"]
    assert docs[1]["_id"] == first["_id"] and docs[1]["references"] == []  # the stored one, not the new one
    assert storage.messages.count_documents({}) == 3
    assert {d["ingestState"] for d in storage.messages.find()} == {PENDING}
    assert storage.record_pending_many([]) == []


def test_state_transitions_of_a_batch_and_the_thread_lookups(storage):
    a, b, c = storage.record_pending_many([message("<a>"), message("<b>", ["<a>"]), message("<c>")])
    storage.set_conversations_stored([(a["_id"], "conv-a"), (b["_id"], "conv-a")])
    storage.set_messages_state([a["_id"]], DONE)
    states = {d["messageId"]: (d["ingestState"], d.get("inboxConversationId")) for d in storage.messages.find()}
    assert states == {"<a>": (DONE, "conv-a"), "<b>": (STORED, "conv-a"), "<c>": (PENDING, None)}
    assert set(storage.find_messages("inbox-1", ["<a>", "<c>", "<missing>"])) == {"<a>", "<c>"}
    assert storage.find_messages("other-inbox", ["<a>"]) == {}
    # by its own id, and by a sibling sharing an ancestor; pending ones without a conversation do not count
    assert {d["messageId"] for d in storage.thread_candidates("inbox-1", ["<a>", "<c>"])} == {"<a>", "<b>"}
    assert storage.find_thread_conversation("inbox-1", ["<a>"]) == "conv-a"
    assert storage.find_thread_conversation("inbox-1", ["<c>"]) is None


def test_find_customers_of_a_batch(storage):
    storage.save_customer("inbox-1", "a@example.com", "contact-a")
    storage.save_customer("inbox-2", "b@example.com", "contact-b")
    found = storage.find_customers("inbox-1", ["a@example.com", "b@example.com", "a@example.com", ""])
    assert {e: d["contactsId"] for e, d in found.items()} == {"a@example.com": "contact-a"}
