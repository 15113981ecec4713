"""The HTTP transport of the erxes broker contract, client side: how erxes 2.x services call each other's RPCs.

``call("inbox:integrations.receive", data)`` POSTs the request envelope to ``<address>/rpc/integrations.receive``
where ``<address>`` is Redis ``service:inbox`` (through a :class:`~runtime.registry.ServiceDirectory`), and
returns the reply's ``data``. As erxes's ``sendRPCMessage`` does:

- the timeout is the caller's, else ``RPC_TIMEOUT``; on timeout the caller's ``defaultValue`` comes back when it
  is truthy (JavaScript's truthiness: ``[]`` and ``{}`` count), else :class:`RpcTimeout`;
- up to 3 tries, 3 s apart, only when the connection is refused or reset (the request may then run twice, as
  with erxes); any other failure is final;
- an error envelope raises :class:`RpcError` with its message; a status other than 200 is a BrokerError.

``ENABLED_SERVICES_JSON`` is honoured in front of either transport (:mod:`runtime.broker.enabled`).

Plain (fire-and-forget) messages are not HTTP in erxes: ``publish`` hands them to the AMQP ``publisher``.
One connection per call (no keep-alive), so there is no stale pooled connection to mistake for a reset.
"""
from __future__ import annotations

import http.client
import logging
import math
import time
import urllib.parse
from typing import Any, Callable, Protocol

from runtime.broker._envelope import MISSING, decode_envelope, encode_request, unwrap_reply
from runtime.errors import BrokerError, RpcTimeout

__all__ = ["HttpRpcClient", "RETRY_DELAY", "TRIES"]

logger = logging.getLogger(__name__)

TRIES = 3
RETRY_DELAY = 3.0  # seconds between tries, as erxes
# erxes retries ECONNREFUSED, ECONNRESET and ERR_STREAM_PREMATURE_CLOSE: refused, reset, aborted, broken pipe
# (a write to a reset connection), a reply cut short. RemoteDisconnected is a ConnectionResetError.
_RETRYABLE = (ConnectionError, http.client.IncompleteRead)


class Directory(Protocol):
    def address(self, service: str) -> str | None: ...

    def forget(self, service: str) -> None: ...


class Publisher(Protocol):
    def publish(self, queue: str, data: Any, *, subdomain: str = "os", timeout: float = 10.0) -> None: ...


class HttpRpcClient:
    """Calls erxes procedures over HTTP; publishes over ``publisher`` (AMQP). Thread-safe."""

    def __init__(self, directory: Directory, *, publisher: Publisher | None = None, timeout: float = 30.0,
                 tries: int = TRIES, retry_delay: float = RETRY_DELAY,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        self._directory = directory
        self._publisher = publisher
        self._timeout = timeout
        self._tries = max(1, tries)
        self._retry_delay = retry_delay
        self._sleep = sleep

    def call(self, queue: str, data: Any, *, subdomain: str = "os", timeout: float | None = None,
             default_value: Any = MISSING) -> Any:
        """Call ``<service>:<procedure>`` and return its reply's ``data``; see the module docstring."""
        service, _, procedure = queue.partition(":")
        if not service or not procedure or ":" in procedure:
            raise BrokerError(f"{queue!r} is not <service>:<procedure> (procedure names contain no ':')")
        timeout = self._timeout if timeout is None else timeout
        body = encode_request(subdomain, data, timeout_ms=max(0, round(timeout * 1000)),
                              default_value=default_value)
        last: Exception | None = None
        url = ""
        for attempt in range(1, self._tries + 1):
            address = self._directory.address(service)
            if not address:
                raise BrokerError(f"{service} has no address in service discovery (Redis service:{service})")
            url = f"{address.rstrip('/')}/rpc/{urllib.parse.quote(procedure, safe='.-_~')}"
            try:
                status, payload = _post(url, body, timeout)
            except _RETRYABLE as exc:
                last = exc
                self._directory.forget(service)  # re-read Redis next time: it may have moved
                if attempt < self._tries:
                    logger.info("%s: %s (try %d of %d); retrying in %.0f s", url, _reason(exc), attempt,
                                self._tries, self._retry_delay)
                    self._sleep(self._retry_delay)
                continue
            except TimeoutError:
                if _js_truthy(default_value):
                    logger.debug("no reply from %s within %.1f s; using the default value", url, timeout)
                    return default_value
                raise RpcTimeout(f"no reply from {url} within {timeout} s") from None
            except (OSError, http.client.HTTPException) as exc:
                raise BrokerError(f"RPC over HTTP to {url} failed: {_reason(exc)}") from exc
            if status != 200:
                raise BrokerError(f"RPC HTTP error: status {status} from {url}")
            try:
                envelope = decode_envelope(payload)
            except ValueError as exc:
                raise BrokerError(f"{url} replied with something other than a JSON object: {exc}") from exc
            return unwrap_reply(envelope, queue)
        raise BrokerError(f"cannot reach {service} at {url} after {self._tries} tries: {_reason(last)}") from last

    def publish(self, queue: str, data: Any, *, subdomain: str = "os", timeout: float = 10.0) -> None:
        """Plain messages go over AMQP, with HTTP RPC too (erxes's ``sendMessage``)."""
        if self._publisher is None:
            raise BrokerError(f"no message broker to send {queue} with")
        self._publisher.publish(queue, data, subdomain=subdomain, timeout=timeout)


def _post(url: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BrokerError(f"{url!r} is not an http:// or https:// address")
    conn_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = conn_class(parts.hostname, parts.port, timeout=timeout)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _js_truthy(value: Any) -> bool:
    """JavaScript's truthiness of a JSON value (erxes tests ``message.defaultValue`` so): [] and {} are true."""
    if value is MISSING or value is None or value is False or value == "":
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0 and not math.isnan(value)
    return True


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "no try made"
    return str(exc) or type(exc).__name__
