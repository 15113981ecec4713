"""The console's sign-in: one admin password, a signed session cookie, CSRF tokens, and a login rate limit.

- The password (``CONSOLE_PASSWORD``, else a one-time one made at start and printed once to stderr, as Jupyter
  does) is kept only as an scrypt hash with a random salt (:class:`PasswordCheck`); the clear text is never
  logged, stored or sent.
- The session is a cookie signed (HMAC-SHA256, tornado's signed cookies) with a key every node shares
  (:func:`session_key`: a random key in MongoDB, sealed with SECRET_KEYS when they are set), with its issue time
  inside: any node accepts it for :data:`SESSION_HOURS`, a restart does not sign anyone out. HttpOnly,
  SameSite=Strict, Secure when the request came over https (``X-Forwarded-Proto`` only with
  ``CONSOLE_TRUST_PROXY``).
- Every console POST carries tornado's double-submit XSRF token (cookie + form field ``_xsrf``), checked by the
  console's handlers themselves: the app's other routes (/rpc, /graphql, /receive) are unchanged.
- Failed logins are counted per client address and for the whole node (:class:`LoginLimiter`): past the limit
  every attempt, right or wrong, is answered 429 until the window passes.
"""
from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from typing import Any, Callable

__all__ = ["LoginLimiter", "PasswordCheck", "SESSION_HOURS", "one_time_password", "session_key"]

logger = logging.getLogger(__name__)

SESSION_HOURS = 12
_SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1, "maxmem": 64 * 1024 * 1024, "dklen": 32}


class PasswordCheck:
    """Holds an scrypt hash of the admin password, never the password."""

    def __init__(self, password: str) -> None:
        if not password:
            raise ValueError("an empty console password")
        self._salt = os.urandom(16)
        self._hash = self._derive(password)

    def _derive(self, password: str) -> bytes:
        return hashlib.scrypt(password.encode("utf-8"), salt=self._salt, **_SCRYPT)

    def matches(self, attempt: str) -> bool:
        """Constant-time comparison of the hashes; about 50 ms of CPU: call it off the IOLoop."""
        if not attempt or len(attempt) > 1024:
            return False
        return hmac.compare_digest(self._derive(attempt), self._hash)


def one_time_password() -> str:
    return secrets.token_urlsafe(18)


class LoginLimiter:
    """Failed sign-ins per client address (``per_client`` in ``window`` seconds) and in all (``overall``)."""

    def __init__(self, *, per_client: int = 5, overall: int = 50, window: float = 300.0,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 10000) -> None:
        self.per_client = per_client
        self.overall = overall
        self.window = window
        self._clock = clock
        self._max_clients = max_clients
        self._failures: dict[str, collections.deque[float]] = {}
        self._all: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def _trim(self, times: collections.deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()

    def blocked(self, client: str) -> bool:
        """Whether ``client`` (or everyone) must wait: too many failures in the window."""
        now = self._clock()
        with self._lock:
            self._trim(self._all, now)
            mine = self._failures.get(client)
            if mine is not None:
                self._trim(mine, now)
            return len(self._all) >= self.overall or (mine is not None and len(mine) >= self.per_client)

    def failed(self, client: str) -> None:
        now = self._clock()
        with self._lock:
            if client not in self._failures and len(self._failures) >= self._max_clients:
                for name in [n for n, t in self._failures.items() if not t or t[-1] <= now - self.window]:
                    del self._failures[name]
                if len(self._failures) >= self._max_clients:  # still full: forget the oldest
                    del self._failures[next(iter(self._failures))]
            self._failures.setdefault(client, collections.deque()).append(now)
            self._all.append(now)

    def retry_after(self) -> int:
        return int(self.window)


def session_key(storage: Any) -> str:
    """The cookie-signing key every node shares: created once (random) in ``imap_console``, sealed with the
    storage's sealer when SECRET_KEYS are set."""
    sealer = getattr(storage, "sealer", None)
    fresh = secrets.token_hex(32)
    key = storage.console_key(sealer.seal(fresh, context="consoleSessionKey") if sealer else fresh)
    if sealer is not None:
        from runtime.errors import StorageError
        from runtime.sealing import is_sealed

        if is_sealed(key):
            try:
                return sealer.unseal(key, context="consoleSessionKey")
            except StorageError as exc:  # SECRET_KEYS rotated without it: a new key (everyone signs in again)
                logger.warning("The console's session key cannot be opened (%s): a new one is made; console "
                               "sessions must sign in again", exc)
                storage.replace_console_key(key, sealer.seal(fresh, context="consoleSessionKey"))
                return session_key(storage)
    return key
