"""Configuration: ``configs.json`` (the erxes CLI's shape plus our ``imap_runtime`` section), overlaid by
environment variables with erxes's names and ours.

Precedence, lowest first: built-in defaults, the JSON file, the environment. Every value is checked here; a bad
one raises :class:`ConfigError` naming the setting, and the entry point turns that into one line and exit 2.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import urllib.parse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from runtime.errors import ConfigError
from runtime.sealing import parse_keys

__all__ = ["Config", "DEFAULTS", "ENV_SETTINGS", "load_config"]

# Our section of configs.json; keys are the Config field names. The README lists each with its default.
DEFAULTS: dict[str, Any] = {
    "port": 4000,
    "mongo_url": "mongodb://127.0.0.1:27017/imap_runtime?retryWrites=false",
    "rabbitmq_url": "amqp://guest:guest@127.0.0.1:5672/%2F",
    "message_broker_prefix": "",
    "redis_host": "127.0.0.1",
    "redis_port": 6379,
    "redis_password": "",
    "version": "os",
    "enabled_services": None,
    "rpc_timeout_ms": 30000,
    "standalone": "auto",
    "rpc_transport": "amqp",
    "customer_service": "core",
    "load_balancer_address": "",
    "lookback_days": 3,
    "idle_slice_seconds": 1.0,
    "idle_renew_seconds": 540,
    "idle_watchdog_seconds": 55,
    "imap_timeout_seconds": 30,
    "fetch_batch": 50,
    "fetch_batch_bytes": 32 * 1024 * 1024,
    "max_inflight": 200,
    "pipeline_lanes": 4,
    "max_mail_bytes": 25 * 1024 * 1024,
    "mailbox_logins_per_10_minutes": 10,
    "host_logins_per_second": 50.0,
    "host_logins_in_flight": 20,
    "restart_max_delay_seconds": 30,
    "sent_folder": "Sent",
    "log_level": "INFO",
    "log_format": "text",
    "secret_keys": "",
    "attachment_url_prefix": "",
    "leases": "redis",
    "lease_seconds": 10,
    "node_id": "",
    "oauth_redirect_url": "",
    "rpc_allowed_networks": "private",
    "rpc_token": "",
    "max_request_bytes": 15 * 1024 * 1024,
    "outbound_url_allow": "erxes",
    "outbound_allow_loopback_http": False,
    "erxes_domain": "",
    "erxes_api_url": "",
    "node_env": "development",
    "bind_address": "0.0.0.0",
    "startup_wait_seconds": 60,
    # issue 12 (doors): GraphQL document bounds, HTTP server timeouts and cap, who may start an OAuth sign-in
    "graphql_max_document_bytes": 100_000,
    "graphql_max_tokens": 5000,
    "graphql_max_aliases": 30,
    "graphql_max_depth": 20,
    "graphql_max_root_fields": 20,
    "graphql_max_fields": 1000,
    "http_header_timeout_seconds": 10.0,
    "http_body_timeout_seconds": 120.0,
    "http_idle_timeout_seconds": 60.0,
    "http_max_header_bytes": 64 * 1024,
    "http_max_connections": 1000,
    "login_allowed_users": "",
    # -- the web console at / (web/console): its admin password (empty: a one-time one printed at start), whether
    # it serves its read-only ops view with STANDALONE=false, and whether X-Forwarded-Proto may say "https"
    "console_password": "",
    "console_ops_view": False,
    "console_trust_proxy": False,
    # -- integration kinds (runtime/kinds.py): the enabled ones, by name. Only imap by default: beside erxes the
    # runtime is the drop-in for plugin-imap-api, and service:api (with its GraphQL fields) is an operator's choice
    "kinds": "imap",
    # -- the api kind (kinds/api): staff replies to callback URLs, retried with capped exponential backoff
    "api_retry_base_seconds": 1.0,
    "api_retry_max_seconds": 300.0,
    "api_retry_for_seconds": 86400.0,
    "api_delivery_timeout_seconds": 10.0,
    "api_delivery_poll_seconds": 1.0,
}

# Environment variable -> Config field. erxes's names first, then ours.
ENV_SETTINGS: dict[str, str] = {
    "PORT": "port",
    "MONGO_URL": "mongo_url",
    "RABBITMQ_HOST": "rabbitmq_url",
    "MESSAGE_BROKER_PREFIX": "message_broker_prefix",
    "REDIS_HOST": "redis_host",
    "REDIS_PORT": "redis_port",
    "REDIS_PASSWORD": "redis_password",
    "VERSION": "version",
    "ENABLED_SERVICES_JSON": "enabled_services",
    "RPC_TIMEOUT": "rpc_timeout_ms",
    "LOAD_BALANCER_ADDRESS": "load_balancer_address",
    "STANDALONE": "standalone",
    "RPC_TRANSPORT": "rpc_transport",
    "CUSTOMER_SERVICE": "customer_service",
    "IMPORT_DAYS": "lookback_days",
    "LOG_LEVEL": "log_level",
    "LOG_FORMAT": "log_format",
    "SECRET_KEYS": "secret_keys",
    "ATTACHMENT_URL_PREFIX": "attachment_url_prefix",
    "LEASES": "leases",
    "LEASE_SECONDS": "lease_seconds",
    "NODE_ID": "node_id",
    "OAUTH_REDIRECT_URL": "oauth_redirect_url",
    "RPC_ALLOWED_NETWORKS": "rpc_allowed_networks",
    "RPC_TOKEN": "rpc_token",
    "MAX_REQUEST_BYTES": "max_request_bytes",
    "OUTBOUND_URL_ALLOW": "outbound_url_allow",
    "OUTBOUND_ALLOW_LOOPBACK_HTTP": "outbound_allow_loopback_http",
    "DOMAIN": "erxes_domain",  # erxes 2.x's setup gives every service erxes's address in DOMAIN
    "MAIN_API_DOMAIN": "erxes_api_url",  # erxes 1.x
    "REACT_APP_API_URL": "erxes_api_url",  # what erxes's UI builds its /read-file links on (wins over the above)
    "NODE_ENV": "node_env",
    "BIND_ADDRESS": "bind_address",
    "STARTUP_WAIT_SECONDS": "startup_wait_seconds",
    "HTTP_MAX_CONNECTIONS": "http_max_connections",
    "LOGIN_ALLOWED_USERS": "login_allowed_users",
    "CONSOLE_PASSWORD": "console_password",
    "CONSOLE_OPS_VIEW": "console_ops_view",
    "CONSOLE_TRUST_PROXY": "console_trust_proxy",
    "KINDS": "kinds",
    "API_RETRY_BASE_SECONDS": "api_retry_base_seconds",
    "API_RETRY_MAX_SECONDS": "api_retry_max_seconds",
    "API_RETRY_FOR_SECONDS": "api_retry_for_seconds",
    "API_DELIVERY_TIMEOUT_SECONDS": "api_delivery_timeout_seconds",
    "API_DELIVERY_POLL_SECONDS": "api_delivery_poll_seconds",
}

# What ``private`` means in RPC_ALLOWED_NETWORKS: loopback and the private ranges (RFC 1918, IPv6 unique local),
# where erxes's services call each other without credentials (Docker, Kubernetes, a private VPC).
PRIVATE_NETWORKS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


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


def _parse_bool(setting: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(setting, f"must be true or false, got {raw!r}")


def _standalone(setting: str, raw: Any) -> bool | None:
    """``auto`` (None: on only where no erxes is found, runtime/detect.py), true or false."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() == "auto"):
        return None
    try:
        return _parse_bool(setting, raw)
    except ConfigError:
        raise ConfigError(setting, f"must be auto, true or false, got {raw!r}") from None


