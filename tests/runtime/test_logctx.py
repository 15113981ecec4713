from __future__ import annotations

import json
import logging
import threading

from runtime.logctx import ContextFilter, JsonFormatter, bind, bind_thread


def record(message: str) -> logging.LogRecord:
    rec = logging.LogRecord("kinds.imap.actor", logging.WARNING, __file__, 1, message, (), None)
    ContextFilter().filter(rec)
    return rec


def test_json_lines_carry_integration_and_subdomain():
    with bind("inbox-7", "acme"):
        line = JsonFormatter().format(record("connecting"))
    entry = json.loads(line)
    assert entry["integration"] == "inbox-7" and entry["subdomain"] == "acme"
    assert entry["message"] == "connecting" and entry["level"] == "WARNING"
    assert json.loads(JsonFormatter().format(record("outside")))["integration"] == "-"


def test_a_thread_binding_stays_in_its_thread():
    seen = {}

    def actor_thread() -> None:
        bind_thread("inbox-9")
        seen["inside"] = record("x").integration

    thread = threading.Thread(target=actor_thread)
    thread.start()
    thread.join(5)
    assert seen["inside"] == "inbox-9"
    assert record("y").integration == "-"
