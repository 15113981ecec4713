"""Turn bench/results/*.json into the results table of docs/benchmarks.md (and PNG plots when matplotlib is
installed: ``.venv/bin/pip install matplotlib``).

    .venv/bin/python -m bench.report [--no-docs]

The table replaces what stands between ``<!-- bench:results:begin -->`` and ``<!-- bench:results:end -->`` in
docs/benchmarks.md (the prose around it is written by hand); without those markers it is only printed.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from bench.common import REPO, RESULTS, log

DOCS = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:results:begin -->", "<!-- bench:results:end -->"


ONLY: set[str] = set()  # --only: the figures to draw (all when empty)


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def ms(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * 1000:.0f} ms"


def x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


def verdict(t: dict[str, Any] | None) -> str:
    if not t:
        return "n/a"
    return "**met**" if t.get("met") else "**not met**"


def latency_rows(d: dict[str, Any], where: str) -> list[list[str]]:
    t = d["targets"]
    raw = d["raw_idle"]
    rows = []
    for q, key in (("p50", "p50_ratio"), ("p99", "p99_ratio")):
        rows.append([f"Latency {q} {where}",
                     f"stored {ms(d['stored'][q])}, announced {ms(d['announced'][q])}",
                     f"raw IDLE {ms(raw[q])}",
                     f"{x(d['stored_vs_raw'][q])} / {x(d['announced_vs_raw'][q])}",
                     t[key]["target"], verdict(t[key])])
    return rows


def table() -> str:
    rows: list[list[str]] = []
    lat = load("latency")
    if lat:
        rows += latency_rows(lat, f"({lat['mails']} mails)")
    cu = load("catchup")
    if cu:
        r = cu["runtime"]
        rows.append([f"Catch-up ({cu['mails']:,} mails)", f"{r['mails_per_s']:.0f} mails/s "  # noqa: ISC004
                     f"({r['seconds_from_start']:.0f} s from process start)",
                     f"bare fetch+parse loop {cu['bare_loop']['mails_per_s']:.0f} mails/s",
                     f"{cu['ratio_runtime_to_bare']:.2f}", cu["targets"]["ratio"]["target"],
                     verdict(cu["targets"]["ratio"])])
        rows.append([f"Catch-up rate ({cu['mails']:,} mails)", f"{r['mails_per_s']:.0f} mails/s", "", "",
                     cu["targets"]["rate"]["target"], verdict(cu["targets"]["rate"])])
    sep = load("catchup-erxes-separate")
    if sep:  # erxes as in production: a process and a database of its own (bench/erxes.py)
        r = sep["runtime"]
        per_mail = sep.get("cpu_ms_per_mail", {})
        rows.append([f"Catch-up, erxes in its own process and database ({sep['mails']:,} mails)",
                     f"{r['mails_per_s']:.0f} mails/s", f"bare loop {sep['bare_loop']['mails_per_s']:.0f} mails/s; "
                     f"CPU per mail: runtime + its DB {per_mail.get('runtime', 0) + per_mail.get('secantusdb', 0):.1f}"
                     f" ms, erxes + its DB {per_mail.get('erxes_emulator', 0) + per_mail.get('erxes_secantusdb', 0):.1f}"
                     f" ms", f"{sep['ratio_runtime_to_bare']:.2f}",
                     f"{sep['targets']['ratio']['target']}, {sep['targets']['rate']['target']}",
                     "met" if sep["targets"]["ratio"]["met"] and sep["targets"]["rate"]["met"] else "not met"])
    sc = load("scale")
    if sc:
        k = sc["mailboxes"]
        t = sc["targets"]
        rows.append([f"Scale: {k:,} mailboxes to IDLE (restart)",
                     f"{sc['restart']['all_idle_seconds']:.1f} s from process start" if sc["restart"]
                     .get("all_idle_seconds") is not None else "not all",
                     f"createIntegration x{k:,}: all IDLE after {sc['create']['all_idle_seconds']:.1f} s", "",
                     t["all_idle"]["target"], verdict(t["all_idle"])])
        st = sc["settled"]["status"]
        rows.append([f"Scale: memory with {k:,} IDLE", f"RSS {st['VmRSS'] / 1024:.0f} MB, peak "  # noqa: ISC004
                     f"{t['rss']['value']:.0f} MB", f"{st['Threads']} threads, {sc['settled']['open_fds']} fds, "  # noqa: ISC004
                     f"idle CPU {sc['settled']['idle_cpu'].get('runtime_cores', 0):.2f} cores", "",
                     t["rss"]["target"], verdict(t["rss"])])
        rows += latency_rows(sc["latency"], f"with {k:,} connected ({sc['latency']['mails']} mails)")
    big = load("scale-largest")
    if big:
        k = big["mailboxes"]
        r = big["restart"]
        restart = (f"restart: all IDLE {r['all_idle_seconds']:.1f} s after process start"
                   if r.get("all_idle_seconds") is not None else f"**restart failed** (exit {r.get('exit_code')})")
        rows.append([f"Scale, largest tried: {k:,} mailboxes", restart,
                     f"createIntegration x{k:,}: all IDLE after {big['create']['all_idle_seconds']:.0f} s; "  # noqa: ISC004
                     f"RSS peak {big['targets']['rss']['value']:.0f} MB",
                     f"latency {x(big['latency']['stored_vs_raw']['p50'])} / "  # noqa: ISC004
                     f"{x(big['latency']['stored_vs_raw']['p99'])}",
                     "(the 1,000-mailbox targets)",
                     "not met: " + ", ".join(n for n, t in big["targets"].items() if not t["met"])
                     if not all(t["met"] for t in big["targets"].values()) else "met"])
    ctl = load("control")
    if ctl:
        rows.append([f"createIntegration -> IDLE ({ctl['integrations']} integrations)",
                     f"p50 {ms(ctl['to_idle']['p50'])}, p95 {ms(ctl['to_idle']['p95'])}",
                     f"RPC reply p50 {ms(ctl['rpc_reply']['p50'])}", "", ctl["targets"]["p95_to_idle"]["target"],
                     verdict(ctl["targets"]["p95_to_idle"])])
    head = ["Figure", "Measured", "Beside it, same run", "Ratio", "Target", "Verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    dates = sorted({d["machine"]["date"][:10] for d in (lat, cu, sep, sc, ctl) if d})
    commits = sorted({d["machine"]["git_commit"] + (" (+ uncommitted product changes)"
                                                    if d["machine"].get("product_tree_dirty") else "")
                      for d in (lat, cu, sep, sc, ctl) if d})
    lines += ["", f"Measured {', '.join(dates)} at commit {', '.join(commits)}; raw numbers in `bench/results/*.json`."]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------- plots

def plots() -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no plots (.venv/bin/pip install matplotlib)")
        return []
    made = []

    def latency_plot(d: dict[str, Any], path: Path, title: str) -> None:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for key, lbl in (("raw_idle", "raw IDLE (bare client: EXISTS seen)"),
                         ("fetched", "runtime: fetched"), ("stored", "runtime: stored (ingestState done)"),
                         ("announced", "runtime: conversationClientMessageInserted consumed")):
            vals = sorted(m[key] * 1000 for m in d["per_mail"] if m.get(key) is not None)
            if vals:
                ax.plot(vals, [100 * (i + 1) / len(vals) for i in range(len(vals))], label=lbl)
        ax.set_xlabel("ms after APPEND returned")
        ax.set_ylabel("% of mails (CDF)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append(path)

    def wanted(name: str) -> dict[str, Any] | None:
        return load(name) if not ONLY or name in ONLY else None

    lat = wanted("latency")
    if lat:
        latency_plot(lat, RESULTS / "latency.png", f"Latency, {lat['mails']} mails one at a time (CDF)")
    sc = wanted("scale")
    if sc:
        latency_plot(sc["latency"], RESULTS / "scale-latency.png",
                     f"Latency with {sc['mailboxes']:,} mailboxes IDLE, {sc['latency']['mails']} mails (CDF)")
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
        for key, lbl in (("create", "createIntegration x K"), ("restart", "restart (process start)")):
            tl = sc[key]["timeline"]
            a1.plot([p["t"] for p in tl], [p["idle"] for p in tl], label=lbl)
            a2.plot([p["t"] for p in tl], [(p["rss_kb"] or 0) / 1024 for p in tl], label=lbl)
        a1.set_xlabel("s")
        a1.set_ylabel("integrations in state idle")
        a2.set_xlabel("s")
        a2.set_ylabel("runtime RSS (MB)")
        for a in (a1, a2):
            a.grid(alpha=0.3)
            a.legend(fontsize=8)
        fig.suptitle(f"{sc['mailboxes']:,} mailboxes in one runtime")
        fig.tight_layout()
        fig.savefig(RESULTS / "scale.png", dpi=110)
        plt.close(fig)
        made.append(RESULTS / "scale.png")
    cu = wanted("catchup")
    if cu:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        tl = cu["cursor_timeline"]
        ax.plot([t for t, _ in tl], [u for _, u in tl], label="runtime: cursor (mails stored and announced)")
        bare = cu["bare_loop"]["mails_per_s"]
        end = cu["mails"] / bare
        ax.plot([0, end], [0, cu["mails"]], "--", label=f"bare fetch+parse loop ({bare:.0f} mails/s)")
        ax.set_xlabel("s from process start")
        ax.set_ylabel("mails")
        ax.set_title(f"Catch-up of {cu['mails']:,} mails")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(RESULTS / "catchup.png", dpi=110)
        plt.close(fig)
        made.append(RESULTS / "catchup.png")
    ctl = wanted("control")
    if ctl:
        fig, ax = plt.subplots(figsize=(8, 4))
        vals = [r["idle"] * 1000 for r in ctl["per_integration"]]
        ax.hist(vals, bins=30)
        ax.set_xlabel("ms from createIntegration to state idle")
        ax.set_ylabel("integrations")
        ax.set_title(f"createIntegration -> IDLE, {len(vals)} integrations")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(RESULTS / "control.png", dpi=110)
        plt.close(fig)
        made.append(RESULTS / "control.png")
    for p in made:
        log(f"wrote {p.relative_to(REPO)}")
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-docs", action="store_true", help="print the table only")
    parser.add_argument("--only", default="", help="draw only these plots (comma-separated, e.g. catchup); implies "
                                                   "--no-docs")
    args = parser.parse_args()
    ONLY.update(filter(None, args.only.split(",")))
    text = table()
    print(text)
    if not args.no_docs and not ONLY and DOCS.exists():
        doc = DOCS.read_text()
        if BEGIN in doc and END in doc:
            head, rest = doc.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            DOCS.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
            log(f"updated the table in {DOCS.relative_to(REPO)}")
    plots()


if __name__ == "__main__":
    main()
