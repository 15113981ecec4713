"""runtime/detect.py's decision, on fakes of Redis and of the queues' consumer counts (no servers)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from runtime.config import load_config
from runtime.detect import MARKER_QUEUE, decide, emulation_queues
from runtime.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


class FakeRedis:
    def __init__(self, keys: set[str] | None = None, down: bool = False) -> None:
        self.keys = keys or set()
        self.down = down
        self._asked: list[str] = []

    def pipeline(self, transaction: bool = True) -> FakeRedis:
        self._asked = []
        return self

    def exists(self, key: str) -> None:
        self._asked.append(key)

    def execute(self) -> list[int]:
        if self.down:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        return [int(k in self.keys) for k in self._asked]


def config(**overrides: Any) -> Any:
    return load_config(REPO / "configs.json", environ={}).with_overrides(message_broker_prefix=".x", **overrides)


def counts(**busy: int) -> Any:
    def ask(queues: list[str]) -> dict[str, int]:
        """busy: consumers per service (core, inbox) and of the marker queue (marker)."""
        return {q: busy.get("marker" if q.startswith(MARKER_QUEUE) else q.split(":", 1)[0], 0) for q in queues}
    return ask


def test_the_shipped_default_is_auto_and_nothing_found_turns_the_emulation_on():
    cfg = config()
    assert cfg.standalone is None
    mode = decide(cfg, redis_client=FakeRedis(), consumers=counts())  # type: ignore[arg-type]
    assert mode.standalone is True and mode.setting == "auto" and "no erxes found" in mode.reason


@pytest.mark.parametrize("overrides, redis_keys, busy, expected", [
    ({"enabled_services": ["contacts", "imap"]}, set(), {}, "ENABLED_SERVICES_JSON names contacts"),
    ({}, {"service:core"}, {}, "Redis holds service:core"),
    ({}, set(), {"inbox": 1}, "inbox:integrations.receive.x (1)"),
    ({}, set(), {"inbox": 3, "marker": 2}, "inbox:integrations.receive.x (1)"),  # two are ours, one is not
])
def test_each_signal_alone_finds_erxes(overrides, redis_keys, busy, expected):
    mode = decide(config(**overrides), redis_client=FakeRedis(redis_keys), consumers=counts(**busy))  # type: ignore
    assert mode.standalone is False and expected in mode.reason
    with pytest.raises(ConfigError, match="true, but erxes runs here") as info:
        decide(config(standalone=True, **overrides), redis_client=FakeRedis(redis_keys),  # type: ignore[arg-type]
               consumers=counts(**busy))
    assert expected in str(info.value)


def test_consumers_of_our_own_emulations_are_not_erxes():
    mode = decide(config(standalone=True), redis_client=FakeRedis(),  # type: ignore[arg-type]
                  consumers=counts(core=2, inbox=2, marker=2))
    assert mode.standalone is True


def test_auto_keeps_the_emulation_off_when_it_cannot_rule_erxes_out():
    mode = decide(config(), redis_client=FakeRedis(down=True), consumers=counts())  # type: ignore[arg-type]
    assert mode.standalone is False and "cannot rule erxes out" in mode.reason and "Connection refused" in mode.reason

    def unreachable(queues: list[str]) -> dict[str, int]:
        raise OSError("connection refused")

    mode = decide(config(), redis_client=FakeRedis(), consumers=unreachable)  # type: ignore[arg-type]
    assert mode.standalone is False and "RabbitMQ did not answer" in mode.reason


def test_false_asks_nothing():
    def never(queues: list[str]) -> dict[str, int]:
        raise AssertionError("asked")

    assert decide(config(standalone=False), redis_client=None, consumers=never).standalone is False


def test_detection_looks_at_the_queues_with_this_runtime_s_suffix():
    queues = emulation_queues(config(customer_service="contacts"))
    assert "contacts:customers.findOne.x" in queues and "inbox:conversationClientMessageInserted.x" in queues
    assert all(q.endswith(".x") for q in queues)


@pytest.mark.parametrize("raw, expected", [("auto", None), ("AUTO", None), ("true", True), ("off", False)])
def test_standalone_setting_takes_auto_true_false(raw, expected):
    assert load_config(REPO / "configs.json", environ={"STANDALONE": raw}).standalone is expected
