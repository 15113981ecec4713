"""The GraphQL schema erxes's UI reads (contract section 6), as an Apollo Federation subgraph.

Resolvers take their collaborators from ``info.context``:

- ``user``: the logged-in user (``web.auth``); every field but ``_service`` requires one;
- ``storage``: :class:`runtime.storage.Storage`;
- ``sender``: an object with ``send(subdomain, args) -> {"info": {...}}`` (``runtime.sending.MailSender``);
- ``subdomain`` (default ``"os"``).

They block (MongoDB, SMTP), so the HTTP handler runs ``schema.execute`` off the IOLoop.
``auto_camelcase`` is off: field and argument names are erxes's, verbatim.
"""
from __future__ import annotations

import copy
import datetime as dt
import functools
from collections.abc import Callable, Mapping
from typing import Any

import graphene
from graphql import GraphQLSchema, Undefined, print_schema
from graphql.language import (
    DocumentNode,
    IntValueNode,
    ObjectTypeDefinitionNode,
    ObjectTypeExtensionNode,
    StringValueNode,
    ValueNode,
    parse,
    print_ast,
)
from graphql.utilities import value_from_ast_untyped

from runtime.procedures import public_details
from runtime.quoting import from_record, split_record
from runtime.sanitize import outward_message_html
from web.auth import require_user

__all__ = ["LOGS_LIMIT", "build_schema", "federation_sdl", "imap_mutation_fields", "imap_query_fields", "jsonable",
           "login_required", "schema", "sdl_of"]

LOGS_LIMIT = 100
FEDERATION_TYPES = ("_Service",)
FEDERATION_FIELDS = ("_service",)


# ----------------------------------------------------------------------------------------------------- scalars

def jsonable(value: Any) -> Any:
    """``value`` with MongoDB's types as erxes's Node side sends them: ObjectId as hex, dates as ISO strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dt.datetime):
        return iso_date(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if type(value).__name__ in ("ObjectId", "Decimal128"):
        return str(value)
    return value


def iso_date(value: dt.datetime) -> str:
    """JavaScript's ``Date.toISOString()``: UTC, milliseconds, ``Z``."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.isoformat(timespec="milliseconds") + "Z"


def _parse_date(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)  # 3.11 reads a trailing "Z"
        except ValueError:
            return None
    return None


class JSON(graphene.Scalar):
    """Any JSON value."""

    @staticmethod
    def serialize(value: Any) -> Any:
        return jsonable(value)

    @staticmethod
    def parse_value(value: Any) -> Any:
        return value

    @staticmethod
    def parse_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> Any:
        return value_from_ast_untyped(node, variables)


class Date(graphene.Scalar):
    """A point in time, sent as erxes sends it: an ISO 8601 string in UTC (``2024-01-31T09:30:00.000Z``)."""

    @staticmethod
    def serialize(value: Any) -> Any:
        parsed = _parse_date(value)
        return iso_date(parsed) if parsed is not None else value

    @staticmethod
    def parse_value(value: Any) -> dt.datetime:
        parsed = _parse_date(value)
        if parsed is None:
            raise ValueError(f"Date cannot represent {value!r}: use milliseconds or an ISO 8601 string")
        return parsed

    @staticmethod
    def parse_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> Any:
        parsed = None
        if isinstance(node, IntValueNode):
            parsed = _parse_date(int(node.value))
        elif isinstance(node, StringValueNode):
            parsed = _parse_date(node.value)
        return Undefined if parsed is None else parsed


# ------------------------------------------------------------------------------------------------------- types

class IMap(graphene.ObjectType):
    _id = graphene.String(required=True)
    title = graphene.String()
    mailData = JSON()
    createdAt = Date()


class IMapIntegration(graphene.ObjectType):
    inboxId = graphene.String()
    host = graphene.String()
    smtpHost = graphene.String()
    smtpPort = graphene.String()
    mainUser = graphene.String()
    user = graphene.String()
    password = graphene.String()


class _Service(graphene.ObjectType):
    sdl = graphene.String()


# --------------------------------------------------------------------------------------------------- resolvers

