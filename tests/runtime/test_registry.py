"""Registration and lookup in the real Redis (the keys erxes reads are fixed names, so each test puts back what it
found; queue names carry a per-test suffix and are removed afterwards)."""
from __future__ import annotations

import json
import logging
import uuid
from typing import Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from runtime.broker.amqp import Backoff
from runtime.config import Config
from runtime.errors import BrokerError
from runtime.registry import (Registration, ServiceDirectory, queue_actions, register, service_address,
                              service_config)
from tests.conftest import wait_for
from tests.e2e import runtime_config
from tests.faultproxy import FaultProxy

SERVICE_KEYS = ("service:imap", "service:config:imap", "service:core", "service:inbox")


class RedisKeys:
    """Snapshot of the fixed erxes keys, put back on ``restore``; queue-name members with ``suffix`` are removed."""

    def __init__(self, client: redis.Redis, suffix: str) -> None:
        self.client = client
        self.suffix = suffix
        self._saved = {key: client.get(key) for key in SERVICE_KEYS}

    def restore(self) -> None:
        for key, value in self._saved.items():
            if value is None:
                self.client.delete(key)
            else:
                self.client.set(key, value)
        ours = [m for m in self.client.smembers("service:queuenames:imap") if m.decode().endswith(self.suffix)]
        if ours:
            self.client.srem("service:queuenames:imap", *ours)


def proxied(proxy: FaultProxy) -> redis.Redis:
    """A client through ``proxy``, as the runtime's: short timeouts, one immediate retry."""
    return redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=1, socket_connect_timeout=1,
                       retry=Retry(NoBackoff(), 1))


@pytest.fixture
def redis_conn(services: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis(host=services["REDIS_HOST"], port=int(services["REDIS_PORT"]), socket_timeout=5)
    yield client
    client.close()


@pytest.fixture
def redis_keys(redis_conn: redis.Redis) -> Iterator[RedisKeys]:
    keys = RedisKeys(redis_conn, f".r{uuid.uuid4().hex[:8]}")
    yield keys
    keys.restore()


@pytest.fixture
def config(services: dict[str, str], mongo_url: str) -> Config:
    return runtime_config(services, mongo_url=mongo_url, prefix=".x")


def test_what_erxes_reads_is_what_its_own_plugin_writes(config: Config) -> None:
    assert queue_actions(["imap:createIntegration", "imap:listen"], ".sfx") == ["createIntegration.sfx", "listen.sfx"]
    assert service_address(config, 4000) == "http://localhost:4000"
    assert service_address(config.with_overrides(load_balancer_address="http://plugin-imap-api/"), 4000) == \
        "http://plugin-imap-api"
    assert service_config(config) == {
        "dbConnectionString": config.mongo_url, "hasSubscriptions": False,
        "meta": {"inboxIntegrations": [{"kind": "imap", "label": "IMap"}],
                 "logs": {"providesActivityLog": True, "consumers": {}}}}


def test_register_writes_the_three_keys(redis_conn: redis.Redis, redis_keys: RedisKeys, config: Config) -> None:
    actions = queue_actions(["imap:createIntegration", "imap:getStatus"], redis_keys.suffix)
    register(redis_conn, address="http://plugin-imap-api:80", config_doc=service_config(config), actions=actions)
    assert redis_conn.get("service:imap") == b"http://plugin-imap-api:80"
    assert json.loads(redis_conn.get("service:config:imap") or b"") == service_config(config)
    members = {m.decode() for m in redis_conn.smembers("service:queuenames:imap")}
    assert {f"createIntegration{redis_keys.suffix}", f"getStatus{redis_keys.suffix}"} <= members


def test_an_unreachable_redis_is_retried_in_the_background(services: dict[str, str], redis_conn: redis.Redis,
                                                           redis_keys: RedisKeys, config: Config,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="runtime.registry")
    with FaultProxy(services["REDIS_HOST"], int(services["REDIS_PORT"])) as proxy:
        proxy.refuse(True)
        through_proxy = proxied(proxy)
        registration = Registration(through_proxy, address="http://localhost:1234", config_doc=service_config(config),
                                    actions=[f"listen{redis_keys.suffix}"], backoff=Backoff(0.05, 0.2))
        try:
            registration.start()  # returns at once: start-up never waits on Redis
            wait_for(lambda: "Cannot register service:imap" in caplog.text, timeout=5, message="the warning")
            assert not registration.wait(0.3)
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1, "one warning per outage, not one per try"
            proxy.refuse(False)
            assert registration.wait(5)
            assert redis_conn.get("service:imap") == b"http://localhost:1234"
            assert redis_conn.sismember("service:queuenames:imap", f"listen{redis_keys.suffix}")
        finally:
            registration.stop()
            through_proxy.close()


def test_the_directory_reads_caches_and_forgets_addresses(redis_conn: redis.Redis, redis_keys: RedisKeys,
                                                          services: dict[str, str]) -> None:
    now = [100.0]
    directory = ServiceDirectory(redis_conn, ttl=30, clock=lambda: now[0])
    redis_conn.delete("service:inbox")
    assert directory.address("inbox") is None
    redis_conn.set("service:inbox", "http://plugin-inbox-api:80/")
    assert directory.address("inbox") == "http://plugin-inbox-api:80"
    redis_conn.set("service:inbox", "http://moved:80")
    assert directory.address("inbox") == "http://plugin-inbox-api:80"  # cached
    now[0] += 31
    assert directory.address("inbox") == "http://moved:80"  # expired
    redis_conn.set("service:inbox", "http://moved-again:80")
    directory.forget("inbox")
    assert directory.address("inbox") == "http://moved-again:80"


def test_the_directory_without_redis(services: dict[str, str], redis_conn: redis.Redis,
                                     redis_keys: RedisKeys) -> None:
    redis_conn.set("service:core", "http://core:80")
    with FaultProxy(services["REDIS_HOST"], int(services["REDIS_PORT"])) as proxy:
        client = proxied(proxy)
        now = [0.0]
        directory = ServiceDirectory(client, ttl=1, clock=lambda: now[0])
        try:
            assert directory.address("core") == "http://core:80"
            proxy.refuse(True)
            proxy.cut()
            now[0] += 5
            assert directory.address("core") == "http://core:80"  # expired, but better than nothing
            with pytest.raises(BrokerError, match="cannot look up service:inbox in Redis"):
                directory.address("inbox")
        finally:
            client.close()
