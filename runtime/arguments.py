"""A served procedure's arguments, the same for every kind: the envelope's ``data``, the integration it names, and
the tenant the call runs for. Each raises :class:`RequestError` saying what is wrong (the caller gets it as an
error envelope)."""
from __future__ import annotations

from typing import Any

from runtime.errors import RequestError
from runtime.tenants import current

__all__ = ["envelope_data", "integration_id", "tenant"]


def tenant() -> str:
    """The tenant the running procedure is bound to (``os`` in single-tenant mode)."""
    return current() or "os"


def envelope_data(envelope: Any) -> dict[str, Any]:
    """The envelope's ``data``, which must be an object."""
    data = envelope.get("data") if isinstance(envelope, dict) else None
    if not isinstance(data, dict):
        raise RequestError("data must be an object")
    return data


def integration_id(data: dict[str, Any], key: str = "integrationId") -> str:
    """The integration ``data[key]`` names: non-empty text, stripped."""
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise RequestError(f"{key} is required")
    return value.strip()
