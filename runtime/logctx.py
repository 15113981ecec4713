"""Log context: the integration, subdomain and kind a line is about, added to every record, and a JSON-lines format.

Each listener actor binds its integration and kind for its whole thread; the customer and conversation actors bind
them per mail. A line with no kind bound takes it from its logger when that lives in a kind's package
(``kinds.imap.smtp`` -> ``imap``). ``LOG_FORMAT=json`` writes one JSON object per line with ``integration``,
``subdomain`` and ``kind`` fields.
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
from typing import Iterator

__all__ = ["bind", "bind_thread", "ContextFilter", "JsonFormatter", "TEXT_FORMAT", "kind_of"]

_integration: contextvars.ContextVar[str] = contextvars.ContextVar("integration", default="-")
_subdomain: contextvars.ContextVar[str] = contextvars.ContextVar("subdomain", default="-")
_kind: contextvars.ContextVar[str] = contextvars.ContextVar("kind", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(integration)s]: %(message)s"


def bind_thread(integration: str, subdomain: str = "os", kind: str = "-") -> None:
    """Bind for the rest of the current thread (an actor's own thread)."""
    _integration.set(integration)
    _subdomain.set(subdomain)
    _kind.set(kind)


@contextlib.contextmanager
def bind(integration: str, subdomain: str = "os", kind: str | None = None) -> Iterator[None]:
    """Bind for the block; ``kind`` None keeps the kind bound around it."""
    tokens = (_integration.set(integration), _subdomain.set(subdomain),
              _kind.set(_kind.get() if kind is None else kind))
    try:
        yield
    finally:
        _integration.reset(tokens[0])
        _subdomain.reset(tokens[1])
        _kind.reset(tokens[2])


def kind_of(record: logging.LogRecord) -> str:
    """The kind bound, else that of the record's logger when it is a kind's (``kinds.<kind>...``), else ``-``."""
    kind = _kind.get()
    if kind == "-" and record.name.startswith("kinds."):
        kind = record.name.split(".", 2)[1]
    return kind


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.integration = _integration.get()
        record.subdomain = _subdomain.get()
        record.kind = kind_of(record)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "integration": getattr(record, "integration", "-"),
            "subdomain": getattr(record, "subdomain", "-"),
            "kind": getattr(record, "kind", None) or kind_of(record),
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
