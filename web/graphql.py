"""``/graphql``: POST runs a query (JSON ``{query, variables, operationName}``), GET serves GraphiQL.

Modeled on graphene-tornado's ``TornadoGraphQLHandler.initialize(schema=...)``, without that dependency. The
schema's resolvers block (MongoDB, actor asks, SMTP), so ``schema.execute`` runs in the loop's executor. As Apollo
does, a field's error (``Login required`` included) is HTTP 200 with ``errors``; a request that cannot run at all
(not ``application/json``, bad JSON, no query, a syntax or validation error) is HTTP 400. Requiring that content
type (a "non-simple" request) keeps cross-site form posts out, as Apollo's CSRF prevention does.

A document costs nothing before the login check (issue 12 item 4). It is bounded before it is validated
(:class:`DocumentLimits`, the ``graphql_max_*`` settings): its size before parsing, its tokens while parsing
(graphql-core's ``max_tokens``), then one cheap walk of the parsed document (fragments expanded, each spread once
per path, with a budget) counts aliases, depth, root fields and fields; a document over a bound is HTTP 400 naming
it. Then, without a logged-in user, a document asking for anything but ``_service`` (the gateway's
``SubgraphIntrospectQuery { _service { sdl } }``, which carries no user) is answered ``Login required`` for each of
its root fields without being validated or executed. Only then is it validated and executed, off the IOLoop.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tornado.ioloop
import tornado.web

from runtime.errors import RequestError
from runtime.tenants import bind_request
from graphql import GraphQLError, execute_sync, parse, validate
from graphql.language import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)

from web.auth import LOGIN_REQUIRED, current_user, is_logged_in
from web.schema import build_schema
from web.static import AssetHandler

__all__ = ["ANONYMOUS_FIELDS", "DocumentLimits", "GraphQLHandler", "TooLarge", "bounded_document", "routes"]

logger = logging.getLogger(__name__)

default_schema = build_schema({}, {})  # no kind's fields (a bare make_app): only federation's _service
STATIC_DIR = Path(__file__).resolve().parent / "static" / "graphiql"
GRAPHIQL_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>imap-runtime GraphiQL</title>
  <link rel="stylesheet" href="graphiql-static/graphiql.min.css">
  <style>body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }</style>
</head>
<body>
  <div id="graphiql">Loading GraphiQL...</div>
  <script src="graphiql-static/react.production.min.js"></script>
  <script src="graphiql-static/react-dom.production.min.js"></script>
  <script src="graphiql-static/graphiql.min.js"></script>
  <script src="graphiql-static/graphiql-init.js"></script>
</body>
</html>
"""


ANONYMOUS_FIELDS = frozenset({"_service"})  # the only root field served without a logged-in user


class TooLarge(ValueError):
    """A document over one of :class:`DocumentLimits`; the message names the bound and its setting."""


@dataclass(frozen=True)
class DocumentLimits:
    max_bytes: int = 100_000
    max_tokens: int = 5000
    max_aliases: int = 30
    max_depth: int = 20
    max_root_fields: int = 20
    max_fields: int = 1000

    @classmethod
    def from_config(cls, config: Any) -> DocumentLimits:
        default = cls()
        return cls(**{name: getattr(config, f"graphql_{name.replace('max_bytes', 'max_document_bytes')}",
                                    getattr(default, name)) for name in cls.__dataclass_fields__})


def bounded_document(query: str, limits: DocumentLimits) -> tuple[DocumentNode, list[tuple[str, str]]]:
    """Parse ``query`` within ``limits``; returns the document and the ``(response key, field name)`` of every
    root field of its operations. Raises :class:`TooLarge` past a bound, GraphQLError for a syntax error."""
    if len(query) > limits.max_bytes or len(query.encode("utf-8", "replace")) > limits.max_bytes:
        raise TooLarge(f"the document is over {limits.max_bytes} bytes (graphql_max_document_bytes)")
    try:
        document = parse(query, max_tokens=limits.max_tokens)
    except RecursionError:
        raise TooLarge(f"the document is nested too deeply (graphql_max_depth {limits.max_depth})") from None
    return document, _Walk(document, limits).roots()


