"""The servers the runtime needs, asked one short question each: at start-up (:func:`wait_for_servers`, since
containers start in any order) and by ``imap-runtime check`` (:func:`run_check`, like ``nginx -t``).

Each probe returns None when the server answers, else one line of reason (never a driver's page of text, never a
URL: they carry credentials). Start-up waits up to ``startup_wait_seconds`` for each, with a progress line every
few seconds, then gives up with one line naming the server and the reason.
"""
from __future__ import annotations

import logging
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, TextIO

import pika
import pika.exceptions
import pymongo
import redis
from pymongo.errors import PyMongoError

from runtime.config import Config
from runtime.errors import RuntimeFault

__all__ = ["Server", "ServersUnavailable", "run_check", "servers", "wait_for_servers"]

logger = logging.getLogger(__name__)

PROGRESS_EVERY = 5.0  # seconds between two "still waiting" lines


class ServersUnavailable(RuntimeFault):
    """A server the runtime needs did not answer within ``startup_wait_seconds``."""


@dataclass(frozen=True)
class Server:
    name: str  # MongoDB, RabbitMQ, Redis
    where: str  # host:port, no credentials
    probe: Callable[[float], str | None]  # timeout -> None when it answers, else the reason


def short(exc: BaseException) -> str:
    """One line of an error: pymongo's carry the whole topology, pika's are often empty."""
    text = str(exc) or repr(exc)
    for cut in (" (configured timeouts", ", Timeout:", ", Topology Description"):
        text = text.split(cut)[0]
    text = text.splitlines()[0] if text else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _host_port(url: str, default_port: int) -> str:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port or default_port
    except ValueError:
        port = default_port
    return f"{parts.hostname}:{port}"


def ping_mongo(config: Config, timeout: float) -> str | None:
    client: pymongo.MongoClient[Any] = pymongo.MongoClient(
        config.mongo_url, serverSelectionTimeoutMS=max(100, int(timeout * 1000)),
        connectTimeoutMS=max(100, int(timeout * 1000)))
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        return short(exc)
    finally:
        client.close()
    return None


def ping_rabbitmq(config: Config, timeout: float) -> str | None:
    params = pika.URLParameters(config.rabbitmq_url)
    params.socket_timeout = params.stack_timeout = params.blocked_connection_timeout = timeout
    params.connection_attempts = 1
    params.client_properties = {"connection_name": "imap-runtime check"}
    pika_log = logging.getLogger("pika")
    level = pika_log.level
    pika_log.setLevel(logging.CRITICAL + 1)  # pika logs each failed try at ERROR, a page per try: we say it once
    try:
        pika.BlockingConnection(params).close()
    except pika.exceptions.ProbableAuthenticationError:
        return "the user name or password was refused"
    except pika.exceptions.ProbableAccessDeniedError:
        return "access to the virtual host was refused"
    except (pika.exceptions.AMQPError, OSError) as exc:
        inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
        return short(inner)
    finally:
        pika_log.setLevel(level)
    return None


def ping_redis(config: Config, timeout: float) -> str | None:
    client = redis.Redis(host=config.redis_host, port=config.redis_port, password=config.redis_password or None,
                         socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    except redis.RedisError as exc:
        return short(exc)
    finally:
        client.close()
    return None


def servers(config: Config, *, redis_needed: bool | None = None) -> list[Server]:
    """The servers start-up needs: MongoDB, RabbitMQ, and Redis when leases are kept there."""
    out = [Server("MongoDB", _host_port(config.mongo_url, 27017), lambda t: ping_mongo(config, t)),
           Server("RabbitMQ", _host_port(config.rabbitmq_url, 5672), lambda t: ping_rabbitmq(config, t))]
    if config.leases == "redis" if redis_needed is None else redis_needed:
        out.append(Server("Redis", f"{config.redis_host}:{config.redis_port}", lambda t: ping_redis(config, t)))
    return out


def wait_for_servers(items: list[Server], *, bound: float, clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], object] = time.sleep, probe_timeout: float = 2.0) -> None:
    """Wait until every server answers, up to ``bound`` seconds in all; a progress line every few seconds while
    one does not. Raises ServersUnavailable naming the server and its last reason."""
    start = clock()
    last_note = start
    for server in items:
        while True:
            reason = server.probe(probe_timeout)
            if reason is None:
                break
            waited = clock() - start
            if waited >= bound:
                raise ServersUnavailable(f"{server.name} at {server.where} did not answer within {bound:g} s "
                                         f"(STARTUP_WAIT_SECONDS): {reason}")
            if clock() - last_note >= PROGRESS_EVERY or last_note == start:
                logger.info("waiting for %s at %s (%s): %.0f s of %g s", server.name, server.where, reason,
                            waited, bound)
                last_note = clock()
            sleep(min(1.0, max(0.0, bound - waited)))


def run_check(config: Config, *, out: TextIO, timeout: float = 5.0) -> int:
    """``imap-runtime check``: one line per item (``ok``/``FAIL``), 0 when all pass, else 1."""
    failures = 0

    def line(ok: bool, item: str, detail: str) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        print(f"{'ok  ' if ok else 'FAIL'}  {item}: {detail}", file=out, flush=True)

    line(True, "configuration", "valid")
    reachable: dict[str, bool] = {}
    for server in servers(config, redis_needed=True):
        reason = server.probe(timeout)
        reachable[server.name] = reason is None
        if server.name == "Redis" and config.leases != "redis":
            line(True, f"Redis at {server.where}", "answers" if reason is None else
                 f"does not answer ({reason}); needed only for registration (LEASES=off)")
            continue
        line(reason is None, f"{server.name} at {server.where}", "answers" if reason is None else reason)
    if reachable.get("MongoDB"):
        from runtime.kinds import load_kinds  # late: the kinds' code is loaded only for this

        for kind in load_kinds(config.kinds):
            for ok, item, detail in kind.check(config, timeout=timeout):
                line(ok, item, detail)
    else:
        line(False, "mailboxes", "not checked: MongoDB does not answer")
    return 0 if failures == 0 else 1
