"""Summarise py-spy raw profiles (``py-spy record --format raw --threads [--idle]``) of the runtime.

    .venv/bin/python -m bench.profile [--stem catchup-profiled]

Reads bench/results/STEM-cpu.txt and STEM-wall.txt (written by ``bench.catchup --profile``), writes
bench/results/STEM-profile.json and a flame graph of the CPU samples (catchup.svg for the default stem), and
prints: CPU (samples of the GIL holder, ``--gil``) by thread, the top functions by self and by total (inclusive)
CPU, and for the pipeline's threads where their wall-clock time goes (``--idle`` samples include time spent waiting on sockets and queues, which
is what bounds a serial pipeline).
"""
from __future__ import annotations

import argparse
import html
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.common import RESULTS, log

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::\d+)?\)$")
_THREAD = re.compile(r"^thread \((?P<tid>[^)]*)\)(?:: (?P<name>.*))?$")
_WORKER_NUMBER = re.compile(r"(_\d+|-\d+)$")

PIPELINE_FUNCS = [  # (label, function name, file suffix): the steps of one mail, outermost first
    ("mailbox: _sync_one_batch (UID SEARCH, FETCH, parse, dispatch)", "_sync_one_batch", "mailbox.py"),
    ("mailbox: parse_mail", "parse_mail", "mailparse.py"),
    ("customer: find stored customer (MongoDB)", "find_customer", "_storage_mail.py"),
    ("customer: core customers.findOne/createCustomer (RPC)", "find_customer", "erxes.py"),
    ("customer: createCustomer (RPC)", "create_customer", "erxes.py"),
    ("customer: save_customer (MongoDB)", "save_customer", "_storage_mail.py"),
    ("conversation: find_message (MongoDB)", "find_message", "_storage_mail.py"),
    ("conversation: find_thread_conversation (MongoDB)", "find_thread_conversation", "storage.py"),
    ("conversation: inbox integrations.receive (RPC)", "create_or_update_conversation", "erxes.py"),
    ("conversation: conversationClientMessageInserted (publish)", "message_inserted", "erxes.py"),
    # the batched pipeline (one call per batch of a lane)
    ("customer: find_customers of a batch (MongoDB)", "find_customers", "_storage_mail.py"),
    ("conversation: batch_lookup, known messages and threads of a batch (MongoDB)", "batch_lookup", "_storage_mail.py"),
    ("conversation: find_messages of a batch (MongoDB)", "find_messages", "_storage_mail.py"),
    ("conversation: thread_candidates of a batch (MongoDB)", "thread_candidates", "_storage_mail.py"),
    ("conversation: find_intents of a batch (MongoDB)", "find_intents", "_storage_mail.py"),
    ("conversation: record_intents insert_many (MongoDB)", "record_intents", "_storage_mail.py"),
    ("conversation: store_messages insert_many (MongoDB)", "store_messages", "_storage_mail.py"),
    ("conversation: clear_intents delete_many (MongoDB)", "clear_intents", "_storage_mail.py"),
    ("standalone: receive (MongoDB write)", "receive", "standalone.py"),
    ("standalone: message_inserted (MongoDB write)", "message_inserted", "standalone.py"),
    ("standalone: find_customer", "find_customer", "standalone.py"),
    ("any thread: pykka inbox wait", "get", "queue.py"),
    ("mailbox: cursor save (MongoDB)", "save_cursor", "_storage_mail.py"),
    ("mailbox: cursor read (MongoDB)", "get_cursor", "_storage_mail.py"),
    ("mailbox: connect + LOGIN (IMAP)", "connect", "imap.py"),
    ("mailbox: SELECT (IMAP)", "_select", "mailbox.py"),
    ("mailbox: state write set_health (MongoDB)", "set_health", "storage.py"),
    ("mailbox/supervisor: imap_logs insert (MongoDB)", "log", "storage.py"),
    ("mailbox: IDLE slice (idle_check)", "_idle_slice", "mailbox.py"),
    ("supervisor: start_all", "start_all", "supervisor.py"),
    ("supervisor: spawn a mailbox actor", "_start", "supervisor.py"),
]


def parse_raw(path: Path) -> list[tuple[str, list[tuple[str, str]], int]]:
    """[(thread name, [(function, file), ...] outermost first, samples)]"""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        thread = "?"
        m = _THREAD.match(parts[0])
        if m:
            thread = m.group("name") or m.group("tid")
            parts = parts[1:]
        frames = []
        for part in parts:
            fm = _FRAME.match(part)
            frames.append((fm.group("func"), fm.group("file")) if fm else (part, ""))
        out.append((thread, frames, int(count)))
    return out


def thread_group(name: str) -> str:
    """Collapse numbered pools (amqp-worker_3, MailboxActor-17 (...)) into one group."""
    name = name.split(" (")[0]
    return _WORKER_NUMBER.sub("-N", name)


def label(frame: tuple[str, str]) -> str:
    return f"{frame[0]} ({frame[1]})" if frame[1] else frame[0]


