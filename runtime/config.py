"""Configuration: ``configs.json`` (the erxes CLI's shape plus our ``imap_runtime`` section), overlaid by
environment variables with erxes's names and ours.

Precedence, lowest first: built-in defaults, the JSON file, the environment. Every value is checked here; a bad
one raises :class:`ConfigError` naming the setting, and the entry point turns that into one line and exit 2.

This module holds the :class:`Config` every other module reads and :func:`load_config`, which reads and layers the
sources. The settings table (each setting's default, environment variable and check) is runtime/_settings.py, the
checks themselves runtime/_checks.py; the names other modules use are exported from here.
"""
from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from runtime._checks import PRIVATE_NETWORKS
from runtime._settings import CHECKS, DEFAULTS, ENV_SETTINGS, setting_name
from runtime.errors import ConfigError

__all__ = ["Config", "DEFAULTS", "ENV_SETTINGS", "PRIVATE_NETWORKS", "load_config"]


@dataclass(frozen=True)
class Config:
    port: int
    mongo_url: str
    rabbitmq_url: str
    message_broker_prefix: str
    redis_host: str
    redis_port: int
    redis_password: str
    version: str
    enabled_services: tuple[str, ...] | None
    rpc_timeout_ms: int
    standalone: bool | None  # None: ``auto``, decided at start-up (runtime/detect.py)
    rpc_transport: str
    customer_service: str
    load_balancer_address: str
    lookback_days: int
    idle_slice_seconds: float
    idle_renew_seconds: float
    idle_watchdog_seconds: float
    imap_timeout_seconds: float
    fetch_batch: int
    fetch_batch_bytes: int
    max_inflight: int
    pipeline_lanes: int
    max_mail_bytes: int
    mailbox_logins_per_10_minutes: int
    host_logins_per_second: float
    host_logins_in_flight: int
    restart_max_delay_seconds: float
    sent_folder: str
    log_level: str
    log_format: str
    jwt_token_secret: str = field(default="", repr=False)
    secret_keys: tuple[str, ...] = field(default=(), repr=False)
    attachment_url_prefix: str = ""
    leases: str = "redis"
    lease_seconds: float = 10
    node_id: str = ""
    oauth_redirect_url: str = ""  # the public address of GET /login (kinds/imap/login.py)
    rpc_allowed_networks: tuple[str, ...] = PRIVATE_NETWORKS  # CIDRs allowed to call POST /rpc/<procedure>
    rpc_token: str = field(default="", repr=False)  # when set, POST /rpc needs "Authorization: Bearer <token>"
    max_request_bytes: int = 15 * 1024 * 1024  # request body limit of every route but /receive (max_mail_bytes)
    # The outbound fence (runtime/fence.py): URL prefixes always fetched ("erxes": erxes's file route, from the two
    # erxes settings below), and whether loopback addresses may be fetched (tests only).
    outbound_url_allow: tuple[str, ...] = ("erxes",)
    outbound_allow_loopback_http: bool = False
    erxes_domain: str = ""  # DOMAIN, else configs.json's top-level "domain" (the erxes CLI's)
    erxes_api_url: str = ""  # REACT_APP_API_URL, else MAIN_API_DOMAIN
    node_env: str = "development"  # erxes's NODE_ENV; "production" refuses to start without SECRET_KEYS
    bind_address: str = "0.0.0.0"  # the HTTP server's listen address (the demo: 127.0.0.1)
    startup_wait_seconds: float = 60  # how long start-up waits for MongoDB, RabbitMQ and Redis to answer
    # GraphQL documents are bounded before they are validated (web/graphql.py): size before parsing, tokens while
    # parsing, then aliases, depth, root fields and fields (fragments expanded) by a walk of the parsed document.
    graphql_max_document_bytes: int = 100_000
    graphql_max_tokens: int = 5000
    graphql_max_aliases: int = 30
    graphql_max_depth: int = 20
    graphql_max_root_fields: int = 20
    graphql_max_fields: int = 1000
    # The HTTP server (web/limits.py LimitedHTTPServer): a connection's first request head must arrive within the
    # header timeout, a body within the body timeout, a kept-alive connection is closed after the idle timeout
    # without a request; past max_connections a new connection gets 503 and is closed.
    http_header_timeout_seconds: float = 10.0
    http_body_timeout_seconds: float = 120.0
    http_idle_timeout_seconds: float = 60.0
    http_max_header_bytes: int = 64 * 1024
    http_max_connections: int = 1000
    # GET /login?integrationId= (kinds/imap/login.py): erxes owners (isOwner in the user header) and these users (ids,
    # emails or usernames) may start a sign-in.
    login_allowed_users: tuple[str, ...] = ()
    # the web console (web/console): kept only to hash at start (never logged, never stored)
    console_password: str = field(default="", repr=False)
    console_ops_view: bool = False  # with STANDALONE=false: serve the read-only ops view (mailboxes, health)
    console_trust_proxy: bool = False  # behind a TLS-terminating proxy: X-Forwarded-Proto=https marks cookies Secure
    kinds: tuple[str, ...] = ("imap",)  # the enabled integration kinds (runtime/kinds.py), in start-up order
    # the api kind's deliveries (kinds/api/delivery.py): first retry after base, doubling up to max (jittered to
    # 50-100 %), given up retry_for after the first try; one POST within timeout; the outbox read every poll
    api_retry_base_seconds: float = 1.0
    api_retry_max_seconds: float = 300.0
    api_retry_for_seconds: float = 86400.0
    api_delivery_timeout_seconds: float = 10.0
    api_delivery_poll_seconds: float = 1.0

    @property
    def rpc_timeout(self) -> float:
        """RPC timeout in seconds."""
        return self.rpc_timeout_ms / 1000.0

    @property
    def mongo_database(self) -> str:
        path = urllib.parse.urlsplit(self.mongo_url).path.lstrip("/")
        return path or "imap_runtime"

    def service_enabled(self, name: str) -> bool:
        """erxes's rule: ``core`` is always enabled; without ENABLED_SERVICES_JSON every service is."""
        return name == "core" or self.enabled_services is None or name in self.enabled_services

    def with_overrides(self, **changes: Any) -> Config:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return _validated(values)


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read defaults, then the JSON file (``path``, else ``$IMAP_RUNTIME_CONFIG``, else ``./configs.json`` when it
    exists), then ``environ`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = dict(DEFAULTS)
    values["jwt_token_secret"] = ""
    chosen = path or env.get("IMAP_RUNTIME_CONFIG")
    if chosen is None and Path("configs.json").is_file():
        chosen = "configs.json"
    if chosen is not None:
        values.update(_read_file(Path(chosen)))
    for name, key in ENV_SETTINGS.items():
        raw = env.get(name)
        if raw is not None and raw != "":
            values[key] = _from_env(name, key, raw)
    return _validated(values)


def _read_file(path: Path) -> dict[str, Any]:
    setting = f"config file {path}"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(setting, "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(setting, f"cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(setting, f"is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(doc, dict):
        raise ConfigError(setting, "must hold a JSON object")
    values: dict[str, Any] = {}
    # The erxes CLI's sections: credentials and secrets that erxes deployments already carry.
    if isinstance(doc.get("jwt_token_secret"), str):
        values["jwt_token_secret"] = doc["jwt_token_secret"]
    redis = doc.get("redis")
    if isinstance(redis, dict) and redis.get("password"):
        values["redis_password"] = redis["password"]
    ours = doc.get("imap_runtime", {})
    if not isinstance(ours, dict):
        raise ConfigError("imap_runtime", "must be a JSON object")
    unknown = sorted(set(ours) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"imap_runtime.{unknown[0]}", f"unknown setting (known: {', '.join(sorted(DEFAULTS))})")
    values.update(ours)
    if not values.get("erxes_domain") and isinstance(doc.get("domain"), str):
        values["erxes_domain"] = doc["domain"]  # erxes's address, in the erxes CLI's configs.json
    mongo = doc.get("mongo")
    if isinstance(mongo, dict) and mongo.get("username") and "mongo_url" in values:
        values["mongo_url"] = _with_credentials(values["mongo_url"], mongo["username"], mongo.get("password", ""))
    rabbit = doc.get("rabbitmq")
    if isinstance(rabbit, dict) and rabbit.get("user") and "rabbitmq_url" in values:
        url = _with_credentials(values["rabbitmq_url"], rabbit["user"], rabbit.get("pass", ""))
        if rabbit.get("vhost"):
            parts = urllib.parse.urlsplit(url)
            url = parts._replace(path="/" + urllib.parse.quote(rabbit["vhost"], safe="")).geturl()
        values["rabbitmq_url"] = url
    return values


def _with_credentials(url: str, user: str, password: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username:
        return url
    cred = urllib.parse.quote(user, safe="") + (":" + urllib.parse.quote(password, safe="") if password else "")
    return parts._replace(netloc=f"{cred}@{parts.netloc}").geturl()


def _from_env(name: str, key: str, raw: str) -> Any:
    if key == "enabled_services":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise ConfigError(name, f"must be a JSON array of service names, got {raw!r}") from None
    return raw


def _validated(values: dict[str, Any]) -> Config:
    checked = {key: check(setting_name(key), values[key]) for key, check in CHECKS.items()}
    if checked["node_env"] == "production" and not checked["secret_keys"]:
        # never seal real mailbox passwords with the public development key
        raise ConfigError(setting_name("secret_keys"), "is required with NODE_ENV=production (without it the "
                                                       "public development key would seal the mailbox passwords); "
                                                       "python -m runtime.admin new-key makes one")
    return Config(**checked)
