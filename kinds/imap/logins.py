"""Pacing IMAP logins, so no mailbox and no process ever looks like a brute-force attack to a provider.

Two limits, both counted per process (one pacer is shared by every mailbox of the process, so a mailbox actor
that crashes and is restarted keeps its history):

- per mailbox: at most ``per_mailbox`` logins in any ``window`` seconds. Failed logins already stop after two
  (the mailbox waits for new settings); this catches the other loop, a server that accepts the login and drops the
  connection right after, which would otherwise cost a login every second or two forever.
- per server host: at most ``per_host_per_second`` logins a second, and at most ``per_host_in_flight`` at a
  time (connect, TLS handshake, login), so a thousand mailboxes on one provider starting together reach it as a
  steady stream, and a server slow to shake hands is not buried under attempts that time out (the rate adapts
  to it: in flight / handshake time).

:meth:`LoginPacer.reserve` answers "go now" (0: the attempt is counted and holds one of the host's slots until
:meth:`LoginPacer.done`) or how long to wait first.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Hashable

__all__ = ["LoginPacer", "shared_pacer"]


class LoginPacer:
    def __init__(self, *, per_mailbox: int = 10, window: float = 600.0, per_host_per_second: float = 50.0,
                 per_host_in_flight: int = 20, clock: Callable[[], float] = time.monotonic) -> None:
        if per_mailbox < 1 or window <= 0 or per_host_per_second <= 0 or per_host_in_flight < 1:
            raise ValueError("login limits must be positive")
        self.per_mailbox = per_mailbox
        self.window = window
        self.host_interval = 1.0 / per_host_per_second
        self.per_host_in_flight = per_host_in_flight
        self._in_flight: dict[str, int] = {}
        self._clock = clock
        self._lock = threading.Lock()
        self._mailbox_logins: dict[Hashable, deque[float]] = {}
        self._host_next: dict[str, float] = {}

    def reserve(self, mailbox: Hashable, host: str) -> float:
        """Seconds to wait before ``mailbox`` may log in to ``host``; 0 means go now (the login is counted)."""
        with self._lock:
            now = self._clock()
            logins = self._mailbox_logins.setdefault(mailbox, deque())
            while logins and logins[0] <= now - self.window:
                logins.popleft()
            if len(logins) >= self.per_mailbox:
                return logins[0] + self.window - now
            host_next = self._host_next.get(host, now)
            if host_next > now:
                return host_next - now
            if self._in_flight.get(host, 0) >= self.per_host_in_flight:
                return self.host_interval  # look again soon: a slot frees when a login ends
            self._host_next[host] = max(host_next, now) + self.host_interval
            self._in_flight[host] = self._in_flight.get(host, 0) + 1
            logins.append(now)
            return 0.0

    def done(self, host: str) -> None:
        """The login that :meth:`reserve` let through ended (in success or failure): its slot is free."""
        with self._lock:
            self._in_flight[host] = max(0, self._in_flight.get(host, 0) - 1)

    def at_limit(self, mailbox: Hashable) -> bool:
        """Whether ``mailbox`` has used all its logins of the window (a wait is then for it, not for its host)."""
        with self._lock:
            logins = self._mailbox_logins.get(mailbox, ())
            return len(logins) >= self.per_mailbox and logins[0] > self._clock() - self.window


_shared: LoginPacer | None = None
_shared_lock = threading.Lock()


def shared_pacer(*, per_mailbox: int, window: float, per_host_per_second: float,
                 per_host_in_flight: int) -> LoginPacer:
    """The process's pacer (made on first use with these limits; the configuration is one per process)."""
    global _shared
    with _shared_lock:
        if _shared is None or (_shared.per_mailbox, _shared.window, _shared.host_interval,
                               _shared.per_host_in_flight) != (per_mailbox, window, 1.0 / per_host_per_second,
                                                               per_host_in_flight):
            _shared = LoginPacer(per_mailbox=per_mailbox, window=window, per_host_per_second=per_host_per_second,
                                 per_host_in_flight=per_host_in_flight)
        return _shared
