"""The suite-wide secrets check of issue 7: no password, token or secret in any log line, HTTP or RPC response, or
MongoDB document (in plain text) seen during the whole test session.

A pytest plugin (``pytest_plugins`` in tests/conftest.py). Secrets are registered as they are made:
:func:`register_secret` (every password of the test mail server, tokens a test configures) and every value the
runtime seals but passwords (:meth:`runtime.sealing.Sealer.seal` is observed: webhook secrets it generates, and
any secret field added later). Passwords are taken from the mail server only: tests also hand the runtime
made-up ones, and the fuzz tests send one junk value as password, address and integration id at once. Values
shorter than :data:`MIN_LENGTH` are ignored (tests use ``"p"`` as a password).

What is scanned:

- every log record of the session, as production logs at ``LOG_LEVEL=debug`` (a handler on the root logger, whose
  level is lowered to DEBUG; the libraries the entry point quiets stay at WARNING: pymongo's DEBUG lines hold
  whole documents; pytest's own capture keeps its WARNING threshold unless ``--log-level`` says otherwise), at the
  session's end;
- the output of ``imap-runtime`` subprocesses (:func:`watch_log_file`, called by tests/e2e.py RuntimeProcess),
  from the offset where each run began, at the session's end;
- every HTTP response body written by a Tornado handler and every RPC reply (AMQP and HTTP), as it is made;
- each test database, just before the ``mongo_url`` fixture drops it: no registered secret in plain text. One
  exception: an integration's top-level ``password`` in plain text is erxes's own record, which tests write on
  purpose (the runtime reads it and ``reseal`` seals it); tests/test_secrets_at_rest.py proves the runtime itself
  writes it sealed.

A finding fails the session (exit status 1) and the terminal summary shows where, with the secret masked.
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["MIN_LENGTH", "active", "caught", "register_secret", "watch_log_file"]

MIN_LENGTH = 8
MASK = "<secret>"

_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_files: dict[Path, int] = {}  # log file -> offset where this session's output begins
_findings: list[str] = []
_records: list[str] = []


def register_secret(value: Any) -> Any:
    """Fail the session if ``value`` shows up in a log line, a response or MongoDB in plain text; returns it."""
    global _pattern
    if isinstance(value, str) and len(value) >= MIN_LENGTH and value not in _secrets:
        _secrets.add(value)
        _pattern = None
    return value


def watch_log_file(path: Path | str) -> None:
    """Scan ``path`` at the session's end, from its current size on (the file is appended to)."""
    path = Path(path)
    if path not in _files:
        _files[path] = path.stat().st_size if path.exists() else 0


@contextlib.contextmanager
def caught() -> Iterator[list[str]]:
    """The findings (log lines included) made inside the block, taken out of the session's: for this check's own
    tests, which leak on purpose."""
    findings, records = len(_findings), len(_records)
    found: list[str] = []
    try:
        yield found
    finally:
        _scan("a log line", _records[records:])
        del _records[records:]
        found.extend(_findings[findings:])
        del _findings[findings:]


def _matcher() -> re.Pattern[str] | None:
    global _pattern
    if _pattern is None and _secrets:
        _pattern = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))
    return _pattern


def _scan(where: str, texts: Iterable[str]) -> None:
    """Record a finding for each text holding a secret (the secret masked), at most 20 per place."""
    matcher = _matcher()
    if matcher is None:
        return
    found = 0
    for text in texts:
        if matcher.search(text):
            found += 1
            if found <= 20:
                _findings.append(f"{where}: {matcher.sub(MASK, text)[:400]}")
    if found > 20:
        _findings.append(f"{where}: ... and {found - 20} more")


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _records.append(self.format(record))
        except Exception:  # a record that cannot be formatted is the logging call's own bug, reported elsewhere
            pass


def _observe(owner: Any, name: str, text_of: Callable[..., str], where: str) -> Callable[[], None]:
    """Wrap ``owner.name`` so what ``text_of(*args, result)`` gives is scanned on each call; returns the undo."""
    original = getattr(owner, name)

    def observed(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        try:
            text = text_of(*args, result, **kwargs)
        except Exception:
            text = ""
        if text:
            _scan(where, [text])
        return result

    setattr(owner, name, observed)
    return lambda: setattr(owner, name, original)


def _as_text(chunk: Any) -> str:
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        return bytes(chunk).decode("utf-8", "replace")
    return chunk if isinstance(chunk, str) else json.dumps(chunk, default=str)


def _sealed(sealer: Any, plain: Any, *rest: Any, context: str = "") -> str:
    if not context.startswith("password:"):  # passwords: registered where they are made (see the module's doc)
        register_secret(plain)
    return ""


_undo: list[Callable[[], None]] = []
_recorder = _Recorder()


def active() -> bool:
    """Whether the check runs in this session (``-p no:tests.secretscan`` turns it off)."""
    return bool(_undo)


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.has_plugin("logging") and config.getoption("log_level", None) is None and \
            config.getini("log_level") is None:
        config.option.log_level = "WARNING"  # the root logger goes to DEBUG below; pytest's reports stay as they were
    import tornado.web

    from runtime.cli import quiet_libraries
    from runtime.broker import _envelope
    from runtime.sealing import Sealer

    _undo.append(_observe(Sealer, "seal", _sealed, "sealing"))
    _undo.append(_observe(tornado.web.RequestHandler, "write",
                          lambda handler, chunk, result: _as_text(chunk), "an HTTP response"))
    for name in ("encode_success", "encode_error"):
        _undo.append(_observe(_envelope, name, lambda *args: _as_text(args[-1]), "an RPC reply"))
    root = logging.getLogger()
    _undo.append(lambda level=root.level: root.setLevel(level))
    root.setLevel(logging.DEBUG)
    quiet_libraries()
    root.addHandler(_recorder)
    _undo.append(lambda: root.removeHandler(_recorder))


def pytest_unconfigure(config: pytest.Config) -> None:
    while _undo:
        _undo.pop()()


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> Iterator[None]:
    result = yield
    if fixturedef.argname == "mongo_url" and isinstance(result, str):
        # Finalizers run last-in first-out: this one runs before the fixture's own teardown drops the database.
        fixturedef.addfinalizer(lambda: _scan_database(result, request.node.nodeid))
    return result


def _scan_database(url: str, nodeid: str) -> None:
    if _matcher() is None:
        return
    import pymongo
    from bson import json_util

    client: pymongo.MongoClient[Any] = pymongo.MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        db = client.get_default_database()
        for name in db.list_collection_names():
            docs = db[name].find({}, {"password": 0} if name == "imap_integrations" else None)
            _scan(f"MongoDB {name} after {nodeid}", (json_util.dumps(doc) for doc in docs))
    except pymongo.errors.PyMongoError:
        pass  # the test's database is gone or the server is down: nothing to read, the test itself reports it
    finally:
        client.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _scan("a log line", _records)
    for path, offset in _files.items():
        try:
            with open(path, "rb") as log:
                log.seek(offset)
                _scan(f"imap-runtime output {path}", log.read().decode("utf-8", "replace").splitlines())
        except OSError:
            continue
    if _findings:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _findings:
        terminalreporter.section("secrets found (tests/secretscan.py)", red=True)
        for finding in _findings:
            terminalreporter.line(finding)
        terminalreporter.line(f"{len(_findings)} finding(s) over {len(_secrets)} known secrets: the session fails")
