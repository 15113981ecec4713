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


# -- issue 12 item 10: the tenant is bound into the associated data; values sealed before still open --------------
def test_the_tenant_is_bound_in_and_the_legacy_form_opens_as_the_second_context() -> None:
    sealer = Sealer([NEW])
    current = sealer.seal("pw", context="password:acme:inbox-1")
    legacy = sealer.seal("pw", context="password:inbox-1")
    contexts = ("password:acme:inbox-1", "password:inbox-1")
    assert sealer.unseal_with(current, contexts=contexts) == ("pw", 0)
    assert sealer.unseal_with(legacy, contexts=contexts) == ("pw", 1)
    with pytest.raises(StorageError, match="does not unseal"):  # another tenant's database, same inbox id
        sealer.unseal_with(current, contexts=("password:other:inbox-1", "password:inbox-1"))


def test_storage_reads_legacy_sealed_secrets_and_reseals_them_with_the_tenant(mongo_url) -> None:
    from runtime.tenants import Tenants

    sealer = Sealer([NEW])
    tenants = Tenants(mongo_url, database=mongo_url.rsplit("/", 1)[1].split("?")[0], saas=True, sealer=sealer)
    try:
        acme, other = tenants.storage("acme"), tenants.storage("other")
        # written by the version before: associated data without the tenant
        hook = "hook-secret-9f3a1c"
        acme.integrations.insert_one({"inboxId": "inbox-1", "host": "h", "user": "u",
                                      "password": sealer.seal("old-pw", context="password:inbox-1"),
                                      "webhookSecret": sealer.seal(hook, context="webhookSecret:inbox-1")})
        assert acme.get_integration("inbox-1")["password"] == "old-pw"
        raw = acme.integrations.find_one({"inboxId": "inbox-1"})
        assert sealer.unseal_with(raw["password"], contexts=("password:acme:inbox-1",)) == ("old-pw", 0)
        assert sealer.unseal_with(raw["webhookSecret"], contexts=("webhookSecret:acme:inbox-1",)) == (hook, 0)
        assert acme.get_integration("inbox-1")["webhookSecret"] == hook  # and it reads the same afterwards

        # a new write seals with the tenant; copied into another tenant's database it does not open
        acme.save_integration("inbox-2", {"host": "h", "user": "u", "password": "new-pw"})
        copied = acme.integrations.find_one({"inboxId": "inbox-2"}, {"_id": 0})
        other.integrations.insert_one(copied)
        with pytest.raises(StorageError, match="does not unseal"):
            other.get_integration("inbox-2")

        # reseal counts a legacy value as work to do, and then as current
        acme.integrations.insert_one({"inboxId": "inbox-3", "host": "h", "user": "u",
                                      "password": sealer.seal("pw3", context="password:inbox-3")})
        changed, current, failed = acme.reseal_integrations()
        assert (changed, failed) == (1, []) and current == 2
        raw = acme.integrations.find_one({"inboxId": "inbox-3"})
        assert sealer.unseal_with(raw["password"], contexts=("password:acme:inbox-3",)) == ("pw3", 0)
    finally:
        for name in ("acme", "other"):
            tenants.base.db.client.drop_database(f"{tenants._database}_{name}")
        tenants.close()
