"""The standalone emulation of erxes's procedures (runtime/standalone.py) against the real MongoDB-wire server."""
from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from runtime.standalone import Standalone
from runtime.storage import Storage


@pytest.fixture
def standalone(mongo_url: str) -> Iterator[Standalone]:
    storage = Storage(mongo_url)
    Standalone.ensure_indexes(storage)
    yield Standalone(storage)
    storage.close()


def receive(standalone: Standalone, **payload: Any) -> str:
    envelope = {"data": {"action": "create-or-update-conversation",
                         "payload": json.dumps({"integrationId": "inbox-1", "content": "hi", **payload})}}
    return standalone.receive(envelope)["_id"]


def test_the_same_idempotency_key_always_yields_the_same_conversation(standalone):
    first = receive(standalone, idempotencyKey="inbox-1/<a>")
    assert receive(standalone, idempotencyKey="inbox-1/<a>") == first
    other = receive(standalone, idempotencyKey="inbox-1/<b>")
    assert other != first and receive(standalone) not in (first, other)  # no key: always a new one
    assert standalone.conversations.count_documents({}) == 3
    assert receive(standalone, conversationId=first) == first
    assert standalone.conversations.find_one({"_id": first})["messageCount"] == 2


def test_announcements_are_recorded_once_and_repeats_counted(standalone):
    for _ in range(2):
        standalone.message_inserted({"data": {"_id": "m1", "conversationId": "c1", "content": "x"}})
    standalone.message_inserted({"data": {"_id": "m2", "conversationId": "c1", "content": "y"}})
    notes = {n["messageId"]: n for n in standalone.inserted.find()}
    assert {m: n["deliveries"] for m, n in notes.items()} == {"m1": 2, "m2": 1}
    assert notes["m1"]["conversationId"] == "c1" and notes["m1"]["content"] == "x"
