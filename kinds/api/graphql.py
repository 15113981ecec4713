"""The ``api`` kind's GraphQL fields: ``apiSendMessage`` and ``apiConversationDetail`` (spec api-kind.md). Each
requires the gateway's ``user`` header, like every field."""
from __future__ import annotations

import datetime as dt
from typing import Any

import graphene
from bson import ObjectId

from kinds.api.store import ApiStore
from runtime.errors import RequestError
from runtime.mail.sanitize import outward_html
from runtime.storage import utcnow
from web.auth import require_user
from web.schema import JSON

__all__ = ["ApiMessage", "fields"]


class ApiMessage(graphene.ObjectType):
    _id = graphene.String(required=True)
    conversationId = graphene.String()
    content = graphene.String()
    createdAt = graphene.String()
    direction = graphene.String()
    # "from" is a Python keyword: the field is named in the schema as graphene's name= says
    from_ = graphene.Field(JSON, name="from")
    delivery = graphene.String()
    deliveryError = graphene.String()


def _iso(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def _message(doc: dict[str, Any]) -> dict[str, Any]:
    return {"_id": str(doc["_id"]), "conversationId": doc.get("conversationId"),
            "content": outward_html(doc.get("content") or ""), "createdAt": _iso(doc.get("createdAt")),
            "direction": doc.get("direction"), "from_": doc.get("from"), "delivery": doc.get("delivery"),
            "deliveryError": doc.get("deliveryError")}


def fields(store: ApiStore) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Query and Mutation fields, bound to ``store``."""

    def detail(root: Any, info: Any, conversationId: str) -> list[dict[str, Any]]:
        require_user(info.context)
        return [_message(doc) for doc in store.messages(conversationId)]

    def send(root: Any, info: Any, conversationId: str, content: str) -> dict[str, Any]:
        user = require_user(info.context)
        conversation = store.conversation_by_id(conversationId)
        if conversation is None:
            raise RequestError(f"no api conversation {conversationId}")
        integration = store.get_integration(conversation["inboxId"])
        if integration is None:
            raise RequestError("the conversation's integration was removed")
        if not content.strip():
            raise RequestError("content is required")
        details = user.get("details") if isinstance(user.get("details"), dict) else {}
        author = {"id": str(user.get("_id")),
                  "name": details.get("fullName") or user.get("username") or user.get("email") or ""}
        message_id = ObjectId()
        now = utcnow()
        delivery = "pending" if integration.get("callbackUrl") else None
        store.insert_message({"_id": message_id, "inboxId": conversation["inboxId"], "messageId": f"out:{message_id}",
                              "direction": "out", "conversationId": conversationId, "content": outward_html(content),
                              "from": author, "createdAt": now, "delivery": delivery, "deliveryError": None})
        if delivery:
            store.enqueue({"_id": message_id, "inboxId": conversation["inboxId"], "conversationId": conversationId,
                           "attempts": 0, "nextAt": now, "firstTriedAt": None, "body": {
                               "event": "message.created", "integrationId": conversation["inboxId"],
                               "conversationId": conversationId, "threadId": conversation.get("threadId"),
                               "messageId": str(message_id), "content": outward_html(content),
                               "createdAt": _iso(now), "author": author}})
        return {"_id": str(message_id), "delivery": delivery}

    queries = {"apiConversationDetail": graphene.List(ApiMessage, conversationId=graphene.String(required=True),
                                                      resolver=detail)}
    mutations = {"apiSendMessage": graphene.Field(JSON, conversationId=graphene.String(required=True),
                                                  content=graphene.String(required=True), resolver=send)}
    return queries, mutations
