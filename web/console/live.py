"""``GET /console/events`` (Server-Sent Events: the pages update without a reload) and ``GET /console/health``.

The event stream polls MongoDB once a second with three cheap reads (the newest conversation, the newest
message, the last mailbox state change) and sends ``event: conversations`` or ``event: mailboxes`` when one
changed; the page then fetches its rows again. A stream lasts at most :data:`STREAM_SECONDS` (the browser's
EventSource reconnects by itself), so no connection is held forever.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import tornado.iostream

from runtime import metrics
from runtime.standalone import Standalone
from web.console.base import ConsoleHandler

__all__ = ["EventsHandler", "HealthHandler", "fingerprints"]

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
STREAM_SECONDS = 55.0
HEARTBEAT_SECONDS = 15.0
SHOWN_METRICS = ("imap_mails_ingested_total", "imap_mails_failed_total", "imap_ingest_latency_seconds_count",
                 "imap_ingest_latency_seconds_sum", "imap_broker_reconnects_total", "imap_mailbox", "imap_node")


def fingerprints(storage: Any, full: bool) -> dict[str, str]:
    marks = {"mailboxes": repr((storage.integrations_mark(), storage.messages_mark()))}
    if full:
        marks["conversations"] = repr((Standalone(storage).conversations_mark(), storage.messages_mark()))
    return marks


class EventsHandler(ConsoleHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("X-Accel-Buffering", "no")
        storage, full = self.deps.storage, self.console.full
        seen = await self.blocking(fingerprints, storage, full)
        started = last_write = time.monotonic()
        try:
            self.write("retry: 1000\n\n")
            await self.flush()
            while time.monotonic() - started < STREAM_SECONDS:
                await asyncio.sleep(POLL_SECONDS)
                now = await self.blocking(fingerprints, storage, full)
                for kind, mark in now.items():
                    if seen.get(kind) != mark:
                        self.write(f"event: {kind}\ndata: changed\n\n")
                        last_write = time.monotonic()
                seen = now
                if time.monotonic() - last_write > HEARTBEAT_SECONDS:
                    self.write(": still here\n\n")
                    last_write = time.monotonic()
                await self.flush()
        except tornado.iostream.StreamClosedError:
            return
        self.finish()


class HealthHandler(ConsoleHandler):
    async def get(self) -> None:
        probe = self.deps.probe
        ownership = getattr(self.deps, "ownership", None)

        def load() -> dict[str, Any]:
            checks: dict[str, Any] = {}
            if probe is not None:
                checks = {"MongoDB": probe.mongo(), "RabbitMQ": probe.rabbitmq(), "Redis": probe.redis()}
            nodes: list[str] = []
            if ownership is not None and getattr(ownership, "leasing", False):
                try:
                    nodes = list(ownership.nodes())
                except Exception as exc:  # Redis away: shown as unknown
                    logger.debug("console: nodes unknown: %s", exc)
            states = probe.mailbox_states() if probe is not None else None
            shown = [line for line in metrics.exposition(states, node=probe.node() if probe else None).decode().splitlines()
                     if line.startswith(SHOWN_METRICS)]
            return {"checks": checks, "node": probe.node() if probe is not None else {}, "nodes": nodes,
                    "states": states or {}, "metrics": shown}

        info = await self.blocking(load)
        self.render("health.html", page="health", serving=self.deps.ready(), **info)
