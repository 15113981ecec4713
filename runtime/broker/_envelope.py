"""The erxes message envelope, and running one handler on one delivery.

Everything here is pure: bytes in, bytes (or a value, or an exception) out. The AMQP transport in
:mod:`runtime.broker.amqp` moves the bytes; the HTTP transport can reuse the same functions.

Request: ``{"subdomain": "os", "data": ..., "defaultValue": ..., "timeout": <ms>}`` (absent keys left out).
Reply: ``{"status": "success", "data": ...}`` (``data`` left out when None) or
``{"status": "error", "errorMessage": "<text>"}``.
"""
from __future__ import annotations

import contextvars
import datetime
import json
import logging
from typing import Any, Callable

from runtime.errors import RpcError, RuntimeFault

__all__ = [
    "MISSING",
    "decode_envelope",
    "delivery_id",
    "encode_error",
    "encode_request",
    "encode_success",
    "handle_plain",
    "handle_rpc",
    "unwrap_reply",
]

logger = logging.getLogger(__name__)


class _Missing:
    """Type of :data:`MISSING`: "the caller gave no value", distinct from ``None`` (JSON null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

# the AMQP ``message_id`` of the message whose handler runs: one per publish, the same on a redelivery, so a
# consumer can tell a message published twice from one delivered twice
_DELIVERY: contextvars.ContextVar[str | None] = contextvars.ContextVar("delivery_id", default=None)


def delivery_id() -> str | None:
    """The ``message_id`` of the plain message being handled on this thread (None outside a handler or if the
    publisher set none)."""
    return _DELIVERY.get()


def _json_default(value: Any) -> Any:
    """Serialise what erxes's Node side would have serialised: dates as JS ISO strings, ObjectIds as hex."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="milliseconds") + "Z"
    if isinstance(value, datetime.date):
        return value.isoformat()
    if type(value).__name__ == "ObjectId":  # bson, without importing it
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                      default=_json_default).encode("utf-8")


def encode_request(subdomain: str, data: Any, *, timeout_ms: int | None = None,
                   default_value: Any = MISSING) -> bytes:
    """The request envelope; ``timeout`` and ``defaultValue`` only when given, as erxes omits undefined keys."""
    envelope: dict[str, Any] = {"subdomain": subdomain, "data": data}
    if default_value is not MISSING:
        envelope["defaultValue"] = default_value
    if timeout_ms is not None:
        envelope["timeout"] = timeout_ms
    return _dumps(envelope)


def encode_success(result: Any) -> bytes:
    """``{"status": "success", "data": result}``; ``data`` is left out when the result is None."""
    if result is None:
        return _dumps({"status": "success"})
    return _dumps({"status": "success", "data": result})


def encode_error(exc_or_text: BaseException | str) -> bytes:
    """``{"status": "error", "errorMessage": ...}``; an exception with no text reports its class name."""
    if isinstance(exc_or_text, BaseException):
        text = str(exc_or_text) or type(exc_or_text).__name__
    else:
        text = exc_or_text
    return _dumps({"status": "error", "errorMessage": text})


def decode_envelope(body: bytes) -> dict[str, Any]:
    """Parse a request or reply body. Raises ValueError unless it is UTF-8 JSON holding an object."""
    try:
        value = json.loads(body)  # UnicodeDecodeError and JSONDecodeError are both ValueErrors
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None
    if not isinstance(value, dict):
        raise ValueError(f"expected a JSON object, got {type(value).__name__}")
    return value


def unwrap_reply(envelope: dict[str, Any], queue: str) -> Any:
    """What a caller gets from a reply: ``data`` (None if absent) on success; RpcError otherwise."""
    status = envelope.get("status")
    if status == "success":
        return envelope.get("data")
    if status == "error":
        raise RpcError(str(envelope.get("errorMessage") or f"{queue} failed without a message"))
    raise RpcError(f"{queue} replied with an unknown status {status!r}")


def _run(queue: str, handler: Callable[[dict[str, Any]], Any], request: dict[str, Any]) -> Any:
    """Run a handler; expected failures (our own RuntimeFault family) are logged without a traceback."""
    try:
        return handler(request)
    except RuntimeFault as exc:
        logger.info("%s failed: %s", queue, exc)
        raise
    except Exception:
        logger.exception("%s: unexpected error in the handler", queue)
        raise


def handle_rpc(queue: str, handler: Callable[[dict[str, Any]], Any], body: bytes) -> bytes:
    """Run an RPC handler on a request body and return the reply body. Never raises (Exception)."""
    try:
        request = decode_envelope(body)
    except ValueError as exc:
        logger.warning("%s: request is not a JSON object (%s); replying with an error", queue, exc)
        return encode_error(f"Invalid request: {exc}")
    try:
        result = _run(queue, handler, request)
    except Exception as exc:
        return encode_error(exc)
    try:
        return encode_success(result)
    except (TypeError, ValueError) as exc:
        logger.error("%s: the handler's result cannot be sent as JSON: %s", queue, exc)
        return encode_error(f"Result is not JSON serialisable: {exc}")


def handle_plain(queue: str, handler: Callable[[dict[str, Any]], Any], body: bytes,
                 message_id: str | None = None) -> None:
    """Run a fire-and-forget handler (with :func:`delivery_id` answering ``message_id``). Never raises
    (Exception): the message is acked whatever happens."""
    try:
        request = decode_envelope(body)
    except ValueError as exc:
        logger.warning("%s: message is not a JSON object (%s); dropping it", queue, exc)
        return
    token = _DELIVERY.set(message_id)
    try:
        _run(queue, handler, request)
    except Exception:
        pass  # logged by _run; plain consumers ack regardless, as erxes does
    finally:
        _DELIVERY.reset(token)
