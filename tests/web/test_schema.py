"""web.schema, executed directly with a context (no servers): the contract's SDL, login, resolvers' shapes."""
from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from bson import ObjectId
from graphql import build_schema, parse
from graphql.language import (
    ObjectTypeDefinitionNode,
    ObjectTypeExtensionNode,
    ScalarTypeDefinitionNode,
)

from kinds.imap.graphql import LOGS_LIMIT, SDL, schema

CONTRACT_SDL = """
scalar JSON
scalar Date
type IMap { _id: String!  title: String  mailData: JSON  createdAt: Date }
type IMapIntegration { inboxId: String host: String smtpHost: String smtpPort: String mainUser: String user: String
  password: String }
type Query {
  imapConversationDetail(conversationId: String!): [IMap]
  imapGetIntegrations: [IMapIntegration]
  imapLogs(integrationId: String): [JSON]
}
type Mutation {
  imapSendMail(integrationId: String conversationId: String subject: String! body: String to: [String]! cc: [String]
    bcc: [String] from: String! shouldResolve: Boolean shouldOpen: Boolean headerId: String replyTo: [String]
    inReplyTo: String threadId: String messageId: String replyToMessageId: String references: [String]
    attachments: [JSON] customerId: String): JSON
}
"""
USER = {"_id": "user-1", "username": "agent"}
T0 = dt.datetime(2024, 1, 31, 9, 30, 0, 123000, tzinfo=dt.UTC)


class FakeCollection:
    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.docs = docs
        self.queries: list[dict[str, Any]] = []

    def find(self, query: dict[str, Any], *, sort: list[tuple[str, int]], limit: int) -> list[dict[str, Any]]:
        self.queries.append(query)
        found = [d for d in self.docs if all(d.get(k) == v for k, v in query.items())]
        for key, direction in reversed(sort):
            found.sort(key=lambda d: d[key], reverse=direction < 0)
        return found[:limit]


class FakeStorage:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.integrations: list[dict[str, Any]] = []
        self.logs = FakeCollection([])

    def conversation_messages(self, conversation_id: str) -> list[dict[str, Any]]:
        return sorted((m for m in self.messages if m["inboxConversationId"] == conversation_id),
                      key=lambda m: m["createdAt"])

    def list_integrations(self) -> list[dict[str, Any]]:
        return self.integrations

    def logs_of(self, inbox_id: str | None = None, *, limit: int) -> list[dict[str, Any]]:
        query = {"integrationId": inbox_id} if inbox_id else {}
        return self.logs.find(query, sort=[("date", -1), ("_id", -1)], limit=limit)

    def remember_split(self, message_id: Any, record: dict[str, Any]) -> None:
        for message in self.messages:
            if message["_id"] == message_id:
                message["split"] = record


