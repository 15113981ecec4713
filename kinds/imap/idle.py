"""Waiting for IDLE responses without missing the ones already read.

imapclient's ``idle_check`` polls the socket, but imaplib reads the server's lines through a buffered file: when
the server sends ``+ idling`` and, in the same packet, ``* 5 EXISTS`` (Dovecot checks the mailbox right after it
starts IDLE, so a mail that arrived just before IDLE is announced exactly then), ``idle()`` reads both into the
buffer, consumes the first, and the socket has nothing more to poll: ``idle_check`` then sleeps through a mail
that is already in memory. TLS adds a second buffer (decrypted bytes the socket no longer shows).

:func:`idle_responses` (``IdleClient.idle_check``) looks in those buffers before it polls, and reads whole lines
in blocking mode (under the connection's own timeout), so a line split across packets is never cut in half either
(imapclient issue #519). :meth:`IdleClient.announced` sees what came before IDLE: a mail announced with the answer
to the last SEARCH, which IDLE will not announce again.

The client's TCP socket is tuned for a conversation of small commands, each waiting for its answer
(:func:`tune_socket`; issue 14 finding 5, measured on Cyrus, docs/benchmarks.md): ``TCP_NODELAY``, or Nagle holds
a command written right after the previous answer (``UID SEARCH`` after IDLE's ``DONE``: 44 ms, 1 ms with it), and
after each command ``TCP_QUICKACK``, or Linux delays its ACK of the answer's first segment by 40 ms while the
server's Nagle holds the rest of the answer for that ACK (a ``FETCH BODY.PEEK[]`` of 9-200 kB: 42-50 ms, 1-3 ms with
it; likewise an ``EXISTS`` right after ``+ idling``).
"""
from __future__ import annotations

import select
import socket
import ssl
from typing import Any

from imapclient import IMAPClient
from imapclient.imapclient import _parse_untagged_response
from imapclient.response_parser import parse_fetch_response

__all__ = ["IdleClient", "idle_responses", "tune_socket"]

QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


class IdleClient(IMAPClient):
    """imapclient's client whose ``idle_check`` sees responses that are already buffered, on a tuned socket."""

    def _create_IMAP4(self) -> Any:
        imap = super()._create_IMAP4()
        tune_socket(imap)
        return imap

    def idle_check(self, timeout: float | None = None) -> list[tuple[Any, ...]]:
        return idle_responses(self, 3600.0 if timeout is None else timeout)

    def sizes_from(self, low: int) -> dict[int, int]:
        """``RFC822.SIZE`` of every mail from UID ``low`` on, by UID, in one ``UID FETCH low:*`` (which also names
        the folder's last mail when none is past ``low``: the caller filters). imapclient's ``fetch`` keeps only
        the UIDs it was given, so a range is sent here directly; unsolicited FETCH answers (flag changes) carry no
        size and are left out."""
        tag = self._imap._command("UID", "FETCH", f"{int(low)}:*", "(RFC822.SIZE)")
        typ, data = self._imap._command_complete("FETCH", tag)
        self._checkok("fetch", typ, data)
        typ, data = self._imap._untagged_response(typ, data, "FETCH")
        response = parse_fetch_response(data, self.normalise_times, self.use_uid)
        return {int(uid): int(item[b"RFC822.SIZE"]) for uid, item in response.items() if b"RFC822.SIZE" in item}

    def announced(self) -> bool:
        """Whether an ``EXISTS`` or ``RECENT`` came with the response to an earlier command, and forget it. A mail
        that arrives while a SEARCH or FETCH runs is announced in that command's response: imaplib keeps such lines
        aside (``untagged_responses``), and the server does not announce the mail again once IDLE starts."""
        untagged = self._imap.untagged_responses
        return bool(untagged.pop("EXISTS", None)) | bool(untagged.pop("RECENT", None))


def idle_responses(client: Any, timeout: float) -> list[tuple[Any, ...]]:
    """The untagged responses the server sent during IDLE, waiting at most ``timeout`` seconds for the first.

    Raises what imaplib raises on a closed connection (``IMAP4.abort``), which the caller treats as a dead one.
    """
    sock = client.socket()
    if not (_buffered(client) or _readable(sock, timeout)):
        return []
    responses = []
    while True:
        line = client._imap._get_line()  # blocking: a line split across packets is read whole
        responses.append(_parse_untagged_response(line))
        if not (_buffered(client) or _readable(sock, 0)):
            return responses


def _buffered(client: Any) -> bool:
    """Whether imaplib's reader (or the TLS layer under it) holds bytes not yet read as lines."""
    sock = client.socket()
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(client._imap.file.peek(1))
    except (BlockingIOError, ssl.SSLWantReadError, InterruptedError):
        return False
    finally:
        sock.settimeout(timeout)


def _readable(sock: Any, timeout: float) -> bool:
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000))



def tune_socket(imap: Any) -> None:
    """``TCP_NODELAY`` on the socket of imaplib's ``imap``, and ``TCP_QUICKACK`` after each command it sends (Linux
    turns quick ACKs off again once a request and its answer alternate, so it is set anew every time). The socket
    is looked up at each send, so the one STARTTLS puts in its place is tuned as well."""
    _set(imap.sock, socket.TCP_NODELAY)
    if QUICKACK is None:
        return
    send = imap.send

    def send_then_ack_quickly(data: bytes) -> None:
        send(data)
        _set(imap.sock, QUICKACK)

    imap.send = send_then_ack_quickly


def _set(sock: Any, option: int) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, 1)
    except (OSError, AttributeError):  # not a TCP socket (a test's stand-in), or closed meanwhile
        pass
