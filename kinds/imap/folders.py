"""Which server folder a configured folder name means, and the slow retry schedule of folders that cannot be
selected. Pure logic, no I/O: the mailbox hands in what ``LIST "" "*"`` and ``NAMESPACE`` answered.

Servers lay folders out differently: Dovecot's ``Support`` is Cyrus's ``INBOX.Support`` (personal namespace
``INBOX.``, separator ``.``), Exchange calls the sent folder ``Sent Items`` and flags it ``\\Sent``. A configured
name is resolved, in this order, to

1. the folder of exactly that name (``INBOX`` in any case);
2. the personal namespace's prefix + the name, with ``/`` or ``.`` as the server's separator
   (``Support`` -> ``INBOX.Support``; ``Support/Tier 2`` -> ``INBOX.Support.Tier 2``);
3. the one folder flagged with the special-use attribute of that name (RFC 6154: ``Sent`` -> ``\\Sent``);
4. the one folder whose name, or whose name without the namespace prefix, equals it ignoring case.

A step that finds two candidates is ambiguous and resolves nothing (the reason lists them): guessing could ingest
the wrong folder's mail. Folders flagged ``\\Noselect`` or ``\\NonExistent`` never match.

:class:`FolderSkips` keeps the folders that could not be selected: each is retried on its own schedule (1 minute,
doubling up to 15 minutes), and :meth:`FolderSkips.reason` names them for the mailbox's health.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

__all__ = ["FolderSkips", "Resolution", "resolve", "SPECIAL_USE", "RETRY_FIRST", "RETRY_CAP"]

# RFC 6154 attributes, by the folder names people configure for them
SPECIAL_USE = {"sent": b"\\Sent", "sent items": b"\\Sent", "sent mail": b"\\Sent", "drafts": b"\\Drafts",
               "trash": b"\\Trash", "deleted items": b"\\Trash", "junk": b"\\Junk", "spam": b"\\Junk",
               "archive": b"\\Archive", "all": b"\\All", "all mail": b"\\All", "flagged": b"\\Flagged"}
UNSELECTABLE = {b"\\noselect", b"\\nonexistent"}
RETRY_FIRST, RETRY_CAP = 60.0, 900.0  # seconds: a skipped folder's retries (the mailbox's own go on meanwhile)

Listing = Iterable[tuple[Sequence[bytes], bytes | str | None, str]]  # imapclient's list_folders(): flags, sep, name
Namespaces = Sequence[tuple[str, str | None]]  # the personal namespaces: (prefix, separator)


@dataclass(frozen=True)
class Resolution:
    wanted: str
    name: str | None  # the server's folder, None when nothing (or more than one) matched
    why: str  # how it was found, or why not (names the folder and the candidates)


def resolve(wanted: str, listing: Listing, personal: Namespaces = ()) -> Resolution:
    """The server folder ``wanted`` means, given the server's folder ``listing`` and its ``personal`` namespaces."""
    folders: dict[str, set[bytes]] = {}
    separators: set[str] = set()
    for flags, sep, name in listing:
        lowered = {bytes(f).lower() if isinstance(f, bytes) else str(f).encode().lower() for f in flags}
        if not lowered & UNSELECTABLE:
            folders[name] = {bytes(f) if isinstance(f, bytes) else str(f).encode() for f in flags}
        if sep:
            separators.add(sep.decode() if isinstance(sep, bytes) else sep)
    if wanted.upper() == "INBOX":
        inbox = [n for n in folders if n.upper() == "INBOX"]
        return Resolution(wanted, inbox[0] if inbox else "INBOX", "INBOX")
    if wanted in folders:
        return Resolution(wanted, wanted, "the folder of that name")

    spaces = [(p, s or next(iter(separators), None)) for p, s in personal] or [("", next(iter(separators), None))]
    candidates = []
    for prefix, sep in spaces:
        for written in ("/", "."):
            name = prefix + (wanted.replace(written, sep) if sep else wanted)
            if name in folders and name not in candidates:
                candidates.append(name)
    found = _one(wanted, candidates, "in the personal namespace")
    if found:
        return found

    attribute = SPECIAL_USE.get(wanted.lower())
    if attribute:
        flagged = [n for n, flags in folders.items() if attribute.lower() in {f.lower() for f in flags}]
        found = _one(wanted, flagged, f"flagged {attribute.decode()}")
        if found:
            return found

    lowered_wanted = wanted.lower()
    prefixes = [p for p, _ in spaces if p]
    loose = [n for n in folders
             if n.lower() == lowered_wanted
             or any(n.lower().startswith(p.lower()) and n[len(p):].lower() == lowered_wanted for p in prefixes)]
    found = _one(wanted, loose, "ignoring case")
    if found:
        return found
    names = sorted(folders)
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    return Resolution(wanted, None, f"no folder {wanted!r} on the server (it has: {shown or 'none'})")


def _one(wanted: str, names: list[str], how: str) -> Resolution | None:
    if len(names) == 1:
        return Resolution(wanted, names[0], how)
    if len(names) > 1:
        return Resolution(wanted, None, f"folder {wanted!r} is ambiguous on the server ({how}: "
                                        f"{', '.join(sorted(names))})")
    return None


@dataclass
class _Skip:
    reason: str
    retry_at: float
    failures: int


@dataclass
class FolderSkips:
    """Folders that could not be selected, each with its next retry. ``first``/``cap``: the schedule in seconds."""

    first: float = RETRY_FIRST
    cap: float = RETRY_CAP
    _skips: dict[str, _Skip] = field(default_factory=dict)

    def failed(self, folder: str, reason: str, now: float) -> float:
        """``folder`` could not be selected: skip it; returns the seconds until its next try."""
        failures = self._skips[folder].failures + 1 if folder in self._skips else 1
        delay = min(self.cap, self.first * 2 ** (failures - 1))
        self._skips[folder] = _Skip(reason, now + delay, failures)
        return delay

    def selected(self, folder: str) -> bool:
        """``folder`` was selected: no longer skipped. Returns whether it was."""
        return self._skips.pop(folder, None) is not None

    def due(self, folder: str, now: float) -> bool:
        """Whether ``folder`` may be used now (not skipped, or its retry is due)."""
        skip = self._skips.get(folder)
        return skip is None or now >= skip.retry_at

    def skipped(self) -> list[str]:
        return sorted(self._skips)

    def reason(self) -> str | None:
        """What the mailbox's health says about its skipped folders, or None when there are none."""
        if not self._skips:
            return None
        return "; ".join(f"folder {name!r} skipped: {skip.reason}" for name, skip in sorted(self._skips.items()))
