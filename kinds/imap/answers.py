"""What arrives at a mailbox from others, between its ticks (kinds/imap/mailbox.py ``Mailbox`` mixes it in): the
pipeline's answers for each mail (done: the cursor may move; failed: retry or, after MAX_ATTEMPTS, quarantine;
rejected: quarantine at once) and the requests that need its IMAP session (the send path's APPEND to Sent, the
attachment route's fetch). It works on the mailbox's own state; the actor runs one message at a time."""
from __future__ import annotations

import logging
from typing import Any

from pymongo.errors import PyMongoError

from kinds.imap.connection import NETWORK_ERRORS, appended_uid
from kinds.imap.cursor import FolderProgress
from runtime import metrics
from runtime.errors import MailboxError
from runtime.storage import MAX_RAW_IN_DOCUMENT

__all__ = ["CURSOR_EVERY", "MAX_ATTEMPTS", "MailboxAnswers"]

logger = logging.getLogger("kinds.imap.mailbox")

MAX_ATTEMPTS = 5  # a mail that fails this often is quarantined and passed over
CURSOR_EVERY = 0.5  # seconds: a cursor move waits at most this long (and is saved at once when nothing is in flight)


class MailboxAnswers:
    def mail_done(self, folder: str, uid: int) -> None:
        """A mail is stored: its cursor is saved now, or after the fetch when new mail is waiting (an answer that
        came in during an IDLE slice is handled just before the mail that ended the slice is fetched)."""
        self._held.pop((folder, uid), None)
        fp = self._folders.get(folder)
        if fp is not None and fp.complete(uid):
            if not self._dirty:
                self._dirty_since = self._clock()
            self._dirty.add(folder)
            if not self._fetch_due():
                self._flush_cursors()

    def _fetch_due(self) -> bool:
        return self._client is not None and any(self._wanted(f) for f in self._folders.values())

    def _flush_cursors(self, force: bool = False) -> None:
        """Save the cursors that moved: at once when their folder has nothing in flight (the end of a batch, or a
        single new mail), else once a move waited CURSOR_EVERY seconds (a crash meanwhile re-fetches a few mails,
        which are recognised as stored). So a single new mail fetched while the last one's move waits does not
        share its way to stored with that write: its own answer saves both moves in one write, after it."""
        now = self._clock()
        for name in list(self._dirty):
            fp = self._folders[name]
            if force or not fp.pending or now - self._dirty_since >= CURSOR_EVERY:
                self._dirty.discard(name)
                self._save_cursor(fp)

    def _save_cursor(self, fp: FolderProgress) -> None:
        try:
            self._storage.save_cursor(self.inbox_id, fp.name, fp.uidvalidity or 0, fp.cursor)
        except PyMongoError as exc:  # saved with the next advance; a restart meanwhile re-fetches (idempotent)
            logger.warning("Mailbox %s: cannot save the cursor of %s (MongoDB: %s)", self.inbox_id, fp.name, exc)

    def mail_failed(self, folder: str, uid: int, error: str, transient: bool = False) -> None:
        """A mail could not be processed. ``transient``: our infrastructure was down, which is not the mail's fault
        and does not count towards giving up on it."""
        fp = self._folders.get(folder)
        self._held.pop((folder, uid), None)
        if fp is None or uid not in fp.pending:
            return
        metrics.MAILS_FAILED.inc()
        if transient:
            logger.warning("Mailbox %s: %s UID %d must wait: %s", self.inbox_id, folder, uid, error)
            self._outages += 1
            fp.reset()
            self._retry_at = max(self._retry_at, self._clock() + min(30.0, 0.5 * 2 ** min(self._outages, 6)))
            return
        tries = fp.attempts.get(uid, 0) + 1
        if tries >= MAX_ATTEMPTS:
            logger.error("Mailbox %s: giving up on %s UID %d after %d attempts: %s", self.inbox_id, folder, uid,
                         tries, error)
            self._storage.log("error", f"gave up on {folder} UID {uid} after {tries} attempts: {error}",
                              inbox_id=self.inbox_id)
            try:
                self._storage.quarantine_mail(self.inbox_id, folder, fp.uidvalidity or 0, uid,
                                              f"failed {tries} times: {error}", raw=self._raw_or_none(folder, uid))
            except PyMongoError as exc:  # the cursor may not pass a mail that is kept nowhere
                self.mail_failed(folder, uid, f"cannot quarantine: {exc}", transient=True)
                return
            self.mail_done(folder, uid)
            return
        logger.warning("Mailbox %s: %s UID %d failed (attempt %d): %s", self.inbox_id, folder, uid, tries, error)
        fp.attempts[uid] = tries
        fp.reset()  # re-fetch from the cursor after a pause; work already done is recognised downstream
        self._retry_at = max(self._retry_at, self._clock() + min(30.0, 0.5 * 2 ** tries))

    def mail_rejected(self, folder: str, uid: int, reason: str) -> None:
        """A mail that can never be ingested as it is (no usable sender): quarantined at once, without retries."""
        fp = self._folders.get(folder)
        size = self._held.pop((folder, uid), None)
        if fp is None or uid not in fp.pending:
            return
        metrics.MAILS_FAILED.inc()
        try:
            if size is not None and size > MAX_RAW_IN_DOCUMENT:  # a quarantine document could not hold it either:
                self._set_aside(fp, uid, reason, size=size)     # the entry names folder, UIDVALIDITY and UID
            else:
                self._set_aside(fp, uid, reason, raw=self._raw_or_none(folder, uid))
        except PyMongoError as exc:  # the cursor may not pass a mail that is kept nowhere
            self.mail_failed(folder, uid, f"cannot quarantine: {exc}", transient=True)

    # -- requests that need this mailbox's IMAP session (asked by the send path and the attachment route) ----------
    def append_sent(self, raw: bytes) -> tuple[str, int | None]:
        """APPEND ``raw`` (seen) to the folder marked ``\\Sent``, else ``Sent``; returns the folder and the new
        UID (from UIDPLUS's APPENDUID; None when the server does not say)."""
        client = self._session()
        folder = client.find_special_folder(b"\\Sent") or self._config.sent_folder
        response = client.append(folder, raw, flags=[b"\\Seen"])
        return folder, appended_uid(response)

    def fetch_raw(self, folder: str, uid: int) -> bytes | None:
        """The raw bytes of ``uid`` in ``folder`` (``BODY.PEEK[]``: never marks it read), or None if gone."""
        client = self._session()
        self._select(folder)
        fetched = client.fetch([uid], [b"BODY.PEEK[]"])
        return fetched.get(uid, {}).get(b"BODY[]")

    def _raw_or_none(self, folder: str, uid: int) -> bytes | None:
        try:
            return self.fetch_raw(folder, uid)
        except (MailboxError, *NETWORK_ERRORS):
            return None  # quarantined without its bytes; still on the server

    def _session(self) -> Any:
        """The connected client, out of IDLE, for a request; raises MailboxError when not connected."""
        if self._client is None:
            raise MailboxError(f"mailbox {self.inbox_id} is not connected ({(self._state or ('connecting',))[0]})")
        if self._idling:
            self._client.idle_done()
            self._idling = False
        return self._client

    def status(self) -> dict[str, Any]:
        state, error = self._state or ("connecting", None)
        return {"state": state, "error": error,
                "folders": {n: {"cursor": f.cursor, "inflight": f.inflight} for n, f in self._folders.items()}}
