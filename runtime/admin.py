"""Operator commands (``python -m runtime.admin ...``), reading the same configuration as the runtime.

    webhook-secret INBOX_ID          print the integration's /receive signing secret
    quarantine list [INBOX_ID]       list quarantined mails
    quarantine reprocess ENTRY_ID    push a quarantined mail through the running runtime's /receive, then drop it
    new-key                          print a fresh key for SECRET_KEYS
    owners                           which node owns (holds the lease of) which mailbox, and the live nodes with
                                     their lease counts (docs/scaling.md); every tenant with VERSION=saas
    reseal                           seal every integration's password and webhook secret with the first of
                                     SECRET_KEYS: plain ones (written by erxes's plugin) and ones sealed with an
                                     older key; every tenant database with VERSION=saas. Safe while running.
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

import redis
from pymongo.errors import PyMongoError

from runtime.config import load_config
from runtime.errors import ConfigError, RuntimeFault
from runtime.leases import Leases, Timings
from runtime.signing import sign
from runtime.registry import redis_client
from runtime.sealing import Sealer, new_key
from runtime.storage import Storage
from runtime.tenants import Tenants


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.admin", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="path of configs.json")
    sub = parser.add_subparsers(dest="command", required=True)
    secret = sub.add_parser("webhook-secret")
    secret.add_argument("inbox_id")
    quarantine = sub.add_parser("quarantine")
    qsub = quarantine.add_subparsers(dest="action", required=True)
    listing = qsub.add_parser("list")
    listing.add_argument("inbox_id", nargs="?")
    again = qsub.add_parser("reprocess")
    again.add_argument("entry_id")
    again.add_argument("--url", help="the runtime's base URL (default http://127.0.0.1:<PORT>)")
    sub.add_parser("new-key")
    sub.add_parser("reseal")
    sub.add_parser("owners")
    args = parser.parse_args(argv)
    if args.command == "new-key":
        print(new_key())
        return 0
    try:
        config = load_config(args.config)
        sealer = Sealer.from_setting(config.secret_keys)
    except ConfigError as exc:
        print(f"admin: bad setting {exc}", file=sys.stderr)
        return 2
    if args.command == "reseal":
        return reseal(config, sealer)
    if args.command == "owners":
        return owners(config)
    storage = Storage(config.mongo_url, database=config.mongo_database, sealer=sealer)
    try:
        if args.command == "webhook-secret":
            doc = storage.get_integration(args.inbox_id)
            if doc is None:
                print(f"admin: integration {args.inbox_id} not found", file=sys.stderr)
                return 1
            print(doc["webhookSecret"])
        elif args.action == "list":
            for entry in storage.quarantined(args.inbox_id):
                print(f"{entry['_id']}  {entry['integrationId']}  {entry['folder']} UID {entry['uid']}  "
                      f"{entry.get('size', 0)} bytes  {entry['reason']}")
        else:
            return reprocess(storage, args.entry_id, args.url or f"http://127.0.0.1:{config.port}")
    except RuntimeFault as exc:
        print(f"admin: {exc}", file=sys.stderr)
        return 1
    finally:
        storage.close()
    return 0


def reseal(config: Any, sealer: Sealer) -> int:
    tenants = Tenants(config.mongo_url, database=config.mongo_database, saas=config.version == "saas",
                      sealer=sealer)
    status = 0
    try:
        for subdomain in tenants.known():
            changed, current, failed = tenants.storage(subdomain).reseal_integrations()
            print(f"{subdomain}: {changed} integration(s) resealed with key {sealer.current_id}, "
                  f"{current} already current")
            if failed:
                status = 1
                print(f"admin: {subdomain}: secrets that no key of SECRET_KEYS unseals: {', '.join(failed)}",
                      file=sys.stderr)
    except (RuntimeFault, PyMongoError) as exc:
        print(f"admin: {exc}", file=sys.stderr)
        return 1
    finally:
        tenants.close()
    return status


def owners(config: Any) -> int:
    """``<inboxId>  <user>  <owner>`` per integration (``subdomain/inboxId`` with saas), then one line per node."""
    tenants = Tenants(config.mongo_url, database=config.mongo_database, saas=config.version == "saas")
    leases = Leases(redis_client(config, timeout=5.0), timings=Timings.from_lease(config.lease_seconds),
                    suffix=config.message_broker_prefix, saas=tenants.saas)
    try:
        rows = [(subdomain, doc["inboxId"], doc.get("user", ""), leases.key(subdomain, doc["_id"]))
                for subdomain in tenants.known()
                for doc in tenants.storage(subdomain).integration_users()]
        held = leases.owners([key for *_, key in rows])
        nodes = leases.nodes()
    except (RuntimeFault, PyMongoError, redis.RedisError) as exc:
        print(f"admin: {exc}", file=sys.stderr)
        return 1
    finally:
        tenants.close()
    count = {node: 0 for node in nodes}
    for subdomain, inbox_id, user, key in rows:
        owner = held[key]
        if owner in count:
            count[owner] += 1
        shown = owner if owner is None or owner in count else f"{owner} (not a live node: erxes's plugin, or dead)"
        name = inbox_id if subdomain == "os" else f"{subdomain}/{inbox_id}"
        print(f"{name}  {user}  {shown or '-'}")
    for node in nodes:
        print(f"node {node}: {count[node]} lease(s)")
    print(f"{len(rows)} mailbox(es), {sum(count.values())} owned by {len(nodes)} live node(s)")
    return 0


def reprocess(storage: Storage, entry_id: str, base_url: str) -> int:
    entry = storage.quarantined_mail(entry_id)
    if entry is None:
        print(f"admin: no quarantined mail {entry_id}", file=sys.stderr)
        return 1
    if not entry.get("raw"):
        print("admin: this entry has no raw bytes (too large to download, or the server was unreachable); "
              "raise max_mail_bytes, or re-fetch it from the server", file=sys.stderr)
        return 1
    doc = storage.get_integration(entry["integrationId"])
    if doc is None:
        print(f"admin: integration {entry['integrationId']} no longer exists", file=sys.stderr)
        return 1
    raw = bytes(entry["raw"])
    request = urllib.request.Request(f"{base_url}/receive?integrationId={entry['integrationId']}", data=raw,
                                     method="POST", headers={"X-Imap-Runtime-Signature": sign(doc["webhookSecret"],
                                                                                              raw)})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            result = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        print(f"admin: the runtime refused it ({exc.code}): {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"admin: cannot reach the runtime at {base_url}: {exc}", file=sys.stderr)
        return 1
    storage.release_quarantined(entry["_id"])
    print(f"stored {result['messageId']} in conversation {result['conversationId']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
