"""One mailbox (integration): connect, catch up from the cursor, IDLE, hand each new mail to the pipeline.

``Mailbox`` is the plain logic: every call to :meth:`Mailbox.tick` does one bounded unit of work (connect, one
fetch batch, or one short IDLE slice) and returns. ``kinds.imap.actor.MailboxActor`` runs it in its own thread and
re-sends itself ``step`` after every tick, so stop and other messages get through between slices.

States written to ``imap_integrations`` (one line each, on change only): connecting, syncing, idle, backoff,
unhealthy.
"""
from __future__ import annotations

import logging
import random
import socket
import time
from typing import Any, Callable

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from pymongo.errors import PyMongoError

from kinds.imap.answers import MailboxAnswers
from kinds.imap.connection import NETWORK_ERRORS, ImapSettings, connect, select_resolved
from kinds.imap.cursor import FolderProgress
from kinds.imap.fetching import FULL_WAIT, MailboxFetching
from kinds.imap.folders import FolderSkips
from kinds.imap.logins import LoginPacer, shared_pacer
from runtime import metrics
from runtime.errors import (
    AuthenticationFailed,
    FolderUnavailable,
    MailboxError,
    StorageError,
)

__all__ = ["Mailbox"]

logger = logging.getLogger(__name__)

AUTH_ATTEMPTS = 2  # refused logins before the mailbox waits for new settings
SYNCED_EVERY = 60.0  # seconds: lastFetchDate is written at most this often while the state stays the same
PRIMARY_EVERY = 0.5  # seconds: while another folder is worked on, the IDLE folder is asked (STATUS) at most this often
BACKOFF_BASE, BACKOFF_CAP = 1.0, 600.0


