"""Fresh access tokens of an OAuth2 mailbox, for its IMAP and SMTP logins.

:class:`Tokens` hands out an access token for one integration: the stored one while it is fresh, else it asks the
token endpoint (``grant_type=refresh_token``, :mod:`kinds.imap.oauth_endpoint`) under a per-integration lock,
re-reading MongoDB first so two threads never spend one refresh token twice. A rotated refresh token is saved
together with the new access token before that token is handed out. The provider's ``invalid_grant`` means the
user's consent is gone: :class:`TokenRevoked` (an :class:`AuthenticationFailed`, so the mailbox goes ``unHealthy``),
recorded in ``oauthRevoked`` so no attempt asks the endpoint again until someone signs in anew. An unreachable or
failing endpoint is a plain :class:`MailboxError`: transient, the mailbox backs off.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pymongo.errors import PyMongoError

from kinds.imap.oauth import OAuthSettings
from kinds.imap.oauth_endpoint import Refused, post_form, save_fields, token_fields
from runtime import fence as outbound
from runtime.errors import AuthenticationFailed, MailboxError, StorageError

__all__ = ["NotSignedIn", "TokenRevoked", "Tokens", "oauth_tokens"]

logger = logging.getLogger("kinds.imap.oauth")  # the name these lines always logged under


class TokenRevoked(AuthenticationFailed):
    """The provider refused the refresh token (``invalid_grant``): someone must sign in again."""


class NotSignedIn(AuthenticationFailed):
    """The integration has OAuth2 settings but no refresh token yet."""


_slots_lock = threading.Lock()
_slots: dict[tuple[str, str], _Slot] = {}


@dataclass
class _Slot:
    """Per integration and database: one refresh at a time, and an answer kept until MongoDB has it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    unsaved: dict[str, Any] | None = None


def _slot(key: tuple[str, str]) -> _Slot:
    with _slots_lock:
        return _slots.setdefault(key, _Slot())


class Tokens:
    """Access tokens of one integration, for its IMAP and SMTP logins. Thread-safe."""

    def __init__(self, inbox_id: str, storage: Any, *, timeout: float = 30.0,
                 clock: Callable[[], float] = time.time, fence: outbound.Fence | None = None) -> None:
        self.inbox_id = inbox_id
        self._storage = storage
        self._timeout = timeout
        self._clock = clock
        self._fence = fence  # None: the process's (runtime.fence.shared), read at each refresh

    def access_token(self, rejected: str | None = None) -> str:
        """A fresh access token. ``rejected``: the server refused this one, get another (unless someone else
        already did). Raises :class:`TokenRevoked`, :class:`NotSignedIn`, or :class:`MailboxError` (transient)."""
        slot = _slot((self._storage.database_name, self.inbox_id))
        with slot.lock:
            if slot.unsaved is not None:  # a refresh whose answer MongoDB did not take: save it first
                save_fields(self._storage, self.inbox_id, slot.unsaved)
                slot.unsaved = None
            doc = self._storage.get_integration(self.inbox_id)
            settings = OAuthSettings.from_integration(doc or {})
            if settings is None:
                raise MailboxError(f"integration {self.inbox_id} has no OAuth2 settings (removed or changed)")
            if settings.revoked:
                raise TokenRevoked(settings.revoked)
            now = self._clock()
            if settings.access_token and settings.access_token != rejected and now < settings.refresh_at:
                return settings.access_token
            if not settings.refresh_token:
                raise NotSignedIn(f"not signed in yet: sign in at {settings.sign_in}")
            fields = token_fields(self._refresh(settings), now=now)
            try:
                save_fields(self._storage, self.inbox_id, fields)
            except (PyMongoError, StorageError):
                if "oauthRefreshToken" in fields:
                    slot.unsaved = fields  # rotated: the old refresh token may be dead already, keep the new one
                raise
            return str(fields["oauthAccessToken"])

    def _refresh(self, settings: OAuthSettings) -> dict[str, Any]:
        form = {"grant_type": "refresh_token", "refresh_token": settings.refresh_token}
        if settings.scope:
            form["scope"] = settings.scope
        try:
            answer = post_form(settings, form, self._timeout, self._fence)
        except Refused as exc:
            if exc.code == "invalid_grant":
                reason = (f"the refresh token was revoked; sign in again at {settings.sign_in} ({settings.where} "
                          f"said {exc.words})")
                self._storage.update_integration_fields(self.inbox_id, {"oauthRevoked": reason,
                                                                        "oauthAccessToken": None})
                logger.warning("Integration %s: %s", self.inbox_id, reason)
                raise TokenRevoked(reason) from None
            raise AuthenticationFailed(f"{settings.where} refused our client ({exc.words}): check oauth.clientId "
                                       f"and oauth.clientSecret") from None
        logger.info("Integration %s: access token refreshed%s", self.inbox_id,
                    " (refresh token rotated)" if answer.get("refresh_token") else "")
        return answer


def oauth_tokens(doc: dict[str, Any], storage: Any, timeout: float) -> Tokens | None:
    """The token source of an integration with OAuth2 settings (None: it uses a password, or no storage given)."""
    if not doc.get("oauthTokenUrl") or storage is None:
        return None
    return Tokens(str(doc.get("inboxId")), storage, timeout=timeout)
