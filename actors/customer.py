"""Customer: turns a mail's sender into an erxes customer id, one contacts lookup/create per address.

One actor serializes the work, so two mails from the same new sender create one customer. Answers travel on:
the mail goes to the conversation actor with its customer id, or back to the mailbox as failed.
"""
from __future__ import annotations

import logging
from typing import Any

import pykka

from runtime.cursor import Incoming
from actors._answer import answer, is_transient
from runtime.errors import RequestError
from runtime.logctx import bind
from runtime.tenants import bound
from runtime.loops import is_own_mail

__all__ = ["Customers", "CustomerActor"]

logger = logging.getLogger(__name__)


class Customers:
    def __init__(self, *, storage: Any, erxes: Any, conversations: Any) -> None:
        self._storage = storage
        self._erxes = erxes
        self._conversations = conversations

    def resolve(self, job: Incoming) -> None:
        """Find or create the sender's customer, then pass the mail on. Never raises: failures go to the mailbox."""
        with bind(job.inbox_id, job.subdomain), bound(job.subdomain):
            self._resolve(job)

    def _resolve(self, job: Incoming) -> None:
        if is_own_mail(job.mail, job.inbox_id):  # our own reply coming back: no customer, nothing to store
            answer(job.mailbox, "mail_done", job.folder, job.uid)
            return
        try:
            customer_id = self.customer_id(job.subdomain, job.inbox_id, job.mail)
        except Exception as exc:  # noqa: BLE001 - reported to the mailbox, which retries or gives up
            logger.warning("Customer for %s UID %d (%s) failed: %s", job.inbox_id, job.uid, job.folder, exc)
            answer(job.mailbox, "mail_failed", job.folder, job.uid, f"customer: {exc}", is_transient(exc))
            return
        try:
            self._conversations.ingest(job, customer_id)
        except pykka.ActorDeadError:
            answer(job.mailbox, "mail_failed", job.folder, job.uid, "conversation service is stopped")

    def customer_id(self, subdomain: str, inbox_id: str, mail: Any) -> str:
        email = mail.sender
        if not email:
            raise RequestError("the mail has no sender address")
        known = self._storage.find_customer(inbox_id, email)
        if known:
            return known["contactsId"]
        found = self._erxes.find_customer(subdomain, email)
        name = next((a.get("name", "") for a in mail.from_ if a.get("address", "").lower() == email), "")
        first, _, last = name.partition(" ")
        if found is None:
            found = self._erxes.create_customer(subdomain, inbox_id, email, first, last)
            logger.debug("Created customer %s for %s", found["_id"], email)
        return self._storage.save_customer(inbox_id, email, str(found["_id"]), first, last)["contactsId"]


class CustomerActor(pykka.ThreadingActor, Customers):
    def __init__(self, **kwargs: Any) -> None:
        pykka.ThreadingActor.__init__(self)
        Customers.__init__(self, **kwargs)
