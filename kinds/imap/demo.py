"""A newcomer's tour, used by scripts/run.sh: connect a local mailbox, send it mail, see what became of it.

    python -m kinds.imap.demo connect --user demo --password demo-password --imap-port 10143
    python -m kinds.imap.demo send --to demo@localhost --subject "Where is my order?" [--smtp-port 10025]
    python -m kinds.imap.demo show
    python -m kinds.imap.demo reset      (scripts/run.sh --reset: the demo's queues, by their MESSAGE_BROKER_PREFIX)

It talks to the runtime only as erxes would: ``imap:createIntegration`` over the broker, mail over SMTP, and the
runtime's MongoDB collections (standalone mode keeps conversations in ``standalone_conversations``).
"""
from __future__ import annotations

import argparse
import json
import smtplib
import sys
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any

import pika.exceptions
import pymongo

from runtime.broker.amqp import AmqpBroker
from runtime.config import load_config
from runtime.errors import RuntimeFault


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kinds.imap.demo")
    sub = parser.add_subparsers(dest="command", required=True)
    connect = sub.add_parser("connect", help="createIntegration for a local mailbox")
    connect.add_argument("--inbox-id", default="demo-inbox")
    connect.add_argument("--user", default="demo")
    connect.add_argument("--password", default="demo-password")
    connect.add_argument("--imap-host", default="127.0.0.1")
    connect.add_argument("--imap-port", type=int, default=10143)
    connect.add_argument("--smtp-port", default="10587")
    send = sub.add_parser("send", help="send a mail through the local SMTP relay")
    send.add_argument("--to", default="demo@localhost")
    send.add_argument("--sender", default="Alice Customer <alice@example.com>")
    send.add_argument("--subject", default="Where is my order?")
    send.add_argument("--body", default="Hello, my order #42 has not arrived yet.")
    send.add_argument("--smtp-port", type=int, default=10025)
    sub.add_parser("show", help="list the stored conversations and messages")
    sub.add_parser("reset", help="delete the demo's queues (those with its MESSAGE_BROKER_PREFIX) from RabbitMQ")
    args = parser.parse_args(argv)
    config = load_config()
    try:
        if args.command == "connect":
            details = {"host": args.imap_host, "port": args.imap_port, "tls": False, "user": f"{args.user}@localhost",
                       "mainUser": args.user, "password": args.password, "smtpHost": args.imap_host,
                       "smtpPort": args.smtp_port}
            broker = AmqpBroker(config.rabbitmq_url, prefix=config.message_broker_prefix)
            broker.start()
            try:
                broker.call("imap:createIntegration", {"kind": "imap", "integrationId": args.inbox_id, "doc": {
                    "kind": "imap", "integrationId": args.inbox_id, "data": json.dumps(details)}}, timeout=30)
            finally:
                broker.stop()
            print(f"connected mailbox {args.user}@localhost as integration {args.inbox_id}")
        elif args.command == "send":
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = args.sender, args.to, args.subject
            msg["Message-ID"] = make_msgid(domain="example.com")
            msg.set_content(args.body)
            with smtplib.SMTP("127.0.0.1", args.smtp_port, timeout=30) as smtp:
                smtp.send_message(msg)
            print(f"sent {msg['Message-ID']} to {args.to}")
        elif args.command == "reset":
            print(f"deleted {reset_queues(config)} queue(s) with the suffix {config.message_broker_prefix!r}")
        else:
            show(config.mongo_url)
    except (RuntimeFault, OSError, smtplib.SMTPException, pika.exceptions.AMQPError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    return 0


def reset_queues(config: Any) -> int:
    """Delete the demo's queues: ours and the emulation's, each with the demo's suffix. Never without a suffix:
    unsuffixed queues may be erxes's own."""
    import pika  # noqa: F811 - the connection class, beside the exceptions imported above

    from kinds.imap.procedures import ImapProcedures
    from runtime.detect import MARKER_QUEUE, emulation_queues

    if not config.message_broker_prefix:
        raise RuntimeFault("MESSAGE_BROKER_PREFIX is empty: the queues without a suffix may be erxes's; not deleting")
    table = ImapProcedures(storage=None, supervisor=None)
    names = [n + config.message_broker_prefix for n in
             (*table.rpc_procedures(), *table.plain_procedures(), MARKER_QUEUE)] + emulation_queues(config)
    conn = pika.BlockingConnection(pika.URLParameters(config.rabbitmq_url))
    try:
        channel = conn.channel()
        for name in names:
            channel.queue_delete(name)
    finally:
        conn.close()
    return len(names)


def show(mongo_url: str) -> None:
    client: pymongo.MongoClient = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    db = client.get_default_database()
    for conv in db.standalone_conversations.find().sort("createdAt", 1):
        print(f"conversation {conv['_id']} ({conv.get('status')}) customer {conv.get('customerId')}: "
              f"{conv.get('content')!r}")
        for msg in db.imap_messages.find({"inboxConversationId": conv["_id"]}).sort("createdAt", 1):
            sender = (msg.get("from") or [{}])[0].get("address")
            print(f"  {msg.get('createdAt')}  {sender}  {msg.get('subject')!r}  [{msg.get('ingestState')}]")
    print(f"{db.imap_customers.count_documents({})} customer(s), {db.imap_messages.count_documents({})} message(s)")
    client.close()


if __name__ == "__main__":
    sys.exit(main())