def _bind_address(setting: str, raw: Any) -> str:
    text = _text(setting, raw).strip()
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if text != "localhost":
            raise ConfigError(setting, f"must be an IP address such as 127.0.0.1 or 0.0.0.0, got {raw!r}") from None
    return text


def _setting_name(key: str) -> str:
    env = next((n for n, k in ENV_SETTINGS.items() if k == key), None)
    return f"{env} (imap_runtime.{key})" if env else f"imap_runtime.{key}"


def _number(kind: Callable[[Any], Any], low: float, high: float | None = None) -> Callable[[str, Any], Any]:
    def check(setting: str, raw: Any) -> Any:
        if isinstance(raw, bool):
            raise ConfigError(setting, f"must be a number, got {raw!r}")
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            raise ConfigError(setting, f"must be a number, got {raw!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ConfigError(setting, f"must be {bounds}, got {raw!r}")
        return value

    return check


def _text(setting: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise ConfigError(setting, f"must be a string, got {raw!r}")
    return raw


def _choice(*allowed: str) -> Callable[[str, Any], str]:
    def check(setting: str, raw: Any) -> str:
        text = _text(setting, raw).strip().lower()
        if text not in allowed:
            raise ConfigError(setting, f"must be one of {', '.join(allowed)}, got {raw!r}")
        return text

    return check


def _url(*schemes: str) -> Callable[[str, Any], str]:
    def check(setting: str, raw: Any) -> str:
        text = _text(setting, raw).strip()
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in schemes or not parts.hostname:
            raise ConfigError(setting, f"must be a {' or '.join(s + '://' for s in schemes)}host... URL")
        return text

    return check


def _services(setting: str, raw: Any) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, (list, tuple)) or not all(isinstance(s, str) for s in raw):
        raise ConfigError(setting, "must be a JSON array of service names")
    return tuple(raw)


def _networks(setting: str, raw: Any) -> tuple[str, ...]:
    """Comma-separated CIDRs or addresses, ``private`` (:data:`PRIVATE_NETWORKS`) and ``any``; normalised."""
    if isinstance(raw, str):
        items = raw.split(",")
    elif isinstance(raw, (list, tuple)) and all(isinstance(i, str) for i in raw):
        items = list(raw)
    else:
        raise ConfigError(setting, "must be a comma-separated string of networks")
    out: list[str] = []
    for item in (i.strip() for i in items):
        if item.lower() in ("private", "any"):
            out += PRIVATE_NETWORKS if item.lower() == "private" else ("0.0.0.0/0", "::/0")
        elif item:
            try:
                out.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ConfigError(setting, f"{item!r} is not a network: use CIDRs such as 10.0.0.0/8, "
                                           "addresses, 'private' or 'any'") from None
    if not out:
        raise ConfigError(setting, "must name at least one network ('private': loopback and private ranges)")
    return tuple(dict.fromkeys(out))


def _token(setting: str, raw: Any) -> str:
    text = raw if isinstance(raw, str) else None  # never quoted in an error: it is a secret
    if text is None or text and (len(text) < 16 or not all("!" <= c <= "~" for c in text)):
        raise ConfigError(setting, "must be empty (no token) or at least 16 visible ASCII characters, no spaces")
    return text


def _allow_list(setting: str, raw: Any) -> tuple[str, ...]:
    """Comma-separated URL prefixes (runtime.fence.parse_prefix) and ``erxes``; normalised."""
    from runtime.fence import ERXES, parse_prefix

    if isinstance(raw, str):
        items = raw.split(",")
    elif isinstance(raw, (list, tuple)) and all(isinstance(i, str) for i in raw):
        items = list(raw)
    else:
        raise ConfigError(setting, "must be a comma-separated string of URL prefixes")
    out: list[str] = []
    for item in (i.strip() for i in items):
        try:
            out += [ERXES] if item.lower() == ERXES else [str(parse_prefix(item))] if item else []
        except ValueError as exc:
            raise ConfigError(setting, f"{exc} (use e.g. https://erxes.example.com/gateway/read-file, or "
                                       f"'{ERXES}': erxes's file route)") from None
    return tuple(dict.fromkeys(out))


def _erxes_url(setting: str, raw: Any) -> str:
    from runtime.fence import parse_prefix

    text = _text(setting, raw).strip().rstrip("/")
    try:
        return str(parse_prefix(text)) if text else ""
    except ValueError as exc:
        raise ConfigError(setting, f"{exc} (erxes's address, e.g. https://erxes.example.com)") from None


def _names(setting: str, raw: Any) -> tuple[str, ...]:
    """A comma-separated string (or a JSON array) of user ids, emails or usernames."""
    if isinstance(raw, str):
        items = raw.split(",")
    elif isinstance(raw, (list, tuple)) and all(isinstance(i, str) for i in raw):
        items = list(raw)
    else:
        raise ConfigError(setting, "must be a comma-separated string of user ids, emails or usernames")
    return tuple(dict.fromkeys(i.strip() for i in items if i.strip()))


def _log_level(setting: str, raw: Any) -> str:
    return _choice("debug", "info", "warning", "error")(setting, raw).upper()


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "port": _number(int, 0, 65535),  # 0: any free port (tests)
    "mongo_url": _url("mongodb", "mongodb+srv"),
    "rabbitmq_url": _url("amqp", "amqps"),
    "message_broker_prefix": _text,
    "redis_host": _text,
    "redis_port": _number(int, 1, 65535),
    "redis_password": _text,
    "version": _choice("os", "saas"),
    "enabled_services": _services,
    "rpc_timeout_ms": _number(int, 1),
    "standalone": _standalone,
    "rpc_transport": _choice("amqp", "http"),
    "customer_service": _choice("core", "contacts"),
    "load_balancer_address": _text,
    "lookback_days": _number(int, 0, 3650),
    "idle_slice_seconds": _number(float, 0.05, 60),
    "idle_renew_seconds": _number(float, 1, 1740),
    "idle_watchdog_seconds": _number(float, 1, 1740),
    "imap_timeout_seconds": _number(float, 1, 600),
    "fetch_batch": _number(int, 1, 1000),
    "fetch_batch_bytes": _number(int, 0, 1024 ** 3),  # 0: by count only (fetch_batch), as before issue 12
    "max_inflight": _number(int, 1, 100000),
    "pipeline_lanes": _number(int, 1, 64),
    "max_mail_bytes": _number(int, 1024),
    "mailbox_logins_per_10_minutes": _number(int, 1, 10000),
    "host_logins_per_second": _number(float, 0.01, 100000),
    "host_logins_in_flight": _number(int, 1, 10000),
    "restart_max_delay_seconds": _number(float, 0.01, 3600),
    "sent_folder": _text,
    "log_level": _log_level,
    "log_format": _choice("text", "json"),
    "jwt_token_secret": _text,
    "secret_keys": parse_keys,
    "attachment_url_prefix": _text,
    "leases": _choice("redis", "off"),
    "lease_seconds": _number(float, 2, 600),
    "node_id": _text,
    "oauth_redirect_url": lambda setting, raw: _url("https", "http")(setting, raw) if _text(setting, raw) else "",
    "rpc_allowed_networks": _networks,
    "rpc_token": _token,
    "max_request_bytes": _number(int, 1024, 1024 ** 3),
    "outbound_url_allow": _allow_list,
    "outbound_allow_loopback_http": _parse_bool,
    "erxes_domain": _erxes_url,
    "erxes_api_url": _erxes_url,
    "node_env": lambda setting, raw: _text(setting, raw).strip().lower(),
    "bind_address": _bind_address,
    "startup_wait_seconds": _number(float, 0, 3600),
    "graphql_max_document_bytes": _number(int, 1024, 1024 ** 3),
    "graphql_max_tokens": _number(int, 100, 10 ** 7),
    "graphql_max_aliases": _number(int, 0, 10 ** 6),
    "graphql_max_depth": _number(int, 3, 1000),
    "graphql_max_root_fields": _number(int, 1, 10 ** 6),
    "graphql_max_fields": _number(int, 10, 10 ** 7),
    "http_header_timeout_seconds": _number(float, 0.1, 3600),
    "http_body_timeout_seconds": _number(float, 0.1, 86400),
    "http_idle_timeout_seconds": _number(float, 0.1, 86400),
    "http_max_header_bytes": _number(int, 1024, 16 * 1024 * 1024),
    "http_max_connections": _number(int, 1, 10 ** 6),
    "login_allowed_users": _names,
    "console_password": lambda setting, raw: _console_password(setting, raw),
    "console_ops_view": _parse_bool,
    "console_trust_proxy": _parse_bool,
    "kinds": lambda setting, raw: _kind_names(setting, raw),
    "api_retry_base_seconds": _number(float, 0.01, 3600),
    "api_retry_max_seconds": _number(float, 0.01, 86400),
    "api_retry_for_seconds": _number(float, 1, 30 * 86400),
    "api_delivery_timeout_seconds": _number(float, 0.1, 600),
    "api_delivery_poll_seconds": _number(float, 0.05, 60),
}


