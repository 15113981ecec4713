"""The quote split of a 1 MB hostile mail (issue 12 item 3): CPU of ``runtime.mail.quoting`` today against the code
before the fix, measured in one run.

The old code is ``runtime/mail/quoting.py`` at ``--old-ref`` (default ``ff9c0ce``, the commit the issue measured), read
with ``git show`` into a temporary module; nothing in the work tree changes. Each old measurement runs in a
subprocess killed after ``--budget`` seconds of wall time, at doubling sizes from 7 KB until one takes longer
than the budget or 1 MB is reached. Today's code is measured at 1 MB for every vector, and so is what a view of
the mail costs (``kinds.imap.graphql.mail_data``: the split, then the sanitiser on body, newContent and replies) the first
time and once the split record is kept. CPU is ``time.process_time`` of the one call.

    .venv/bin/python -m bench.quote_split [--budget 30] [--old-ref ff9c0ce]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from bench.common import REPO, command_line, machine_info, round_floats, write_result

MB = 1_000_000
# name -> (repeated unit, tail); each is repeated up to the size measured
VECTORS: dict[str, tuple[str, str]] = {
    "cite quotes then text (the issue's)": ("<blockquote type=cite>x</blockquote>", "tail"),
    "cite quotes": ("<blockquote type=cite>x</blockquote>", ""),
    "unclosed attribute quotes": ("<a b='", ""),
    "unclosed comments": ("<!--", ""),
    "nested Outlook header quotes": ("<div id=x_divRplyFwdMsg>x", ""),
    "stray end tags": ("<div>x", "</p>"),
    "'>' quoted lines": ("<br>&gt; a", "<br>new"),
}


def body(vector: str, size: int) -> str:
    """About ``size`` characters of ``vector``."""
    unit, tail = VECTORS[vector]
    if tail == "</p>":  # as many stray end tags as open elements below them
        count = size // (len(unit) + len(tail))
        return unit * count + tail * count
    return unit * ((size - len(tail)) // len(unit)) + tail


def realistic(size: int) -> str:
    """A real-looking reply quoting a big newsletter (tables, styles, links) in a Gmail quote."""
    row = ('<tr><td style="padding:8px;font-family:Arial" class="mso-line"><a href="https://shop.example/p/{n}">'
           'Product {n}</a> <b>$19.99</b> <img src="https://cdn.example/{n}.png" width="80"></td></tr>')
    rows, n = [], 0
    while sum(map(len, rows)) < size - 600:
        rows.append(row.format(n=n))
        n += 1
    return ('<div dir="ltr">Thanks, please send the invoice.<br><br>Bob</div><br><div class="gmail_quote">'
            '<div dir="ltr" class="gmail_attr">On Mon, Jan 1, 2024 at 10:00 AM Shop &lt;news@shop.example&gt; '
            f'wrote:<br></div><blockquote class="gmail_quote"><table>{"".join(rows)}</table></blockquote></div>')


def cpu(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.process_time()
    result = function()
    return time.process_time() - start, result


_OLD_PROBE = """
import importlib.util, json, sys, time
spec = importlib.util.spec_from_file_location("old_quoting", sys.argv[1])
module = sys.modules["old_quoting"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.path.insert(0, sys.argv[4])
from bench.quote_split import body
text = body(sys.argv[2], int(sys.argv[3]))
start = time.process_time()
try:
    split = module.split_quoted(text)
    outcome = "split" if split.replies else "whole"
except Exception as exc:
    outcome = f"raised {type(exc).__name__}"
print(json.dumps({"cpu": time.process_time() - start, "chars": len(text), "outcome": outcome}))
"""


def measure_old(old_source: Path, vector: str, budget: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    size = 7_200
    while True:
        size = min(size, MB)
        try:
            done = subprocess.run([sys.executable, "-c", _OLD_PROBE, str(old_source), vector, str(size), str(REPO)],
                                  capture_output=True, text=True, timeout=budget, cwd=REPO, check=True)
            row = json.loads(done.stdout)
        except subprocess.TimeoutExpired:
            rows.append({"size": size, "cpu": None, "outcome": f"over the {budget:g} s budget (killed)"})
            break
        rows.append({"size": size, **row})
        print(f"  old  {vector:38} {row['chars']:>9,} chars  {row['cpu']:8.3f} s  {row['outcome']}", flush=True)
        if size >= MB:
            break
        size *= 2
    return rows


def measure_new(vector_text: str) -> dict[str, Any]:
    from runtime.mail.quoting import split_quoted, split_record
    from kinds.imap.graphql import mail_data

    split_cpu, split = cpu(lambda: split_quoted(vector_text))
    record_cpu, record = cpu(lambda: split_record(vector_text))
    doc = {"_id": "65a1b2c3d4e5f60718293a4b", "inboxIntegrationId": "inbox-1", "body": vector_text}
    first_cpu, first = cpu(lambda: mail_data(doc))
    doc["split"] = record
    kept_cpu, kept = cpu(lambda: mail_data(doc))
    assert kept == first
    return {"chars": len(vector_text), "split_cpu": split_cpu, "record_cpu": record_cpu,
            "outcome": "split" if split.replies else "whole", "view_first_cpu": first_cpu,
            "view_with_record_cpu": kept_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=30.0, help="seconds per old measurement (then killed)")
    parser.add_argument("--old-ref", default="ff9c0ce", help="the commit whose runtime/mail/quoting.py is 'before'")
    args = parser.parse_args()
    old_code = subprocess.run(["git", "show", f"{args.old_ref}:runtime/mail/quoting.py"], capture_output=True, text=True,
                              cwd=REPO, check=True, timeout=30).stdout
    results: dict[str, Any] = {"command": command_line(), "machine": machine_info(), "old_ref": args.old_ref,
                               "budget_seconds": args.budget, "vectors": {}}
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO,
                          timeout=30).stdout.strip()
    results["commit"] = head
    with tempfile.TemporaryDirectory() as tmp:
        old_source = Path(tmp) / "old_quoting.py"
        old_source.write_text(old_code)
        for vector in VECTORS:
            new = measure_new(body(vector, MB))
            print(f"  new  {vector:38} {new['chars']:>9,} chars  {new['split_cpu']:8.3f} s  {new['outcome']}"
                  f"  (view: first {new['view_first_cpu']:.3f} s, with the record {new['view_with_record_cpu']:.3f} s)",
                  flush=True)
            results["vectors"][vector] = {"new_1mb": new, "old": measure_old(old_source, vector, args.budget)}
    mail = realistic(MB)
    new = measure_new(mail)
    print(f"  new  {'realistic reply quoting a newsletter':38} {new['chars']:>9,} chars  {new['split_cpu']:8.3f} s  "
          f"{new['outcome']}  (view: first {new['view_first_cpu']:.3f} s, with the record "
          f"{new['view_with_record_cpu']:.3f} s)", flush=True)
    results["realistic_1mb"] = new
    write_result("quote-split", round_floats(results))


if __name__ == "__main__":
    main()
