"""The IMAP kind's HTTP routes: ``POST /receive`` (a pushed raw mail, kinds/imap/receive.py), ``GET
/read-mail-attachment`` (kinds/imap/attachments.py) and ``GET /login`` (the OAuth2 consent, kinds/imap/login.py),
each where its collaborators are given (web/app.py ``WebDeps``, the kind's own in ``WebDeps.extra``)."""
from __future__ import annotations

from typing import Any

from kinds.imap import attachments, login
from kinds.imap.receive import routes as receive_routes

__all__ = ["IMAP_PATTERNS", "imap_routes"]


IMAP_PATTERNS = ("/receive", "/read-mail-attachment", "/login")  # the IMAP kind's routes (kinds/imap)


def imap_routes(deps: Any, config: Any) -> list[Any]:
    """The IMAP kind's routes (``IMAP_PATTERNS``), each where its collaborators are given (``/receive``: the
    kind's ``imap_push`` in ``deps.extra``)."""
    push = deps.extra.get("imap_push")
    return [
        *(receive_routes(storage=deps.storage, push=push, tenants=deps.tenants) if push is not None else []),
        *(attachments.routes(deps, config) if deps.storage is not None else []),
        *(login.routes(deps, config) if deps.storage is not None else []),
    ]
