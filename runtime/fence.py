"""The outbound fence: every HTTP request the runtime makes to a URL a caller gave (attachment URLs of
``imapSendMail`` / ``imap:imapMessage.create``, OAuth2 token endpoints) goes through :meth:`Fence.fetch`.

A URL is fetched when it starts with one of the allowed prefixes (``OUTBOUND_URL_ALLOW``: erxes's own file route
by default, :func:`erxes_prefixes`), matched on the parsed URL (scheme, host, port, path prefix; never a string
``startswith``), or else when every address its host resolves to is public (:func:`address_problem`: no loopback,
private, link-local, shared, reserved, documentation, multicast or IPv4-in-IPv6 forms). The host is resolved once
and the connection goes to an address that was checked (no second DNS answer); the Host header, SNI and the
certificate check keep the host name. Every redirect hop is checked again. One deadline covers the whole fetch
(DNS, connect, TLS, every redirect, every read): the socket's timeout is set to the time left before each read,
so a server that trickles bytes cannot hold a request past it. Environment proxies (``HTTP(S)_PROXY``) are never
used: a proxy would resolve the name itself, out of the fence's sight. Loopback addresses are allowed only with
``OUTBOUND_ALLOW_LOOPBACK_HTTP`` (the tests' local servers). The connections are in :mod:`runtime._pinned`.

Refusals raise :class:`OutboundRefused`, failures :class:`OutboundError`, a body over the limit
:class:`OutboundTooLarge`; their texts show a URL without its query (it may carry a signed key).

:func:`shared` is the process's fence for code that has no configuration at hand (the OAuth2 token refresh, built
deep in the IMAP settings); :func:`install` sets it at start-up, as the configuration is one per process.
"""
from __future__ import annotations

import concurrent.futures
import ipaddress
import logging
import re
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from runtime._pinned import connection, exchange, left, read_body
from runtime.errors import OutboundError, OutboundRefused

__all__ = ["Fence", "Prefix", "Response", "address_problem", "erxes_prefixes", "install", "literal_ip",
           "parse_prefix", "shared"]

logger = logging.getLogger(__name__)

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[tuple[int, tuple[Any, ...]]]]  # host, port -> [(family, sockaddr)]

ERXES = "erxes"  # in OUTBOUND_URL_ALLOW: erxes's own file route (erxes_prefixes)
MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
_LOOPBACK = "loopback"

_V4 = tuple((ipaddress.IPv4Network(n), why) for n, why in (
    ("0.0.0.0/8", "'this network'"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "shared (carrier-grade NAT)"),
    ("127.0.0.0/8", _LOOPBACK), ("169.254.0.0/16", "link-local"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol"), ("192.0.2.0/24", "documentation"), ("192.88.99.0/24", "6to4 relay"),
    ("192.168.0.0/16", "private"), ("198.18.0.0/15", "benchmarking"), ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"), ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved")))