class _Walk:
    """One pass over a parsed document: every fragment spread is followed (but not into itself), so the counts
    are those of the document as executed; ``budget`` bounds the selections visited, whatever the fragments."""

    def __init__(self, document: DocumentNode, limits: DocumentLimits) -> None:
        self.limits = limits
        self.fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        self.operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        self.fields = self.aliases = 0
        self.budget = 4 * limits.max_fields + 100
        self.found: list[tuple[str, str]] = []

    def roots(self) -> list[tuple[str, str]]:
        for operation in self.operations:
            self._selections(operation.selection_set, 1, 0, frozenset(), root=True)
        return self.found

    def _selections(self, selection_set: SelectionSetNode | None, depth: int, nesting: int,
                    spread: frozenset[str], *, root: bool) -> None:
        if selection_set is None:
            return
        limits = self.limits
        if depth > limits.max_depth or nesting > 2 * limits.max_depth + 10:
            raise TooLarge(f"the document is nested deeper than {limits.max_depth} (graphql_max_depth)")
        for selection in selection_set.selections:
            self.budget -= 1
            if self.budget < 0:
                raise TooLarge(f"the document selects over {limits.max_fields} fields (graphql_max_fields)")
            if isinstance(selection, FieldNode):
                self._field(selection, depth, nesting, spread, root=root)
            elif isinstance(selection, InlineFragmentNode):
                self._selections(selection.selection_set, depth, nesting + 1, spread, root=root)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is not None and name not in spread:  # unknown or cyclic: validation says so
                    self._selections(fragment.selection_set, depth, nesting + 1, spread | {name}, root=root)

    def _field(self, field: FieldNode, depth: int, nesting: int, spread: frozenset[str], *, root: bool) -> None:
        limits = self.limits
        self.fields += 1
        if self.fields > limits.max_fields:
            raise TooLarge(f"the document selects over {limits.max_fields} fields (graphql_max_fields)")
        if field.alias is not None:
            self.aliases += 1
            if self.aliases > limits.max_aliases:
                raise TooLarge(f"the document has over {limits.max_aliases} aliases (graphql_max_aliases)")
        if root:
            self.found.append(((field.alias or field.name).value, field.name.value))
            if len(self.found) > limits.max_root_fields:
                raise TooLarge(f"the document asks for over {limits.max_root_fields} root fields "
                               f"(graphql_max_root_fields)")
        self._selections(field.selection_set, depth + 1, nesting + 1, spread, root=False)


