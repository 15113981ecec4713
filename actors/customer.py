"""Customer: turns a mail's sender into an erxes customer id, one contacts lookup/create per address.

A customer actor serves one lane of the pipeline (``actors/router.py``): it takes every mail waiting in its
backlog at once, looks their senders up in one query, creates the missing ones (under a lock per address shared
by all lanes, so two mails from the same new sender create one customer) and passes them on to its lane's
conversation actor in the same order; a mail that fails goes back to its mailbox.
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import pykka

from runtime.pipeline import Incoming
from actors._answer import answer, is_transient
from runtime.errors import MailRejected
from runtime.logctx import bind
from runtime.pipeline import Backlog, Stripes, grouped
from runtime.tenants import bound
from runtime.mail.loops import is_own_mail

__all__ = ["Customers", "CustomerActor"]

logger = logging.getLogger(__name__)


class Customers:
    def __init__(self, *, storage: Any, erxes: Any, conversations: Backlog, stripes: Stripes | None = None,
                 finished: Callable[[Incoming], None] = lambda job: None,
                 after_stored: Callable[[Callable[[], None]], None] | None = None) -> None:
        self._storage = storage
        self._erxes = erxes
        self._conversations = conversations  # the lane's next stage: takes (job, customer id) pairs
        self._stripes = stripes or Stripes()
        self._finished = finished  # told for each mail that leaves the pipeline here
        # where the saves of new customers go to be done once the mails handed over before them are stored (the
        # lane's conversation stage); None: right after the hand-over
        self._after_stored = after_stored

    def resolve_batch(self, jobs: list[Incoming]) -> None:
        """Find or create the senders' customers, pass the mails on, then remember the new customers (after the
        hand-over, so a new sender's mail does not wait for that write; with ``after_stored``, once the lane stored
        the mails, so the write does not compete with theirs). Never raises: failures go to the mailboxes."""
        passed: list[tuple[Incoming, str]] = []
        new: list[tuple[str, str, str, tuple[str, str, str, str, str]]] = []  # (subdomain, inbox, email, save's args)
        for (subdomain, inbox_id), group in grouped(jobs, lambda j: (j.subdomain, j.inbox_id)).items():
            with bind(inbox_id, subdomain, kind=group[0].kind), bound(subdomain):
                passed += self._resolve_group(group, new)
        if passed:
            try:
                self._conversations.put_many(passed)
            except pykka.ActorDeadError:
                for job, _ in passed:
                    self._answer(job, "mail_failed", "conversation service is stopped")
        if new:
            save = functools.partial(self._save_customers, new)
            if self._after_stored is not None:
                try:
                    self._after_stored(save)  # the lane's conversation stage saves them after these mails
                    return
                except pykka.ActorDeadError:
                    pass
            save()

    def _save_customers(self, new: list[tuple[str, str, str, tuple[str, str, str, str, str]]]) -> None:
        for subdomain, inbox_id, _email, args in new:
            with bind(inbox_id, subdomain), bound(subdomain):
                try:
                    self._storage.save_customer(*args)
                except Exception as exc:  # noqa: BLE001 - the sender's next mail finds the customer in erxes again
                    logger.warning("Cannot remember customer %s of %s: %s", args[2], inbox_id, exc)

    def _resolve_group(self, jobs: list[Incoming], new: list[Any]) -> list[tuple[Incoming, str]]:
        known: dict[str, str] = {}
        saves = self._stripes.saves  # before the lookup: a lane's save after it makes the second lookup worth it
        try:
            found = self._storage.find_customers(jobs[0].inbox_id, [j.mail.sender for j in jobs])  # type: ignore
            known = {email: doc["contactsId"] for email, doc in found.items()}
        except Exception as exc:  # noqa: BLE001 - each mail then tries on its own below
            logger.warning("Customers of %s: batch lookup failed: %s", jobs[0].inbox_id, exc)
        passed = []
        for job in jobs:
            if is_own_mail(job.mail, job.inbox_id):  # our own reply coming back: no customer, nothing to store
                self._answer(job, "mail_done")
                continue
            sender = job.mail.sender  # type: ignore[attr-defined]
            try:
                customer_id = known.get(sender) or self.customer_id(job.subdomain, job.inbox_id, job.mail,
                                                                    since=saves, new=new)
            except MailRejected as exc:
                logger.warning("Mail %s UID %d (%s) rejected: %s", job.inbox_id, job.uid, job.folder, exc)
                self._answer(job, "mail_rejected", str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - reported to the mailbox, which retries or gives up
                logger.warning("Customer for %s UID %d (%s) failed: %s", job.inbox_id, job.uid, job.folder, exc)
                self._answer(job, "mail_failed", f"customer: {exc}", is_transient(exc))
                continue
            known[sender] = customer_id
            passed.append((job, customer_id))
        return passed

    def _answer(self, job: Incoming, method: str, *args: Any) -> None:
        self._finished(job)
        answer(job.mailbox, method, job.folder, job.uid, *args)

    def customer_id(self, subdomain: str, inbox_id: str, mail: Any, *, since: int | None = None,
                    new: list[Any] | None = None) -> str:
        """The customer id of ``mail``'s sender: stored, else found or created in erxes (contacts). ``since``: the
        lanes' save count at the caller's own stored lookup; when no lane saved a customer since, the stored
        lookup is not repeated (erxes's ``findOne`` comes next anyway, so a miss only costs a call). ``new``: a
        created or found customer is added there for the caller to save once the mail is passed on (else saved
        at once)."""
        email = mail.sender
        if not email:
            raise MailRejected("the mail has no usable sender address")
        with self._stripes.lock((inbox_id, email)):  # another lane may be creating the same new customer
            if since is None or self._stripes.saves != since:
                known = self._storage.find_customer(inbox_id, email)
                if known:
                    return str(known["contactsId"])
            return self._create(subdomain, inbox_id, email, mail, new)

    def _create(self, subdomain: str, inbox_id: str, email: str, mail: Any, new: list[Any] | None) -> str:
        found = self._erxes.find_customer(subdomain, email)
        name = next((a.get("name", "") for a in mail.from_ if a.get("address", "").lower() == email), "")
        first, _, last = name.partition(" ")
        if found is None:
            found = self._erxes.create_customer(subdomain, inbox_id, email, first, last)
            logger.debug("Created customer %s for %s", found["_id"], email)
        args = (inbox_id, email, str(found["_id"]), first, last)
        self._stripes.saved()
        if new is None:
            return str(self._storage.save_customer(*args)["contactsId"])
        new.append((subdomain, inbox_id, email, args))
        return args[2]


class CustomerActor(pykka.ThreadingActor, Customers):
    """One lane's customer stage: ``backlog.wake`` tells it to :meth:`work` off everything waiting."""

    def __init__(self, *, backlog: Backlog, **kwargs: Any) -> None:
        pykka.ThreadingActor.__init__(self)
        Customers.__init__(self, **kwargs)
        self._backlog = backlog

    def work(self) -> None:
        self.resolve_batch(self._backlog.take())
