"""``/graphql``: POST runs a query (JSON ``{query, variables, operationName}``), GET serves GraphiQL.

Modeled on graphene-tornado's ``TornadoGraphQLHandler.initialize(schema=...)``, without that dependency. The
schema's resolvers block (MongoDB, actor asks, SMTP), so ``schema.execute`` runs in the loop's executor. As Apollo
does, a field's error (``Login required`` included) is HTTP 200 with ``errors``; a request that cannot run at all
(not ``application/json``, bad JSON, no query, a syntax or validation error) is HTTP 400. Requiring that content
type (a "non-simple" request) keeps cross-site form posts out, as Apollo's CSRF prevention does.
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
from pathlib import Path
from typing import Any

import tornado.ioloop
import tornado.web

from runtime.errors import RequestError
from runtime.tenants import bind_request
from graphql import GraphQLError

from web.auth import LOGIN_REQUIRED, current_user
from web.schema import schema as default_schema
from web.static import AssetHandler

__all__ = ["GraphQLHandler", "routes"]

logger = logging.getLogger(__name__)

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


class GraphQLHandler(tornado.web.RequestHandler):
    def initialize(self, *, schema: Any = default_schema, context: dict[str, Any] | None = None) -> None:
        self.schema = schema
        self.context = context or {}

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
            subdomain = bind_request(self.context.get("tenants"), self.request.headers)
        except RequestError as exc:
            return self._reply(400, {"errors": [{"message": str(exc)}]})
        context = {**self.context, "user": current_user(self.request.headers), "subdomain": subdomain}
        execute = functools.partial(self.schema.execute, query, variables=variables, operation_name=operation_name,
                                    context=context)
        result = await asyncio.to_thread(execute)
        response: dict[str, Any] = {}
        if result.errors:
            response["errors"] = [self._format(error) for error in result.errors]
        if result.data is not None or not result.errors:
            response["data"] = result.data
        self._reply(400 if result.data is None and result.errors else 200, response)

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


def _unexpected(exc: BaseException) -> bool:
    """Programming errors get a traceback in the log; expected failures (bad input, SMTP refusals) do not."""
    return isinstance(exc, (AttributeError, KeyError, TypeError, NameError, IndexError, AssertionError))


def routes(deps: Any, *, attachment_url_prefix: str = "") -> list[tuple[Any, ...]]:
    """``/graphql`` and GraphiQL's bundled assets. ``deps`` carries ``storage``, ``sender`` and optionally
    ``tenants`` (the request's tenant comes from its ``hostname`` header)."""
    context = {"storage": deps.storage, "sender": deps.sender, "tenants": getattr(deps, "tenants", None),
               "attachment_url_prefix": attachment_url_prefix}
    return [
        (r"/graphql", GraphQLHandler, {"schema": default_schema, "context": context}),
        (r"/graphiql-static/(.*)", AssetHandler, {"path": str(STATIC_DIR)}),
    ]
