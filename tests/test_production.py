"""Issue 12 item 10: with NODE_ENV=production and no SECRET_KEYS the runtime refuses to start (one line, exit 2)
rather than sealing real mailbox passwords with the public development key."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from runtime.config import load_config
from runtime.errors import ConfigError
from runtime.sealing import new_key
from tests.conftest import REPO


def test_production_without_secret_keys_refuses_to_start_in_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEYS", "IMAP_RUNTIME_CONFIG")}
    result = subprocess.run([sys.executable, "-m", "runtime", "--config", str(REPO / "configs.json")], cwd=REPO,
                            env={**env, "NODE_ENV": "production"}, capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines == ["imap-runtime: bad setting SECRET_KEYS (imap_runtime.secret_keys): is required with "
                     "NODE_ENV=production (without it the public development key would seal the mailbox passwords); "
                     "python -m runtime.admin new-key makes one"], lines
    assert result.stdout == ""


def test_production_needs_keys_and_development_still_warns_only() -> None:
    with pytest.raises(ConfigError, match="SECRET_KEYS"):
        load_config(REPO / "configs.json", environ={"NODE_ENV": "Production"})
    key = new_key()
    assert load_config(REPO / "configs.json", environ={"NODE_ENV": "production", "SECRET_KEYS": key}).secret_keys == (
        key,)
    assert load_config(REPO / "configs.json", environ={}).node_env == "development"
    assert load_config(REPO / "configs.json", environ={"NODE_ENV": "development"}).secret_keys == ()
