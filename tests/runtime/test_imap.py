"""Connecting to the real Dovecot: TLS verified by default, a CA given as PEM text, STARTTLS, refused logins."""
from __future__ import annotations

from pathlib import Path

import pytest

from runtime.errors import AuthenticationFailed, MailboxError
from runtime.imap import ImapSettings, connect


def settings(services: dict[str, str], user: str, password: str, **kw: object) -> ImapSettings:
    doc = {"host": "127.0.0.1", "user": f"{user}@localhost", "mainUser": user, "password": password, **kw}
    return ImapSettings.from_integration(doc, timeout=10)


def test_self_signed_server_is_refused_by_default_and_accepted_with_its_ca(services, mailserver):
    user, password = mailserver.add_user()
    tls = {"port": int(services["IMAPS_PORT"]), "tls": True}
    with pytest.raises(MailboxError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        connect(settings(services, user, password, **tls))
    ca = Path(services["CA_CERT"]).read_text()
    client = connect(settings(services, user, password, caCert=ca, **tls))
    try:
        assert client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"]
    finally:
        client.logout()


def test_starttls_on_the_plain_port(services, mailserver):
    user, password = mailserver.add_user()
    plain = {"port": int(services["IMAP_PORT"]), "tls": False, "starttls": True}
    with pytest.raises(MailboxError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        connect(settings(services, user, password, **plain))
    client = connect(settings(services, user, password, caCert=Path(services["CA_CERT"]).read_text(), **plain))
    try:
        assert client.noop()
    finally:
        client.logout()


def test_refused_login_carries_the_servers_words_and_no_password(services, mailserver):
    user, _ = mailserver.add_user()
    with pytest.raises(AuthenticationFailed) as info:
        connect(settings(services, user, "not-the-password", port=int(services["IMAP_PORT"]), tls=False))
    assert "AUTHENTICATIONFAILED" in str(info.value)
    assert "not-the-password" not in str(info.value)


def test_nothing_listening_is_a_mailbox_error(services):
    with pytest.raises(MailboxError, match="cannot connect"):
        connect(settings(services, "x", "y", port=1, tls=False))
