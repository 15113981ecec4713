"""The test bed's second IMAP server, Cyrus IMAP 3.6 (scripts/cyrus.sh), with the same face as the Dovecot one.

Cyrus differs where the runtime must not care: folders are ``INBOX.X`` with the separator ``.``, imapclient's
``multiappend`` is refused (``append_many`` appends one by one), IDLE announces a mail within ~1 ms (no 0.5 s
batching), there is no keepalive in IDLE, and a wrong password is answered after a fixed 3 s pause. Its users are
made with ``cyrus.sh adduser`` (a SASL secret and the mailbox ``user.NAME``). It has no SMTP submission of its own:
``details`` keeps the Dovecot test bed's submission port, so nothing sent through it lands in Cyrus.
"""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from imapclient import IMAPClient

from tests.conftest import REPO, MailServer

__all__ = ["CyrusServer"]


class CyrusServer(MailServer):
    kind = "cyrus"
    separator = "."

    def __init__(self, env: dict[str, str]) -> None:
        super().__init__(env)
        self.imap_port = int(env["CYRUS_IMAP_PORT"])
        self.imaps_port = int(env["CYRUS_IMAPS_PORT"])
        self.ca_cert_path = Path(env["CYRUS_CA_CERT"])
        self.dir = env["CYRUS_DIR"]

    def set_password(self, user: str, password: str) -> None:
        from tests.secretscan import register_secret

        register_secret(password)
        subprocess.run(["bash", str(REPO / "scripts" / "cyrus.sh"), "adduser", self.dir, user, password],
                       check=True, timeout=30, capture_output=True, env={"CHECK_PYTHON": sys.executable,
                                                                         "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

    def client(self, user: str, password: str) -> IMAPClient:
        """A session of ``user``, with TCP_NODELAY: imaplib writes an APPEND's literal as a second small segment,
        which Nagle holds until Cyrus's delayed ACK (about 74 ms per APPEND here, 22 ms with NODELAY)."""
        client = super().client(user, password)
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client

    def folder(self, name: str) -> str:
        """The server's name of a personal folder ``name``: ``INBOX.name`` (Debian's ``altnamespace: no``)."""
        return name if name.upper() == "INBOX" else f"INBOX{self.separator}{name}"

    def sessions(self, user: str) -> int:
        """How many IMAP sessions Cyrus has open for ``user``: one file per imapd in run/proc, the service, the
        client, the user, the selected mailbox, tab-separated."""
        count = 0
        for proc in (Path(self.dir) / "run" / "proc").iterdir():
            try:
                fields = proc.read_text(errors="replace").split("\t")
            except OSError:  # the session ended meanwhile
                continue
            count += len(fields) > 2 and fields[0] == "imap" and fields[2] == user
        return count
