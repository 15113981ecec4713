"""What every process of the runtime shares on its command line (``imap-runtime``, ``python -m runtime.emulator``,
``python -m runtime.admin``): the settings' help text, logging set-up, and stopping on SIGTERM/SIGINT."""
from __future__ import annotations

import logging
import signal
import sys
import threading

from runtime.config import DEFAULTS, ENV_SETTINGS, Config
from runtime.logctx import TEXT_FORMAT, ContextFilter, JsonFormatter

__all__ = ["quiet_libraries", "settings_help", "setup_logging", "stop_on_signals"]

logger = logging.getLogger("runtime")


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
