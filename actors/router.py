"""The pipeline's entry: N lanes, each a :class:`CustomerActor` feeding a :class:`ConversationActor`, and the
router that sends each mail into its lane (``runtime/pipeline.py``: a thread's mails share a lane, in order).

Mailboxes and the push ingest call :meth:`Router.resolve` (in their own thread) as they called the single
customer actor before; the router is not an actor itself, only a thread-safe front to the lanes.
"""
from __future__ import annotations

import time
from typing import Any

import pykka

from actors.conversation import ConversationActor
from actors.customer import CustomerActor
from runtime.pipeline import Incoming
from runtime.pipeline import Backlog, InFlight, Later, Stripes

__all__ = ["Router", "start_pipeline"]


class Router:
    def __init__(self, customers: list[Backlog]) -> None:
        self._customers = customers
        self._in_flight = InFlight()
        self.stages: list[list[Any]] = []  # the lanes' actor proxies, stage by stage (customer, conversation)

    @property
    def lanes(self) -> int:
        return len(self._customers)

    def resolve(self, job: Incoming) -> None:
        """Send ``job`` down its lane (raises pykka.ActorDeadError once the pipeline stopped)."""
        lane = self._in_flight.route(job.inbox_id, job.mail, len(self._customers))
        try:
            self._customers[lane].put(job)
        except pykka.ActorDeadError:
            self.finished(job)
            raise

    def finished(self, job: Incoming) -> None:
        """A lane answered ``job``'s mailbox: the mail left the pipeline."""
        self._in_flight.finished(job.inbox_id, job.mail.message_id)  # type: ignore[attr-defined]

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def drain(self, timeout: float) -> None:
        """Return once every mail handed in before went through both stages of its lane (a hand-over's wait);
        raises pykka.Timeout after ``timeout`` seconds in all."""
        deadline = time.monotonic() + timeout
        for stage in self.stages:
            futures = [proxy.actor_urn for proxy in stage]  # each lane answers once it passed on what it had
            for future in futures:
                future.get(timeout=max(0.0, deadline - time.monotonic()))


def start_pipeline(*, storage: Any, erxes: Any, lanes: int) -> tuple[Router, list[pykka.ActorRef[Any]]]:
    """Start ``lanes`` lanes; returns the router and the actors (conversation ones first: stop them last)."""
    customer_backlogs = [Backlog() for _ in range(lanes)]
    router = Router(customer_backlogs)
    stripes = Stripes()
    conversations, customers = [], []
    for backlog in customer_backlogs:
        next_stage = Backlog()
        conversation = ConversationActor.start(backlog=next_stage, storage=storage, erxes=erxes,
                                               finished=router.finished)
        next_stage.wake = conversation.proxy().work
        customer = CustomerActor.start(backlog=backlog, storage=storage, erxes=erxes, conversations=next_stage,
                                       stripes=stripes, finished=router.finished,
                                       after_stored=lambda run, stage=next_stage: stage.put(Later(run)))
        backlog.wake = customer.proxy().work
        conversations.append(conversation)
        customers.append(customer)
    router.stages = [[ref.proxy() for ref in customers], [ref.proxy() for ref in conversations]]
    return router, [*conversations, *customers]
