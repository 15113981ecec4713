"""MailSender: the send path of ``imapSendMail`` and ``imap:imapMessage.create`` (contract sections 3, 4 and 6).

``send(subdomain, args)`` finds the integration (by ``from`` = its ``user``, else by ``integrationId``), builds the
mail (:mod:`runtime.mail.build`), submits it (:mod:`kinds.imap.smtp`) and, after a successful send only:

1. a mail that starts a thread gets its customer (first To address) and an erxes conversation;
2. a ``SENT`` document goes into ``imap_messages`` with its Message-ID, so the customer's answer (In-Reply-To /
   References) is threaded into the same conversation by the ingest pipeline;
3. a copy is APPENDed to the Sent folder through the running mailbox actor's own IMAP session (one short session
   of ours only when no mailbox holds one); a failure there is logged, the send still succeeded;
4. ``shouldResolve``/``shouldOpen`` change the conversation's status.

Everything that can be checked is checked before anything is sent: the arguments (:mod:`kinds.imap.send_request`),
the integration and its SMTP settings, that ``from`` is the integration's address or one of its ``aliases``, the
replied message, the attachments (:mod:`kinds.imap.send_attachments`: decoded, or fetched through the outbound fence,
within the size limit). A failed send raises (the SMTP server's reason in the message, never the password) and
leaves nothing behind.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import pykka

from kinds.imap import smtp
from kinds.imap.connection import ImapSettings, appended_uid, connect
from kinds.imap.send_attachments import DEFAULT_MAX_ATTACHMENT_BYTES, AttachmentLoader
from kinds.imap.send_request import SendRequest, check_sender
from runtime.arguments import tenant
from runtime.errors import MailboxError, RequestError
from runtime.fence import Fence
from runtime.mail.build import Outgoing, build, normalize_message_id, reply_subject, thread_references
from runtime.mail.parse import parse_mail
from runtime.storage import DONE, utcnow

__all__ = ["DEFAULT_MAX_ATTACHMENT_BYTES", "MailSender"]

logger = logging.getLogger(__name__)


class MailSender:
    """Sends staff mail through an integration's SMTP server; thread-safe (no state between sends)."""

    def __init__(self, *, storage: Any, erxes: Any, supervisor: Any, config: Any,
                 imap_factory: Callable[[ImapSettings], Any] = connect,
                 max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES, timeout: float | None = None,
                 smtp_send: Callable[..., smtp.SendResult] = smtp.send, fence: Fence | None = None) -> None:
        self._storage = storage
        self._erxes = erxes
        self._supervisor = supervisor
        self._config = config
        self._imap_factory = imap_factory
        self._timeout = float(timeout if timeout is not None else config.imap_timeout_seconds)
        self._smtp_send = smtp_send
        self._attachments = AttachmentLoader(fence=fence or Fence.from_config(config), timeout=self._timeout,
                                             max_bytes=max_attachment_bytes)

    def send(self, subdomain: str, args: dict[str, Any]) -> dict[str, Any]:
        request = SendRequest.parse(args)
        integration = self._integration(request)
        inbox_id = integration["inboxId"]
        settings = smtp.SmtpSettings.from_integration(integration, self._timeout, storage=self._storage)
        parent, reply_id = self._replied_message(inbox_id, request)
        references = thread_references((parent.get("references") or []) if parent else request.references,
                                       reply_id)
        own = str(integration.get("user") or "").strip()
        sender = request.sender or ("", own)
        if "@" not in sender[1]:
            raise RequestError(f"integration {inbox_id} has no sender address (user {own!r}): give from")
        check_sender(sender[1], own, integration.get("aliases"), inbox_id)
        built = build(Outgoing(
            sender=sender, to=request.to, cc=request.cc, bcc=request.bcc, reply_to=request.reply_to,
            subject=reply_subject(request.subject) if reply_id else request.subject, html=request.body,
            runtime_id=inbox_id, in_reply_to=reply_id, references=references,
            attachments=self._attachments.load(request.attachments, subdomain),
            envelope_from=own if "@" in own else None))

        try:
            result = self._smtp_send(settings, sender=built.envelope_from, recipients=built.recipients,
                                     raw=built.raw)
        except MailboxError as exc:
            logger.warning("Integration %s: sending %s failed: %s", inbox_id, built.message_id, exc)
            self._storage.log("error", f"sending {built.message_id} failed: {exc}", inbox_id=inbox_id)
            raise
        logger.info("Integration %s: sent %s to %d recipient(s)", inbox_id, built.message_id, len(result.accepted))
        if result.rejected:
            self._storage.log("error", f"sent {built.message_id}, but the server refused " +
                              "; ".join(f"{a}: {r}" for a, r in result.rejected.items()), inbox_id=inbox_id)

        # The mail is out: from here on nothing raises, every failure is logged with the integration.
        conversation_id, customer_id = self._thread(subdomain, inbox_id, request, parent, built.message_id)
        doc = self._store(inbox_id, request, built, conversation_id, customer_id, reply_id, references)
        self._append_sent(integration, built.raw, doc)
        self._change_status(subdomain, inbox_id, conversation_id, request)
        info: dict[str, Any] = {
            "messageId": built.message_id, "accepted": result.accepted, "rejected": list(result.rejected),
            "envelope": {"from": built.envelope_from, "to": built.recipients}, "response": result.response}
        if result.rejected:
            info["rejectedErrors"] = [f"{a}: {r}" for a, r in result.rejected.items()]
        return {"info": info, "conversationId": conversation_id}

    # -- before sending -------------------------------------------------------------------------------------------
    def _integration(self, request: SendRequest) -> dict[str, Any]:
        if request.sender:
            address = request.sender[1].strip()
            doc = self._storage.integration_of_user(address)
            if doc is not None:
                return doc
        if request.integration_id:
            doc = self._storage.get_integration(request.integration_id)
            if doc is not None:
                return doc
        if request.sender:  # one of an integration's aliases (the check of from then lets it through)
            doc = self._storage.integration_of_alias(request.sender[1].strip().lower())
            if doc is not None:
                return doc
        wanted = " or ".join(filter(None, [request.sender and f"from {request.sender[1]}",
                                           request.integration_id and f"integrationId {request.integration_id}"]))
        raise RequestError(f"no IMAP integration found for {wanted or 'the mail (give from or integrationId)'}")

    def _replied_message(self, inbox_id: str, request: SendRequest) -> tuple[dict[str, Any] | None, str | None]:
        """The stored message being answered (given as an imap_messages _id or a Message-ID) and its Message-ID."""
        for name, value in request.reply_ids:
            doc = self._storage.message_by_id(value, inbox_id)
            message_id = doc["messageId"] if doc else normalize_message_id(value)
            if message_id and doc is None:
                doc = self._storage.find_message(inbox_id, message_id)
            if message_id:
                return doc, message_id
            if name != "headerId":  # erxes fills headerId with other providers' ids: not ours to refuse
                raise RequestError(f"{name} {value!r} is neither a Message-ID nor a message of this integration")
        return None, None

    # -- after sending (nothing raises) -----------------------------------------------------------------------------
    def _thread(self, subdomain: str, inbox_id: str, request: SendRequest, parent: dict[str, Any] | None,
                message_id: str) -> tuple[str | None, str | None]:
        """The conversation and customer of the sent mail; a mail that starts a thread creates them."""
        conversation_id = request.conversation_id or (parent or {}).get("inboxConversationId") or None
        customer_id = request.customer_id or (parent or {}).get("customerId") or None
        try:
            if conversation_id and not customer_id:
                customer_id = self._storage.conversation_customer(inbox_id, conversation_id)
            if not conversation_id:
                name, address = request.to[0]
                customer_id = customer_id or self._customer(subdomain, inbox_id, name, address)
                conversation_id = self._erxes.create_or_update_conversation(
                    subdomain, inbox_id=inbox_id, customer_id=customer_id, created_at=utcnow(),
                    content=request.subject, idempotency_key=f"{inbox_id}/{message_id}")
                logger.debug("Integration %s: %s started conversation %s", inbox_id, message_id, conversation_id)
        except Exception as exc:  # noqa: BLE001 - the mail is out; the answer will open a conversation itself
            logger.warning("Integration %s: no conversation for sent %s: %s", inbox_id, message_id, exc)
            self._storage.log("error", f"sent {message_id}, but its conversation could not be created: {exc}",
                              inbox_id=inbox_id)
        return conversation_id, customer_id

    def _customer(self, subdomain: str, inbox_id: str, name: str, address: str) -> str:
        """The erxes customer of ``address``, found or created, as actors/customer.py does for senders."""
        email = address.lower()
        known = self._storage.find_customer(inbox_id, email)
        if known:
            return str(known["contactsId"])
        first, _, last = name.partition(" ")
        found = self._erxes.find_customer(subdomain, email)
        if found is None:
            found = self._erxes.create_customer(subdomain, inbox_id, email, first, last)
        return str(self._storage.save_customer(inbox_id, email, str(found["_id"]), first, last)["contactsId"])

    def _store(self, inbox_id: str, request: SendRequest, built: Any, conversation_id: str | None,
               customer_id: str | None, reply_id: str | None, references: list[str]) -> dict[str, Any] | None:
        mail = parse_mail(built.raw)  # the same {name, address} lists and attachment metadata as INBOX documents
        now = utcnow()
        doc: dict[str, Any] = {
            "inboxIntegrationId": inbox_id,
            "inboxConversationId": conversation_id,
            "customerId": customer_id,
            "messageId": built.message_id,
            "syntheticMessageId": False,
            "subject": mail.subject,
            "inReplyTo": reply_id,
            "references": references,
            "body": request.body,
            "from": list(mail.from_),
            "to": list(mail.to),
            "cc": list(mail.cc),
            "bcc": [{"name": n, "address": a} for n, a in request.bcc],
            "replyTo": list(mail.reply_to),
            "attachments": [{k: a.get(k) for k in ("filename", "mimeType", "type", "size", "attachmentId",
                                                   "contentId", "partIndex")} for a in mail.attachments],
            "createdAt": now,
            "receivedAt": now,
            "type": "SENT",
            "ingestState": DONE,
            "size": len(built.raw),
        }
        try:
            self._storage.insert_message(doc)
        except Exception as exc:  # noqa: BLE001 - the mail is out; report, do not fail the send
            logger.error("Integration %s: could not store sent %s: %s", inbox_id, built.message_id, exc)
            self._storage.log("error", f"sent {built.message_id}, but storing it failed: {exc}", inbox_id=inbox_id)
            return None
        return doc

    def _append_sent(self, integration: dict[str, Any], raw: bytes, doc: dict[str, Any] | None) -> None:
        inbox_id = integration["inboxId"]
        wait = 2 * self._timeout + float(getattr(self._config, "idle_slice_seconds", 1.0))
        try:
            folder = None
            mailbox = self._running_mailbox(inbox_id, wait)
            if mailbox is not None:
                try:
                    folder = mailbox.append_sent(raw).get(timeout=wait)
                except MailboxError as exc:  # it holds no session now, so ours is not a second one
                    logger.debug("Integration %s: mailbox cannot append (%s); using a session of our own",
                                 inbox_id, exc)
            if folder is None:
                folder = self._append_with_own_session(integration, raw)
        except Exception as exc:  # noqa: BLE001 - the mail is out; a missing Sent copy is logged only
            logger.warning("Integration %s: the sent mail was not filed in Sent: %s", inbox_id, exc)
            self._storage.log("error", f"the sent mail was not filed in the Sent folder: {exc}", inbox_id=inbox_id)
            return
        # Where the copy is (a uid when the server said APPENDUID): what the attachment route fetches from.
        folder, uid = folder if isinstance(folder, tuple) else (folder, None)
        if doc is not None:
            try:
                self._storage.set_message_location(doc["_id"], folder, uid)
            except Exception as exc:  # noqa: BLE001 - the copy is filed; only its address is not recorded
                logger.warning("Integration %s: could not record where the sent mail is filed: %s", inbox_id, exc)

    def _running_mailbox(self, inbox_id: str, wait: float) -> Any:
        found = self._supervisor.mailbox(inbox_id, tenant())
        return found.get(timeout=wait) if isinstance(found, pykka.Future) else found

    def _append_with_own_session(self, integration: dict[str, Any], raw: bytes) -> tuple[str, int | None]:
        client = self._imap_factory(ImapSettings.from_integration(integration, self._timeout, storage=self._storage))
        try:
            folder = client.find_special_folder(b"\\Sent") or self._config.sent_folder
            return str(folder), appended_uid(client.append(folder, raw, flags=[b"\\Seen"]))
        finally:
            try:
                client.logout()
            except Exception:  # noqa: BLE001 - closing a short session
                pass

    def _change_status(self, subdomain: str, inbox_id: str, conversation_id: str | None, request: SendRequest) -> None:
        for wanted, status in ((request.should_resolve, "closed"), (request.should_open, "new")):
            if not wanted:
                continue
            if not conversation_id:
                self._storage.log("error", f"cannot set the status {status}: the mail has no conversation",
                                  inbox_id=inbox_id)
                continue
            try:
                self._erxes.change_status(subdomain, conversation_id, status)
            except Exception as exc:  # noqa: BLE001 - the mail is out
                logger.warning("Integration %s: changing conversation %s to %s failed: %s", inbox_id,
                               conversation_id, status, exc)
                self._storage.log("error", f"changing conversation {conversation_id} to {status} failed: {exc}",
                                  inbox_id=inbox_id)