_V6 = tuple((ipaddress.IPv6Network(n), why) for n, why in (
    ("::/128", "unspecified"), ("::1/128", _LOOPBACK), ("::ffff:0:0/96", "IPv4-mapped"),
    ("::/96", "IPv4-compatible"), ("::ffff:0:0:0/96", "IPv4-translated"), ("64:ff9b:1::/48", "local NAT64"),
    ("100::/64", "discard-only"), ("2001::/23", "IETF protocol (Teredo, ORCHID)"), ("2001:db8::/32", "documentation"),
    ("3fff::/20", "documentation"), ("fc00::/7", "private (unique local)"), ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"), ("ff00::/8", "multicast")))
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_V4_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?|<subdomain>")
_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


# -- addresses ----------------------------------------------------------------------------------------------------
def literal_ip(host: str) -> IP | None:
    """``host`` as an address when it is one, in any spelling ``getaddrinfo`` takes without DNS: dotted quads,
    IPv6 (bracketed or not) and the inet_aton forms (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``)."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_V4_PART.fullmatch(p) for p in parts):
        return None
    values = [int(p, 16) if p[:2].lower() == "0x" else int(p, 8) if p.startswith("0") and len(p) > 1 else int(p)
              for p in parts]
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        return None
    number = 0
    for value in head:
        number = number << 8 | value
    return ipaddress.IPv4Address(number << 8 * (5 - len(values)) | last)


def address_problem(ip: IP) -> str | None:
    """Why ``ip`` is not a public address (``"loopback"``, ``"private"``, ``"link-local"``...), or None."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(ip.compressed.split("%")[0])
        embedded = ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if embedded is not None:
            problem = address_problem(embedded)
            return f"{problem}, in {'6to4' if ip.sixtofour else 'NAT64'} form" if problem else None
        found = next((why for net, why in _V6 if ip in net), None)
        if found:
            return found
        return None if ip in _GLOBAL_UNICAST and not ip.is_private else "reserved"
    found = next((why for net, why in _V4 if ip in net), None)
    return found or (None if ip.is_global else "not globally routable")


# -- allowed prefixes ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Prefix:
    """An allowed URL prefix, parsed: ``host`` may hold ``<subdomain>`` (erxes SaaS), the request's organisation."""

    scheme: str
    host: str
    port: int
    path: str  # "" for any path, else starts with "/"

    def matches(self, target: _Target, subdomain: str | None = None) -> bool:
        host = self.host
        if "<subdomain>" in host:
            if not subdomain or not _SUBDOMAIN.fullmatch(subdomain.lower()):
                return False
            host = host.replace("<subdomain>", subdomain.lower())
        if (target.scheme, target.host, target.port) != (self.scheme, host, self.port) or target.dotted:
            return False
        return not self.path or target.path == self.path or target.path.startswith(self.path.rstrip("/") + "/")

    def __str__(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}{'' if self.port == default else f':{self.port}'}{self.path}"


def parse_prefix(text: str) -> Prefix:
    """``scheme://host[:port][/path]`` as a :class:`Prefix`; ValueError saying what is wrong."""
    parts = urllib.parse.urlsplit(text.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r} is not an http:// or https:// URL prefix")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ValueError(f"{text!r}: a prefix has no user:password@, no ?query and no #fragment")
    host = parts.hostname
    if literal_ip(host) is None and not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise ValueError(f"{text!r}: {host!r} is not a host name")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"{text!r} has an invalid port") from None
    path = "" if parts.path in ("", "/") else parts.path
    return Prefix(scheme, host, port, path)


def erxes_prefixes(domain: str, api_url: str) -> list[str]:
    """erxes's own file route, from its settings. erxes 2.x gives every service ``DOMAIN`` (the CLI's
    ``configs.domain``) and builds the UI's file links as ``${REACT_APP_API_URL}/read-file?key=`` with
    ``REACT_APP_API_URL = ${DOMAIN}/gateway`` (services: ``${DOMAIN}/gateway/pl:core/read-file``); erxes 1.x
    calls the API's address ``MAIN_API_DOMAIN``."""
    out = []
    if domain:
        out += [f"{domain.rstrip('/')}/gateway/read-file", f"{domain.rstrip('/')}/gateway/pl:core/read-file"]
    if api_url:
        out.append(f"{api_url.rstrip('/')}/read-file")
    return out


# -- URLs ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str
    query: str
    dotted: bool  # the path has "." or ".." segments: no prefix matches it

    @property
    def shown(self) -> str:
        """The URL as errors and logs show it: no credentials, no query."""
        return str(Prefix(self.scheme, self.host, self.port, self.path))[:300]

    @property
    def url(self) -> str:
        return f"{self.shown}{'?' + self.query if self.query else ''}"

    @property
    def request_path(self) -> str:
        return (self.path or "/") + (f"?{self.query}" if self.query else "")


def _target(url: Any) -> _Target:
    text = url if isinstance(url, str) else ""
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise OutboundRefused("the url must be an http or https URL")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text) or "%" in parts.hostname:
        raise OutboundRefused("the url holds spaces or control characters")
    shown = f"{scheme}://{parts.hostname}{parts.path}"[:300]
    if parts.username is not None or parts.password is not None:
        raise OutboundRefused(f"{shown} is refused: it carries credentials (user:password@)")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise OutboundRefused(f"{shown} has an invalid port") from None
    dotted = any(s in (".", "..") for s in urllib.parse.unquote(parts.path).replace("\\", "/").split("/"))
    return _Target(scheme, parts.hostname, port, parts.path, parts.query, dotted)


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: Any  # http.client.HTTPMessage
    body: bytes
    url: str  # shown form (no query) of the URL that answered


# -- the fence ----------------------------------------------------------------------------------------------------
def _getaddrinfo(host: str, port: int) -> list[tuple[int, tuple[Any, ...]]]:
    return [(info[0], info[4]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                              proto=socket.IPPROTO_TCP)]


_DNS = concurrent.futures.ThreadPoolExecutor(8, thread_name_prefix="fence-dns")  # getaddrinfo takes no timeout


