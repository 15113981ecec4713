"""Does erxes run here? ``STANDALONE=auto`` turns the erxes emulation (runtime/standalone.py) on only where it
does not, and ``STANDALONE=true`` beside erxes stops start-up: an emulation consuming erxes's queues beside the real
core and inbox would get every second message (RabbitMQ round-robins), and those customers and conversations would
vanish into the runtime's own database.

erxes is found when any of these holds (each piece of evidence is one short sentence, for ``/ready`` and the log):

- ``ENABLED_SERVICES_JSON`` names ``core``, ``contacts`` or ``inbox``;
- Redis holds ``service:core``, ``service:contacts`` or ``service:inbox`` (erxes services register there);
- a queue the emulation would consume (with this runtime's ``MESSAGE_BROKER_PREFIX``) already has a consumer
  that is not another imap-runtime's emulation.

Our own emulations (several nodes in standalone mode share them: scripts/nodes.sh) are told apart by a marker
queue, :data:`MARKER_QUEUE` + suffix, which every in-process emulation consumes on the same connection as its other
queues: a queue's consumers beyond the marker's are someone else's. ``python -m runtime.emulator`` (erxes's
stand-in in the tests and benchmarks) does not consume it, so it counts as erxes.

When a signal cannot be read (Redis or RabbitMQ does not answer), ``auto`` keeps the emulation off: a runtime
whose calls nobody answers loses nothing (mail waits for erxes), an emulation beside erxes loses data.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import pika
import pika.exceptions
import redis

from runtime.config import Config
from runtime.errors import ConfigError

__all__ = ["ERXES_SERVICES", "MARKER_QUEUE", "Mode", "decide", "emulation_queues", "queue_consumers"]

logger = logging.getLogger(__name__)

ERXES_SERVICES = ("core", "contacts", "inbox")
MARKER_QUEUE = "imap-runtime:emulation"  # consumed by every in-process emulation; never by erxes


@dataclass(frozen=True)
class Mode:
    """The chosen mode: ``standalone`` (the emulation runs), the setting it came from and why."""

    standalone: bool
    setting: str  # auto, true or false
    reason: str

    def report(self) -> dict[str, Any]:
        return {"standalone": self.standalone, "setting": self.setting, "reason": self.reason}

    def describe(self) -> str:
        what = "standalone (the erxes emulation runs here)" if self.standalone else "erxes (calls go to erxes)"
        return f"mode {what}, STANDALONE={self.setting}: {self.reason}"


def emulation_queues(config: Config) -> list[str]:
    """The queues the emulation would consume, with this runtime's suffix (the marker not included)."""
    from runtime.standalone import Standalone

    fake = Standalone(None, customer_service=config.customer_service)
    names = [*fake.rpc_procedures(), *fake.plain_procedures()]
    return [name + config.message_broker_prefix for name in names]


class _QuietMissingQueue(logging.Filter):
    """pika logs a WARNING for every channel the broker closes; a passive declare of a queue nobody declared yet
    is an answer here ("no consumer"), not a problem. The runtime's own broker never declares passively."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "NOT_FOUND - no queue" not in record.getMessage()


_QUIET = _QuietMissingQueue()


def queue_consumers(url: str, queues: list[str], *, timeout: float = 5.0) -> dict[str, int]:
    """Each queue's consumer count (0 for a queue that does not exist), by passive declares. Raises
    pika.exceptions.AMQPError or OSError when RabbitMQ cannot be asked."""
    channel_log = logging.getLogger("pika.channel")
    if _QUIET not in channel_log.filters:
        channel_log.addFilter(_QUIET)
    params = pika.URLParameters(url)
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    params.blocked_connection_timeout = timeout
    params.connection_attempts = 1
    params.client_properties = {"connection_name": "imap-runtime detect"}
    conn = pika.BlockingConnection(params)
    counts: dict[str, int] = {}
    try:
        for queue in queues:
            channel = conn.channel()
            try:
                frame = channel.queue_declare(queue, passive=True)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                counts[queue] = 0  # no such queue: nobody consumes it (the channel is closed by the broker)
                continue
            counts[queue] = int(frame.method.consumer_count)
            channel.close()
    finally:
        conn.close()
    return counts


def erxes_evidence(config: Config, *, redis_client: redis.Redis | None,
                   consumers: Callable[[list[str]], dict[str, int]]) -> tuple[list[str], list[str]]:
    """(evidence that erxes runs, signals that could not be read)."""
    found: list[str] = []
    unknown: list[str] = []
    named = [s for s in ERXES_SERVICES if config.enabled_services and s in config.enabled_services]
    if named:
        found.append(f"ENABLED_SERVICES_JSON names {', '.join(named)}")
    if redis_client is not None:
        keys = [f"service:{s}" for s in ERXES_SERVICES]
        try:
            pipe = redis_client.pipeline(transaction=False)
            for key in keys:
                pipe.exists(key)
            present = [key for key, n in zip(keys, pipe.execute()) if n]
        except redis.RedisError as exc:
            unknown.append(f"Redis at {config.redis_host}:{config.redis_port} did not answer ({_first_line(exc)})")
        else:
            if present:
                found.append(f"Redis holds {', '.join(present)}")
    queues = emulation_queues(config)
    marker = MARKER_QUEUE + config.message_broker_prefix
    try:
        counts = consumers([marker, *queues])
    except (pika.exceptions.AMQPError, OSError) as exc:
        unknown.append(f"RabbitMQ did not answer ({_first_line(exc) or type(exc).__name__})")
    else:
        ours = counts.get(marker, 0)
        busy = [f"{q} ({counts[q] - ours})" for q in queues if counts.get(q, 0) > ours]
        if busy:
            found.append(f"queue{'s' if len(busy) > 1 else ''} {', '.join(busy)} already consumed")
    return found, unknown


def decide(config: Config, *, redis_client: redis.Redis | None,
           consumers: Callable[[list[str]], dict[str, int]] | None = None) -> Mode:
    """The mode for ``config.standalone`` (None: auto). Raises ConfigError (exit 2) for STANDALONE=true beside
    erxes."""
    if config.standalone is False:
        return Mode(False, "false", "set so")
    ask = consumers or (lambda queues: queue_consumers(config.rabbitmq_url, queues))
    found, unknown = erxes_evidence(config, redis_client=redis_client, consumers=ask)
    if config.standalone is True:
        if found:
            raise ConfigError("STANDALONE (imap_runtime.standalone)",
                              f"true, but erxes runs here: {'; '.join(found)}. Its emulation would take erxes's "
                              "messages: use STANDALONE=auto or false")
        if unknown:
            logger.warning("STANDALONE=true: could not rule erxes out (%s)", "; ".join(unknown))
        return Mode(True, "true", "set so; no erxes found")
    if found:
        return Mode(False, "auto", f"erxes found: {'; '.join(found)}")
    if unknown:
        return Mode(False, "auto", f"cannot rule erxes out: {'; '.join(unknown)}; set STANDALONE=true to run the "
                                   "emulation anyway")
    return Mode(True, "auto", "no erxes found (ENABLED_SERVICES_JSON, Redis service:core/contacts/inbox, "
                              "consumers of the emulation's queues)")


def _first_line(exc: BaseException) -> str:
    text = (str(exc) or repr(exc)).splitlines()[0] if (str(exc) or repr(exc)) else ""
    return text if len(text) <= 160 else text[:157] + "..."