class FakeSender:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail

    def send(self, subdomain: str, args: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((subdomain, args))
        if self.fail:
            raise self.fail
        return {"info": {"messageId": "<sent-1@example.com>", "accepted": args["to"], "rejected": []}}


@pytest.fixture
def storage() -> FakeStorage:
    return FakeStorage()


def run(query: str, storage: Any = None, *, user: Any = USER, sender: Any = None, variables: Any = None) -> Any:
    context = {"user": user, "storage": storage or FakeStorage(), "imap_sender": sender or FakeSender(),
               "subdomain": "os"}
    return schema.execute(query, variables=variables, context=context)


def fields_of(graphql_schema: Any, type_name: str) -> dict[str, Any]:
    return {name: (str(f.type), {a: str(arg.type) for a, arg in f.args.items()})
            for name, f in graphql_schema.get_type(type_name).fields.items()}


# -- the SDL ------------------------------------------------------------------------------------------------------

def test_types_fields_and_arguments_are_exactly_the_contracts():
    contract, ours = build_schema(CONTRACT_SDL), schema.graphql_schema
    for name in ("IMap", "IMapIntegration", "Mutation"):
        assert fields_of(ours, name) == fields_of(contract, name)
    assert {k: v for k, v in fields_of(ours, "Query").items() if k != "_service"} == fields_of(contract, "Query")
    assert str(ours.get_type("JSON")) == "JSON" and str(ours.get_type("Date")) == "Date"


def test_federation_sdl_extends_query_and_mutation_with_every_type_and_field():
    result = run("query SubgraphIntrospectQuery { _service { sdl } }", user=None)
    assert result.errors is None
    sdl = result.data["_service"]["sdl"]
    assert sdl == SDL
    definitions = {d.name.value: d for d in parse(sdl).definitions}
    assert isinstance(definitions["Query"], ObjectTypeExtensionNode)
    assert isinstance(definitions["Mutation"], ObjectTypeExtensionNode)
    assert isinstance(definitions["IMap"], ObjectTypeDefinitionNode)
    assert isinstance(definitions["JSON"], ScalarTypeDefinitionNode) and isinstance(definitions["Date"],
                                                                                  ScalarTypeDefinitionNode)
    assert set(definitions) == {"Query", "Mutation", "IMap", "IMapIntegration", "JSON", "Date"}
    contract = build_schema(CONTRACT_SDL)
    for name, node in definitions.items():
        if hasattr(node, "fields"):
            assert {f.name.value for f in node.fields} == set(contract.get_type(name).fields)
    assert "extend type Query" in sdl and "extend type Mutation" in sdl and "_service" not in sdl


# -- login ----------------------------------------------------------------------------------------------------------

ROOT_FIELDS = {
    "imapConversationDetail": '{ imapConversationDetail(conversationId: "c1") { _id } }',
    "imapGetIntegrations": "{ imapGetIntegrations { inboxId } }",
    "imapLogs": "{ imapLogs }",
    "imapSendMail": 'mutation { imapSendMail(subject: "s", to: ["a@x.com"], from: "me@x.com") }',
}


@pytest.mark.parametrize("field", ROOT_FIELDS)
@pytest.mark.parametrize("user", [None, {}, {"_id": ""}, {"username": "no id"}, "user-1"])
def test_every_field_requires_a_logged_in_user(field, user):
    sender = FakeSender()
    result = run(ROOT_FIELDS[field], user=user, sender=sender)
    assert [e.message for e in result.errors] == ["Login required"]
    assert result.data == {field: None}
    assert sender.calls == []


# -- queries --------------------------------------------------------------------------------------------------------

def message(conversation_id: str, created: dt.datetime, **fields: Any) -> dict[str, Any]:
    return {"_id": ObjectId(), "inboxIntegrationId": "inbox-1", "inboxConversationId": conversation_id,
            "messageId": f"<{ObjectId()}@example.com>", "subject": "Hello", "body": "<div>hi</div>",
            "from": [{"name": "Alice", "address": "alice@example.com"}], "to": [{"name": "", "address": "me@x.com"}],
            "cc": [], "bcc": [], "attachments": [], "createdAt": created, "type": "INBOX", "uid": 7,
            "folder": "INBOX", **fields}


def test_conversation_detail_is_oldest_first_with_erxes_mail_data(storage):
    reply = message("c1", T0 + dt.timedelta(minutes=5), subject="Re: Hello", type="SENT",
                    body='<div>Sure.</div><div class="gmail_quote">On Mon, Alice wrote:<br>hi</div>',
                    cc=[{"name": "Carol", "address": "carol@example.com"}], bcc=[{"address": "boss@x.com"}],
                    attachments=[{"filename": "a.pdf", "mimeType": "application/pdf", "type": "attachment",
                                  "size": 3, "attachmentId": "abc", "contentId": None, "partIndex": "2"}])
    first = message("c1", T0)
    storage.messages += [reply, first, message("c2", T0)]
    result = run('query($id: String!) { imapConversationDetail(conversationId: $id) { _id title createdAt '
                 'mailData } }', storage, variables={"id": "c1"})
    assert result.errors is None
    detail = result.data["imapConversationDetail"]
    assert [d["_id"] for d in detail] == [str(first["_id"]), str(reply["_id"])]
    assert detail[0]["createdAt"] == "2024-01-31T09:30:00.123Z"
    assert detail[0]["mailData"] == {
        "messageId": first["messageId"], "from": [{"name": "Alice", "email": "alice@example.com"}],
        "to": [{"name": "", "email": "me@x.com"}], "cc": [], "bcc": [], "subject": "Hello", "body": "<div>hi</div>",
        "attachments": [], "newContent": "<div>hi</div>", "replies": ""}
    data = detail[1]["mailData"]
    assert data["cc"] == [{"name": "Carol", "email": "carol@example.com"}]
    assert data["bcc"] == [{"name": "", "email": "boss@x.com"}]
    assert data["attachments"][0]["filename"] == "a.pdf" and data["attachments"][0]["partIndex"] == "2"
    assert data["newContent"] == "<div>Sure.</div>"
    assert data["replies"] == '<div class="gmail_quote">On Mon, Alice wrote:<br>hi</div>'
    assert run('{ imapConversationDetail(conversationId: "nope") { _id } }', storage).data == {
        "imapConversationDetail": []}


def test_integrations_never_show_the_password(storage):
    storage.integrations = [{"_id": ObjectId(), "inboxId": "inbox-1", "host": "imap.x.com", "smtpHost": "smtp.x.com",
                             "smtpPort": "587", "mainUser": "me", "user": "me@x.com", "password": "s3cret",
                             "healthStatus": "healthy"}]
    result = run("{ imapGetIntegrations { inboxId host smtpHost smtpPort mainUser user password } }", storage)
    assert result.errors is None
    assert result.data == {"imapGetIntegrations": [{
        "inboxId": "inbox-1", "host": "imap.x.com", "smtpHost": "smtp.x.com", "smtpPort": "587", "mainUser": "me",
        "user": "me@x.com", "password": None}]}
    assert "s3cret" not in str(result.data)


def test_logs_are_the_newest_hundred_optionally_of_one_integration(storage):
    storage.logs.docs = [{"_id": ObjectId(), "date": T0 + dt.timedelta(seconds=i), "type": "info",
                          "message": f"m{i}", "integrationId": "inbox-1" if i % 2 else "inbox-2"} for i in range(150)]
    result = run("{ imapLogs }", storage)
    assert result.errors is None
    logs = result.data["imapLogs"]
    assert len(logs) == LOGS_LIMIT
    assert [entry["message"] for entry in logs[:3]] == ["m149", "m148", "m147"]
    assert logs[0]["date"] == "2024-01-31T09:32:29.123Z" and isinstance(logs[0]["_id"], str)
    one = run('{ imapLogs(integrationId: "inbox-2") }', storage).data["imapLogs"]
    assert len(one) == 75 and {entry["integrationId"] for entry in one} == {"inbox-2"}
    assert storage.logs.queries == [{}, {"integrationId": "inbox-2"}]


# -- the mutation ---------------------------------------------------------------------------------------------------

def test_send_mail_passes_the_arguments_to_the_sender():
    sender = FakeSender()
    result = run('mutation { imapSendMail(integrationId: "inbox-1", conversationId: "c1", subject: "Re: Hello", '
                 'body: "<p>hi</p>", to: ["alice@example.com"], cc: ["c@x.com"], from: "me@x.com", '
                 'shouldResolve: true, references: ["<a@x>"], attachments: [{url: "k/1", name: "a.txt", size: 3}], '
                 'inReplyTo: "<a@x>") }', sender=sender)
    assert result.errors is None
    assert result.data == {"imapSendMail": {"info": {"messageId": "<sent-1@example.com>",
                                                     "accepted": ["alice@example.com"], "rejected": []}}}
    assert sender.calls == [("os", {
        "integrationId": "inbox-1", "conversationId": "c1", "subject": "Re: Hello", "body": "<p>hi</p>",
        "to": ["alice@example.com"], "cc": ["c@x.com"], "from": "me@x.com", "shouldResolve": True,
        "references": ["<a@x>"], "attachments": [{"url": "k/1", "name": "a.txt", "size": 3}], "inReplyTo": "<a@x>"})]


def test_send_mail_variables_and_required_arguments():
    sender = FakeSender()
    query = ("mutation($to: [String]!, $files: [JSON]) { imapSendMail(subject: \"s\", to: $to, from: \"me@x.com\", "
             "attachments: $files) }")
    result = run(query, sender=sender, variables={"to": ["a@x.com"], "files": [{"nested": {"k": [1, 2]}}]})
    assert result.errors is None
    assert sender.calls[0][1]["attachments"] == [{"nested": {"k": [1, 2]}}]
    missing = run('mutation { imapSendMail(subject: "s", from: "me@x.com") }', sender=sender)
    assert missing.data is None and "argument 'to'" in missing.errors[0].message


def test_a_sender_failure_becomes_the_graphql_error():
    sender = FakeSender(fail=RuntimeError("SMTP refused: 550 mailbox unavailable"))
    result = run('mutation { imapSendMail(subject: "s", to: ["a@x.com"], from: "me@x.com") }', sender=sender)
    assert result.data == {"imapSendMail": None}
    assert [e.message for e in result.errors] == ["SMTP refused: 550 mailbox unavailable"]
    assert result.errors[0].path == ["imapSendMail"]


def test_date_scalar_reads_ms_and_iso_and_writes_javascript_iso():
    from web.schema import Date
    assert Date.serialize(dt.datetime(2024, 1, 31, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == \
        "2024-01-31T09:30:00.000Z"
    assert Date.serialize(dt.datetime(2024, 1, 31, 9, 30)) == "2024-01-31T09:30:00.000Z"
    assert Date.parse_value(1706693400000) == dt.datetime(2024, 1, 31, 9, 30, tzinfo=dt.UTC)
    assert Date.parse_value("2024-01-31T09:30:00.000Z") == dt.datetime(2024, 1, 31, 9, 30, tzinfo=dt.UTC)