class Mailbox(MailboxAnswers, MailboxFetching):
    def __init__(self, integration: dict[str, Any], *, config: Any, storage: Any, pipeline: Any,
                 imap_factory: Callable[[ImapSettings], Any] = connect, subdomain: str = "os",
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None, pacer: LoginPacer | None = None) -> None:
        self.inbox_id: str = integration["inboxId"]
        self.settings = ImapSettings.from_integration(integration, config.imap_timeout_seconds, storage=storage)
        self._config = config
        self._storage = storage
        self._pipeline = pipeline
        self._imap_factory = imap_factory
        self._subdomain = subdomain
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._pacer = pacer or shared_pacer(per_mailbox=config.mailbox_logins_per_10_minutes, window=600.0,
                                            per_host_per_second=config.host_logins_per_second,
                                            per_host_in_flight=config.host_logins_in_flight)
        self._reply_to: Any = self  # the actor replaces this with its proxy
        self._client: Any = None
        self._folders = {name: FolderProgress(name) for name in self.settings.folders}
        self._primary = self.settings.folders[0]
        self._skips = FolderSkips()  # folders that cannot be selected: retried on their own, slower schedule
        self._server_names: dict[str, str] = {}  # configured folder -> the server's name (kinds/imap/folders.py)
        self._selected: str | None = None
        self._primary_checked = float("-inf")  # when the IDLE folder was last asked for news (_check_primary)
        self._idling = False
        self._idle_since = 0.0
        self._heard_at = 0.0
        self._retry_at = 0.0
        self._failures = 0
        self._trouble: str | None = None  # while unHealthy: the error, kept through the retries (issue 14)
        self._auth_failures = 0
        self._outages = 0
        self._state: tuple[str, str | None] | None = None
        self._synced_at = float("-inf")
        self._dirty_since = 0.0  # when the oldest cursor move not saved yet was made
        self._dirty: set[str] = set()  # folders whose cursor moved since it was saved
        self._full_since: float | None = None
        self._watchdog = self._config.idle_watchdog_seconds
        self._cut = False  # set from another thread by cut()
        self._held: dict[tuple[str, int], int] = {}  # RFC822.SIZE of each fetched mail the pipeline still has
        self._next_size = 0  # bytes of the next mail, which did not fit in the byte budget yet

    # -- the loop ---------------------------------------------------------------------------------------------------
    def tick(self) -> None:
        """One bounded unit of work. Expected network trouble is handled here; anything else propagates."""
        fetching = self._fetch_due()  # this tick fetches (or waits for room in the pipeline)
        if self._dirty and not fetching:
            self._flush_cursors()
        try:
            self._work()
        finally:
            # after a fetch: the new mail went first, the cursor write was not in its way. After an IDLE slice that
            # heard of new mail, that mail's fetch (the next tick) goes first and the write follows it.
            if self._dirty and (fetching or not self._fetch_due()):
                self._flush_cursors()

    def _work(self) -> None:
        if self._cut:
            self._disconnect()
            self._sleep(FULL_WAIT)  # until the stop queued with the cut arrives
            return
        wait = self._retry_at - self._clock()
        if wait > 0:
            self._sleep(min(wait, self._config.idle_slice_seconds))
            return
        try:
            if self._client is None:
                if self._paced():
                    return
                try:
                    self._connect()
                finally:
                    self._pacer.done(self.settings.host)
            elif self._sync_one_batch():
                pass
            else:
                self._idle_slice()
        except AuthenticationFailed as exc:
            self._disconnect()
            if self._cut:
                return
            self._auth_failures += 1
            if self._auth_failures >= AUTH_ATTEMPTS:
                self._retry_at = float("inf")  # until updateIntegration gives new settings
                self._set_state("unhealthy", str(exc), healthy=False)
            else:
                self._retry_at = self._clock() + 1.0
                self._set_state("backoff", str(exc), healthy=False)
        except (MailboxError, PyMongoError, StorageError, *NETWORK_ERRORS) as exc:
            self._disconnect()
            if self._cut:  # the connection was cut on purpose (cut()): not the server's fault, nothing to record
                return
            self._failures += 1
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (self._failures - 1)) * self._rng.uniform(0.5, 1.0)
            self._retry_at = self._clock() + delay
            logger.debug("Mailbox %s: retrying in %.1f s", self.inbox_id, delay)
            # honest health (issue 14): an error that outlasts its backoff (it came again after the retry), or one
            # that no retry mends (an unverifiable certificate), is unHealthy with the server's words
            if self._failures >= 2 or "CERTIFICATE_VERIFY_FAILED" in str(exc):
                self._trouble = str(exc)
            self._set_state("backoff", str(exc), healthy=self._trouble is None)

    def cut(self) -> None:
        """Thread-safe: stop for good and shut the socket down under whatever command is running (it then fails
        like a dead connection); nothing is fetched or dispatched after it."""
        self._cut = True
        client = self._client
        if client is not None:
            try:
                client.socket().shutdown(socket.SHUT_RDWR)
            except (OSError, AttributeError):
                pass

    def close(self) -> None:
        """Leave IDLE and log out, quickly: a stop must not wait on a dead server."""
        self._flush_cursors(force=True)
        client, self._client = self._client, None
        if client is None:
            return
        try:
            sock = client.socket()
            sock.settimeout(2.0)
            if self._idling:
                client.idle_done()
            client.logout()
        except NETWORK_ERRORS:
            pass
        finally:
            self._idling = False
            try:
                client.shutdown()
            except NETWORK_ERRORS:
                pass

    # -- steps ------------------------------------------------------------------------------------------------------
    def _connect(self) -> None:
        self._set_state("connecting", self._trouble, healthy=self._trouble is None)
        self._client = self._imap_factory(self.settings)
        self._selected = None
        self._auth_failures = 0
        for name, fp in self._folders.items():
            if fp.uidvalidity is None:
                cursor = self._storage.get_cursor(self.inbox_id, name)
                if cursor:
                    fp.reset(uidvalidity=int(cursor["uidvalidity"]), cursor=int(cursor["lastUid"]))
                else:
                    fp.initial = True
            fp.reset()  # after a reconnect: re-search from the cursor; done work is recognised downstream
        self._set_state("syncing", self._trouble, healthy=self._trouble is None)

    def _paced(self) -> bool:
        """Whether the login must wait (see kinds/imap/logins.py); a long wait is shown as ``backoff``."""
        # per mailbox *and account*: new credentials or another server start a fresh history
        key = (self._subdomain, self.inbox_id, self.settings.login, self.settings.host)
        wait = self._pacer.reserve(key, self.settings.host)
        if wait <= 0:
            return False
        self._retry_at = self._clock() + wait
        if wait > 5.0 and self._pacer.at_limit(key):
            self._set_state("backoff", f"{self._pacer.per_mailbox} logins in {self._pacer.window / 60:.0f} minutes: "
                                       f"the next one waits {wait:.0f} s", healthy=self._trouble is None)
        return True

    def _select(self, name: str) -> FolderProgress:
        fp = self._folders[name]
        if self._selected == name:
            return fp
        self._selected = None  # a failed SELECT leaves no folder selected (RFC 3501)
        server_name, info = select_resolved(self._client, name, self._server_names.get(name))
        if server_name != self._server_names.get(name, name):
            logger.info("Mailbox %s: folder %r is %r on the server", self.inbox_id, name, server_name)
        self._server_names[name] = server_name
        if self._skips.selected(name):
            self._storage.log("info", f"folder {name!r} selected again", inbox_id=self.inbox_id)
        self._client.announced()  # the SELECT's own EXISTS: the folder's size, not news
        self._selected = name
        uidvalidity = int(info[b"UIDVALIDITY"])
        uidnext = int(info.get(b"UIDNEXT", 1))
        if fp.uidvalidity is not None and fp.uidvalidity != uidvalidity and not fp.initial:
            logger.warning("Mailbox %s: %s UIDVALIDITY changed %s -> %s; re-scanning it", self.inbox_id, name,
                           fp.uidvalidity, uidvalidity)
            self._storage.log("info", f"{name}: UIDVALIDITY changed, re-scanning the folder", inbox_id=self.inbox_id)
            fp.reset(uidvalidity=uidvalidity, cursor=0)
            self._storage.save_cursor(self.inbox_id, name, uidvalidity, 0)
        fp.uidvalidity = uidvalidity
        fp.uidnext = uidnext
        if uidnext - 1 > fp.high and not fp.initial:
            fp.need_sync = True  # mail came while another folder was selected: no IDLE will announce it now
        return fp

    def _idle_folder(self) -> str | None:
        """The folder IDLE watches: the first configured one that is not skipped."""
        skipped = self._skips.skipped()
        return next((n for n in self.settings.folders if n not in skipped), None)

    def _check_primary(self) -> None:
        """While another folder is selected (its catch-up can take minutes), ask the IDLE folder for news with a
        STATUS at most every PRIMARY_EVERY seconds: a new mail there is fetched next (folders are worked on in
        their configured order), not after the other folder is done (issue 14 finding 4)."""
        name = self._idle_folder()
        now = self._clock()
        if name is None or self._selected in (None, name) or now - self._primary_checked < PRIMARY_EVERY:
            return
        self._primary_checked = now
        fp = self._folders[name]
        if fp.need_sync or fp.uidvalidity is None or fp.initial:
            return
        try:
            info = self._client.folder_status(self._server_names.get(name, name), [b"UIDNEXT", b"UIDVALIDITY"])
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:  # a server that refuses it: the folder is seen when it is selected again
            logger.debug("Mailbox %s: STATUS %s refused: %s", self.inbox_id, name, exc)
            return
        if int(info.get(b"UIDNEXT", 1)) - 1 > fp.high or int(info.get(b"UIDVALIDITY", 0)) != fp.uidvalidity:
            fp.need_sync = True

    def _after_sync(self) -> None:
        if not any(self._wanted(f) for f in self._folders.values()):
            self._failures = 0
            self._trouble = None
            self._outages = 0
            synced = self._clock() - self._synced_at >= SYNCED_EVERY
            self._set_state("idle", self._skips.reason(), healthy=True, synced=synced)

    def _wanted(self, fp: FolderProgress) -> bool:
        """Whether ``fp`` needs a search now (a skipped folder only once its retry is due)."""
        return fp.need_sync and self._skips.due(fp.name, self._clock())

    def _skip(self, name: str, exc: FolderUnavailable) -> None:
        """A folder that cannot be selected hurts only itself: skipped, retried later, the connection kept."""
        delay = self._skips.failed(name, str(exc), self._clock())
        logger.warning("Mailbox %s: %s; skipped, next try in %.0f s", self.inbox_id, exc, delay)
        self._after_sync()

    def _idle_slice(self) -> None:
        name = self._idle_folder()
        if name is None:  # every folder is skipped: wait for their retries on the open connection
            self._sleep(self._config.idle_slice_seconds)
            return
        try:
            primary = self._select(name)
        except FolderUnavailable as exc:
            self._skip(name, exc)
            return
        if not self._idling:
            if primary.need_sync:  # news seen on SELECT (UIDNEXT): fetch it rather than IDLE past it
                return
            if self._client.announced():  # a mail came in during the last search: fetch it rather than IDLE past it
                primary.need_sync = True
                return
            self._client.idle()
            self._idling = True
            self._idle_since = self._heard_at = self._clock()
            # never in step with the other mailboxes (started together, they would all check at once)
            self._watchdog = self._config.idle_watchdog_seconds * self._rng.uniform(0.8, 1.0)
        slice_s = self._config.idle_slice_seconds
        started = self._clock()
        responses = self._client.idle_check(timeout=slice_s)
        now = self._clock()
        if any(r and r[0] == b"BYE" for r in responses):
            raise MailboxError("the server closed the connection (BYE)")
        if not responses and now - started < slice_s / 2:
            raise MailboxError("the connection is dead (readable socket without data)")
        if responses:
            self._heard_at = now
        if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
            primary.need_sync = True
        elif now - self._heard_at >= self._watchdog:
            # Silence: DONE must be answered within the socket timeout, or the connection is dead (a stall). A
            # new mail announced with its answer is fetched; otherwise IDLE resumes (the renewal searches anyway).
            answer = self._client.idle_done()  # (text, untagged responses that came with it)
            late = (answer[1] if answer else None) or []
            self._idling = False
            self._heard_at = self._clock()
            if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in late):
                primary.need_sync = True
        elif now - self._idle_since >= self._config.idle_renew_seconds:
            self._client.idle_done()  # renew IDLE before servers drop it (RFC 2177: 29 minutes)
            metrics.IDLE_RENEWALS.inc()
            self._idling = False
            for fp in self._folders.values():
                fp.need_sync = True  # folders other than the primary are polled at each renewal

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        self._idling = False
        self._selected = None
        if client is not None:
            try:
                client.shutdown()
            except NETWORK_ERRORS:
                pass

    def _set_state(self, state: str, error: str | None, *, healthy: bool, synced: bool = False) -> None:
        changed = (state, error) != self._state
        if changed or synced:
            try:
                self._storage.set_health(self.inbox_id, state=state, healthy=healthy, error=error, synced=synced)
                if synced:
                    self._synced_at = self._clock()
            except PyMongoError as exc:
                logger.warning("Mailbox %s: cannot record state %s (MongoDB: %s)", self.inbox_id, state, exc)
                changed = False  # record it again at the next chance
        if not changed:
            return
        self._state = (state, error)
        if error:
            logger.warning("Mailbox %s: %s: %s", self.inbox_id, state, error)
            self._storage.log("error", f"{state}: {error}", inbox_id=self.inbox_id)
        else:
            logger.info("Mailbox %s: %s", self.inbox_id, state)
            self._storage.log("info", state, inbox_id=self.inbox_id)