def cpu_summary(samples: list[tuple[str, list[tuple[str, str]], int]], top: int = 25) -> dict[str, Any]:
    total = sum(c for _, _, c in samples) or 1
    by_thread: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for thread, frames, count in samples:
        by_thread[thread_group(thread)] += count
        if frames:
            self_time[label(frames[-1])] += count
        for key in {label(f) for f in frames}:
            inclusive[key] += count
    return {"samples": total,
            "by_thread_pct": {k: 100 * v / total for k, v in by_thread.most_common()},
            "self_pct": [(k, 100 * v / total) for k, v in self_time.most_common(top)],
            "total_pct": [(k, 100 * v / total) for k, v in inclusive.most_common(top * 2)
                          if not k.startswith(("Thread.", "_bootstrap", "run (threading", "_worker",
                                               "<module>", "_run_module"))][:top]}


def wall_summary(samples: list[tuple[str, list[tuple[str, str]], int]]) -> dict[str, Any]:
    """Per thread group: samples (wall time, waiting included) and the share of the pipeline's steps."""
    per_group: dict[str, Counter[str]] = defaultdict(Counter)
    group_total: Counter[str] = Counter()
    threads_in_group: dict[str, set[str]] = defaultdict(set)
    for thread, frames, count in samples:
        group = thread_group(thread)
        group_total[group] += count
        threads_in_group[group].add(thread)
        seen = set()
        for func, file in frames:
            for name, want_func, want_file in PIPELINE_FUNCS:
                if func.endswith(want_func) and file.endswith(want_file) and name not in seen:
                    per_group[group][name] += count
                    seen.add(name)
    out = {}
    for group, total in group_total.most_common():
        threads = len(threads_in_group[group])
        out[group] = {"threads": threads, "samples": total,
                      "steps_pct_of_thread_time": {k: 100 * v / total for k, v in per_group[group].most_common()}}
    return out


# ------------------------------------------------------------------------------------------------- flame graph

def flamegraph(samples: list[tuple[str, list[tuple[str, str]], int]], path: Path, title: str) -> None:
    """A plain SVG flame graph (root at the bottom), one box per frame, width = samples; hover shows the count."""
    tree: dict[str, Any] = {"n": 0, "c": {}}
    for thread, frames, count in samples:
        node = tree
        node["n"] += count
        for key in [thread_group(thread), *(label(f) for f in frames)]:
            node = node["c"].setdefault(key, {"n": 0, "c": {}})
            node["n"] += count
    total = tree["n"] or 1
    width, row = 1600.0, 16
    depth = _depth(tree)
    height = (depth + 2) * row + 30
    rects: list[str] = []

    def walk(node: dict[str, Any], name: str, x: float, level: int) -> None:
        w = width * node["n"] / total
        if w < 0.3:
            return
        y = height - (level + 1) * row - 10
        hue = 20 + (hash(name) % 40)
        pct = 100 * node["n"] / total
        text = html.escape(name)
        chars = int(w / 7)
        shown = html.escape(name[:chars - 2] + "..") if len(name) > chars else text
        rects.append(f'<g><title>{text} ({node["n"]} samples, {pct:.2f}%)</title>'
                     f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" '
                     f'fill="hsl({hue},85%,{55 + hash(name) % 15}%)"/>'
                     + (f'<text x="{x + 2:.1f}" y="{y + row - 4}">{shown}</text>' if chars > 3 else "") + "</g>")
        cx = x
        for child_name, child in sorted(node["c"].items()):
            walk(child, child_name, cx, level + 1)
            cx += width * child["n"] / total

    walk(tree, "all", 0.0, 0)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height}" '
           f'font-family="monospace" font-size="11">'
           f'<text x="4" y="14" font-size="13">{html.escape(title)}</text>' + "".join(rects) + "</svg>\n")
    path.write_text(svg)


def _depth(node: dict[str, Any]) -> int:
    return 1 + max((_depth(c) for c in node["c"].values()), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stem", default="catchup-profiled", help="result name of the profiled catch-up")
    args = parser.parse_args()
    args.cpu, args.wall = RESULTS / f"{args.stem}-cpu.txt", RESULTS / f"{args.stem}-wall.txt"
    args.out = RESULTS / f"{args.stem}-profile.json"
    args.svg = RESULTS / (args.stem.replace("-profiled", "") + ".svg")
    data: dict[str, Any] = {}
    if args.cpu.exists():
        cpu = parse_raw(args.cpu)
        data["cpu"] = cpu_summary(cpu)
        flamegraph(cpu, args.svg, f"imap-runtime catch-up: CPU samples by thread ({args.cpu.name}, py-spy 100 Hz)")
        log(f"wrote {args.svg}")
        print(f"CPU samples: {data['cpu']['samples']}")
        print("CPU by thread group:")
        for k, v in list(data["cpu"]["by_thread_pct"].items())[:12]:
            print(f"  {v:5.1f}%  {k}")
        print("top self (leaf) CPU:")
        for k, v in data["cpu"]["self_pct"][:20]:
            print(f"  {v:5.1f}%  {k}")
        print("top total (inclusive) CPU:")
        for k, v in data["cpu"]["total_pct"][:25]:
            print(f"  {v:5.1f}%  {k}")
    if args.wall.exists():
        data["wall"] = wall_summary(parse_raw(args.wall))
        print("wall time of the pipeline threads (waiting included):")
        for group, info in data["wall"].items():
            steps = info["steps_pct_of_thread_time"]
            if not steps:
                continue
            print(f"  {group} ({info['threads']} thread(s), {info['samples']} samples)")
            for k, v in steps.items():
                print(f"    {v:5.1f}%  {k}")
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
