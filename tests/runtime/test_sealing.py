"""runtime.sealing: authenticated encryption of secrets at rest, key rotation, plain legacy values, the setting."""
from __future__ import annotations

import logging

import pytest

from runtime.config import load_config
from runtime.errors import ConfigError, StorageError
from runtime.sealing import DEV_KEY, PREFIX, Sealer, is_sealed, new_key, parse_keys

OLD, NEW = new_key(), new_key()


def test_seal_round_trip_is_randomised_and_hides_the_secret() -> None:
    sealer = Sealer([NEW])
    a, b = (sealer.seal("hunter2-päss", context="password:inbox-1") for _ in range(2))
    assert a != b and a.startswith(PREFIX) and is_sealed(a)
    assert "hunter2" not in a
    assert sealer.unseal(a, context="password:inbox-1") == "hunter2-päss"
    assert sealer.is_current(a) and not sealer.is_current("hunter2")


def test_plain_values_read_as_they_are() -> None:
    assert Sealer([NEW]).unseal("plain-from-erxes", context="password:x") == "plain-from-erxes"
    assert not is_sealed("plain") and not is_sealed(None) and not is_sealed(123)


def test_a_value_moved_to_another_record_or_altered_does_not_unseal() -> None:
    sealer = Sealer([NEW])
    sealed = sealer.seal("pw", context="password:inbox-1")
    with pytest.raises(StorageError, match="does not unseal"):
        sealer.unseal(sealed, context="password:inbox-2")
    with pytest.raises(StorageError, match="does not unseal"):
        sealer.unseal(sealed, context="webhookSecret:inbox-1")
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(StorageError, match="does not unseal"):
        sealer.unseal(tampered, context="password:inbox-1")


def test_rotation_first_key_seals_all_keys_unseal() -> None:
    old_value = Sealer([OLD]).seal("pw", context="password:i")
    both = Sealer([NEW, OLD])
    assert both.unseal(old_value, context="password:i") == "pw"
    assert not both.is_current(old_value)
    resealed = both.seal("pw", context="password:i")
    assert both.is_current(resealed)
    assert Sealer([NEW]).unseal(resealed, context="password:i") == "pw"
    with pytest.raises(StorageError, match="not among SECRET_KEYS"):
        Sealer([NEW]).unseal(old_value, context="password:i")


def test_keys_are_checked() -> None:
    assert parse_keys("S", f" {NEW} , {OLD} ,") == (NEW, OLD)
    assert parse_keys("S", "") == ()
    assert parse_keys("S", [NEW]) == (NEW,)
    for bad in ("short", "x" * 44, 42, NEW + "AAAA"):
        with pytest.raises(ConfigError, match="32 random bytes|comma-separated"):
            parse_keys("S", bad)
    with pytest.raises(ConfigError):
        Sealer([])


def test_empty_setting_uses_the_dev_key_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="runtime.sealing")
    sealer = Sealer.from_setting(())
    assert sealer.is_dev and "SECRET_KEYS is not set" in caplog.text
    caplog.clear()
    assert not Sealer.from_setting([NEW]).is_dev and not caplog.text
    assert Sealer([DEV_KEY]).unseal(sealer.seal("x", context="c"), context="c") == "x"


def test_secret_keys_setting_from_the_environment() -> None:
    config = load_config(None, environ={"SECRET_KEYS": f"{NEW},{OLD}"})
    assert config.secret_keys == (NEW, OLD)
    assert NEW not in repr(config)
    with pytest.raises(ConfigError, match="SECRET_KEYS"):
        load_config(None, environ={"SECRET_KEYS": "not-a-key"})
    assert config.with_overrides(secret_keys=NEW).secret_keys == (NEW,)
