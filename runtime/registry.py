"""Service discovery in Redis, as erxes keeps it (contract section 2).

Registration, once the runtime serves (erxes's ``join`` and ``checkQueueName``):

    SET  service:imap             <LOAD_BALANCER_ADDRESS, else http://localhost:<port>>
    SET  service:config:imap      {"dbConnectionString": <MONGO_URL>, "hasSubscriptions": false, "meta": {...}}
    SADD service:queuenames:imap  <action><suffix> ...   (the part after "imap:", as erxes senders look it up)

:class:`Registration` does it in a background thread: while Redis is unreachable it logs one WARNING and retries
with capped backoff, so the runtime never fails to start for Redis; once done it re-asserts the keys every few
minutes, in case Redis lost them. A clean stop removes ``service:imap`` when it still holds this process's address
(:func:`remove_address`: another replica that registered since keeps its key), so erxes never calls a stopped process
at an address nobody serves. Lookup (:class:`ServiceDirectory`): ``service:<name>`` is the base HTTP address
of another erxes service, for the HTTP transport.

Each kind (runtime/kinds.py) registers as a service of its own: ``service:<kind>``, ``service:config:<kind>``,
``service:queuenames:<kind>`` (``service`` below; ``imap`` by default).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable, Iterable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from runtime.broker.amqp import Backoff
from runtime.config import Config
from runtime.errors import BrokerError

__all__ = [
    "Registration",
    "ServiceDirectory",
    "remove_address",
    "queue_actions",
    "redis_client",
    "register",
    "register_queue_names",
    "service_address",
    "service_config",
]

logger = logging.getLogger(__name__)

REFRESH_SECONDS = 300.0  # how often a done registration is asserted again


def redis_client(config: Config, *, timeout: float = 5.0) -> redis.Redis:
    """A client of the configured Redis (thread-safe: it keeps a connection pool). One immediate retry (a pooled
    connection may be stale after a Redis restart) instead of redis-py's ten with backoff, so a call fails within
    about twice ``timeout``; our callers retry in their own way."""
    return redis.Redis(host=config.redis_host, port=config.redis_port, password=config.redis_password or None,
                       socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1))


DEFAULT_SERVICE = "imap"  # the name erxes's plugin-imap-api registers; app/process.py passes each kind's own

def service_address(config: Config, port: int) -> str:
    """Where erxes services reach us: ``LOAD_BALANCER_ADDRESS``, else ``http://localhost:<port>``."""
    return (config.load_balancer_address.strip() or f"http://localhost:{port}").rstrip("/")


def service_config(config: Config) -> dict[str, Any]:
    """The ``service:config:imap`` document erxes's gateway and core read."""
    return {"dbConnectionString": config.mongo_url, "hasSubscriptions": False,
            "meta": {"inboxIntegrations": [{"kind": "imap", "label": "IMap"}],
                     "logs": {"providesActivityLog": True, "consumers": {}}}}


def queue_actions(names: Iterable[str], suffix: str) -> list[str]:
    """``imap:createIntegration`` -> ``createIntegration<suffix>``: the members erxes keeps in
    ``service:queuenames:imap`` (its ``checkQueueName`` adds the part after the first ``:``)."""
    return [name.partition(":")[2] + suffix if ":" in name else name + suffix for name in names]


def register_queue_names(client: redis.Redis, actions: list[str], service: str = DEFAULT_SERVICE) -> None:
    """erxes senders refuse to publish to an action missing from ``service:queuenames:<service>``."""
    if actions:
        client.sadd(f"service:queuenames:{service}", *actions)


def register(client: redis.Redis, *, address: str, config_doc: dict[str, Any], actions: list[str],
             service: str = DEFAULT_SERVICE) -> None:
    """The three registration writes, in one round trip. Raises redis.RedisError."""
    pipe = client.pipeline(transaction=False)
    pipe.set(f"service:config:{service}", json.dumps(config_doc))
    pipe.set(f"service:{service}", address)
    if actions:
        pipe.sadd(f"service:queuenames:{service}", *actions)
    pipe.execute()


