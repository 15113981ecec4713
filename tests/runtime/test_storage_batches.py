"""Storage's batch operations for the pipeline's lanes, against the real MongoDB-wire server (conftest's ``storage``)."""
from __future__ import annotations

from typing import Any

import pytest
from bson import ObjectId

from runtime.pipeline import Incoming, pick_thread
from runtime.mail.parse import parse_mail
from runtime.errors import StorageError
from runtime.storage import DONE, PENDING, STORED
from tests.conftest import make_mail


def message(message_id: str, references: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"inboxIntegrationId": "inbox-1", "messageId": message_id, "references": references or [], **extra}


def intent(message_id: str, **extra: Any) -> dict[str, Any]:
    return {"_id": ObjectId(), "inboxIntegrationId": "inbox-1", "messageId": message_id, "customerId": "c",
            "inboxConversationId": None, "createdAt": None, "receivedAt": None, **extra}


def test_record_intents_returns_the_earlier_intent_of_a_duplicate(storage):
    first = storage.record_intents([intent("<a>")])["<a>"]
    found = storage.record_intents([intent("<b>"), intent("<a>", customerId="other"), intent("<c>")])
    assert set(found) == {"<a>", "<b>", "<c>"}
    assert found["<a>"]["_id"] == first["_id"] and found["<a>"]["customerId"] == "c"  # the recorded one
    assert storage.intents.count_documents({}) == 3
    assert storage.record_intents([]) == {}
    assert set(storage.find_intents("inbox-1", ["<a>", "<missing>"])) == {"<a>"}
    storage.clear_intents([found["<a>"]["_id"], found["<b>"]["_id"]])
    assert set(storage.find_intents("inbox-1", ["<a>", "<b>", "<c>"])) == {"<c>"}


def test_store_messages_keeps_order_and_returns_the_earlier_document_of_a_duplicate(storage):
    [first] = storage.store_messages([message("<a>", inboxConversationId="conv-a", ingestState=DONE)])
    docs = storage.store_messages([message("<b>", ["<a>"], inboxConversationId="conv-a", ingestState=DONE),
                                   message("<a>", inboxConversationId="conv-x", ingestState=DONE),
                                   message("<c>", inboxConversationId="conv-c", ingestState=DONE)])
    assert [d["messageId"] for d in docs] == ["<b>", "<a>", "<c>"]
    assert docs[1]["_id"] == first["_id"] and docs[1]["inboxConversationId"] == "conv-a"  # the stored one
    assert storage.messages.count_documents({}) == 3
    assert set(storage.find_messages("inbox-1", ["<a>", "<c>", "<missing>"])) == {"<a>", "<c>"}
    assert storage.find_messages("other-inbox", ["<a>"]) == {}
    # by its own id, and by a sibling sharing an ancestor
    assert {d["messageId"] for d in storage.thread_candidates("inbox-1", ["<a>"])} == {"<a>", "<b>"}
    # the product's thread lookup: the batch's candidates, then each mail's pick among them
    assert pick_thread(storage.thread_candidates("inbox-1", ["<a>"]), ["<a>"]) == "conv-a"
    assert storage.thread_candidates("inbox-1", ["<nothing>"]) == []
    assert pick_thread(storage.thread_candidates("inbox-1", ["<nothing>"]), ["<nothing>"]) is None


def test_batch_lookup_finds_the_known_messages_and_the_threads_in_one_query_when_nothing_is_a_reply(storage):
    storage.store_messages([message("<a>", inboxConversationId="conv-a", ingestState=DONE, body="<p>a</p>"),
                            message("<b>", ["<a>"], inboxConversationId="conv-a", ingestState=DONE, body="b"),
                            message("<x>", ingestState=DONE)])  # no conversation: never a thread candidate
    queries: list[Any] = []
    find = storage.messages.find
    storage.messages.find = lambda *a, **kw: (queries.append(a[0]), find(*a, **kw))[1]
    known, candidates = storage.batch_lookup("inbox-1", ["<a>", "<new>"], [])
    assert list(known) == ["<a>"] and "body" not in known["<a>"] and candidates == [] and len(queries) == 1
    queries.clear()
    known, candidates = storage.batch_lookup("inbox-1", ["<new>", "<x>"], ["<a>", "<x>"])
    assert list(known) == ["<x>"] and len(queries) == 2  # the ids together, then the references
    assert {d["messageId"] for d in candidates} == {"<a>", "<b>"}  # by its own id, and a sibling
    assert pick_thread(candidates, ["<a>"]) == "conv-a"
    assert storage.batch_lookup("other-inbox", ["<a>"], ["<a>"]) == ({}, [])
    assert storage.batch_lookup("inbox-1", [], []) == ({}, [])


class Erxes:
    def __init__(self) -> None:
        self.called: list[tuple[str, str | None]] = []
        self.announced: list[str] = []

    def create_or_update_conversation(self, subdomain: str, *, conversation_id: str | None, idempotency_key: str,
                                      **_: Any) -> str:
        self.called.append((idempotency_key, conversation_id))
        return conversation_id or "conv-new"

    def message_inserted(self, subdomain: str, *, message_id: str, content: str, conversation_id: str) -> None:
        self.announced.append(message_id)


