"""The runtime's Prometheus metrics (prometheus-client), on a registry of our own, served at ``GET /metrics``.

Counters and histograms are module-level objects that the code moves where things happen; mailboxes by state are
not instrumented but counted from ``imap_integrations.state`` at scrape time (:func:`exposition` takes them).

Metrics of one integration kind carry its name in the label ``kind`` (the ``imap_`` prefix is the runtime's, not
the kind's: the names stay as they were). The IMAP kind's are exported as their ``kind="imap"`` child (its code
moves ``MAILS_INGESTED.inc()`` as before); the runtime's own (RPC, broker, node) have no ``kind``.

    imap_mails_ingested_total{kind}          mails stored in their conversation and announced
    imap_mails_failed_total{kind}            failed attempts at ingesting a mail (each is retried, up to a limit)
    imap_ingest_latency_seconds{kind}        from the fetch of a mail to its being stored and announced
    imap_idle_renewals_total{kind}           IDLE commands renewed before the server could drop them
    imap_mailboxes{kind,state}               integrations by state (connecting, syncing, idle, backoff, unhealthy)
    imap_mailboxes_health{kind,health}       integrations by health (healthy, degraded, unHealthy)
    imap_kind_messages_received_total{kind}  other kinds' inbound messages stored and announced (api)
    imap_kind_deliveries_total{kind,outcome} other kinds' outbound delivery attempts (api)
    imap_rpc_served_seconds                  procedures we serve, by procedure and transport (amqp, http)
    imap_rpc_call_seconds                    procedures we call, by procedure and transport
    imap_broker_reconnects_total             AMQP connections opened after the first
    imap_node_info{node}                     1, labelled with this node's id (docs/scaling.md)
    imap_node_leases{node}                   the mailbox leases this node holds (absent with LEASES=off)
"""
from __future__ import annotations

import datetime as dt
import time
from typing import Any, Callable, Iterator, Mapping

from prometheus_client import (CollectorRegistry, Counter, Histogram, ProcessCollector, disable_created_metrics,
                               generate_latest)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

