"""Control plane: ``createIntegration`` (over AMQP, as erxes calls it) until the new mailbox is IDLE.

    .venv/bin/python -m bench.control [--integrations 50] [--pause 0.2]

Integrations are created one after another in one runtime; each is timed from the call to (a) the RPC's reply
and (b) its ``imap_integrations.state`` becoming ``idle`` (seen on a MongoDB change stream). Mailboxes are empty.

``--with-mail``: each mailbox holds one mail of today, which the new integration imports; then the time to that
mail being stored is measured instead, and whether ``state`` ever says ``idle`` (found: it stays ``syncing`` when
the import's last batch had mail, although the mailbox is IDLE-ing; see docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.common import (
    Caller,
    CpuMeter,
    Run,
    RuntimeProcess,
    Watcher,
    add_users,
    command_line,
    ensure_services,
    imap_client,
    imap_details,
    log,
    machine_info,
    round_floats,
    server_meters,
    summary,
    wait_until,
    write_result,
)

TARGET_P95 = 1.0


class IntegrationEvents:
    """imap_integrations change events: document id -> inboxId, and when each first reached a state."""

    def __init__(self) -> None:
        self.ids: dict[Any, str] = {}
        self.states: dict[str, dict[str, float]] = {}
        self._early: dict[Any, list[tuple[str, float]]] = {}

    def __call__(self, change: dict[str, Any], at: float) -> None:
        key = change.get("documentKey", {}).get("_id")
        op = change.get("operationType")
        if op == "insert":
            doc = change.get("fullDocument") or {}
            inbox = doc.get("inboxId")
            self.ids[key] = inbox
            if doc.get("state"):
                self._record(inbox, doc["state"], at)
            for state, t in self._early.pop(key, []):
                self._record(inbox, state, t)
        elif op in ("update", "replace"):
            fields = (change.get("updateDescription") or {}).get("updatedFields") or change.get("fullDocument") or {}
            state = fields.get("state")
            if state:
                inbox = self.ids.get(key)
                if inbox is None:
                    self._early.setdefault(key, []).append((state, at))
                else:
                    self._record(inbox, state, at)

    def _record(self, inbox: str, state: str, at: float) -> None:
        self.states.setdefault(inbox, {}).setdefault(state, at)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--integrations", type=int, default=50)
    parser.add_argument("--pause", type=float, default=0.2, help="pause between two createIntegration calls (s)")
    parser.add_argument("--with-mail", action="store_true", help="one mail of today in each mailbox (see above)")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--out", default="control")
    args = parser.parse_args()
    services = ensure_services()
    machine = machine_info()
    run = Run(services, "ctl")
    users = add_users(services, args.integrations, prefix="ctl")
    for user, password in users if args.with_mail else ():  # one mail of today, for the import
        with imap_client(services, user, password) as client:
            client.append("INBOX", f"From: a@example.com\r\nTo: {user}@localhost\r\nSubject: hi\r\n"
                                   f"Message-ID: <ctl-{user}@example.com>\r\n\r\nhello\r\n".encode())
    runtime = RuntimeProcess(run, "control")
    runtime.start()
    caller = Caller(services["RABBITMQ_HOST"], run.prefix)
    events = IntegrationEvents()
    watcher = Watcher(run.db.imap_integrations, events).start()
    rows = []
    meter = CpuMeter(server_meters(services, runtime)).start()
    try:
        for i, (user, password) in enumerate(users):
            inbox = f"inbox-ctl-{i}"
            t0 = time.time()
            caller.create_integration(inbox, imap_details(services, user, password))
            t_rpc = time.time()
            if args.with_mail:
                mid = f"<ctl-{user}@example.com>"
                wait_until(lambda: run.db.imap_messages.find_one({"messageId": mid, "ingestState": "done"}), 30,  # noqa: B023
                           interval=0.005, what=f"{inbox}'s mail stored")
                t_stored = time.time()
                time.sleep(2.0)
                st = events.states.get(inbox, {})
                rows.append({"i": i, "rpc": t_rpc - t0, "stored": t_stored - t0, "idle": st.get("idle", 0) - t0,
                             "state_after_2s": (run.db.imap_integrations.find_one({"inboxId": inbox}) or {})
                             .get("state")})
                continue
            wait_until(lambda: "idle" in events.states.get(inbox, {}), 30, interval=0.002, what=f"{inbox} IDLE")  # noqa: B023
            st = events.states[inbox]
            rows.append({"i": i, "rpc": t_rpc - t0, "idle": st["idle"] - t0,
                         "connecting": st.get("connecting", t0) - t0, "syncing": st.get("syncing", t0) - t0})
            watcher.check()
            time.sleep(args.pause)
        cpu = meter.stop()
        stored = run.db.imap_messages.count_documents({"ingestState": "done"})
        status = runtime.status()
    finally:
        watcher.stop()
        caller.close()
        code = runtime.terminate()
        run.cleanup(keep=args.keep)
    log(f"runtime exited with {code}; log: {runtime.log_path}")
    if args.with_mail:
        data = {"benchmark": "control-with-mail", "command": command_line(), "machine": machine,
                "integrations": len(rows), "rpc_reply": summary([r["rpc"] for r in rows]),
                "to_import_stored": summary([r["stored"] for r in rows]),
                "state_after_import": {s: sum(r["state_after_2s"] == s for r in rows)
                                       for s in {r["state_after_2s"] for r in rows}},
                "cpu": cpu, "per_integration": rows}
        write_result(args.out, round_floats(data))
        print(json.dumps({k: data[k] for k in ("rpc_reply", "to_import_stored", "state_after_import")}, indent=1))
        return
    idle = summary([r["idle"] for r in rows])
    data = {"benchmark": "control", "command": command_line(), "machine": machine, "integrations": len(rows),
            "rpc_reply": summary([r["rpc"] for r in rows]), "to_idle": idle,
            "to_idle_excluding_first": summary([r["idle"] for r in rows[1:]]),
            "imported_mails_stored": stored, "cpu": cpu, "runtime_status": status,
            "targets": {"p95_to_idle": {"target": f"< {TARGET_P95} s", "value": idle["p95"],
                                        "met": bool(idle["p95"] < TARGET_P95)}},
            "per_integration": rows}
    write_result(args.out, round_floats(data))
    for key in ("rpc_reply", "to_idle"):
        s = data[key]
        print(f"{key:10s} n={s['n']}  p50 {s['p50'] * 1000:.0f} ms  p95 {s['p95'] * 1000:.0f} ms  "
              f"max {s['max'] * 1000:.0f} ms")
    t = data["targets"]["p95_to_idle"]
    print(f"target createIntegration->IDLE p95 {t['target']}: {t['value']:.3f} s -> {'met' if t['met'] else 'NOT met'}")


if __name__ == "__main__":
    main()