def test_documents_of_versions_before_intents_are_completed_once(storage):
    """A ``pending`` document (the intent, old style) is called for and stored under its own ``_id``; a ``stored``
    one is only announced; then both are ``done`` and no intent is left."""
    from actors.conversation import Conversations

    pending = {**message("<p>"), "_id": ObjectId(), "customerId": "c", "ingestState": PENDING,
               "inboxConversationId": None, "createdAt": None, "receivedAt": None}
    stored = {**message("<s>"), "_id": ObjectId(), "customerId": "c", "ingestState": STORED,
              "inboxConversationId": "conv-s", "body": "<p>s</p>"}
    storage.messages.insert_many([pending, stored])
    erxes = Erxes()
    answers: list[int] = []
    mailbox = type("Mailbox", (), {"mail_done": lambda self, folder, uid: answers.append(uid)})()
    jobs = [(Incoming("inbox-1", "os", "INBOX", uid, parse_mail(make_mail(to="me@x", message_id=m)), mailbox), "c")
            for uid, m in ((1, "<p>"), (2, "<s>"))]
    Conversations(storage=storage, erxes=erxes).ingest_batch(jobs)
    assert sorted(answers) == [1, 2]
    assert erxes.called == [("inbox-1/<p>", None)]  # the stored one is not called for again
    assert sorted(erxes.announced) == sorted([str(pending["_id"]), str(stored["_id"])])
    docs = {d["messageId"]: d for d in storage.messages.find()}
    assert {m: (d["_id"], d["ingestState"], d["inboxConversationId"]) for m, d in docs.items()} == {
        "<p>": (pending["_id"], DONE, "conv-new"), "<s>": (stored["_id"], DONE, "conv-s")}
    assert storage.intents.count_documents({}) == 0


def test_each_intent_is_deleted_right_after_its_announcement_not_after_the_batch(storage):
    """Issue 14, finding 3: a kill between an announcement and the deletion of its intent repeats that announcement
    on the re-fetch, so each intent goes as soon as its own announcement is confirmed. Before, a batch's intents
    were deleted together after its last announcement: a kill midway repeated every announcement before it."""
    from actors.conversation import Conversations

    class Watching(Erxes):  # how many intents are left each time an announcement goes out
        def __init__(self) -> None:
            super().__init__()
            self.left: list[int] = []

        def message_inserted(self, subdomain: str, **kwargs: Any) -> None:
            self.left.append(storage.intents.count_documents({}))
            super().message_inserted(subdomain, **kwargs)

    erxes = Watching()
    mailbox = type("Mailbox", (), {"mail_done": lambda self, folder, uid: None})()
    jobs = [(Incoming("inbox-1", "os", "INBOX", uid, parse_mail(make_mail(to="me@x", message_id=f"<m{uid}>")),
                      mailbox), "c") for uid in range(1, 6)]
    Conversations(storage=storage, erxes=erxes).ingest_batch(jobs)
    assert len(erxes.announced) == 5
    assert erxes.left == [5, 4, 3, 2, 1]  # only the mail being announced still has its intent (was [5, 5, 5, 5, 5])
    assert storage.intents.count_documents({}) == 0


def test_find_customers_of_a_batch(storage):
    storage.save_customer("inbox-1", "a@example.com", "contact-a")
    storage.save_customer("inbox-2", "b@example.com", "contact-b")
    found = storage.find_customers("inbox-1", ["a@example.com", "b@example.com", "a@example.com", ""])
    assert {e: d["contactsId"] for e, d in found.items()} == {"a@example.com": "contact-a"}


def test_a_refused_write_names_the_reason_and_never_the_documents(storage):
    """pymongo's BulkWriteError prints every refused document (``op``): a mail's body must not reach a log or a
    health error through it."""
    storage.db.command("collMod", storage.messages.name, validator={"body": {"$type": "int"}})
    try:
        try:
            storage.store_messages([message("<a>", body="SECRET-BODY-7f3", ingestState=DONE)])
        except Exception as exc:  # noqa: BLE001 - the test inspects whatever comes out
            raised = exc
        else:
            raise AssertionError("the validator let the document in")
        assert isinstance(raised, StorageError)
        assert "code 121" in str(raised) and "Document failed validation" in str(raised)
        assert raised.__cause__ is None and raised.__suppress_context__  # no traceback prints the documents
        assert "SECRET-BODY-7f3" not in str(raised) and "SECRET-BODY-7f3" not in repr(raised.args)
        with pytest.raises(StorageError) as intents:
            storage.db.command("collMod", storage.intents.name, validator={"customerId": {"$type": "int"}})
            storage.record_intents([intent("<b>", customerId="SECRET-CUSTOMER-9")])
        assert "SECRET-CUSTOMER-9" not in str(intents.value) and "code 121" in str(intents.value)
    finally:
        storage.db.command("collMod", storage.messages.name, validator={})
        storage.db.command("collMod", storage.intents.name, validator={})