__all__ = [
    "BROKER_RECONNECTS",
    "CONTENT_TYPE",
    "IDLE_RENEWALS",
    "INGEST_LATENCY",
    "KIND_DELIVERIES",
    "IMAP",
    "KIND_MESSAGES",
    "MAILBOX_HEALTH",
    "MAILBOX_STATES",
    "MAILS_FAILED",
    "MAILS_INGESTED",
    "REGISTRY",
    "RPC_CALLS",
    "RPC_SERVED",
    "TimedTransport",
    "exposition",
    "mail_ingested",
    "timed",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
IMAP = "imap"  # the ``kind`` label of the IMAP kind's metrics
MAILBOX_STATES = ("connecting", "syncing", "idle", "backoff", "unhealthy")
MAILBOX_HEALTH = ("healthy", "degraded", "unHealthy")  # getStatus's two, and healthy with a reason in ``error``
_RPC_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_INGEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `*_created` series next to every counter and histogram
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ... (Linux)

_MAILS_INGESTED = Counter("imap_mails_ingested", "Mails stored in their conversation and announced to inbox",
                          ["kind"], registry=REGISTRY)
_MAILS_FAILED = Counter("imap_mails_failed", "Failed attempts at ingesting a mail (retried up to a limit)",
                        ["kind"], registry=REGISTRY)
_INGEST_LATENCY = Histogram("imap_ingest_latency_seconds",
                            "Seconds from fetching a mail over IMAP to its being stored and announced",
                            ["kind"], buckets=_INGEST_BUCKETS, registry=REGISTRY)
RPC_SERVED = Histogram("imap_rpc_served_seconds", "Seconds spent answering a procedure we serve",
                       ["procedure", "transport"], buckets=_RPC_BUCKETS, registry=REGISTRY)
RPC_CALLS = Histogram("imap_rpc_call_seconds", "Seconds until a procedure we call answered (or failed)",
                      ["procedure", "transport"], buckets=_RPC_BUCKETS, registry=REGISTRY)
BROKER_RECONNECTS = Counter("imap_broker_reconnects", "AMQP connections opened after the first one",
                            registry=REGISTRY)
_IDLE_RENEWALS = Counter("imap_idle_renewals", "IMAP IDLE commands renewed before the server could drop them",
                         ["kind"], registry=REGISTRY)
MAILS_INGESTED = _MAILS_INGESTED.labels(IMAP)
MAILS_FAILED = _MAILS_FAILED.labels(IMAP)
INGEST_LATENCY = _INGEST_LATENCY.labels(IMAP)
IDLE_RENEWALS = _IDLE_RENEWALS.labels(IMAP)

# Integration kinds other than imap (runtime/kinds.py): label ``kind``
KIND_MESSAGES = Counter("imap_kind_messages_received", "Inbound messages stored and announced, by kind",
                        ["kind"], registry=REGISTRY)
KIND_DELIVERIES = Counter("imap_kind_deliveries", "Outbound delivery attempts, by kind and outcome "
                          "(delivered, retry, failed)", ["kind", "outcome"], registry=REGISTRY)

Handler = Callable[[dict[str, Any]], Any]


def mail_ingested(fetched_at: dt.datetime | None, *, kind: str = IMAP) -> None:
    """A mail of ``kind`` is stored and announced; its latency runs from ``fetched_at`` (when its fetch
    returned)."""
    _MAILS_INGESTED.labels(kind).inc()
    if isinstance(fetched_at, dt.datetime):
        if fetched_at.tzinfo is None:
            fetched_at = fetched_at.replace(tzinfo=dt.timezone.utc)
        _INGEST_LATENCY.labels(kind).observe(max(0.0, (dt.datetime.now(dt.timezone.utc) - fetched_at).total_seconds()))


def timed(procedure: str, transport: str, handler: Handler) -> Handler:
    """``handler`` measured into ``imap_rpc_served_seconds{procedure, transport}`` (errors included)."""
    child = RPC_SERVED.labels(procedure, transport)

    def run(envelope: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            return handler(envelope)
        finally:
            child.observe(time.perf_counter() - started)

    run.__name__ = getattr(handler, "__name__", "handler")
    return run


class TimedTransport:
    """A transport whose calls are measured into ``imap_rpc_call_seconds``; publishes pass through."""

    def __init__(self, transport: Any, name: str) -> None:
        self._transport = transport
        self._name = name

    def call(self, queue: str, data: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return self._transport.call(queue, data, **kwargs)
        finally:
            RPC_CALLS.labels(queue, self._name).observe(time.perf_counter() - started)

    def publish(self, queue: str, data: Any, **kwargs: Any) -> None:
        self._transport.publish(queue, data, **kwargs)


class _Scrape:
    """What one scrape shows: our registry, plus mailboxes by state when they could be counted."""

    def __init__(self, states: Mapping[str, int] | None, health: Mapping[str, Any] | None = None,
                 node: Mapping[str, Any] | None = None) -> None:
        self._states = states
        self._health = health
        self._node = node or {}

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        if self._node.get("id"):
            info = GaugeMetricFamily("imap_node_info", "This node (label node: its id)", labels=["node"])
            info.add_metric([self._node["id"]], 1.0)
            yield info
            if isinstance(self._node.get("leases"), int):
                leases = GaugeMetricFamily("imap_node_leases", "Mailbox leases this node holds", labels=["node"])
                leases.add_metric([self._node["id"]], float(self._node["leases"]))
                yield leases
        if self._states is None:
            return  # MongoDB did not answer: no samples rather than made-up zeros
        family = GaugeMetricFamily("imap_mailboxes", "Integrations by state (imap_integrations.state)",
                                   labels=["kind", "state"])
        for state in MAILBOX_STATES:
            family.add_metric([IMAP, state], float(self._states.get(state, 0)))
        yield family
        if self._health is not None:
            health = GaugeMetricFamily("imap_mailboxes_health", "Integrations by health (getStatus's healthy or "
                                       "unHealthy; degraded: healthy with a reason in error)",
                                       labels=["kind", "health"])
            for name in MAILBOX_HEALTH:
                health.add_metric([IMAP, name], float(self._health.get(name, 0)))
            yield health


def exposition(mailbox_states: Mapping[str, int] | None, mailbox_health: Mapping[str, Any] | None = None, *,
               node: Mapping[str, Any] | None = None) -> bytes:
    """The Prometheus text format of everything above; ``None``: that mailbox gauge is left out. ``node``: this
    node's ``{"id", "leases"}`` (the node gauges are left out without an id)."""
    return generate_latest(_Scrape(mailbox_states, mailbox_health, node))
