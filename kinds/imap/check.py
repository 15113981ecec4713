"""``imap-runtime check``'s IMAP part (runtime/check.py asks each kind): log in to every stored mailbox and out
again, one line each."""
from __future__ import annotations

from kinds.imap.connection import ImapSettings, connect
from runtime.check import short
from runtime.config import Config
from runtime.errors import MailboxError
from runtime.tenants import start_tenants

__all__ = ["mailbox_logins"]


def mailbox_logins(config: Config, *, timeout: float) -> list[tuple[bool, str, str]]:
    """Log in to every stored mailbox (every tenant's with VERSION=saas) and out again."""
    results: list[tuple[bool, str, str]] = []
    tenants = start_tenants(config, announce=False)
    try:
        subdomains = tenants.known()
        for subdomain in subdomains:
            storage = tenants.storage(subdomain)
            docs = storage.list_integrations()
            prefix = f"{subdomain}/" if tenants.saas else ""
            if not docs and not tenants.saas:
                results.append((True, "mailboxes", "none stored"))
            for doc in docs:
                item = f"mailbox {prefix}{doc.get('inboxId')} ({doc.get('user')})"
                if doc.get("sealError"):
                    results.append((False, item, str(doc["sealError"])))
                    continue
                try:
                    settings = ImapSettings.from_integration(doc, min(timeout, config.imap_timeout_seconds),
                                                             storage=storage)
                    client = connect(settings)
                except (MailboxError, KeyError, ValueError) as exc:
                    results.append((False, item, short(exc)))
                    continue
                try:
                    client.logout()
                except Exception:  # noqa: BLE001 - the login was what we checked
                    pass
                results.append((True, item, f"login to {settings.host}:{settings.port} accepted"))
    finally:
        tenants.close()
    return results
