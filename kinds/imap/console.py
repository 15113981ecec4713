"""What the web console (web/console) needs of the IMAP kind, handed over as ``Services.extra["imap_console"]`` so
the console, below the kinds, never imports one: a test login with a form's details, an integration's details
as callers may see them, and a stored message's attachment."""
from __future__ import annotations

from typing import Any

from kinds.imap.attachments import read_attachment
from kinds.imap.connection import NETWORK_ERRORS, ImapSettings, connect
from kinds.imap.details import parse_details
from kinds.imap.procedures import public_details

__all__ = ["ConsoleSupport"]


class ConsoleSupport:
    public_details = staticmethod(public_details)
    read_attachment = staticmethod(read_attachment)  # raises web.download.AttachmentError

    @staticmethod
    def test_login(details: dict[str, Any], *, timeout: float) -> str:
        """Validate ``details`` as createIntegration does, log in once and out; the notice to show. Raises
        RequestError (a bad form) or MailboxError (the server's own words). Blocking."""
        settings = ImapSettings.from_integration(parse_details(details), timeout=timeout)
        client = connect(settings)
        try:
            client.logout()
        except NETWORK_ERRORS:
            pass
        return f"The server accepted the login of {settings.login} at {settings.host}:{settings.port}."
