"""Issue 13 item 4: scripts/install.sh never removes a package. apt-get and dpkg-query are fakes on PATH here (the
machine's packages are never touched): the fake apt-get records how it was called and, for a simulated install,
answers what the real one would with a conflicting package (``Remv ...``)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.e2e import REPO

FAKE_APT = """#!/bin/bash
echo "$*" >> "$CALLS"
case " $* " in
  *" -s "*) [[ -n "$CONFLICT" ]] && echo "Remv $CONFLICT [1.0]"; echo "Inst dovecot-imapd (1:2.3)"; exit 0 ;;
  *" update "*|update*) echo "Reading package lists..."; exit 0 ;;
  *) echo "E: fake apt-get install stops here"; exit 100 ;;
esac
"""


@pytest.fixture
def fake_path(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text(FAKE_APT)
    (bin_dir / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")  # nothing is installed
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    return bin_dir


def run_install(fake_path: Path, tmp_path: Path, conflict: str) -> tuple[subprocess.CompletedProcess[str], str]:
    calls = tmp_path / "calls"
    env = {"PATH": f"{fake_path}:/usr/sbin:/usr/bin:/sbin:/bin", "CALLS": str(calls), "CONFLICT": conflict,
           "HOME": str(tmp_path)}
    if os.geteuid() != 0:
        pytest.skip("install.sh installs Debian packages only as root")
    result = subprocess.run(["bash", str(REPO / "scripts" / "install.sh")], env=env, capture_output=True,
                            text=True, timeout=120)
    return result, calls.read_text() if calls.exists() else ""


def test_a_conflicting_package_is_named_in_one_line_and_nothing_is_removed(fake_path: Path, tmp_path: Path):
    result, calls = run_install(fake_path, tmp_path, conflict="exim4-daemon-light")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "would remove" in line]
    assert len(errors) == 1 and "exim4-daemon-light" in errors[0] and "nothing was changed" in errors[0]
    assert [c for c in calls.splitlines() if " -s " in f" {c} "]  # asked what it would do...
    assert not [c for c in calls.splitlines() if " -y " in f" {c} "]  # ...and did nothing


def test_apt_installs_with_no_remove_and_shows_progress(fake_path: Path, tmp_path: Path):
    result, calls = run_install(fake_path, tmp_path, conflict="")
    installs = [c for c in calls.splitlines() if " -y " in f" {c} "]
    assert len(installs) == 1 and "--no-remove" in installs[0].split(), calls
    assert "the first run takes about" in result.stderr
    assert result.returncode == 1 and "apt-get install failed" in result.stderr  # the fake stops it there
