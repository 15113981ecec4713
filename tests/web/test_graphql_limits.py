"""GraphQL costs nothing before the login check (issue 12 item 4), over real HTTP to the production server
(actors/web.py's WebActor serving web/app.py's app): documents are bounded before validation, and without a
logged-in user only ``_service`` is ever validated or executed. The erxes gateway's probe and the UI's documents
(renamed operations, undeclared variables) keep working."""
from __future__ import annotations

import base64
import http.client
import json
import time
from typing import Any

import pytest

import web.graphql
from actors.web import WebActor
from tests.web.test_doors import config
from tests.web.test_attachments import DOC, FakeStorage
from kinds.imap.graphql import schema as imap_schema
from web.app import WebDeps, make_app

USER = {"user": base64.b64encode(json.dumps({"_id": "agent-1"}).encode()).decode()}


class Storage(FakeStorage):
    def __init__(self) -> None:
        super().__init__(DOC)
        self.listed = 0

    def list_integrations(self) -> list[dict[str, Any]]:
        self.listed += 1
        return [{"_id": "x", "inboxId": "inbox-1", "host": "imap.example.com", "password": "never-shown"}]


class Served:
    def __init__(self) -> None:
        self.storage = Storage()
        deps = WebDeps(ready=lambda: True, storage=self.storage, schema=imap_schema)
        app = make_app(config().with_overrides(max_request_bytes=15 * 1024 * 1024), deps=deps)
        self.port = WebActor.start(app, port=0, host="127.0.0.1").proxy().port.get(timeout=10)

    def post(self, document: str, *, user: bool = False, variables: Any = None,
             operation_name: str | None = None) -> tuple[int, bytes]:
        body = json.dumps({"query": document, "variables": variables, "operationName": operation_name})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("POST", "/graphql", body=body.encode(),
                         headers={"Content-Type": "application/json", **(USER if user else {})})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@pytest.fixture
def served() -> Served:
    return Served()


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every document the server validates (graphql-core's ``validate``, as web/graphql.py calls it)."""
    seen: list[Any] = []
    real = web.graphql.validate  # type: ignore[attr-defined]

    def counting(schema: Any, document: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(document)
        return real(schema, document, *args, **kwargs)

    monkeypatch.setattr(web.graphql, "validate", counting)
    return seen


def refused(status: int, body: bytes, words: str) -> bool:
    message = json.loads(body)["errors"][0]["message"]
    return status == 400 and words in message and len(body) < 1000


def test_documents_are_bounded_before_validation_with_or_without_a_user(served: Served) -> None:
    aliases = "{ " + " ".join(f"a{i}: imapLogs" for i in range(4000)) + " }"  # 5 s and 0.4 MB before
    services = "{ " + " ".join(f"s{i}: _service {{ sdl }}" for i in range(20000)) + " }"  # 17.6 MB answered
    one_mb = "{ " + "imapLogs " * (1024 * 1024 // 9) + "}"
    for user in (False, True):
        started = time.monotonic()
        assert refused(*served.post(aliases, user=user), "more than 5000 tokens")  # 64 KB, 12,000 tokens
        few = "{ _service { " + " ".join(f"a{i}: sdl" for i in range(31)) + " } }"
        assert refused(*served.post(few, user=user), "over 30 aliases")
        assert refused(*served.post(services, user=user), "over 100000 bytes")
        assert refused(*served.post(one_mb, user=user), "over 100000 bytes")
        assert refused(*served.post("{ " + "imapLogs " * 25 + "}", user=user), "over 20 root fields")
        deep = "{ imapConversationDetail(conversationId: \"c\") " + "{ _id " * 25 + "}" * 26
        assert refused(*served.post(deep, user=user), "nested deeper than 20")
        tokens = "{ imapLogs" + " @a" * 6000 + " }"
        assert refused(*served.post(tokens, user=user), "more than 5000 tokens")
        bomb = "{ _service { ...F0 } } " + " ".join(f"fragment F{i} on _Service {{ ...F{i + 1} ...F{i + 1} }}"
                                                    for i in range(40))  # 2^40 fields once expanded
        assert refused(*served.post(bomb + " fragment F40 on _Service { sdl }", user=user), "over 1000 fields")
        assert refused(*served.post(bomb, user=user), "over 1000 fields")  # spreads only (F40 unknown)
        fields = "{ imapConversationDetail(conversationId: \"c\") { " + "_id " * 1200 + "} }"
        assert refused(*served.post(fields, user=user), "over 1000 fields")
        nested = "{ " + "{ " * 3000 + "}" * 3000 + " }"  # graphql-core's parser recurses
        assert served.post(nested, user=user)[0] == 400
        assert time.monotonic() - started < 30  # generous: the cost per refusal is measured in bench/
    assert served.storage.listed == 0


def test_without_a_user_nothing_but_the_sdl_is_validated_or_executed(served: Served, validations: list[Any]
                                                                      ) -> None:
    document = "{ " + " ".join(f"a{i}: imapGetIntegrations {{ inboxId }}" for i in range(20)) + " }"
    status, body = served.post(document)
    reply = json.loads(body)
    assert status == 200 and reply["data"] == {f"a{i}": None for i in range(20)}
    assert [e["message"] for e in reply["errors"]] == ["Login required"] * 20
    mixed = "query SubgraphIntrospectQuery { _service { sdl } imapLogs }"
    status, body = served.post(mixed)
    assert status == 200 and json.loads(body)["errors"] == [{"message": "Login required", "path": ["imapLogs"]}]
    status, body = served.post("mutation { imapSendMail(subject: \"s\", to: [\"a@x\"], from: \"me@x\") }")
    assert status == 200 and json.loads(body)["data"] == {"imapSendMail": None}
    assert validations == [] and served.storage.listed == 0

    # the gateway's probe: no user, HTTP 200, the SDL
    status, body = served.post("query SubgraphIntrospectQuery { _service { sdl } }",
                               operation_name="SubgraphIntrospectQuery")
    assert status == 200 and "extend type Query" in json.loads(body)["data"]["_service"]["sdl"]
    assert len(validations) == 1


def test_the_uis_documents_still_run(served: Served) -> None:
    """As Apollo Router sends them: a renamed operation and variables the operation does not declare."""
    status, body = served.post("query imapGetIntegrations__imap__0 { imapGetIntegrations { inboxId password } }",
                               user=True, variables={"kind": "imap"},
                               operation_name="imapGetIntegrations__imap__0")
    assert status == 200, body
    assert json.loads(body) == {"data": {"imapGetIntegrations": [{"inboxId": "inbox-1", "password": None}]}}
    status, body = served.post("query q1 { _service { sdl } } query q2 { imapGetIntegrations { inboxId } }",
                               user=True, operation_name="q2")
    assert status == 200 and json.loads(body)["data"] == {"imapGetIntegrations": [{"inboxId": "inbox-1"}]}
    status, body = served.post("{ imapGetIntegrations { nope } }", user=True)
    assert status == 400 and "Cannot query field 'nope'" in json.loads(body)["errors"][0]["message"]
    from graphql import get_introspection_query  # GraphiQL's own query fits the bounds

    status, body = served.post(get_introspection_query(descriptions=True), user=True)
    assert status == 200 and json.loads(body)["data"]["__schema"]["queryType"]["name"] == "Query"
