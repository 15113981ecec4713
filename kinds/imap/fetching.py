"""One fetch batch of a mailbox (kinds/imap/mailbox.py ``Mailbox`` mixes it in): which new UIDs of a folder are
fetched, within the pipeline's room and the byte budget (``fetch_batch``, ``max_inflight``, ``fetch_batch_bytes``),
each parsed and handed to the pipeline, or set aside (quarantined, never lost) when it is too large or unreadable."""
from __future__ import annotations

import datetime as dt
import logging

from kinds.imap.cursor import FolderProgress
from runtime.errors import FolderUnavailable, MailParseError
from runtime.mail.parse import parse_mail
from runtime.pipeline import Incoming
from runtime.storage import utcnow

__all__ = ["FULL_WAIT", "MailboxFetching"]

logger = logging.getLogger("kinds.imap.mailbox")

FULL_WAIT = 0.05  # seconds: a pause while the pipeline is full (its answers come in between)


class MailboxFetching:
    def _sync_one_batch(self) -> bool:
        """Fetch and dispatch one batch of new mail from a folder that needs it; False when all are caught up."""
        self._check_primary()
        fp = next((f for f in self._folders.values() if self._wanted(f)), None)
        if fp is None:
            return False
        room = min(self._config.fetch_batch, self._config.max_inflight - sum(
            f.inflight for f in self._folders.values()))
        budget = self._config.fetch_batch_bytes  # 0: batches by count only (the behaviour before issue 12)
        held = self._bytes_in_flight() if budget else 0
        if held and held + max(self._next_size, 1) > budget:
            room = 0  # the mails fetched already fill the byte budget
        if room <= 0:  # the pipeline is full: pause briefly while its answers come in (an IDLE slice after a while)
            now = self._clock()
            self._full_since = now if self._full_since is None else self._full_since
            if now - self._full_since >= self._config.idle_watchdog_seconds:
                return False
            self._sleep(FULL_WAIT)
            return True
        self._full_since = None
        if self._idling:
            self._client.idle_done()
            self._idling = False
        try:
            fp = self._select(fp.name)
        except FolderUnavailable as exc:
            self._skip(fp.name, exc)
            return True
        sizes: dict[int, int] | None = None
        if fp.initial:
            since = (utcnow() - dt.timedelta(days=self._config.lookback_days)).date()
            uids = self._client.search(["SINCE", since])
        elif fp.caught_up:  # only what came since the last search: its sizes at once, one round trip fewer
            sizes = self._client.sizes_from(fp.high + 1)
            uids = list(sizes)
        else:
            uids = self._client.search(["UID", f"{fp.high + 1}:*"])
        uids = sorted(u for u in uids if u > fp.high)
        if not uids:  # every UID below UIDNEXT that the search did not return is gone (UIDs are never reused)
            fp.skip_to(max(fp.high, fp.uidnext - 1))
            fp.initial = False
            fp.need_sync = False
            fp.caught_up = True
            if not fp.pending:
                self._save_cursor(fp)
            self._after_sync()
            return True
        initial, fp.initial = fp.initial, False
        batch = uids[:room]
        if sizes is None:
            sizes = {u: int(d.get(b"RFC822.SIZE", 0)) for u, d in self._client.fetch(batch, [b"RFC822.SIZE"]).items()}
        else:
            sizes = {u: sizes[u] for u in batch}
        if budget:
            batch = self._within_budget(batch, sizes, budget - held, alone=not held)
            if not batch:  # the next mail waits for the pipeline to hand back bytes
                fp.initial = initial
                return True
        wanted = [u for u in batch if sizes.get(u, 0) <= self._config.max_mail_bytes]
        fetched = self._client.fetch(wanted, [b"BODY.PEEK[]"]) if wanted else {}
        fetched_at = utcnow()
        for uid in batch:
            fp.dispatched(uid)
            if uid not in sizes:  # expunged meanwhile
                self.mail_done(fp.name, uid)
                continue
            if uid not in fetched:
                self._set_aside(fp, uid, f"{sizes[uid]} bytes is over the {self._config.max_mail_bytes} limit",
                                size=sizes[uid])
                continue
            raw = fetched[uid].get(b"BODY[]") or b""
            self._held[(fp.name, uid)] = sizes[uid]
            try:
                mail = parse_mail(raw)
            except MailParseError as exc:
                self._set_aside(fp, uid, f"not a readable mail: {exc}", raw=raw)
                continue
            self._pipeline.resolve(Incoming(self.inbox_id, self._subdomain, fp.name, uid, mail, self._reply_to,
                                            fetched_at, kind="imap"))
        fp.need_sync = len(uids) > len(batch)
        fp.caught_up = not fp.need_sync  # a burst bigger than a batch is searched for, not sized whole again
        self._after_sync()  # the last batch had mail: the mailbox is caught up all the same
        return True

    def _within_budget(self, batch: list[int], sizes: dict[int, int], left: int, *, alone: bool) -> list[int]:
        """The first UIDs of ``batch`` whose mails fit in ``left`` bytes, by RFC822.SIZE (a mail over
        max_mail_bytes is never downloaded and costs nothing); when nothing is in flight (``alone``), the first
        mail goes even if it alone is over the budget. Remembers the size of the first one left out."""
        chosen: list[int] = []
        total = 0
        for uid in batch:
            size = sizes.get(uid, 0)
            cost = size if size <= self._config.max_mail_bytes else 0
            if total + cost > left and (chosen or not alone):
                self._next_size = cost
                break
            chosen.append(uid)
            total += cost
        else:
            self._next_size = 0
        return chosen

    def _bytes_in_flight(self) -> int:
        """Bytes of the fetched mails the pipeline has not answered for (forgetting ones a reset gave up on)."""
        pending = {name: set(fp.pending) for name, fp in self._folders.items()}  # a deque's `in` is a scan
        for key in [k for k in self._held if k[1] not in pending[k[0]]]:
            del self._held[key]
        return sum(self._held.values())

    def _set_aside(self, fp: FolderProgress, uid: int, reason: str, *, raw: bytes | None = None,
                   size: int | None = None) -> None:
        """Quarantine a mail we will not ingest (recorded, never lost), and move on."""
        logger.warning("Mailbox %s: %s UID %d quarantined: %s", self.inbox_id, fp.name, uid, reason)
        self._storage.log("error", f"{fp.name} UID {uid} quarantined: {reason}", inbox_id=self.inbox_id)
        self._storage.quarantine_mail(self.inbox_id, fp.name, fp.uidvalidity or 0, uid, reason, raw=raw, size=size)
        self.mail_done(fp.name, uid)
