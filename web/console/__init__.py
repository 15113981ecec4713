"""The web console's shell at ``/``: one admin sign-in, the layout, the live stream and the health page; each kind
adds its own pages (the IMAP kind's mailboxes and conversations: kinds/imap/console) through its routes.

Served by the runtime itself (server-rendered tornado templates, one small script and one stylesheet bundled in
``web/console/static``; nothing from a CDN). With ``STANDALONE=true`` (the default) the whole console is on; with
``STANDALONE=false`` (erxes runs) it is off unless ``CONSOLE_OPS_VIEW=true`` turns on its read-only ops view
(``Console.full`` false: the kinds' pages show no changes). Sign-in and its protections: :mod:`web.console.auth`.

:func:`make_console` builds the one :class:`~web.console.base.Console` of an app (None: the console is off);
``make_app`` hands it to the kinds' route builders as ``WebDeps.console``, then adds :func:`routes`.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Collection

from web.console import live
from web.console.auth import LoginLimiter, PasswordCheck, one_time_password, session_key
from web.console.base import Console, HomeHandler, LoginHandler, LogoutHandler
from web.static import AssetHandler

__all__ = ["make_console", "routes"]

logger = logging.getLogger(__name__)

STATIC = str(Path(__file__).resolve().parent / "static")


def make_console(deps: Any, config: Any, *, limiter: LoginLimiter | None = None) -> Console | None:
    """The console of an app, or None when it is off (``STANDALONE=false`` without ``CONSOLE_OPS_VIEW``, or no
    database). Without ``CONSOLE_PASSWORD``, prints a one-time password (so: once per app)."""
    full = bool(getattr(config, "standalone", True))
    if deps.storage is None or not (full or getattr(config, "console_ops_view", False)):
        return None
    key_storage = getattr(deps.tenants, "base", None) or deps.storage
    if not hasattr(key_storage, "console_key"):  # a stand-in without MongoDB (unit tests of other routes): no console
        logger.debug("Console: off (the storage has no database)")
        return None
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
                      limiter=limiter or LoginLimiter())
    del password
    return console


def routes(console: Console | None, *, claimed: Collection[str] = ()) -> list[tuple[Any, ...]]:
    """The shell's routes (none when the console is off). ``claimed``: the kinds' patterns; ``GET /`` is the
    health page unless a kind's page claims it."""
    if console is None:
        return []
    kw = {"console": console}
    return [
        *([] if "/" in claimed else [(r"/", HomeHandler, kw)]),
        (r"/console/login", LoginHandler, kw),
        (r"/console/logout", LogoutHandler, kw),
        (r"/console/events", live.EventsHandler, kw),
        (r"/console/health", live.HealthHandler, kw),
        (r"/console/static/(.*)", AssetHandler, {"path": STATIC}),
    ]