def login_required(resolver: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse the field unless ``info.context["user"]`` is logged in (erxes's ``moduleRequireLogin``)."""
    @functools.wraps(resolver)
    def wrapper(root: Any, info: Any, **kwargs: Any) -> Any:
        require_user(info.context)
        return resolver(root, info, **kwargs)
    return wrapper


def _addresses(entries: Any) -> list[dict[str, Any]]:
    return [{"name": e.get("name") or "", "email": e.get("address") or e.get("email")}
            for e in entries or [] if isinstance(e, dict)]


def mail_data(doc: dict[str, Any], url_prefix: str = "", *, storage: Any = None) -> dict[str, Any]:
    """The ``mailData`` of one stored message, as erxes's UI reads it; the HTML sanitised (runtime.sanitize), with
    ``cid:`` images pointing at ``<url_prefix>/read-mail-attachment``. The stored body is left as it came.

    The quote split is made once: its record (``runtime.quoting.split_record``) is kept in the message's ``split``
    field through ``storage``, and a later view rebuilds the halves from it (a record of an older version, or of
    another body, is made again). Sanitising happens at every view, so a sanitiser change applies at once."""
    raw = doc.get("body") or ""
    quoted = from_record(raw, doc.get("split"))
    if quoted is None:
        record = split_record(raw)
        quoted = from_record(raw, record)
        assert quoted is not None
        if storage is not None and doc.get("_id") is not None:
            storage.remember_split(doc["_id"], record)
    clean = functools.partial(outward_message_html, doc, url_prefix=url_prefix)
    body = clean(raw)
    return {
        "messageId": doc.get("messageId"),
        "from": _addresses(doc.get("from")),
        "to": _addresses(doc.get("to")),
        "cc": _addresses(doc.get("cc")),
        "bcc": _addresses(doc.get("bcc")),
        "subject": doc.get("subject") or "",
        "body": body,
        "attachments": jsonable(doc.get("attachments") or []),
        "newContent": clean(quoted.new_content),
        "replies": clean(quoted.replies),
    }


@login_required
def resolve_conversation_detail(root: Any, info: Any, conversationId: str) -> list[dict[str, Any]]:
    storage = info.context["storage"]
    prefix = info.context.get("attachment_url_prefix") or ""
    return [{"_id": str(m["_id"]), "createdAt": m.get("createdAt"), "mailData": mail_data(m, prefix, storage=storage)}
            for m in storage.conversation_messages(conversationId)]


@login_required
def resolve_integrations(root: Any, info: Any) -> list[dict[str, Any]]:
    return [public_details(doc) for doc in info.context["storage"].list_integrations()]


@login_required
def resolve_logs(root: Any, info: Any, integrationId: str | None = None) -> list[Any]:
    return info.context["storage"].logs_of(integrationId, limit=LOGS_LIMIT)


@login_required
def resolve_send_mail(root: Any, info: Any, **args: Any) -> Any:
    return info.context["sender"].send(info.context.get("subdomain") or "os", args)


def resolve_service(root: Any, info: Any) -> dict[str, str]:
    # not behind login: the gateway composes subgraphs without a user
    return {"sdl": sdl_of(info.schema)}


# ------------------------------------------------------------------------------------------------- root types

def imap_query_fields() -> dict[str, Any]:
    """The IMAP kind's Query fields (fresh graphene fields each call: kinds/imap registers them)."""
    return {
        "imapConversationDetail": graphene.List(IMap, conversationId=graphene.String(required=True),
                                                resolver=resolve_conversation_detail),
        "imapGetIntegrations": graphene.List(IMapIntegration, resolver=resolve_integrations),
        "imapLogs": graphene.List(JSON, integrationId=graphene.String(), resolver=resolve_logs),
    }


def imap_mutation_fields() -> dict[str, Any]:
    return {"imapSendMail": graphene.Field(
        JSON, resolver=resolve_send_mail,
        integrationId=graphene.String(), conversationId=graphene.String(), subject=graphene.String(required=True),
        body=graphene.String(), to=graphene.List(graphene.String, required=True), cc=graphene.List(graphene.String),
        bcc=graphene.List(graphene.String), **{"from": graphene.String(required=True)},
        shouldResolve=graphene.Boolean(), shouldOpen=graphene.Boolean(), headerId=graphene.String(),
        replyTo=graphene.List(graphene.String), inReplyTo=graphene.String(), threadId=graphene.String(),
        messageId=graphene.String(), replyToMessageId=graphene.String(), references=graphene.List(graphene.String),
        attachments=graphene.List(JSON), customerId=graphene.String())}


def build_schema(queries: Mapping[str, Any], mutations: Mapping[str, Any]) -> graphene.Schema:
    """The subgraph of the kinds' fields (runtime/kinds.py Registry.graphql_fields), plus federation's
    ``_service``."""
    query = type("Query", (graphene.ObjectType,), {
        **queries, "_service": graphene.Field(_Service, required=True, resolver=resolve_service)})
    mutation = type("Mutation", (graphene.ObjectType,), dict(mutations)) if mutations else None
    return graphene.Schema(query=query, mutation=mutation, auto_camelcase=False)


_SDLS: dict[int, tuple[GraphQLSchema, str]] = {}


def sdl_of(graphql_schema: GraphQLSchema) -> str:
    """:func:`federation_sdl` of ``graphql_schema``, made once per schema."""
    found = _SDLS.get(id(graphql_schema))
    if found is None or found[0] is not graphql_schema:
        found = _SDLS[id(graphql_schema)] = (graphql_schema, federation_sdl(graphql_schema))
    return found[1]


def federation_sdl(graphql_schema: GraphQLSchema) -> str:
    """Our types as a federation subgraph declares them: ``extend type Query``/``Mutation``, no ``_service``, no
    descriptions."""
    definitions = []
    for node in parse(print_schema(graphql_schema)).definitions:
        name = getattr(getattr(node, "name", None), "value", None)
        if name in FEDERATION_TYPES:
            continue
        if getattr(node, "description", None) is not None:
            node = copy.copy(node)
            node.description = None  # plain "scalar JSON", identical to the other subgraphs' declarations
        if isinstance(node, ObjectTypeDefinitionNode) and name in ("Query", "Mutation"):
            node = ObjectTypeExtensionNode(name=node.name, interfaces=node.interfaces, directives=node.directives,
                                           fields=tuple(f for f in node.fields
                                                        if f.name.value not in FEDERATION_FIELDS))
        definitions.append(node)
    return print_ast(DocumentNode(definitions=tuple(definitions)))


schema = build_schema(imap_query_fields(), imap_mutation_fields())  # IMAP's alone (tests; no kinds composed)
SDL = sdl_of(schema.graphql_schema)
