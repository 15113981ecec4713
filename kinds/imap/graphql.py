"""The IMAP kind's GraphQL fields (contract section 6): ``imapConversationDetail``, ``imapGetIntegrations``,
``imapLogs`` and ``imapSendMail``, composed into the subgraph by web/schema.py ``build_schema``.

Their resolvers read ``info.context``: ``storage``, ``imap_sender`` (an object with ``send(subdomain, args) ->
{"info": {...}}``, :class:`kinds.imap.sending.MailSender`, which the kind hands over as ``Services.extra``),
``attachment_url_prefix`` and ``subdomain``."""
from __future__ import annotations

import functools
from typing import Any

import graphene

from kinds.imap.procedures import public_details
from runtime.mail.quoting import from_record, split_record
from runtime.mail.sanitize import outward_message_html
from web.schema import JSON, Date, build_schema, jsonable, login_required, sdl_of

__all__ = ["LOGS_LIMIT", "SDL", "imap_mutation_fields", "imap_query_fields", "mail_data", "schema"]

LOGS_LIMIT = 100


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


def _addresses(entries: Any) -> list[dict[str, Any]]:
    return [{"name": e.get("name") or "", "email": e.get("address") or e.get("email")}
            for e in entries or [] if isinstance(e, dict)]


def mail_data(doc: dict[str, Any], url_prefix: str = "", *, storage: Any = None) -> dict[str, Any]:
    """The ``mailData`` of one stored message, as erxes's UI reads it; the HTML sanitised (runtime.mail.sanitize), with
    ``cid:`` images pointing at ``<url_prefix>/read-mail-attachment``. The stored body is left as it came.

    The quote split is made once: its record (``runtime.mail.quoting.split_record``) is kept in the message's ``split``
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
    return info.context["imap_sender"].send(info.context.get("subdomain") or "os", args)


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


schema = build_schema(imap_query_fields(), imap_mutation_fields())  # the IMAP kind's alone (tests, benchmarks)
SDL = sdl_of(schema.graphql_schema)
