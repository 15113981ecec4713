from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import runtime.config
from runtime._settings import CHECKS
from runtime.config import DEFAULTS, ENV_SETTINGS, Config, load_config
from runtime.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_configs_json_holds_the_documented_defaults():
    doc = json.loads((REPO / "configs.json").read_text())
    assert doc["imap_runtime"] == DEFAULTS
    assert load_config(REPO / "configs.json", environ={}) == load_config(environ={"IMAP_RUNTIME_CONFIG": str(
        REPO / "configs.json")})


def test_every_setting_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    for env in ENV_SETTINGS:
        assert f"`{env}`" in readme, env
    for key in DEFAULTS:
        assert f"`{key}`" in readme, key


def test_every_field_has_a_check_and_the_table_stays_whole():
    """The settings table (runtime/_settings.py) and the Config fields (runtime/config.py) live in two modules: a
    field without a check would silently keep its default, a check without a field would break load_config."""
    assert set(CHECKS) == {f.name for f in fields(Config)}
    assert set(CHECKS) == set(DEFAULTS) | {"jwt_token_secret"}  # that one only from the erxes CLI's section
    assert set(ENV_SETTINGS.values()) <= set(DEFAULTS)
    assert [name for name in runtime.config.__all__ if not hasattr(runtime.config, name)] == []


def test_environment_overrides_the_file(tmp_path):
    path = tmp_path / "configs.json"
    path.write_text(json.dumps({"imap_runtime": {"port": 1234, "standalone": True}}))
    config = load_config(path, environ={"PORT": "4321", "STANDALONE": "false", "MESSAGE_BROKER_PREFIX": "_x",
                                        "ENABLED_SERVICES_JSON": '["inbox"]', "RPC_TIMEOUT": "5000",
                                        "MONGO_URL": "mongodb://db:27017/erxes_imap"})
    assert config.port == 4321
    assert config.standalone is False
    assert config.message_broker_prefix == "_x"
    assert config.enabled_services == ("inbox",)
    assert config.rpc_timeout == 5.0
    assert config.mongo_database == "erxes_imap"
    assert config.service_enabled("core") and config.service_enabled("inbox")
    assert not config.service_enabled("contacts")


def test_erxes_cli_sections_fill_credentials(tmp_path):
    path = tmp_path / "configs.json"
    path.write_text(json.dumps({
        "mongo": {"username": "u", "password": "p@ss"},
        "rabbitmq": {"user": "r", "pass": "q", "vhost": "erxes"},
        "redis": {"password": "redispw"},
        "imap_runtime": {"mongo_url": "mongodb://m:27017/db", "rabbitmq_url": "amqp://h:5672/"}}))
    config = load_config(path, environ={})
    assert config.mongo_url == "mongodb://u:p%40ss@m:27017/db"
    assert config.rabbitmq_url == "amqp://r:q@h:5672/erxes"
    assert config.redis_password == "redispw"


@pytest.mark.parametrize("env, setting", [
    ({"PORT": "eighty"}, "PORT"),
    ({"PORT": "70000"}, "PORT"),
    ({"STANDALONE": "maybe"}, "STANDALONE"),
    ({"VERSION": "cloud"}, "VERSION"),
    ({"ENABLED_SERVICES_JSON": "[inbox"}, "ENABLED_SERVICES_JSON"),
    ({"RABBITMQ_HOST": "localhost"}, "RABBITMQ_HOST"),
    ({"MONGO_URL": "http://x"}, "MONGO_URL"),
    ({"RPC_TRANSPORT": "smoke"}, "RPC_TRANSPORT"),
    ({"RPC_TIMEOUT": "-1"}, "RPC_TIMEOUT"),
])
def test_bad_settings_name_the_setting(env, setting):
    with pytest.raises(ConfigError) as info:
        load_config(environ=env, path=REPO / "configs.json")
    assert info.value.setting.startswith(setting)


def test_unknown_key_and_bad_file(tmp_path):
    path = tmp_path / "configs.json"
    path.write_text('{"imap_runtime": {"prot": 1}}')
    with pytest.raises(ConfigError, match="imap_runtime.prot: unknown setting"):
        load_config(path, environ={})
    path.write_text("{nope")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_config(path, environ={})


def test_bad_setting_exits_2_with_one_line():
    result = subprocess.run([sys.executable, "-m", "runtime", "--config", str(REPO / "configs.json")],
                            env={"PORT": "not-a-port", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                            timeout=60, cwd=REPO)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "PORT" in lines[0] and "not-a-port" in lines[0]
