"""The IMAP kind's pages in the web console (the shell, its sign-in, live stream and health page: web/console):
the mailboxes at ``/`` (list, add through ``createIntegration``, test a login, edit, remove, one mailbox's details
and log: ``mailboxes.py``) and, in the full console (standalone), the conversations (list, thread, sandboxed
bodies, attachments, reply through the kind's ``MailSender``, open/resolved: ``conversations.py``). Templates in
``templates/``, extending the shell's ``base.html``.

Registered as the kind's routes (:data:`CONSOLE_PATTERNS`, kinds/imap/__init__.py); :func:`console_routes` builds
them only where the app has a console (``WebDeps.console``), and adds the pages to its menu and the ``mailboxes``
and ``conversations`` events to its live stream.
"""
from __future__ import annotations

from typing import Any

from kinds.imap.console import conversations, mailboxes
from runtime.standalone import Standalone

__all__ = ["CONSOLE_PATTERNS", "console_routes"]

_HANDLERS = (
    (r"/", mailboxes.MailboxesHandler),
    (r"/console/mailboxes", mailboxes.AddMailboxHandler),
    (r"/console/mailboxes/test", mailboxes.TestLoginHandler),
    (r"/console/mailboxes/([^/]+)", mailboxes.MailboxHandler),
    (r"/console/mailboxes/([^/]+)/edit", mailboxes.EditMailboxHandler),
    (r"/console/mailboxes/([^/]+)/remove", mailboxes.RemoveMailboxHandler),
    (r"/console/conversations", conversations.ConversationsHandler),
    (r"/console/conversations/([^/]+)", conversations.ConversationHandler),
    (r"/console/conversations/([^/]+)/reply", conversations.ReplyHandler),
    (r"/console/conversations/([^/]+)/status", conversations.StatusHandler),
    (r"/console/messages/([0-9a-f]{24})/body", conversations.MessageBodyHandler),
    (r"/console/read-mail-attachment", conversations.AttachmentHandler),
)
CONSOLE_PATTERNS = tuple(pattern for pattern, _handler in _HANDLERS)


def console_routes(deps: Any, config: Any) -> list[Any]:
    """The pages (none where the console is off), each given the console, the kind's ``imap_sender`` (from
    ``deps.extra``) and how long to wait for a mailbox (``imap_timeout_seconds``)."""
    console = deps.console
    if console is None:
        return []
    storage = deps.storage
    console.add_page("Mailboxes", "/", "mailboxes")
    console.add_live("mailboxes", lambda: repr((storage.integrations_mark(), storage.messages_mark())))
    if console.full:
        console.add_page("Conversations", "/console/conversations", "conversations", full_only=True)
        console.add_live("conversations", lambda: repr((Standalone(storage).conversations_mark(),
                                                        storage.messages_mark())))
    kw = {"console": console, "sender": deps.extra.get("imap_sender"),
          "timeout": float(getattr(config, "imap_timeout_seconds", 30.0))}
    return [(pattern, handler, kw) for pattern, handler in _HANDLERS]
