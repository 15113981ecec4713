"""The ``imap`` kind: company mailboxes over IMAP/SMTP, erxes's plugin-imap-api (the runtime's first kind).

Its whole behaviour lives in this package; the mail logic it shares with any other mail kind is in runtime/mail.

- the listener: one mailbox actor per integration (``actor.py``, running ``mailbox.py``: connect with
  ``connection.py``, catch up from ``cursor.py``'s progress, IDLE with ``idle.py``, folders resolved by
  ``folders.py``, logins paced by ``logins.py``, OAuth2 settings in ``oauth.py``, the token endpoint's calls in
  ``oauth_endpoint.py``, fresh access tokens from ``oauth_refresh.py``), over ``imap_integrations``;
- procedures ``imap:*`` (``procedures.py``; integration details in ``details.py``, credentials that follow the host
  in ``credentials.py``, ``logs.collectItems`` in ``logs_collect.py``), served on both transports, ``service:imap``;
- sending: ``sending.py`` (its arguments checked in ``send_request.py``, its attachments gathered in
  ``send_attachments.py``) over ``smtp.py``;
- routes ``/receive`` (``receive.py``, ``push.py``), ``/read-mail-attachment`` (``attachments.py``), ``/login``
  (``login.py``), gathered in ``web.py``;
- GraphQL ``imapConversationDetail``, ``imapGetIntegrations``, ``imapLogs``, ``imapSendMail`` (``graphql.py``);
- its pages in the web console: the mailboxes at ``/`` and the conversations (``console/``), in the shell of
  web/console;
- what ``imap-runtime check`` asks of it (``check.py``), and the newcomer's demo (``demo.py``,
  ``python -m kinds.imap.demo``).
"""
from __future__ import annotations

from typing import Any

from kinds.imap.actor import MailboxActor
from kinds.imap.check import mailbox_logins
from kinds.imap.connection import connect
from kinds.imap.console import CONSOLE_PATTERNS, console_routes
from kinds.imap.graphql import imap_mutation_fields, imap_query_fields
from kinds.imap.procedures import ImapProcedures
from kinds.imap.push import PushIngest
from kinds.imap.sending import MailSender
from kinds.imap.web import IMAP_PATTERNS, imap_routes
from runtime.kinds import Kind, Registry, Services

__all__ = ["ImapKind"]


class ImapKind(Kind):
    name = "imap"
    label = "IMap"
    provides_activity_log = True
    http_prefix = ""  # service:imap is the base address: POST /rpc/<procedure>, as erxes's plugin

    def check(self, config: Any, *, timeout: float) -> list[tuple[bool, str, str]]:
        return mailbox_logins(config, timeout=timeout)

    def setup(self, registry: Registry, services: Services) -> None:
        config = services.config
        imap_factory = services.extra.get("imap_factory") or connect  # a test may hand its own
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
        registry.add_routes(CONSOLE_PATTERNS, console_routes)  # its console pages (kinds/imap/console)
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
        # what the kind's own routes and GraphQL fields read (web/app.py WebDeps.extra, the GraphQL context)
        services.extra["imap_sender"] = sender
        services.extra["imap_push"] = PushIngest(storage=storage, pipeline=pipeline, timeout=config.rpc_timeout * 2)
