"""Connecting to the real Dovecot: TLS verified by default, a CA given as PEM text, STARTTLS, refused logins."""
from __future__ import annotations


import pytest

from runtime.errors import AuthenticationFailed, MailboxError
from runtime.hosts import tls_context
from kinds.imap.connection import ImapSettings, connect
from tests.conftest import both_servers


def settings(services: dict[str, str], user: str, password: str, **kw: object) -> ImapSettings:
    doc = {"host": "127.0.0.1", "user": f"{user}@localhost", "mainUser": user, "password": password, **kw}
    return ImapSettings.from_integration(doc, timeout=10)


@both_servers
def test_self_signed_server_is_refused_by_default_and_accepted_with_its_ca(services, mailserver):
    user, password = mailserver.add_user()
    tls = {"port": mailserver.imaps_port, "tls": True}
    with pytest.raises(MailboxError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        connect(settings(services, user, password, **tls))
    ca = mailserver.ca_cert
    clients = [connect(settings(services, user, password, caCert=ca, **tls)) for _ in range(2)]
    try:
        for client in clients:
            assert client.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"]
        # one SSLContext per distinct CA, shared by the connections that use it
        contexts = {id(client.socket().context) for client in clients}
        assert contexts == {id(tls_context(ca))} and tls_context(ca) is not tls_context("")
    finally:
        for client in clients:
            client.logout()


@both_servers
def test_starttls_on_the_plain_port(services, mailserver):
    user, password = mailserver.add_user()
    plain = {"port": mailserver.imap_port, "tls": False, "starttls": True}
    with pytest.raises(MailboxError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        connect(settings(services, user, password, **plain))
    client = connect(settings(services, user, password, caCert=mailserver.ca_cert, **plain))
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


def test_starttls_asked_but_not_offered_never_logs_in_in_plain_text():
    """A server (or a man in the middle stripping it) that does not offer STARTTLS: the password is never sent."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rwb") as stream:
            stream.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN LOGIN] no STARTTLS here\r\n")
            stream.flush()
            for line in stream:
                received.append(line)
                tag = line.split(b" ", 1)[0]
                if b"CAPABILITY" in line.upper():
                    stream.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN LOGIN\r\n" + tag + b" OK done\r\n")
                else:
                    stream.write(tag + b" OK whatever you say\r\n")
                stream.flush()

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        with pytest.raises(MailboxError, match="STARTTLS"):
            connect(ImapSettings.from_integration({"host": "127.0.0.1", "port": port, "tls": False, "starttls": True,
                                                   "user": "u@x", "password": "the-password"}, timeout=5))
    finally:
        listener.close()
        server.join(timeout=5)
    assert not any(b"LOGIN" in line.upper() or b"the-password" in line for line in received), received
