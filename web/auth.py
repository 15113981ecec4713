"""Who is asking: the erxes gateway forwards the logged-in user as header ``user`` = base64 of the user's JSON.

A request whose header is missing, unreadable, or names no ``_id`` is not logged in: GraphQL fields answer the
error ``Login required`` (as erxes's ``checkLogin`` does) and plain routes answer 401.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["LOGIN_REQUIRED", "LoginRequired", "current_user", "is_logged_in", "may_administer", "parse_user_header",
           "require_user"]

LOGIN_REQUIRED = "Login required"
USER_HEADER = "user"
_MAX_HEADER = 64 * 1024


class LoginRequired(Exception):
    """Raised by a field or route that needs a logged-in user; its message is erxes's ``Login required``."""

    def __init__(self) -> None:
        super().__init__(LOGIN_REQUIRED)


def parse_user_header(value: str | None) -> dict[str, Any] | None:
    """The user object of a ``user`` header, or None when it is absent or not base64 of a JSON object.

    Lenient like Node's ``Buffer.from(value, "base64")``: URL-safe letters and missing padding are accepted.
    """
    if not value or len(value) > _MAX_HEADER:
        return None
    text = "".join(value.split()).replace("-", "+").replace("_", "/")
    try:
        decoded = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        user = json.loads(decoded.decode("utf-8"))
    except (binascii.Error, ValueError, RecursionError):
        return None
    return user if isinstance(user, dict) else None


def current_user(headers: Mapping[str, str]) -> dict[str, Any] | None:
    """The user of a request's headers (any mapping with ``get``, e.g. tornado's ``HTTPHeaders``)."""
    return parse_user_header(headers.get(USER_HEADER))


def is_logged_in(user: Any) -> bool:
    return isinstance(user, dict) and isinstance(user.get("_id"), str) and bool(user["_id"].strip())


def require_user(context: Mapping[str, Any] | None) -> dict[str, Any]:
    """The logged-in user of a GraphQL context (key ``user``); raises :class:`LoginRequired` otherwise."""
    user = (context or {}).get("user")
    if not isinstance(user, dict) or not is_logged_in(user):
        raise LoginRequired()
    return user


def may_administer(user: Any, allowed: tuple[str, ...] = ()) -> bool:
    """An erxes owner (``isOwner: true``, which erxes puts in the token behind the ``user`` header) or a user whose
    ``_id``, ``email`` or ``username`` is in ``allowed`` (the ``login_allowed_users`` setting)."""
    if not is_logged_in(user):
        return False
    if user.get("isOwner") is True:
        return True
    names = {str(user.get(key)).strip().lower() for key in ("_id", "email", "username") if user.get(key)}
    return any(name.strip().lower() in names for name in allowed)
