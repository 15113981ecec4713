"""``imap-runtime``: the entry point. Runs in the foreground; SIGTERM/SIGINT stop it cleanly.

``imap-runtime check`` verifies the configuration and each server instead (MongoDB, RabbitMQ, Redis, every stored
mailbox's login), one line per item; exit status 0 when all pass, 1 when one fails, 2 for a bad setting.

``imap-runtime new-kind NAME [--into DIR]`` writes a new integration kind's package (default ./kinds/NAME) with
its tests (runtime/scaffold.py, docs/kinds.md); exit status 2 when NAME or DIR is refused."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import pykka.debug

from runtime.config import DEFAULTS, ENV_SETTINGS, Config, load_config
from runtime.errors import ConfigError, RuntimeFault
from runtime.logctx import TEXT_FORMAT, ContextFilter, JsonFormatter

logger = logging.getLogger("runtime")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imap-runtime", description=__doc__, epilog=settings_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=("run", "check", "new-kind"), default="run",
                        help="run (the default); check: verify the configuration and every server, then exit; "
                             "new-kind NAME: write a new kind's package")
    parser.add_argument("name", nargs="?", help="new-kind: the kind's name (a lowercase Python identifier)")
    parser.add_argument("--into", metavar="DIR", help="new-kind: the package's folder (default: ./kinds/NAME)")
    parser.add_argument("--config", help="path of configs.json (default: $IMAP_RUNTIME_CONFIG, else ./configs.json)")
    args = parser.parse_args(argv)
    if args.command == "new-kind":
        if not args.name:
            parser.error("new-kind needs the kind's NAME")
        from runtime.scaffold import main as new_kind

        return new_kind(args.name, args.into)
    if args.name is not None or args.into is not None:
        parser.error(f"{args.command} takes no NAME or --into (those are new-kind's)")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"imap-runtime: bad setting {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        from runtime.check import run_check

        logging.basicConfig(level=logging.ERROR)  # the check's own lines only
        quiet_libraries()
        return run_check(config, out=sys.stdout)
    setup_logging(config)
    return run(config)


def settings_help() -> str:
    """Every setting: its configs.json key (section imap_runtime), its environment variable, its default."""
    env_of: dict[str, list[str]] = {}
    for name, key in ENV_SETTINGS.items():
        env_of.setdefault(key, []).append(name)
    rows = [f"  {key:<32} {' / '.join(env_of.get(key, [])) + ' ':<24} {DEFAULTS[key]!r}" for key in DEFAULTS]
    return ("settings (configs.json section imap_runtime, overridden by the environment; the README's "
            "Configuration table says what each means):\n"
            f"  {'key':<32} {'environment':<24} default\n" + "\n".join(rows))


def setup_logging(config: Config) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if config.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=config.log_level, handlers=[handler])
    quiet_libraries()


def quiet_libraries() -> None:
    """Libraries whose DEBUG lines carry payloads (pymongo logs whole documents, passwords included) or flood."""
    for name in ("pymongo", "pika", "imapclient", "tornado.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


def stop_on_signals() -> threading.Event:
    """An event that SIGTERM or SIGINT sets (logged): the process's main thread waits on it."""
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        logger.info("Received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def run(config: Config) -> int:
    from runtime.process import Runtime  # imported late: a bad setting is reported without loading the rest

    stop = stop_on_signals()
    signal.signal(signal.SIGUSR1, pykka.debug.log_thread_tracebacks)
    runtime = Runtime(config)
    try:
        runtime.start()
        while not stop.wait(1.0):
            pass
        return 0
    except ConfigError as exc:
        logger.error("bad setting %s", exc)
        return 2
    except RuntimeFault as exc:
        logger.error("cannot start: %s", exc)
        return 1
    finally:
        runtime.stop()
        logger.info("Stopped")


if __name__ == "__main__":
    sys.exit(main())
