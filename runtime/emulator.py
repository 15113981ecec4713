"""``python -m runtime.emulator``: the erxes emulation of standalone mode (``runtime/standalone.py``: the
core/contacts and inbox procedures the runtime calls) as a process of its own, with a database of its own. To a
runtime started with ``STANDALONE=false`` it is what erxes is in production: another process, another MongoDB,
the same broker. The benchmarks use it to measure the runtime without the emulation's work in its process and
database (``docs/benchmarks.md``); it also serves a development setup of several nodes.

It reads the runtime's settings (``configs.json``, the environment): ``MONGO_URL`` is the emulation's database,
``RABBITMQ_HOST``, ``MESSAGE_BROKER_PREFIX``, ``VERSION`` and ``CUSTOMER_SERVICE`` must match the runtime's.
SIGTERM/SIGINT stop it.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from runtime.config import load_config
from runtime.errors import ConfigError, RuntimeFault

logger = logging.getLogger("runtime.emulator")


def main(argv: list[str] | None = None) -> int:
    from runtime.cli import setup_logging, stop_on_signals

    parser = argparse.ArgumentParser(prog="python -m runtime.emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="path of configs.json (default: $IMAP_RUNTIME_CONFIG, else ./configs.json)")
    args = parser.parse_args(argv)
    try:
        config = dataclasses.replace(load_config(args.config), standalone=True)
    except ConfigError as exc:
        print(f"runtime.emulator: bad setting {exc}", file=sys.stderr)
        return 2
    setup_logging(config)
    stop = stop_on_signals()

    from runtime.serving import start_broker  # late: a bad setting is reported without them
    from runtime.tenants import start_tenants

    tenants = broker = None
    try:
        tenants = start_tenants(config)
        broker = start_broker(config, tenants)
        logger.info("erxes emulation serving (prefix %r, database %s)", config.message_broker_prefix,
                    config.mongo_database)
        while not stop.wait(1.0):
            pass
        return 0
    except RuntimeFault as exc:
        logger.error("cannot start: %s", exc)
        return 1
    finally:
        if broker is not None:
            broker.stop()
        if tenants is not None:
            tenants.close()
        logger.info("erxes emulation stopped")


if __name__ == "__main__":
    sys.exit(main())
