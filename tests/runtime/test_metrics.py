"""The metrics carry the kind (issue 15 item 1): the IMAP kind's with ``kind="imap"`` under their old names, the
other kinds' counters with their own kind, the runtime's own (RPC, broker, node) with none."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from runtime import metrics

IMAP_KIND = ("imap_mails_ingested", "imap_mails_failed", "imap_ingest_latency_seconds", "imap_idle_renewals",
             "imap_mailboxes", "imap_mailboxes_health")


def families() -> dict[str, list[dict[str, str]]]:
    text = metrics.exposition({"idle": 1}, {"healthy": 1}, node={"id": "n1", "leases": 0}).decode()
    return {f.name: [s.labels for s in f.samples] for f in text_string_to_metric_families(text)}


def test_the_imap_kind_s_metrics_carry_kind_imap_under_their_names():
    found = families()
    for name in IMAP_KIND:
        assert found[name] and all(labels.get("kind") == "imap" for labels in found[name]), name
    for name in ("imap_broker_reconnects", "imap_node_info", "imap_rpc_served_seconds"):
        assert all("kind" not in labels for labels in found.get(name, [])), name


def test_the_imap_children_are_what_the_kind_s_code_moves():
    sample = ("imap_mails_failed_total", {"kind": "imap"})
    before = metrics.REGISTRY.get_sample_value(*sample) or 0.0
    metrics.MAILS_FAILED.inc()
    assert metrics.REGISTRY.get_sample_value(*sample) == before + 1


def test_another_kind_s_counters_carry_its_name():
    metrics.KIND_MESSAGES.labels("api").inc()
    metrics.KIND_DELIVERIES.labels("api", "delivered").inc()
    found = families()
    assert {"kind": "api"} in found["imap_kind_messages_received"]
    assert {"kind": "api", "outcome": "delivered"} in found["imap_kind_deliveries"]