class Fence:
    """Which URLs may be fetched for a caller, and the fetching. Immutable, thread-safe."""

    def __init__(self, *, allow: Iterable[Prefix | str] = (), allow_loopback: bool = False,
                 resolve: Resolver = _getaddrinfo, context: ssl.SSLContext | None = None) -> None:
        self.allow = tuple(p if isinstance(p, Prefix) else parse_prefix(p) for p in allow)
        self.allow_loopback = allow_loopback
        self._resolve = resolve
        self._context = context or ssl.create_default_context()

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> Fence:
        """``outbound_url_allow`` (``erxes`` expanded by :func:`erxes_prefixes`) and
        ``outbound_allow_loopback_http``."""
        items: list[str] = []
        for item in config.outbound_url_allow:
            items += erxes_prefixes(config.erxes_domain, config.erxes_api_url) if item == ERXES else [item]
        return cls(allow=dict.fromkeys(items), allow_loopback=config.outbound_allow_loopback_http, **kwargs)

    def check(self, url: Any, *, subdomain: str | None = None, https_only: bool = False,
              deadline: float | None = None) -> tuple[_Target, list[tuple[int, tuple[Any, ...]]]]:
        """The parsed URL and the checked addresses to connect to; :class:`OutboundRefused` when it is not
        allowed, :class:`OutboundError` when its host does not resolve."""
        target = _target(url)
        allowed = any(p.matches(target, subdomain) for p in self.allow)
        addresses = self._addresses(target, deadline if deadline is not None else time.monotonic() + 30)
        loopback = all(address_problem(_ip(a)) == _LOOPBACK for _f, a in addresses)
        if https_only and target.scheme != "https" and not (self.allow_loopback and loopback):
            raise self._refuse(target, "it must be https:// (http:// only to a loopback address, with "
                                       "OUTBOUND_ALLOW_LOOPBACK_HTTP, for tests)")
        if not allowed:
            for _family, sockaddr in addresses:
                problem = address_problem(_ip(sockaddr))
                if problem and not (problem == _LOOPBACK and self.allow_loopback):
                    literal = literal_ip(target.host) is not None
                    logger.warning("Outbound fence: %s refused, %s is %s (%s)", target.shown, target.host,
                                   sockaddr[0], problem)
                    hint = " (loopback: only with OUTBOUND_ALLOW_LOOPBACK_HTTP, for tests)" if problem == _LOOPBACK \
                        else ""
                    raise self._refuse(target, f"{target.host} {'is' if literal else 'resolves to'} a non-public "
                                               f"address ({problem}){hint}; only public addresses and the URL "
                                               f"prefixes of OUTBOUND_URL_ALLOW are fetched")
        return target, addresses

    @staticmethod
    def _refuse(target: _Target, why: str) -> OutboundRefused:
        return OutboundRefused(f"{target.shown} is refused: {why}")

    def _addresses(self, target: _Target, deadline: float) -> list[tuple[int, tuple[Any, ...]]]:
        ip = literal_ip(target.host)
        if ip is not None:
            family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            return [(family, (str(ip), target.port) if ip.version == 4 else (str(ip), target.port, 0, 0))]
        try:
            found = _DNS.submit(self._resolve, target.host, target.port).result(left(deadline))
        except TimeoutError:
            raise OutboundError(f"cannot fetch {target.shown}: {target.host} did not resolve in time") from None
        except (OSError, UnicodeError) as exc:
            raise OutboundError(f"cannot fetch {target.shown}: {target.host} does not resolve "
                                f"({getattr(exc, 'strerror', None) or exc})") from None
        addresses = [(f, a) for f, a in found if f in (socket.AF_INET, socket.AF_INET6)]
        if not addresses:
            raise OutboundError(f"cannot fetch {target.shown}: {target.host} has no address")
        return addresses

    def fetch(self, url: Any, *, timeout: float, max_bytes: int, method: str = "GET", body: bytes | None = None,
              headers: Mapping[str, str] | None = None, redirects: int = MAX_REDIRECTS, subdomain: str | None = None,
              https_only: bool = False, error_body: bool = False) -> Response:
        """One request, all of it (redirects included) within ``timeout`` seconds. The body is read up to
        ``max_bytes`` (:class:`OutboundTooLarge` beyond) for a 2xx answer, and for others when ``error_body``.
        Redirects are followed for GET only, each hop checked again; otherwise a 3xx is returned as it is."""
        deadline = time.monotonic() + timeout
        first = current = url
        for hop in range(redirects + 1):
            if hop and urllib.parse.urlsplit(current).scheme.lower() not in ("http", "https"):
                raise OutboundRefused(f"{_target(first).shown} redirected to a URL that is not http or https")
            try:
                target, addresses = self.check(current, subdomain=subdomain, https_only=https_only,
                                               deadline=deadline)
            except OutboundRefused as exc:
                if hop == 0:
                    raise
                raise OutboundRefused(f"{_target(first).shown} redirected to a URL that is refused: {exc}") from None
            conn = connection(target, addresses, deadline, self._context)
            try:
                response = exchange(conn, target, method, body, headers or {}, timeout)
                location = response.getheader("Location")
                if response.status in _REDIRECTS and location and method == "GET" and redirects:
                    current = urllib.parse.urljoin(target.url, location.strip())
                    continue
                data = b""
                if response.status < 300 or error_body:
                    data = read_body(response, target, max_bytes, timeout)
                return Response(response.status, response.reason, response.headers, data, target.shown)
            finally:
                conn.close()
        raise OutboundError(f"{_target(first).shown} redirected more than {redirects} times")


def _ip(sockaddr: tuple[Any, ...]) -> IP:
    return ipaddress.ip_address(str(sockaddr[0]).split("%")[0])


# -- the process's fence ------------------------------------------------------------------------------------------
_lock = threading.Lock()
_installed: Fence | None = None
_strict: Fence | None = None


def install(fence: Fence | None) -> Fence | None:
    """Make ``fence`` the process's (None: the strict default: no prefixes, no loopback); returns the previous."""
    global _installed
    with _lock:
        previous, _installed = _installed, fence
    return previous


def shared() -> Fence:
    """The process's fence: the installed one, else the strict default."""
    global _strict
    with _lock:
        if _installed is None and _strict is None:
            _strict = Fence()
        return _installed or _strict  # type: ignore[return-value]
