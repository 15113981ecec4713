"""IDLE responses that arrive with the ``+ idling`` continuation are seen at once, over plain IMAP and TLS.

Dovecot checks the mailbox right after it starts IDLE and announces a mail that arrived just before, often in the
same packet as ``+ idling``. imaplib's buffered reader swallows it into memory and imapclient's own ``idle_check``
then polls an empty socket until its timeout (the bug behind a 55 s delay seen in CI).
"""
from __future__ import annotations

import socket
import time
from typing import Any

import pytest
from imapclient import IMAPClient

from kinds.imap.idle import IdleClient
from kinds.imap.connection import ImapSettings, connect
from tests.conftest import both_servers, make_mail


def settings(mailserver: Any, user: str, password: str, *, tls: bool) -> ImapSettings:
    port = mailserver.imaps_port if tls else mailserver.imap_port
    ca = mailserver.ca_cert if tls else ""
    return ImapSettings(host="127.0.0.1", port=port, tls=tls, starttls=False, login=user, password=password,
                        address=f"{user}@localhost", main_user=user, folders=("INBOX",), timeout=10, ca_cert=ca)


def arrival_before_idle(client: Any, mailserver: Any, user: str, password: str) -> tuple[list[Any], float]:
    """Append a mail from another session after the client's last command, then IDLE and wait up to 3 s."""
    client.select_folder("INBOX", readonly=True)
    client.search(["ALL"])
    mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="in the window"))
    client.idle()
    started = time.monotonic()
    responses = []
    while not responses and time.monotonic() - started < 3.0:
        responses = client.idle_check(timeout=1.0)
    elapsed = time.monotonic() - started
    client.idle_done()
    return responses, elapsed


@both_servers
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_a_mail_announced_with_the_idle_continuation_is_seen(tls, mailserver):
    user, password = mailserver.add_user()
    client = connect(settings(mailserver, user, password, tls=tls))
    assert isinstance(client, IdleClient)
    try:
        seen = []
        for _ in range(5):  # the announcement may or may not share a packet with "+ idling": every way must work
            responses, _elapsed = arrival_before_idle(client, mailserver, user, password)
            seen.append(responses)
        assert all(any(len(r) > 1 and r[1] == b"EXISTS" for r in responses) for responses in seen), seen
    finally:
        client.logout()


def test_idle_check_reads_several_responses_and_then_waits(mailserver):
    user, password = mailserver.add_user()
    client = connect(settings(mailserver, user, password, tls=False))
    try:
        client.select_folder("INBOX", readonly=True)
        client.idle()
        assert client.idle_check(timeout=0.2) == []  # nothing happened: waits out the timeout, reads nothing
        for n in range(3):
            mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject=f"m{n}"))
        got: list[Any] = []
        deadline = time.monotonic() + 5
        while not any(r == (3, b"EXISTS") for r in got) and time.monotonic() < deadline:
            got += client.idle_check(timeout=1.0)
        assert (3, b"EXISTS") in got, got
        client.idle_done()
        assert client.noop()[0].startswith(b"NOOP")  # the protocol is still in step after IDLE
    finally:
        client.logout()


def test_a_closed_connection_raises_instead_of_returning_nothing(mailserver):
    user, password = mailserver.add_user()
    client = connect(settings(mailserver, user, password, tls=False))
    client.select_folder("INBOX", readonly=True)
    client.idle()
    client.socket().shutdown(2)  # our side gone: reads see EOF at once
    with pytest.raises(IMAPClient.AbortError):
        client.idle_check(timeout=2.0)


def test_a_mail_announced_with_a_command_s_answer_is_not_announced_again_in_idle(mailserver):
    """The race behind a mail stored only at the next IDLE renewal: it arrived while the mailbox's last command
    ran, its EXISTS came with that answer (imaplib keeps it aside), and IDLE then stays silent about it."""
    user, password = mailserver.add_user()
    client = connect(settings(mailserver, user, password, tls=False))
    try:
        client.select_folder("INBOX", readonly=True)
        client.announced()  # the SELECT's own EXISTS (the folder's size), dropped as the mailbox does
        assert not client.announced()
        mailserver.append(user, password, make_mail(to=f"{user}@localhost", subject="during a command"))
        client.search(["ALL"])  # any command: the server tells what changed with its answer
        assert client.announced()
        assert not client.announced()  # told once
        client.idle()
        responses = client.idle_check(timeout=1.5)
        client.idle_done()
        assert not any(len(r) > 1 and r[1] == b"EXISTS" for r in responses), responses  # IDLE does not repeat it
    finally:
        client.logout()


@both_servers
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_the_connection_neither_holds_commands_nor_delays_its_acks(tls, mailserver):
    """Issue 14 finding 5: on Cyrus, which announces at once, Nagle and Linux's delayed ACK were most of the
    runtime's latency: a UID SEARCH right after DONE waited 44 ms, a FETCH of a 9-200 kB mail 42-50 ms (bench:
    docs/benchmarks.md). The socket sends at once (TCP_NODELAY) and, after each command, ACKs at once
    (TCP_QUICKACK, which Linux reports off again once a request and its answer alternate)."""
    user, password = mailserver.add_user()
    client = connect(settings(mailserver, user, password, tls=tls))
    try:
        sock = client.socket()
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        for _ in range(5):  # a request and its answer alternating, as the mailbox's commands do
            client.select_folder("INBOX", readonly=True)
            client.noop()
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK), "delayed ACKs after a command"
    finally:
        client.logout()


@both_servers
def test_sizes_from_a_uid_in_one_fetch_with_imaps_last_mail_quirk(mailserver):
    """Once a folder is caught up, the mailbox asks the sizes of what came since in one ``UID FETCH n:*`` instead of
    a ``UID SEARCH`` and a FETCH (a round trip fewer for every new mail, issue 14 finding 5). ``n:*`` names the last
    mail when none is past ``n``; the caller filters by UID."""
    user, password = mailserver.add_user()
    mails = [make_mail(to=f"{user}@localhost", subject=f"m{i}", body="x" * (100 * i)) for i in range(3)]
    for raw in mails:
        mailserver.append(user, password, raw)
    client = connect(settings(mailserver, user, password, tls=False))
    try:
        client.select_folder("INBOX")
        uids = sorted(client.search(["ALL"]))
        expected = {uid: size[b"RFC822.SIZE"] for uid, size in client.fetch(uids, [b"RFC822.SIZE"]).items()}
        assert len(uids) == 3 and len(set(expected.values())) == 3
        assert client.sizes_from(uids[0]) == expected
        assert client.sizes_from(uids[1]) == {u: expected[u] for u in uids[1:]}
        assert client.sizes_from(uids[-1] + 1) == {uids[-1]: expected[uids[-1]]}  # the quirk: the last one
    finally:
        client.logout()
