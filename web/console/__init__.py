"""The web console at ``/``: mailboxes, conversations (standalone) and health, behind one admin sign-in.

Served by the runtime itself (server-rendered tornado templates, one small script and one stylesheet bundled in
``web/console/static``; nothing from a CDN). With ``STANDALONE=true`` (the default) the whole console is on; with
``STANDALONE=false`` (erxes runs) it is off unless ``CONSOLE_OPS_VIEW=true`` turns on its read-only ops view
(mailboxes and health, no changes, no conversations). Sign-in and its protections: :mod:`web.console.auth`.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from web.console import conversations, live, mailboxes
from web.console.auth import LoginLimiter, PasswordCheck, one_time_password, session_key
from web.console.base import Console, LoginHandler, LogoutHandler
from web.static import AssetHandler

__all__ = ["routes"]

logger = logging.getLogger(__name__)

STATIC = str(Path(__file__).resolve().parent / "static")


def routes(deps: Any, config: Any, *, limiter: LoginLimiter | None = None) -> list[tuple[Any, ...]]:
    """The console's routes, or none when it is off (``STANDALONE=false`` without ``CONSOLE_OPS_VIEW``)."""
    full = bool(getattr(config, "standalone", True))
    if deps.storage is None or not (full or getattr(config, "console_ops_view", False)):
        return []
    key_storage = getattr(deps.tenants, "base", None) or deps.storage
    if not hasattr(key_storage, "console_key"):  # a stand-in without MongoDB (unit tests of other routes): no console
        logger.debug("Console: off (the storage has no database)")
        return []
    password = getattr(config, "console_password", "")
    if not password:
        password = one_time_password()
        # printed once, as Jupyter prints its token: to the terminal, never through logging (log shippers)
        print(f"\n    imap-runtime console: sign in with the one-time password {password}\n"
              "    (set CONSOLE_PASSWORD to choose one; this one changes at every start)\n", file=sys.stderr,
              flush=True)
        logger.info("Console: no CONSOLE_PASSWORD set; a one-time password was printed to stderr")
    console = Console(deps=deps, password=PasswordCheck(password), full=full,
                      cookie_secret=session_key(key_storage),
                      trust_proxy=bool(getattr(config, "console_trust_proxy", False)),
                      ask_timeout=float(getattr(config, "imap_timeout_seconds", 30.0)),
                      limiter=limiter or LoginLimiter())
    del password
    kw = {"console": console}
    return [
        (r"/", mailboxes.MailboxesHandler, kw),
        (r"/console/login", LoginHandler, kw),
        (r"/console/logout", LogoutHandler, kw),
        (r"/console/mailboxes", mailboxes.AddMailboxHandler, kw),
        (r"/console/mailboxes/test", mailboxes.TestLoginHandler, kw),
        (r"/console/mailboxes/([^/]+)", mailboxes.MailboxHandler, kw),
        (r"/console/mailboxes/([^/]+)/edit", mailboxes.EditMailboxHandler, kw),
        (r"/console/mailboxes/([^/]+)/remove", mailboxes.RemoveMailboxHandler, kw),
        (r"/console/conversations", conversations.ConversationsHandler, kw),
        (r"/console/conversations/([^/]+)", conversations.ConversationHandler, kw),
        (r"/console/conversations/([^/]+)/reply", conversations.ReplyHandler, kw),
        (r"/console/conversations/([^/]+)/status", conversations.StatusHandler, kw),
        (r"/console/messages/([0-9a-f]{24})/body", conversations.MessageBodyHandler, kw),
        (r"/console/read-mail-attachment", conversations.AttachmentHandler, kw),
        (r"/console/events", live.EventsHandler, kw),
        (r"/console/health", live.HealthHandler, kw),
        (r"/console/static/(.*)", AssetHandler, {"path": STATIC}),
    ]
