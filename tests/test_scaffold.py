"""``imap-runtime new-kind`` (runtime/scaffold.py, issue 15 item 5): the command writes a kind package into a
temporary folder, and the generated tests pass as generated (pytest in a subprocess, the folder on PYTHONPATH);
names and folders that cannot be used are refused with exit status 2."""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from runtime import scaffold
from app.main import main
from tests.e2e import RuntimeProcess

REPO = Path(__file__).resolve().parent.parent
FILES = {"README.md", "__init__.py", "actor.py", "graphql.py", "logic.py", "web.py", "tests/__init__.py",
         "tests/test_actor.py", "tests/test_kind.py", "tests/test_logic.py", "tests/test_web.py"}


def env(*paths: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths)}


def run(args: list[str], *, cwd: Path, pythonpath: list[Path], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env(*pythonpath), capture_output=True, text=True,
                          timeout=timeout)


def test_the_generated_kind_s_tests_pass_as_generated(tmp_path: Path):
    done = run(["-m", "runtime", "new-kind", "parrot_talk", "--into", str(tmp_path / "parrot_talk")],
               cwd=tmp_path, pythonpath=[REPO])
    assert done.returncode == 0, done.stderr
    package = tmp_path / "parrot_talk"
    assert {str(p.relative_to(package)) for p in package.rglob("*") if p.is_file()} == FILES
    assert "parrot_talk = parrot_talk:ParrotTalkKind" in done.stdout  # the entry point to declare
    kind = (package / "__init__.py").read_text()
    assert 'name = "parrot_talk"' in kind and "class ParrotTalkKind(Kind)" in kind
    assert "$" not in "".join(p.read_text() for p in package.rglob("*") if p.is_file())  # no placeholder left
    # DeprecationWarnings of the generated code are errors, as setup.cfg makes them for the runtime's packages
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings =\n    error::DeprecationWarning:parrot_talk\n")
    tests = run(["-m", "pytest", "-p", "no:cacheprovider", "-q", "--basetemp", str(tmp_path / "basetemp"),
                 str(package / "tests")], cwd=tmp_path, pythonpath=[REPO, tmp_path], timeout=180)
    summary = tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else tests.stderr
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 15 and "failed" not in summary and "error" not in summary, summary


def test_by_default_the_kind_goes_to_kinds_name_as_a_built_in_one(tmp_path: Path, monkeypatch, capsys):
    (tmp_path / "kinds").mkdir()
    (tmp_path / "kinds" / "__init__.py").write_text("")
    monkeypatch.chdir(tmp_path)
    assert main(["new-kind", "chat"]) == 0
    assert {str(p.relative_to(tmp_path / "kinds" / "chat")) for p in (tmp_path / "kinds" / "chat").rglob("*")
            if p.is_file()} == FILES
    out = capsys.readouterr().out
    assert "chat = kinds.chat:ChatKind" in out and f"with {tmp_path} on PYTHONPATH" in out
    readme = (tmp_path / "kinds" / "chat" / "README.md").read_text()
    assert "chat = kinds.chat:ChatKind" in readme and '[project.entry-points."imap_runtime.kinds"]' in readme


@pytest.mark.parametrize("name, reason", [
    ("Chat", "not a kind name"), ("9chat", "not a kind name"), ("my-chat", "not a kind name"),
    ("_chat", "not a kind name"), ("", "not a kind name"), ("c" * 41, "not a kind name"),
    ("api", "existing kind"), ("imap", "existing kind"),
    ("class", "keyword"), ("match", "keyword"),
    ("json", "standard library"), ("web", "taken by the runtime"), ("rpc", "taken by the runtime"),
])
def test_a_name_that_cannot_be_a_kind_is_refused(tmp_path: Path, monkeypatch, capsys, name, reason):
    monkeypatch.chdir(tmp_path)
    if not name:
        with pytest.raises(SystemExit) as exited:  # argparse: new-kind needs its NAME
            main(["new-kind", name])
        assert exited.value.code == 2
        return
    assert main(["new-kind", name, "--into", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("imap-runtime new-kind: ") and reason in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "kinds").exists()


def test_an_existing_folder_is_not_overwritten_but_an_empty_one_is_used(tmp_path: Path, capsys):
    (tmp_path / "chat").mkdir()
    (tmp_path / "chat" / "mine.py").write_text("keep = True\n")
    assert main(["new-kind", "chat", "--into", str(tmp_path / "chat")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "chat").iterdir()] == ["mine.py"]
    (tmp_path / "a_file").write_text("")
    assert main(["new-kind", "chat", "--into", str(tmp_path / "a_file")]) == 2
    assert main(["new-kind", "chat", "--into", str(tmp_path / "not-an-identifier")]) == 2
    assert "import name" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["new-kind", "chat", "--into", str(tmp_path / "empty")]) == 0
    assert (tmp_path / "empty" / "__init__.py").is_file()


