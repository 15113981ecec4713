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

import pykka.debug

from runtime.cli import quiet_libraries, settings_help, setup_logging, stop_on_signals
from runtime.config import Config, load_config
from runtime.errors import ConfigError, RuntimeFault

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


def run(config: Config) -> int:
    from app.process import (
        Runtime,  # imported late: a bad setting is reported without loading the rest
    )

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
