from __future__ import annotations

import json
import logging
import threading

from runtime.logctx import ContextFilter, JsonFormatter, bind, bind_thread


def record(message: str, logger: str = "kinds.imap.actor") -> logging.LogRecord:
    rec = logging.LogRecord(logger, logging.WARNING, __file__, 1, message, (), None)
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


def test_lines_carry_the_kind_bound_or_that_of_their_kinds_logger():
    assert json.loads(JsonFormatter().format(record("a kind's module")))["kind"] == "imap"
    assert json.loads(JsonFormatter().format(record("the pipeline", "actors.conversation")))["kind"] == "-"
    with bind("inbox-3", "acme", kind="api"):
        assert record("a stage, bound", "actors.conversation").kind == "api"
        with bind("inbox-4", "acme"):  # a nested binding without a kind keeps the one around it
            assert record("nested", "actors.customer").kind == "api"
    assert record("after", "actors.conversation").kind == "-"
    seen = {}

    def actor_thread() -> None:
        bind_thread("inbox-9", "os", kind="api")
        seen["inside"] = json.loads(JsonFormatter().format(record("x", "runtime.erxes")))["kind"]

    thread = threading.Thread(target=actor_thread)
    thread.start()
    thread.join(5)
    assert seen["inside"] == "api"
