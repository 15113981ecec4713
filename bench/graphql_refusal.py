"""The refusal of a GraphQL document without login (issue 12 item 4): time per refusal and reply size, today's code
against an older commit's, in one run.

    .venv/bin/python -m bench.graphql_refusal [--before ff9c0ce] [--repeats 200] [--before-repeats 1]

Each side is a process of its own serving the production web stack (``web.app.make_app`` with its defaults, run by
``actors.web.WebActor``) on a loopback port: this worktree's code, and ``--before``'s code extracted with
``git archive`` into a temporary folder. No database is needed: without a user no resolver may reach storage. Each
document is POSTed as the erxes gateway would forward it, with no ``user`` header, one request at a time; the time
is the client's wall time per request (connect, send, wait, read) and the reply size is the body's; a request unanswered
after ``--timeout`` seconds is reported as such (its server is restarted for the next row). Results go to
``bench/results/graphql_refusal.json``.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULT = REPO / "bench" / "results" / "graphql_refusal.json"
MIB = 1024 * 1024


def documents() -> dict[str, str]:
    """The issue's two cases and the 1 MiB documents of the figure."""
    def aliases(field: str, count: int | None = None, size: int | None = None) -> str:
        parts, total, i = [], 2, 0
        while (count is None or i < count) and (size is None or total < size - 40):
            part = f"a{i}: {field}"
            parts.append(part)
            total += len(part) + 1
            i += 1
        return "{ " + " ".join(parts) + " }"

    return {
        "4,000 aliased imapLogs (the issue)": aliases("imapLogs", count=4000),
        "20,000 aliased _service { sdl } (the issue)": aliases("_service { sdl }", count=20000),
        "1 MiB of aliased imapLogs": aliases("imapLogs", size=MIB),
        "1 MiB of aliased _service { sdl }": aliases("_service { sdl }", size=MIB),
    }


# -- the server side (run in each code's own folder) ----------------------------------------------------------------

class _NoStorage:
    """Storage that must never be reached: a request without a user touches none."""

    def __getattr__(self, name: str) -> Any:
        if name == "db":  # the console's probe: without a database it stays off (it has no GraphQL to refuse)
            raise AttributeError(name)
        raise AssertionError(f"storage.{name} reached without a user")


def serve() -> None:
    from actors.web import WebActor
    from kinds.imap.graphql import schema as imap_schema
    from web.app import WebDeps, make_app

    app = make_app(None, deps=WebDeps(ready=lambda: True, storage=_NoStorage(), schema=imap_schema))
    ref = WebActor.start(app, port=0, host="127.0.0.1")
    print(ref.proxy().port.get(timeout=10), flush=True)
    sys.stdin.read()  # until the bench closes our stdin
    ref.stop(timeout=10)


# -- the client side ------------------------------------------------------------------------------------------------

class Side:
    def __init__(self, name: str, folder: Path) -> None:
        self.name, self.folder = name, folder
        self.start()

    def restart(self) -> None:
        self.process.kill()
        self.process.wait(timeout=20)
        self.start()

    def start(self) -> None:
        folder = self.folder
        env = {**os.environ, "PYTHONPATH": str(folder)}
        self.process = subprocess.Popen([sys.executable, "-m", "bench.graphql_refusal", "--serve"], cwd=folder,
                                        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def post(self, document: str, timeout: float) -> tuple[float, int, int]:
        body = json.dumps({"query": document}).encode()
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("POST", "/graphql", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            reply = response.read()
        finally:
            conn.close()
        return time.perf_counter() - started, response.status, len(reply)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def measure(side: Side, document: str, repeats: int, timeout: float) -> dict[str, Any]:
    """``repeats`` requests of ``document``; a request still unanswered after ``timeout`` s ends the row there."""
    times, statuses, sizes = [], set(), set()
    side.post("{ __typename }", timeout)  # warm-up (imports, first parse) without the document's own cost
    for _ in range(repeats):
        try:
            elapsed, status, size = side.post(document, timeout)
        except TimeoutError:
            side.restart()  # it is still busy with the document: a fresh server for the next row
            return {"requests": len(times) + 1, "timed_out_after_s": timeout}
        times.append(elapsed)
        statuses.add(status)
        sizes.add(size)
    return {"requests": repeats, "median_ms": round(statistics.median(times) * 1000, 2),
            "max_ms": round(max(times) * 1000, 2), "statuses": sorted(statuses), "reply_bytes": max(sizes)}


def _summary(row: dict[str, Any]) -> str:
    if "timed_out_after_s" in row:
        return f"no answer within {row['timed_out_after_s']:g} s"
    return f"{row['median_ms']} ms, {row['reply_bytes']:,} bytes, HTTP {row['statuses']}"


def extract(revision: str, into: Path) -> None:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "web", "runtime", "actors", "bench"],
                             check=True, capture_output=True, timeout=120).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True, timeout=120)
    shutil.copy(Path(__file__), into / "bench" / "graphql_refusal.py")  # this script, for --serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--before", default="ff9c0ce", help="the commit to compare with (default: before issue 12)")
    parser.add_argument("--repeats", type=int, default=200, help="requests per document to today's code")
    parser.add_argument("--before-repeats", type=int, default=1, help="requests per document to --before's code")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a request may take")
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    revision = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "web", "runtime", "actors"],
                                capture_output=True, text=True, check=True).stdout.strip())
    results: dict[str, Any] = {"command": " ".join(["python -m bench.graphql_refusal", *sys.argv[1:]]),
                               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
                               "today": revision + ("+changes" if dirty else ""), "before": args.before,
                               "documents": {}}
    with tempfile.TemporaryDirectory(prefix="graphql-refusal-") as tmp:
        extract(args.before, Path(tmp))
        today, before = Side("today", REPO), Side("before", Path(tmp))
        try:
            for name, document in documents().items():
                row = {"document_bytes": len(document),
                       "today": measure(today, document, args.repeats, args.timeout),
                       "before": measure(before, document, args.before_repeats, args.timeout)}
                results["documents"][name] = row
                print(f"{name} ({len(document):,} bytes): today {_summary(row['today'])}; "
                      f"before {_summary(row['before'])}", flush=True)
        finally:
            today.close()
            before.close()
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
