"""The GraphQL subgraph erxes's UI reads (contract section 6): what every kind's fields share. The scalars
(``JSON``, ``Date``), ``login_required``, and :func:`build_schema`, which composes the kinds' fields
(runtime/kinds.py ``Registry.graphql_fields``; the IMAP kind's are in kinds/imap/graphql.py) into one Apollo
Federation subgraph with ``_service``.

Resolvers take their collaborators from ``info.context`` (web/graphql.py builds it): ``user``, the logged-in user
(``web.auth``; every field but ``_service`` requires one), ``storage``, ``subdomain`` (default ``"os"``), and what
the kinds handed over (``Services.extra``, under keys their kind names, e.g. the IMAP kind's ``imap_sender``).
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

from web.auth import require_user

__all__ = ["Date", "JSON", "build_schema", "federation_sdl", "jsonable", "login_required", "sdl_of"]

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

class _Service(graphene.ObjectType):
    sdl = graphene.String()


# ------------------------------------------------------------------------------------------------ the shared

def login_required(resolver: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse the field unless ``info.context["user"]`` is logged in (erxes's ``moduleRequireLogin``)."""
    @functools.wraps(resolver)
    def wrapper(root: Any, info: Any, **kwargs: Any) -> Any:
        require_user(info.context)
        return resolver(root, info, **kwargs)
    return wrapper


def resolve_service(root: Any, info: Any) -> dict[str, str]:
    # not behind login: the gateway composes subgraphs without a user
    return {"sdl": sdl_of(info.schema)}


# ------------------------------------------------------------------------------------------------- root types

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
