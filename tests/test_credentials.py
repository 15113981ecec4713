"""Issue 12 item 5: credentials follow the host. An update that moves the IMAP or SMTP server with an empty password
is refused, and the stored password never reaches the new server (a listening socket records what it gets)."""
from __future__ import annotations

import socket
import threading
from typing import Any

import pytest

from kinds.imap.credentials import follow_host, moved
from runtime.errors import RequestError, RpcError
from tests.conftest import make_mail, wait_for
from tests.e2e import connect_mailbox
from tests.secretscan import register_secret


class Trap:
    """A server that greets like IMAP and records every byte it receives (the "new host")."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received = bytearray()
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(2.0)
                try:
                    conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] trap ready\r\n")
                    while not self._stop.is_set():
                        data = conn.recv(65536)
                        if not data:
                            break
                        self.received += data
                        for line in data.split(b"\r\n"):
                            tag = line.split(b" ", 1)[0]
                            if tag and b"CAPABILITY" in line.upper():
                                conn.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
                            elif tag:
                                conn.sendall(tag + b" NO [AUTHENTICATIONFAILED] trap\r\n")
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def trap() -> Any:
    t = Trap()
    yield t
    t.close()


def test_moving_the_server_with_an_empty_password_is_refused_and_never_sends_it(runtime, caller, mailserver, db,
                                                                                trap):
    user, password = connect_mailbox(caller, mailserver, db, "inbox-move")
    stored_before = db.imap_integrations.find_one({"inboxId": "inbox-move"})
    cases = [({"port": trap.port}, "port changed"),
             ({"host": "localhost", "port": trap.port}, "host, port changed"),
             ({"tls": True, "port": trap.port}, "port, TLS mode changed"),
             ({"smtpHost": "localhost"}, "smtpHost changed"),
             ({"smtpPort": "2525"}, "smtpPort changed")]
    for change, named in cases:
        with pytest.raises(RpcError) as refused:
            caller.update_integration("inbox-move", mailserver.details(user, "", **change))
        assert str(refused.value).endswith(f"{named}: the password is required again (it is never sent to a new "
                                           "host)"), str(refused.value)
    stored = db.imap_integrations.find_one({"inboxId": "inbox-move"})
    assert (stored["host"], stored["port"], stored["smtpHost"], stored["smtpPort"], stored["password"]) == (
        stored_before["host"], stored_before["port"], stored_before["smtpHost"], stored_before["smtpPort"],
        stored_before["password"])
    assert password.encode() not in trap.received and trap.connections == 0

    # the same servers with an empty password: kept, as before (the contract's policy)
    caller.update_integration("inbox-move", mailserver.details(user, ""))
    mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="same host"))
    wait_for(lambda: db.imap_messages.count_documents({"inboxIntegrationId": "inbox-move", "ingestState": "done"}),
             timeout=10, message="the mail after an update that keeps the servers")

    # a move with the password given is taken, and that password (not the stored one) is what the new host gets
    register_secret("pw-for-the-trap-host")
    caller.update_integration("inbox-move", mailserver.details(user, "pw-for-the-trap-host", port=trap.port))
    wait_for(lambda: b"LOGIN" in bytes(trap.received), timeout=10, message="the login at the new host")
    assert b"pw-for-the-trap-host" in bytes(trap.received) and password.encode() not in bytes(trap.received)


# -- the rule (unit) ------------------------------------------------------------------------------------------------
STORED = {"inboxId": "i", "host": "imap.example.com", "smtpHost": "smtp.example.com", "smtpPort": "587",
          "user": "a@example.com", "password": "stored-pw"}


def test_same_servers_spelled_differently_are_no_move() -> None:
    assert moved(STORED, {"host": "IMAP.example.com.", "port": 993, "tls": True, "smtpPort": ""}) == []
    assert moved(STORED, {"smtpTls": "starttls"}) == []
    assert moved(STORED, {"smtpTls": "none"}) == ["smtpTls"]
    assert moved(STORED, {"starttls": True, "tls": False}) == ["port", "TLS mode"]
    assert follow_host(STORED, {"host": "imap.example.com"}) == {"host": "imap.example.com"}
    assert follow_host(None, {"host": "x"}) == {"host": "x"}


def test_a_moved_password_integration_needs_the_password() -> None:
    with pytest.raises(RequestError, match=r"^host changed: the password is required again \(it is never sent to "
                                           r"a new host\)$"):
        follow_host(STORED, {"host": "evil.example.net"})
    assert follow_host(STORED, {"host": "evil.example.net", "password": "new"})["password"] == "new"


def test_a_moved_oauth_integration_loses_its_consent_and_a_new_token_url_needs_the_secret() -> None:
    oauth = {**STORED, "password": "", "oauthTokenUrl": "https://idp.example.com/token", "oauthClientId": "c",
             "oauthClientSecret": "s", "oauthRefreshToken": "rt", "oauthAccessToken": "at"}
    out = follow_host(oauth, {"host": "imap2.example.com"})
    assert out["oauthRefreshToken"] is None and out["oauthAccessToken"] is None and out["password"] == ""
    assert "oauthRefreshToken" not in follow_host(oauth, {"host": "imap.example.com"})
    given = follow_host(oauth, {"host": "imap2.example.com", "oauthRefreshToken": "new-rt"})
    assert given["oauthRefreshToken"] == "new-rt"
    with pytest.raises(RequestError, match="^oauth.tokenUrl changed: the client secret is required again"):
        follow_host(oauth, {"oauthTokenUrl": "https://elsewhere.example.net/token"})
    out = follow_host(oauth, {"oauthTokenUrl": "https://elsewhere.example.net/token", "oauthClientSecret": "s2"})
    assert out["oauthRefreshToken"] is None
