"""Delivery of staff replies to an ``api`` integration's callback URL (spec api-kind.md), the plain part.

:meth:`Delivery.run_once` takes the integration's outbox (MongoDB, oldest first) and, per conversation, tries the
first waiting item only: later ones wait behind it, so a conversation's replies arrive in order. A 2xx answer is
delivered (the message marked ``delivered``, the item removed); anything else, a timeout or a refused connection
is retried after a capped exponential backoff with jitter, until ``retry_for`` seconds after its first try, then
the message is marked ``failed`` and the next one goes. The integration is ``unHealthy`` while a delivery fails.
Since the item is removed only after the answer, a crash between the two posts it again (at least once; receivers
dedupe by ``messageId``). Callback URLs go through the outbound fence (runtime/fence.py, ``OUTBOUND_URL_ALLOW``).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import random
from dataclasses import dataclass
from typing import Any, Callable

from kinds.api.details import SIGNATURE_HEADER, sign
from kinds.api.store import ApiStore
from runtime import metrics
from runtime.errors import RuntimeFault
from runtime.storage import utcnow

__all__ = ["Delivery", "Retry"]

logger = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Retry:
    base: float = 1.0  # seconds before the first retry
    cap: float = 300.0  # the longest wait between tries
    retry_for: float = 86400.0  # give a message up this long after its first try
    timeout: float = 10.0  # one POST, all of it

    @classmethod
    def from_config(cls, config: Any) -> Retry:
        default = cls()
        return cls(base=getattr(config, "api_retry_base_seconds", default.base),
                   cap=getattr(config, "api_retry_max_seconds", default.cap),
                   retry_for=getattr(config, "api_retry_for_seconds", default.retry_for),
                   timeout=getattr(config, "api_delivery_timeout_seconds", default.timeout))

    def delay(self, attempts: int, rng: random.Random) -> float:
        """After ``attempts`` failed tries: ``min(cap, base * 2**(attempts-1))``, jittered to 50-100 %."""
        return min(self.cap, self.base * 2 ** max(0, attempts - 1)) * rng.uniform(0.5, 1.0)


class Delivery:
    def __init__(self, inbox_id: str, *, store: ApiStore, fence: Any, retry: Retry = Retry(),
                 now: Callable[[], dt.datetime] = utcnow, rng: random.Random | None = None) -> None:
        self.inbox_id = inbox_id
        self._store = store
        self._fence = fence  # runtime.fence.Fence
        self._retry = retry
        self._now = now
        self._rng = rng or random.Random()

    def run_once(self) -> float | None:
        """Try every conversation's first due item once; returns the seconds until the next item is due (None: the
        outbox is empty)."""
        integration = self._store.get_integration(self.inbox_id)
        if integration is None:
            return None
        blocked: set[str] = set()
        failing: str | None = None
        next_due: dt.datetime | None = None
        for item in self._store.outbox(self.inbox_id):
            if item["conversationId"] in blocked:
                continue
            now = self._now()
            due = _aware(item.get("nextAt")) or now
            if due > now:
                blocked.add(item["conversationId"])
                next_due = due if next_due is None else min(next_due, due)
                failing = failing or item.get("error")
                continue
            error = self._post(integration, item)
            if error is None:
                continue
            blocked.add(item["conversationId"])
            failing = error
            first = _aware(item.get("firstTriedAt")) or now
            attempts = int(item.get("attempts") or 0) + 1
            if (now - first).total_seconds() >= self._retry.retry_for:
                logger.warning("api integration %s: message %s given up after %d tries: %s", self.inbox_id,
                               item["_id"], attempts, error)
                metrics.KIND_DELIVERIES.labels("api", "failed").inc()
                self._store.set_delivery(item["_id"], "failed", error)
                self._store.done(item["_id"])
                continue
            later = now + dt.timedelta(seconds=self._retry.delay(attempts, self._rng))
            metrics.KIND_DELIVERIES.labels("api", "retry").inc()
            self._store.retry_later(item["_id"], attempts=attempts, next_at=later, error=error)
            if item.get("firstTriedAt") is None:
                self._store.note_first_try(item["_id"], first)
            self._store.set_delivery(item["_id"], "pending", error)
            next_due = later if next_due is None else min(next_due, later)
        self._store.set_health(self.inbox_id, "unHealthy" if failing else "healthy",
                               f"deliveries to the callback URL fail: {failing}" if failing else None)
        if next_due is None:
            return None
        return max(0.0, (next_due - self._now()).total_seconds())

    def _post(self, integration: dict[str, Any], item: dict[str, Any]) -> str | None:
        """None when delivered, else why not."""
        url, secret = integration.get("callbackUrl"), integration.get("secret") or ""
        if not url:
            return "the integration has no callbackUrl"
        body = json.dumps(item["body"], separators=(",", ":"), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(secret, body)}
        try:
            answer = self._fence.fetch(url, method="POST", body=body, headers=headers, timeout=self._retry.timeout,
                                       max_bytes=MAX_ANSWER_BYTES, redirects=0)
        except RuntimeFault as exc:
            return str(exc)
        except OSError as exc:  # a refused or reset connection the fence did not wrap
            return f"cannot reach the callback URL: {exc}"
        if 200 <= answer.status < 300:
            logger.debug("api integration %s: message %s delivered", self.inbox_id, item["_id"])
            metrics.KIND_DELIVERIES.labels("api", "delivered").inc()
            self._store.set_delivery(item["_id"], "delivered", None)
            self._store.done(item["_id"])
            return None
        return f"the callback URL answered HTTP {answer.status} {answer.reason}"


def _aware(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value