def _kind_names(setting: str, raw: Any) -> tuple[str, ...]:
    """A comma-separated string (or JSON array) of kind names, at least one."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ConfigError(setting, "must be a comma-separated string of kind names, e.g. imap,api")
    names = tuple(dict.fromkeys(i.strip().lower() for i in items if i.strip()))
    if not names or not all(re.fullmatch(r"[a-z][a-z0-9_-]{0,39}", n) for n in names):
        raise ConfigError(setting, f"must name at least one kind (lowercase letters, digits, - or _), got {raw!r}")
    return names


def _console_password(setting: str, raw: Any) -> str:
    if not isinstance(raw, str) or raw and (len(raw) < 8 or raw != raw.strip()):  # never quoted: a secret
        raise ConfigError(setting, "must be empty (a one-time password is printed at start) or at least 8 "
                                   "characters without surrounding spaces")
    return raw


def _validated(values: dict[str, Any]) -> Config:
    checked = {key: check(_setting_name(key), values[key]) for key, check in _CHECKS.items()}
    if checked["node_env"] == "production" and not checked["secret_keys"]:
        # never seal real mailbox passwords with the public development key
        raise ConfigError(_setting_name("secret_keys"), "is required with NODE_ENV=production (without it the "
                                                        "public development key would seal the mailbox passwords); "
                                                        "python -m runtime.admin new-key makes one")
    return Config(**checked)
