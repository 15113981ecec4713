"""EXPERIMENT ONLY: ``python -m runtime`` with a candidate product change applied in memory, to measure what the
change would buy before anyone writes it. The product code is not touched; the headline figures never use this.

    BENCH_PATCHES=shared-tls-context .venv/bin/python -m bench.patched_runtime   (same env as python -m runtime)

Patches:
  split-thread-lookup  the thread lookup as two plain indexed queries (messageId $in, then references $in)
                       instead of one ``$or`` + ``inboxConversationId $nin`` + sort, which SecantusDB answers with
                       a collection scan (bench/storage_ops.py): the product's since 726bb5a, so now a no-op.
  shared-tls-context   ``kinds.imap.connection.tls_context`` (``runtime.hosts``' since) memoised per CA (one
                       SSLContext shared by all mailboxes, which SSLContext allows) instead of a new context
                       loading the system's 144 CA certificates (~18 ms of CPU) at every connect, TLS or not.
  switch-interval      ``sys.setswitchinterval(0.0005)`` instead of Python's 5 ms: a thread that waits for the GIL
                       (the AMQP I/O loop, a lane back from a round trip) gets it sooner from a parsing mailbox.
  op-count             not a change but a probe: counts the MongoDB commands the runtime sends (by command and
                       collection, with their total time) and logs the table every 5 s ("bench-ops: ...").
  trace                not a change but a probe: the start and end of every step of a mail (IMAP commands,
                       MongoDB calls, RPCs, the publish, the lanes' batches) in $BENCH_TRACE_FILE.
  gc-log               not a change but a probe: logs every garbage collection slower than 50 ms
                       ("bench-gc: generation G took N ms"), to correlate latency outliers with GC pauses.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any


def _split_thread_lookup() -> None:
    """Adopted by the product in 726bb5a (``Storage.thread_candidates``: two indexed queries per batch, each mail's
    conversation picked by ``runtime.pipeline.pick_thread``): nothing left to patch; kept so older command lines
    still run."""


def _shared_tls_context() -> None:
    import functools

    import kinds.imap.connection

    kinds.imap.connection.tls_context = functools.lru_cache(maxsize=64)(kinds.imap.connection.tls_context)  # type: ignore[assignment]


def _gc_log() -> None:
    import gc
    import logging
    import time

    log = logging.getLogger("bench.gc")
    started: list[float] = []

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[:] = [time.perf_counter()]
        elif started:
            took = (time.perf_counter() - started[0]) * 1000
            if took > 50:
                log.warning("bench-gc: generation %s took %.0f ms (collected %s)", info.get("generation"), took,
                            info.get("collected"))

    gc.callbacks.append(callback)


def _op_count() -> None:
    import collections
    import logging
    import threading
    import time

    from pymongo import monitoring

    log = logging.getLogger("bench.ops")
    counts: collections.Counter[str] = collections.Counter()
    seconds: collections.Counter[str] = collections.Counter()
    names: dict[int, str] = {}
    lock = threading.Lock()

    class Listener(monitoring.CommandListener):
        def started(self, event: Any) -> None:
            target = event.command.get(event.command_name)
            with lock:
                names[event.request_id] = f"{event.command_name} {target if isinstance(target, str) else ''}"

        def succeeded(self, event: Any) -> None:
            self._done(event)

        def failed(self, event: Any) -> None:
            self._done(event)

        def _done(self, event: Any) -> None:
            with lock:
                name = names.pop(event.request_id, event.command_name)
                counts[name] += 1
                seconds[name] += event.duration_micros / 1e6

    def report() -> None:
        while True:
            time.sleep(5)
            with lock:
                rows = ", ".join(f"{k}: {v} ({seconds[k]:.1f} s)" for k, v in counts.most_common(16))
            log.warning("bench-ops: %s", rows)

    monitoring.register(Listener())
    threading.Thread(target=report, daemon=True).start()


def _switch_interval() -> None:
    sys.setswitchinterval(0.0005)


TRACED = {  # module: {class (or "" for module functions): [function names]}: the steps of one mail
    "kinds.imap.idle": {"IdleClient": ["idle", "idle_check", "idle_done", "search", "fetch", "sizes_from", "select_folder"]},
    "kinds.imap.mailbox": {"Mailbox": ["tick", "_sync_one_batch", "_idle_slice", "_save_cursor", "mail_done"]},
    "kinds.imap.fetching": {"": ["parse_mail"]},
    "runtime.storage": {"Storage": ["find_customers", "find_customer", "save_customer", "batch_lookup",
                                    "find_messages", "find_intents", "thread_candidates", "record_intents",
                                    "store_messages",
                                    "clear_intents", "save_cursor", "set_health", "log"]},
    "runtime.erxes": {"ErxesClient": ["find_customer", "create_customer", "create_or_update_conversation",
                                      "message_inserted"]},
    "runtime.pipeline": {"Backlog": ["put_many", "take"]},
    "actors.customer": {"Customers": ["resolve_batch"]},
    "actors.conversation": {"Conversations": ["ingest_batch"]},
}


def _trace() -> None:
    """Not a change but a probe: every call of the functions in TRACED as one line ``start end thread name`` (wall
    clock, seconds) in $BENCH_TRACE_FILE, to lay one mail's path out on a time line (bench.latency --trace)."""
    import functools
    import importlib
    import threading
    import time

    out = open(os.environ["BENCH_TRACE_FILE"], "a", buffering=1)  # noqa: SIM115 - open for the process's life
    lock = threading.Lock()

    def wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def traced(*args: Any, **kwargs: Any) -> Any:
            t0 = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                line = f"{t0:.6f} {time.time():.6f} {threading.current_thread().name.replace(' ', '_')} {name}\n"
                with lock:
                    out.write(line)
        return traced

    for module_name, owners in TRACED.items():
        module = importlib.import_module(module_name)
        for owner_name, functions in owners.items():
            owner = getattr(module, owner_name) if owner_name else module
            for function in functions:
                label = f"{owner_name or module_name.rsplit('.', 1)[-1]}.{function}"
                setattr(owner, function, wrap(label, getattr(owner, function)))


PATCHES: dict[str, Callable[[], None]] = {"trace": _trace, "split-thread-lookup": _split_thread_lookup,
                                          "shared-tls-context": _shared_tls_context, "gc-log": _gc_log,
                                          "switch-interval": _switch_interval, "op-count": _op_count}


def main() -> int:
    for name in filter(None, os.environ.get("BENCH_PATCHES", "").split(",")):
        PATCHES[name]()
        print(f"bench.patched_runtime: EXPERIMENT: patch {name} applied", file=sys.stderr, flush=True)
    from app.main import main as runtime_main

    return runtime_main()


if __name__ == "__main__":
    sys.exit(main())
