"""``GET /console/events`` (Server-Sent Events: the pages update without a reload) and ``GET /console/health``.

The event stream asks the kinds' fingerprints (``Console.add_live``; the IMAP kind's are a few cheap MongoDB reads:
the newest conversation, the newest message, the last mailbox state change) once a second and sends ``event:
<name>`` (``mailboxes``, ``conversations``) when one changed; the page then fetches its rows again. A stream lasts
at most :data:`STREAM_SECONDS` (the browser's EventSource reconnects by itself), so no connection is held forever.

The health page shows this node, the servers, the other nodes, the mailboxes by state and by health (the gauge:
healthy, degraded, unHealthy, from the same ``Probe.mailbox_report`` as ``/ready`` and ``/metrics``) and the
main metrics. It follows the ``mailboxes`` event: its gauge refreshes when a mailbox changes
(``?fragment=gauge``).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import tornado.iostream

from runtime import metrics
from web.console.base import ConsoleHandler

__all__ = ["EventsHandler", "HealthHandler", "fingerprints", "gauge"]

logger = logging.getLogger(__name__)

POLL_SECONDS = 1.0
STREAM_SECONDS = 55.0
HEARTBEAT_SECONDS = 15.0
SHOWN_METRICS = ("imap_mails_ingested_total", "imap_mails_failed_total", "imap_ingest_latency_seconds_count",
                 "imap_ingest_latency_seconds_sum", "imap_broker_reconnects_total", "imap_mailbox", "imap_node")


def fingerprints(live: dict[str, Any]) -> dict[str, str]:
    """Each live event's fingerprint now (blocking)."""
    return {name: fingerprint() for name, fingerprint in live.items()}


def gauge(health: dict[str, Any] | None) -> dict[str, Any]:
    """The health gauge: mailboxes by health (``Probe.mailbox_report``'s, None when MongoDB does not answer), their
    total and the share of each, in percent (rounded)."""
    counts = {name: int((health or {}).get(name, 0)) for name in metrics.MAILBOX_HEALTH}
    total = sum(counts.values())
    return {"known": health is not None, "counts": counts, "total": total,
            "percent": {name: round(100 * n / total) if total else 0 for name, n in counts.items()}}


class EventsHandler(ConsoleHandler):
    async def get(self) -> None:
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("X-Accel-Buffering", "no")
        live = dict(self.console.live)
        seen = await self.blocking(fingerprints, live)
        started = last_write = time.monotonic()
        try:
            self.write("retry: 1000\n\n")
            await self.flush()
            while time.monotonic() - started < STREAM_SECONDS:
                await asyncio.sleep(POLL_SECONDS)
                now = await self.blocking(fingerprints, live)
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
            report = probe.mailbox_report() if probe is not None else None
            states, health = report if report is not None else (None, None)
            node = probe.node() if probe is not None else {}
            shown = [line for line in metrics.exposition(states, health, node=node).decode().splitlines()
                     if line.startswith(SHOWN_METRICS)]
            return {"checks": checks, "node": node, "nodes": nodes, "states": states or {}, "metrics": shown,
                    "gauge": gauge(health)}

        if self.get_query_argument("fragment", "") == "gauge":
            report = await self.blocking(probe.mailbox_report) if probe is not None else None
            self.render("health_gauge.html", gauge=gauge(report[1] if report is not None else None))
            return
        info = await self.blocking(load)
        self.render("health.html", page="health", serving=self.deps.ready(), **info)
