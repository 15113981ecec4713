"""The storage modules' common ground: the ingest states of a message document, MongoDB's limits, how a refused
bulk write is reported without the documents it carried, the clock, and the scrubbing of logged text.
:mod:`runtime.storage` re-exports every name here."""
from __future__ import annotations

import datetime as dt
import re
from typing import Any, Iterable

from pymongo.errors import BulkWriteError

from runtime.errors import StorageError

__all__ = ["DONE", "DUPLICATE_KEY", "MAX_DOCUMENT", "MAX_RAW_IN_DOCUMENT", "PENDING", "STORED", "TOO_LARGE_CODES",
           "refused", "scrub", "utcnow"]

PENDING, STORED, DONE = "pending", "stored", "done"
DUPLICATE_KEY = 11000
MAX_RAW_IN_DOCUMENT = 15 * 1024 * 1024  # MongoDB documents hold 16 MiB
MAX_DOCUMENT = 16 * 1024 * 1024  # MongoDB's limit on one document (BSON bytes)
TOO_LARGE_CODES = {10334, 17419, 17420}  # the server's "object to insert too large" (BSONObjectTooLarge)


def refused(exc: BulkWriteError) -> StorageError:
    """``exc`` without the documents it carries. pymongo's message (``full error: ...``) holds every refused
    document (``op``: a mail's body, addresses and subject), which must reach no log, health error or API reply;
    this keeps the count, the codes and the server's first words of each distinct error."""
    errors = exc.details.get("writeErrors") or []
    reasons = sorted({f"code {e.get('code')}: {str(e.get('errmsg', ''))[:160]}" for e in errors})
    concern = exc.details.get("writeConcernErrors") or []
    if concern:
        reasons.append(f"write concern: {str(concern[0].get('errmsg', ''))[:160]}")
    return StorageError(f"MongoDB refused {len(errors)} document(s) of the write: "
                        f"{'; '.join(reasons[:3]) or 'no reason given'}")


def _duplicates_only(exc: BulkWriteError) -> set[int]:
    """The indexes of the documents an ``insert_many(ordered=False)`` found stored already; raises
    :func:`refused` when anything else failed."""
    errors = exc.details.get("writeErrors") or []
    if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
        raise refused(exc) from None  # not "from exc": a traceback would print the documents again
    return {int(e["index"]) for e in errors}


def _write_errors(exc: BulkWriteError) -> tuple[set[int], set[int]]:
    """The indexes an ``insert_many(ordered=False)`` found stored already and the ones too large for a document;
    raises :func:`refused` when anything else failed."""
    errors = exc.details.get("writeErrors") or []
    if not errors or any(e.get("code") not in (DUPLICATE_KEY, *TOO_LARGE_CODES) for e in errors):
        raise refused(exc) from None  # not "from exc": a traceback would print the documents again
    return ({int(e["index"]) for e in errors if e.get("code") == DUPLICATE_KEY},
            {int(e["index"]) for e in errors if e.get("code") in TOO_LARGE_CODES})


def _by_message_id(collection: Any, inbox_id: str, message_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The documents of ``inbox_id`` in ``collection`` among ``message_ids``, by Message-ID, in one query."""
    ids = [m for m in dict.fromkeys(message_ids) if m]
    if not ids:
        return {}
    return {doc["messageId"]: doc for doc in collection.find({"inboxIntegrationId": inbox_id,
                                                              "messageId": {"$in": ids}})}


def utcnow() -> dt.datetime:
    """Now in UTC, truncated to milliseconds as MongoDB stores it."""
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


_SECRET_PATTERNS = [
    re.compile(r'("?(?:password|pass|token|secret)"?\s*[:=]\s*)("[^"]*"|\'[^\']*\'|\S+)', re.IGNORECASE),
    re.compile(r"(://[^:/@\s]+:)([^@/\s]+)(@)"),
]


def scrub(text: str) -> str:
    """Hide anything that looks like a secret (``password=...``, credentials in URLs)."""
    text = _SECRET_PATTERNS[0].sub(r"\1***", text)
    return _SECRET_PATTERNS[1].sub(r"\1***\3", text)