# Delete KEYS[1] only while it holds ARGV[1]: one round trip, no window between the read and the delete.
_DELETE_IF = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def remove_address(client: redis.Redis, address: str, service: str = DEFAULT_SERVICE) -> bool:
    """Remove ``service:<service>`` when it still points at ``address``; True when it did. Raises
    redis.RedisError."""
    return bool(client.eval(_DELETE_IF, 1, f"service:{service}", address))


class Registration:
    """Registers this service in Redis from a background thread; see the module docstring."""

    def __init__(self, client: redis.Redis, *, address: str, config_doc: dict[str, Any], actions: list[str],
                 backoff: Backoff | None = None, refresh: float = REFRESH_SECONDS, where: str = "Redis",
                 service: str = DEFAULT_SERVICE) -> None:
        self.service = service
        self._client = client
        self._address = address
        self._config_doc = config_doc
        self._actions = list(actions)
        self._backoff = backoff or Backoff(1.0, 60.0)
        self._refresh = refresh
        self._where = where
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def registered(self) -> bool:
        return self._done.is_set()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("the registration is already started")
        self._thread = threading.Thread(target=self._run, name=f"redis-registration-{self.service}", daemon=True)
        self._thread.start()

    def wait(self, timeout: float) -> bool:
        """True once the keys were written (at least once)."""
        return self._done.wait(timeout)

    def stop(self, timeout: float = 5.0, *, deregister: bool = False) -> None:
        """Stop retrying or refreshing. ``deregister``: also remove ``service:imap`` when it still holds our
        address (a clean stop); ``service:config:imap`` and the queue names stay, as erxes's ``leave`` leaves
        them."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if deregister and self._done.is_set():
            try:
                removed = remove_address(self._client, self._address, self.service)
            except redis.RedisError as exc:
                logger.warning("Could not remove service:%s from %s (%s): erxes may call %s until someone "
                               "registers again", self.service, self._where, exc, self._address)
                return
            if removed:
                logger.info("Removed service:%s (%s) from %s", self.service, self._address, self._where)

    def _run(self) -> None:
        outage = False
        while not self._stopping.is_set():
            try:
                register(self._client, address=self._address, config_doc=self._config_doc, actions=self._actions,
                         service=self.service)
            except redis.RedisError as exc:
                delay = self._backoff.next_delay()
                if not outage:
                    outage = True
                    logger.warning("Cannot register service:%s in %s (%s); retrying in the background: until then "
                                   "erxes services cannot find us", self.service, self._where, exc)
                else:
                    logger.debug("Still cannot register in %s: %s; next try in %.1f s", self._where, exc, delay)
                self._stopping.wait(delay)
                continue
            if not self._done.is_set() or outage:
                logger.info("Registered in %s: service:%s -> %s, %d queue names", self._where, self.service,
                            self._address, len(self._actions))
            outage = False
            self._backoff.reset()
            self._done.set()
            self._stopping.wait(self._refresh)


class ServiceDirectory:
    """Base addresses of erxes services (Redis ``service:<name>``), each cached for ``ttl`` seconds.

    erxes caches an address for the life of the process; a short cache also follows a service that moved.
    """

    def __init__(self, client: redis.Redis, *, ttl: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, float]] = {}

    def address(self, service: str) -> str | None:
        """The service's base address without a trailing ``/``, or None when none is registered.
        Raises BrokerError when Redis cannot be asked."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(service)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            raw = self._client.get(f"service:{service}")
        except redis.RedisError as exc:
            if cached is not None:  # Redis is down: an expired address beats none
                logger.debug("Redis unreachable (%s); using the last known address of %s", exc, service)
                return cached[0]
            raise BrokerError(f"cannot look up service:{service} in Redis: {exc}") from exc
        if not raw:
            return None
        address = (raw.decode() if isinstance(raw, bytes) else str(raw)).strip().rstrip("/")
        with self._lock:
            self._cache[service] = (address, now + self._ttl)
        return address

    def forget(self, service: str) -> None:
        """Drop a cached address (its service refused us: it may have moved)."""
        with self._lock:
            self._cache.pop(service, None)