def test_the_command_refuses_in_a_subprocess_with_status_2(tmp_path: Path):
    done = run(["-m", "runtime", "new-kind", "api"], cwd=tmp_path, pythonpath=[REPO])
    assert done.returncode == 2 and "'api' is an existing kind" in done.stderr and done.stdout == ""
    assert not (tmp_path / "kinds").exists()


def test_run_and_check_take_no_kind_name():
    with pytest.raises(SystemExit) as exited:
        main(["check", "chat"])
    assert exited.value.code == 2


def test_an_installed_kind_s_name_is_refused_too():
    with pytest.raises(scaffold.Refused, match="existing kind"):
        scaffold.validate_name("chat", existing={"imap", "api", "chat"})
    assert scaffold.validate_name("chat", existing={"imap", "api"}) == "chat"
    assert {"imap", "api"} <= scaffold.existing_kinds()


def post(port: int, path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json", **(headers or {})}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_runtime_serves_a_generated_kind_installed_through_the_entry_points(
        services: dict[str, str], mongo_url: str, prefix: str, tmp_path: Path):
    """The generated kind, installed as a distribution of its own (its entry point in a .dist-info on the path),
    enabled with KINDS beside imap and api: the real runtime serves its procedure, route and GraphQL field, and
    registers service:parrot in Redis (removed at a clean stop)."""
    site = tmp_path / "site"
    assert main(["new-kind", "parrot", "--into", str(site / "parrot")]) == 0
    info = site / "parrot_kind-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: parrot-kind\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[imap_runtime.kinds]\nparrot = parrot:ParrotKind\n")
    node = RuntimeProcess(services, mongo_url=mongo_url, prefix=prefix, log_path=tmp_path / "node.log")
    node.env.update(KINDS="imap,api,parrot", PYTHONPATH=os.pathsep.join([str(REPO), str(site)]))
    client = redis.Redis(host=node.env["REDIS_HOST"], port=int(node.env["REDIS_PORT"]), socket_timeout=5)
    node.start(timeout=60)
    try:
        assert "Kinds: imap, api, parrot" in node.log_tail(200)
        envelope = {"subdomain": "os", "data": {"echo": "hi"}}
        assert post(node.port, "/parrot/rpc/ping", envelope) == (200, {"status": "success", "data": {
            "status": "ok", "kind": "parrot", "integrations": 0, "echo": "hi"}})
        assert post(node.port, "/rpc/parrot:ping", envelope)[1]["data"]["kind"] == "parrot"
        status, reply = post(node.port, "/parrot/receive?integrationId=nope", {"messageId": "m1"})
        assert status == 404 and "nope" in reply["error"]
        user = base64.b64encode(json.dumps({"_id": "agent-1"}).encode()).decode()
        status, reply = post(node.port, "/graphql", {"query": '{ parrotMessages(integrationId: "nope") { text } }'},
                             {"user": user})
        assert status == 200 and reply == {"data": {"parrotMessages": []}}, reply
        address = client.get("service:parrot")
        assert address is not None and address.decode().endswith("/parrot")
    finally:
        assert node.terminate(timeout=20) == 0
    assert client.get("service:parrot") is None  # a clean stop removes it
    client.close()