class GraphQLHandler(tornado.web.RequestHandler):
    def initialize(self, *, schema: Any = default_schema, context: dict[str, Any] | None = None,
                   limits: DocumentLimits | None = None) -> None:
        self.schema = schema
        self.context = context or {}
        self.limits = limits or DocumentLimits()

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Referrer-Policy", "no-referrer")
        self.finish(GRAPHIQL_PAGE)

    async def post(self) -> None:
        try:
            query, variables, operation_name = self._request_params()
        except ValueError as exc:
            return self._reply(400, {"errors": [{"message": str(exc)}]})
        try:
            document, roots = bounded_document(query, self.limits)
        except TooLarge as exc:
            logger.info("POST /graphql from %s refused: %s", self.request.remote_ip, exc)
            return self._reply(400, {"errors": [{"message": str(exc)}]})
        except GraphQLError as exc:  # a syntax error, or over graphql_max_tokens
            return self._reply(400, {"errors": [dict(exc.formatted)]})
        user = current_user(self.request.headers)
        if not is_logged_in(user) and any(name not in ANONYMOUS_FIELDS for _key, name in roots):
            keys = list(dict.fromkeys(key for key, _name in roots))  # at most graphql_max_root_fields
            return self._reply(200, {"errors": [{"message": LOGIN_REQUIRED, "path": [key]} for key, name in roots
                                                if name not in ANONYMOUS_FIELDS],
                                     "data": {key: None for key in keys}})
        try:
            subdomain = bind_request(self.context.get("tenants"), self.request.headers)
        except RequestError as exc:
            return self._reply(400, {"errors": [{"message": str(exc)}]})
        context = {**self.context, "user": user, "subdomain": subdomain}
        run = functools.partial(self._run, document, variables, operation_name, context)
        result = await asyncio.to_thread(run)
        response: dict[str, Any] = {}
        if result.errors:
            response["errors"] = [self._format(error) for error in result.errors]
        if result.data is not None or not result.errors:
            response["data"] = result.data
        self._reply(400 if result.data is None and result.errors else 200, response)

    def _run(self, document: DocumentNode, variables: dict[str, Any] | None, operation_name: str | None,
             context: dict[str, Any]) -> Any:
        """What graphene's ``Schema.execute`` does, on the document parsed (and bounded) once."""
        graphql_schema = self.schema.graphql_schema
        errors = validate(graphql_schema, document)
        if errors:
            return _Result(None, errors)
        return execute_sync(graphql_schema, document, context_value=context, variable_values=variables,
                            operation_name=operation_name)

    def _request_params(self) -> tuple[str, dict[str, Any] | None, str | None]:
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type == "application/graphql":
            return self.request.body.decode("utf-8", "replace"), None, None
        if content_type != "application/json":  # a browser's cross-site form post cannot send this type
            raise ValueError("Content-Type must be application/json (or application/graphql)")
        try:
            body = json.loads(self.request.body or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError("POST body must be JSON: {query, variables, operationName}") from exc
        if not isinstance(body, dict):
            raise ValueError("POST body must be a JSON object: {query, variables, operationName}")
        query, variables, operation_name = body.get("query"), body.get("variables"), body.get("operationName")
        if not isinstance(query, str) or not query.strip():
            raise ValueError("Must provide query string.")
        if isinstance(variables, str) and variables.strip():
            try:
                variables = json.loads(variables)
            except (ValueError, RecursionError) as exc:
                raise ValueError("variables must be a JSON object") from exc
        if variables in ("", None):
            variables = None
        elif not isinstance(variables, dict):
            raise ValueError("variables must be a JSON object")
        if operation_name is not None and not isinstance(operation_name, str):
            raise ValueError("operationName must be a string")
        return query, variables, operation_name or None

    def _format(self, error: GraphQLError) -> dict[str, Any]:
        original = error.original_error
        if original is not None and error.message != LOGIN_REQUIRED:
            logger.warning("GraphQL %s failed: %s", ".".join(str(p) for p in error.path or ()), error.message,
                           exc_info=original if _unexpected(original) else None)
        return dict(error.formatted)

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(payload, default=str, ensure_ascii=False))


@dataclass
class _Result:
    data: Any
    errors: list[GraphQLError]


def _unexpected(exc: BaseException) -> bool:
    """Programming errors get a traceback in the log; expected failures (bad input, SMTP refusals) do not."""
    return isinstance(exc, (AttributeError, KeyError, TypeError, NameError, IndexError, AssertionError))


def routes(deps: Any, *, attachment_url_prefix: str = "", config: Any = None) -> list[tuple[Any, ...]]:
    """``/graphql`` and GraphiQL's bundled assets. ``deps`` carries ``storage``, optionally ``tenants`` (the
    request's tenant comes from its ``hostname`` header) and ``extra`` (what the kinds handed over, in the context
    beside ours; ours win a clash); ``config`` the document limits."""
    context = {**getattr(deps, "extra", {}), "storage": deps.storage, "tenants": getattr(deps, "tenants", None),
               "attachment_url_prefix": attachment_url_prefix}
    return [
        (r"/graphql", GraphQLHandler, {"schema": getattr(deps, "schema", None) or default_schema, "context": context,
                                       "limits": DocumentLimits.from_config(config)}),
        (r"/graphiql-static/(.*)", AssetHandler, {"path": str(STATIC_DIR)}),
    ]
