"""How one setting's value is checked, for runtime/config.py; which setting gets which check is the table in
runtime/_settings.py.

Each check takes the setting's name, for its error, and the raw value, a JSON value from ``configs.json`` or a
string from the environment; it returns the value the :class:`~runtime.config.Config` field holds, or raises
:class:`ConfigError` naming the setting. A check of a secret never quotes the value it refuses.
"""
from __future__ import annotations

import ipaddress
import re
import urllib.parse
from typing import Any, Callable

from runtime.errors import ConfigError

__all__ = ["PRIVATE_NETWORKS", "allow_list", "bind_address", "boolean", "choice", "console_password", "erxes_url",
           "kind_names", "log_level", "networks", "number", "services", "standalone", "string", "token", "url",
           "user_names"]

# What ``private`` means in RPC_ALLOWED_NETWORKS: loopback and the private ranges (RFC 1918, IPv6 unique local),
# where erxes's services call each other without credentials (Docker, Kubernetes, a private VPC).
PRIVATE_NETWORKS = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


def boolean(setting: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(setting, f"must be true or false, got {raw!r}")


def standalone(setting: str, raw: Any) -> bool | None:
    """``auto`` (None: on only where no erxes is found, runtime/detect.py), true or false."""
    if raw is None or (isinstance(raw, str) and raw.strip().lower() == "auto"):
        return None
    try:
        return boolean(setting, raw)
    except ConfigError:
        raise ConfigError(setting, f"must be auto, true or false, got {raw!r}") from None


def bind_address(setting: str, raw: Any) -> str:
    text = string(setting, raw).strip()
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if text != "localhost":
            raise ConfigError(setting, f"must be an IP address such as 127.0.0.1 or 0.0.0.0, got {raw!r}") from None
    return text


def number(kind: Callable[[Any], Any], low: float, high: float | None = None) -> Callable[[str, Any], Any]:
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


def string(setting: str, raw: Any) -> str:
    if not isinstance(raw, str):
        raise ConfigError(setting, f"must be a string, got {raw!r}")
    return raw


def choice(*allowed: str) -> Callable[[str, Any], str]:
    def check(setting: str, raw: Any) -> str:
        text = string(setting, raw).strip().lower()
        if text not in allowed:
            raise ConfigError(setting, f"must be one of {', '.join(allowed)}, got {raw!r}")
        return text

    return check


def url(*schemes: str) -> Callable[[str, Any], str]:
    def check(setting: str, raw: Any) -> str:
        text = string(setting, raw).strip()
        parts = urllib.parse.urlsplit(text)
        if parts.scheme not in schemes or not parts.hostname:
            raise ConfigError(setting, f"must be a {' or '.join(s + '://' for s in schemes)}host... URL")
        return text

    return check


def services(setting: str, raw: Any) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, (list, tuple)) or not all(isinstance(s, str) for s in raw):
        raise ConfigError(setting, "must be a JSON array of service names")
    return tuple(raw)


def networks(setting: str, raw: Any) -> tuple[str, ...]:
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


def token(setting: str, raw: Any) -> str:
    text = raw if isinstance(raw, str) else None  # never quoted in an error: it is a secret
    if text is None or text and (len(text) < 16 or not all("!" <= c <= "~" for c in text)):
        raise ConfigError(setting, "must be empty (no token) or at least 16 visible ASCII characters, no spaces")
    return text


def allow_list(setting: str, raw: Any) -> tuple[str, ...]:
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


def erxes_url(setting: str, raw: Any) -> str:
    from runtime.fence import parse_prefix

    text = string(setting, raw).strip().rstrip("/")
    try:
        return str(parse_prefix(text)) if text else ""
    except ValueError as exc:
        raise ConfigError(setting, f"{exc} (erxes's address, e.g. https://erxes.example.com)") from None


def user_names(setting: str, raw: Any) -> tuple[str, ...]:
    """A comma-separated string (or a JSON array) of user ids, emails or usernames."""
    if isinstance(raw, str):
        items = raw.split(",")
    elif isinstance(raw, (list, tuple)) and all(isinstance(i, str) for i in raw):
        items = list(raw)
    else:
        raise ConfigError(setting, "must be a comma-separated string of user ids, emails or usernames")
    return tuple(dict.fromkeys(i.strip() for i in items if i.strip()))


def log_level(setting: str, raw: Any) -> str:
    return choice("debug", "info", "warning", "error")(setting, raw).upper()


def kind_names(setting: str, raw: Any) -> tuple[str, ...]:
    """A comma-separated string (or JSON array) of kind names, at least one."""
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ConfigError(setting, "must be a comma-separated string of kind names, e.g. imap,api")
    names = tuple(dict.fromkeys(i.strip().lower() for i in items if i.strip()))
    if not names or not all(re.fullmatch(r"[a-z][a-z0-9_-]{0,39}", n) for n in names):
        raise ConfigError(setting, f"must name at least one kind (lowercase letters, digits, - or _), got {raw!r}")
    return names


def console_password(setting: str, raw: Any) -> str:
    if not isinstance(raw, str) or raw and (len(raw) < 8 or raw != raw.strip()):  # never quoted: a secret
        raise ConfigError(setting, "must be empty (a one-time password is printed at start) or at least 8 "
                                   "characters without surrounding spaces")
    return raw
