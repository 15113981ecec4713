"""``python -m runtime.admin quarantine``: listing and the refusals of ``reprocess``, on a fresh database."""
from __future__ import annotations

from pathlib import Path

import pytest

from runtime import admin
from runtime.storage import Storage

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def quarantined(mongo_url: str, monkeypatch: pytest.MonkeyPatch) -> Storage:
    monkeypatch.setenv("MONGO_URL", mongo_url)
    monkeypatch.delenv("SECRET_KEYS", raising=False)
    storage = Storage(mongo_url)
    storage.ensure_indexes()
    storage.quarantine_mail("inbox-1", "INBOX", 1, 7, "unparsable", raw=b"raw")
    storage.quarantine_mail("inbox-2", "INBOX", 1, 8, "too large", size=99)
    return storage


def run(*args: str) -> int:
    return admin.main(["--config", str(REPO / "configs.json"), *args])


def test_quarantine_list_shows_every_entry_or_one_integration_s(quarantined: Storage, capsys):
    assert run("quarantine", "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "inbox-1  INBOX UID 7  3 bytes  unparsable" in lines[0]
    assert run("quarantine", "list", "inbox-2") == 0
    [line] = capsys.readouterr().out.splitlines()
    assert "inbox-2  INBOX UID 8  99 bytes  too large" in line


def test_reprocess_refuses_an_unknown_entry_and_one_without_raw_bytes(quarantined: Storage, capsys):
    assert run("quarantine", "reprocess", "not-an-id") == 1
    assert "no quarantined mail not-an-id" in capsys.readouterr().err
    [entry] = quarantined.quarantined("inbox-2")
    assert run("quarantine", "reprocess", str(entry["_id"])) == 1
    assert "has no raw bytes" in capsys.readouterr().err
    [entry] = quarantined.quarantined("inbox-1")
    assert run("quarantine", "reprocess", str(entry["_id"])) == 1  # its integration is gone
    assert "integration inbox-1 no longer exists" in capsys.readouterr().err
    assert len(list(quarantined.quarantined())) == 2  # nothing released
