"""Log context: the integration and subdomain a line is about, added to every record, and a JSON-lines format.

Each mailbox actor binds its integration for its whole thread; the customer and conversation actors bind it per
mail. ``LOG_FORMAT=json`` writes one JSON object per line with ``integration`` and ``subdomain`` fields.
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
from typing import Iterator

__all__ = ["bind", "bind_thread", "ContextFilter", "JsonFormatter", "TEXT_FORMAT"]

_integration: contextvars.ContextVar[str] = contextvars.ContextVar("integration", default="-")
_subdomain: contextvars.ContextVar[str] = contextvars.ContextVar("subdomain", default="-")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(integration)s]: %(message)s"


def bind_thread(integration: str, subdomain: str = "os") -> None:
    """Bind for the rest of the current thread (an actor's own thread)."""
    _integration.set(integration)
    _subdomain.set(subdomain)


@contextlib.contextmanager
def bind(integration: str, subdomain: str = "os") -> Iterator[None]:
    tokens = (_integration.set(integration), _subdomain.set(subdomain))
    try:
        yield
    finally:
        _integration.reset(tokens[0])
        _subdomain.reset(tokens[1])


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.integration = _integration.get()
        record.subdomain = _subdomain.get()
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
            "thread": record.threadName,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
