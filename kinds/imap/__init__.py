"""The ``imap`` kind: company mailboxes over IMAP/SMTP, erxes's plugin-imap-api (the runtime's first kind).

This declares through the seam (runtime/kinds.py) what the IMAP code does today; the code itself still lives in
``runtime/``, ``actors/`` and ``web/`` until issue 15 item 2 moves it here. Its parts:

- procedures ``imap:*`` (runtime/procedures.py), served on both transports, ``service:imap`` in Redis;
- routes ``/receive``, ``/read-mail-attachment``, ``/login`` (web/app.py ``imap_routes``);
- GraphQL ``imapConversationDetail``, ``imapGetIntegrations``, ``imapLogs``, ``imapSendMail`` (web/schema.py);
- the listener: one mailbox actor per integration (actors/mailbox.py), over ``imap_integrations``.
"""
from __future__ import annotations

from typing import Any

from actors.mailbox import MailboxActor
from runtime.kinds import Kind, Registry, Services
from runtime.procedures import ImapProcedures
from runtime.push import PushIngest
from runtime.sending import MailSender
from web.app import IMAP_PATTERNS, imap_routes
from web.schema import imap_mutation_fields, imap_query_fields

__all__ = ["ImapKind"]


class ImapKind(Kind):
    name = "imap"
    label = "IMap"
    provides_activity_log = True
    http_prefix = ""  # service:imap is the base address: POST /rpc/<procedure>, as erxes's plugin

    def setup(self, registry: Registry, services: Services) -> None:
        config = services.config
        imap_factory = services.extra.get("imap_factory")
        sender = MailSender(storage=services.storage, erxes=services.erxes, supervisor=services.supervisor,
                            config=config, imap_factory=imap_factory, max_attachment_bytes=config.max_mail_bytes,
                            fence=services.fence)
        procedures = ImapProcedures(storage=services.storage, supervisor=services.supervisor, sender=sender,
                                    timeout=services.timeout, on_tenant=services.tenants.remember,
                                    ownership=services.ownership,
                                    attachment_url_prefix=config.attachment_url_prefix)
        for name, handler in procedures.rpc_procedures().items():
            registry.add_procedure(name, handler)
        for name, handler in procedures.plain_procedures().items():
            registry.add_procedure(name, handler, plain=True)
        registry.add_routes(IMAP_PATTERNS, imap_routes)
        for name, graphene_field in imap_query_fields().items():
            registry.add_query(name, graphene_field)
        for name, graphene_field in imap_mutation_fields().items():
            registry.add_mutation(name, graphene_field)

        storage, pipeline = services.storage, services.pipeline

        def start_mailbox(doc: dict[str, Any], *, supervisor: Any, generation: int, subdomain: str = "os") -> Any:
            return MailboxActor.start(doc, supervisor=supervisor, generation=generation, config=config,
                                      storage=storage, pipeline=pipeline, imap_factory=imap_factory,
                                      subdomain=subdomain)

        registry.add_listener(start_mailbox, integrations=storage)
        # what the web layer's IMAP parts read (web/app.py WebDeps)
        services.extra["sender"] = sender
        services.extra["push"] = PushIngest(storage=storage, pipeline=pipeline, timeout=config.rpc_timeout * 2)
