"""Several runtime nodes share the mailboxes (issue 8): real ``imap-runtime`` processes on one machine, real Dovecot,
RabbitMQ, Redis and SecantusDB.

One cluster goes through every scenario in turn, to keep the start-ups few (run it alone with
``-m multinode``; it takes about 4 minutes):

1. 3 nodes, 30 mailboxes: sampled every second for 2 minutes, each mailbox has exactly one IMAP session
   (``doveadm who``) and no node holds more than 11 leases. Meanwhile ``createIntegration`` for a 31st mailbox is
   sent 5 times at once to different nodes (over HTTP, so each goes to the node named): one integration, one
   listener.
2. A 4th node joins: mailboxes move to it, never with two sessions at once, none without a session over 10 s.
3. ``kill -9`` of a node: its mailboxes IDLE on the others within 30 s.
4. A rolling restart (SIGTERM, start) of every running node.

Mail flows to every mailbox through LMTP (no IMAP session of its own) from phase 2 on, and from the start a sampler
checks ``doveadm who`` four times a second: never two sessions of one mailbox. At the end every mail is stored once,
in one conversation, and announced once (the kill -9 may repeat an announcement: at-least-once by design).
"""
from __future__ import annotations

import concurrent.futures
import json
import random
import smtplib
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from bench.common import add_users
from bench.scale import sessions_by_user
from tests.conftest import MailServer, make_mail, wait_for
from tests.faultproxy import FaultProxy
from tests.e2e import REPO, Caller, RuntimeProcess

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(480)]

MAILBOXES = 30
SAMPLE_SECONDS = 120


class Repeating:
    """``once()`` every ``interval`` seconds in a daemon thread, until ``stop()``."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def once(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.once()
            self._stop.wait(self._interval)


class Sampler(Repeating):
    """``doveadm who`` four times a second: the sessions of each watched user over time."""

    def __init__(self, services: dict[str, str], users: list[str]) -> None:
        super().__init__(0.25)
        self._services = services
        self.users = set(users)
        self.samples: list[tuple[float, dict[str, int]]] = []

    def once(self) -> None:
        found = sessions_by_user(self._services)
        self.samples.append((time.monotonic(), {u: len(found.get(u, [])) for u in self.users}))

    def doubled(self) -> list[tuple[float, str, int]]:
        return [(t, u, n) for t, s in self.samples for u, n in s.items() if n > 1]

    def longest_gap(self, since: float, users: set[str]) -> tuple[float, str]:
        """The longest time any of ``users`` went without a session after ``since``."""
        worst, who = 0.0, ""
        for user in users:
            gap_from = None
            for t, sample in self.samples:
                if t < since or user not in sample:
                    continue
                if sample[user] == 0 and gap_from is None:
                    gap_from = t
                elif sample[user] > 0 and gap_from is not None:
                    if t - gap_from > worst:
                        worst, who = t - gap_from, user
                    gap_from = None
            if gap_from is not None and self.samples[-1][0] - gap_from > worst:
                worst, who = self.samples[-1][0] - gap_from, user
        return worst, who


class Mailer(Repeating):
    """Delivers mail through LMTP (no IMAP session) to random mailboxes, ``rate`` a second; remembers each."""

    def __init__(self, services: dict[str, str], users: list[str], rate: float = 3.0) -> None:
        super().__init__(1.0 / rate)
        self._port = int(services["LMTP_PORT"])
        self._users = users
        self.sent: list[tuple[float, str, str]] = []  # (when, user, Message-ID)
        self._rng = random.Random(8)

    def deliver(self, user: str) -> None:
        message_id = f"<{uuid.uuid4().hex}@multinode.example.com>"
        raw = make_mail(to=f"{user}@localhost", sender=f"Sender {len(self.sent)} <s{len(self.sent)}@example.com>",
                        subject=f"mail {len(self.sent)}", message_id=message_id)
        with smtplib.LMTP("127.0.0.1", self._port, timeout=10) as lmtp:
            lmtp.sendmail("sender@example.com", [user], raw)
        self.sent.append((time.monotonic(), user, message_id))

    def once(self) -> None:
        self.deliver(self._rng.choice(self._users))


def get_json(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # /ready answers 503 with the same report
        return json.loads(exc.read())


def leases(node: RuntimeProcess) -> int:
    held = get_json(f"http://127.0.0.1:{node.port}/ready")["node"]["leases"]
    assert isinstance(held, int)
    return held


def owners(node: RuntimeProcess) -> dict[str, str]:
    """``python -m runtime.admin owners`` with the node's settings: inboxId -> owner node (or "-")."""
    out = subprocess.run([sys.executable, "-m", "runtime.admin", "owners"], env=node.env, cwd=REPO,
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return {line.split()[0]: line.split()[2] for line in out.splitlines()
            if line and not line.startswith("node ") and "mailbox(es)" not in line}


def rpc(node: RuntimeProcess, procedure: str, data: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{node.port}/rpc/{procedure}", method="POST",
                                     data=json.dumps({"subdomain": "os", "data": data}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


@pytest.fixture
def start_node(services: dict[str, str], mongo_url: str, prefix: str,
               tmp_path: Path) -> Iterator[Callable[[str], RuntimeProcess]]:
    made: list[RuntimeProcess] = []

    def start(name: str, **env: str) -> RuntimeProcess:
        node = RuntimeProcess(services, mongo_url=mongo_url, prefix=prefix, log_path=tmp_path / f"{name}.log")
        node.env.update(NODE_ID=name, **env)
        made.append(node)
        node.start()
        return node

    yield start
    for node in made:
        if node.proc is not None and node.proc.poll() is None:
            node.terminate(timeout=15)


def test_nodes_share_mailboxes_one_listener_each_through_joins_kills_and_restarts(
        services, start_node, caller: Caller, mailserver: MailServer, db):
    accounts = add_users(services, MAILBOXES + 1, prefix="mn")
    inbox = {user: f"inbox-{i}" for i, (user, _) in enumerate(accounts)}
    users = [u for u, _ in accounts[:MAILBOXES]]
    extra, extra_password = accounts[MAILBOXES]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        nodes = list(pool.map(start_node, ["n1", "n2", "n3"]))
    sampler = Sampler(services, [u for u, _ in accounts])
    mailer = Mailer(services, users)
    sampler.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda a: caller.create_integration(inbox[a[0]], mailserver.details(*a)),
                          accounts[:MAILBOXES]))
        settle(db, nodes, sampler, {u: inbox[u] for u in users}, "30 mailboxes on 3 nodes")

        # 1. steady state, sampled for 2 minutes; the 31st mailbox created 5 times at once on different nodes
        started = time.monotonic()
        creating = concurrent.futures.ThreadPoolExecutor(5)
        details = json.dumps(mailserver.details(extra, extra_password))
        replies = [creating.submit(rpc, nodes[i % 3], "createIntegration", {
            "kind": "imap", "integrationId": inbox[extra],
            "doc": {"accountId": "", "kind": "imap", "integrationId": inbox[extra], "data": details}})
            for i in range(5)]
        most = 0
        for second in range(SAMPLE_SECONDS):
            most = max([most, *(leases(n) for n in nodes)])
            time.sleep(max(0.0, started + second + 1 - time.monotonic()))
        ended = time.monotonic()
        assert [r.result(timeout=30) for r in replies] == [{"status": "success"}] * 5
        creating.shutdown()
        window = [s for t, s in sampler.samples if started <= t <= ended]
        assert len(window) >= SAMPLE_SECONDS  # at least one sample a second
        assert all(s[u] == 1 for s in window for u in users), "a mailbox without, or with two, sessions"
        assert most <= 11
        settle(db, nodes, sampler, inbox, "the 31st mailbox")
        assert db.imap_integrations.count_documents({"inboxId": inbox[extra]}) == 1
        assert list(owners(nodes[0]).values()).count("-") == 0
        print(f"\n[multinode] 2 min of {len(window)} samples: one session each; most leases on a node: {most}")

        # 2. a 4th node joins while mail flows
        mailer.start()
        joined = time.monotonic()
        nodes.append(start_node("n4"))
        wait_for(lambda: leases(nodes[3]) >= 6, timeout=30, interval=0.5, message="mailboxes moving to n4")
        settle(db, nodes, sampler, inbox, "the 4th node's share")
        gap, who = sampler.longest_gap(joined, set(inbox))
        print(f"[multinode] n4 joined: {[leases(n) for n in nodes]} leases; longest gap {gap:.1f} s ({who})")
        assert gap <= 10

        # 3. kill -9: its mailboxes IDLE on the other nodes within 30 s
        victim, nodes = nodes[0], nodes[1:]
        theirs = [u for u in inbox if owners(victim)[inbox[u]] == "n1"]
        assert theirs
        killed_at = time.monotonic()
        victim.kill()
        for user in theirs[:5]:
            mailer.deliver(user)
        settle(db, nodes, sampler, inbox, "the takeover", timeout=30, since=killed_at, moved={inbox[u] for u in theirs})
        took = time.monotonic() - killed_at
        print(f"[multinode] kill -9 of n1 ({len(theirs)} mailboxes): all IDLE elsewhere after {took:.1f} s")
        assert took <= 30
        calm = time.monotonic()  # from here on only clean hand-overs: every announcement exactly once

        # 4. rolling restart of every running node
        for node in nodes:
            stopping = time.monotonic()
            assert node.terminate(timeout=20) == 0
            print(f"[multinode] SIGTERM: stopped in {time.monotonic() - stopping:.1f} s")
            node.start()
            settle(db, nodes, sampler, inbox, "after restarting a node", timeout=60)

        # removal on a node that does not own the mailbox: the owner stops listening
        owner = owners(nodes[0])[inbox[extra]]
        other = next(n for n in nodes if n.env["NODE_ID"] != owner)
        assert rpc(other, "removeIntegrations", {"integrationId": inbox[extra]}) == {"status": "success"}
        wait_for(lambda: sampler.samples[-1][1][extra] == 0, timeout=10, message="the owner to stop listening")
        assert db.imap_integrations.count_documents({"inboxId": inbox[extra]}) == 0
    finally:
        mailer.stop()
        sampler.stop()

    # every mail stored once, in a conversation of its own, announced (once, apart from the kill's at-least-once)
    sent = {message_id: (when, user) for when, user, message_id in mailer.sent}
    wait_for(lambda: db.imap_messages.count_documents({"ingestState": "done"}) == len(sent), timeout=60,
             message=f"all {len(sent)} mails stored")
    stored = {d["messageId"]: d for d in db.imap_messages.find({}, {"messageId": 1, "inboxIntegrationId": 1})}
    assert {m: (d["inboxIntegrationId"]) for m, d in stored.items()} == {m: inbox[u] for m, (_, u) in sent.items()}
    assert db.standalone_conversations.count_documents({}) == len(sent)
    deliveries = {n["messageId"]: n["deliveries"] for n in db.standalone_message_notifications.find()}
    assert all(deliveries.get(str(d["_id"]), 0) >= 1 for d in stored.values())
    late = [d for m, d in stored.items() if sent[m][0] > calm]
    assert late
    assert all(deliveries[str(d["_id"])] == 1 for d in late)
    assert sampler.doubled() == []
    print(f"[multinode] {len(sent)} mails, each stored once; "
          f"{sum(1 for n in deliveries.values() if n > 1)} announcement(s) repeated")


def test_a_node_cut_off_from_redis_stops_listening_before_its_leases_can_expire(
        services, start_node, caller: Caller, mailserver: MailServer, db, proxies):
    """Node c1 reaches Redis through a proxy that then goes silent (every call times out): c1 stops its mailboxes
    within the renewal deadline (60 % of the 10 s lease), c2 takes them once the leases expire, never two sessions;
    when Redis answers again c1 rejoins and takes its share back."""
    accounts = add_users(services, 4, prefix="rc")
    inbox = {user: f"inbox-rc{i}" for i, (user, _) in enumerate(accounts)}
    redis = FaultProxy("127.0.0.1", int(services.get("REDIS_PORT", "6379")), max_connections=256)
    proxies.append(redis)
    cut_off, other = start_node("c1", REDIS_PORT=str(redis.port)), start_node("c2")
    sampler = Sampler(services, list(inbox))
    sampler.start()
    try:
        for user, password in accounts:
            caller.create_integration(inbox[user], mailserver.details(user, password))
        settle(db, [cut_off, other], sampler, inbox, "4 mailboxes on 2 nodes")
        theirs = [u for u in inbox if owners(other)[inbox[u]] == "c1"]
        assert theirs

        silenced = time.monotonic()
        redis.stall(True)
        wait_for(lambda: all(sampler.samples[-1][1][u] == 0 for u in theirs), timeout=15, interval=0.1,
                 message="c1 to stop listening")
        stopped = [next(t for t, s in sampler.samples if t > silenced and s[u] == 0) - silenced for u in theirs]
        print(f"\n[multinode] Redis silent for c1: its {len(theirs)} mailboxes stopped after "
              f"{max(stopped):.1f} s (lease 10 s)")
        assert max(stopped) < 9.5  # before the leases can expire, with room for the sampler's period
        mailserver.append(theirs[0], dict(accounts)[theirs[0]], make_mail(to=f"{theirs[0]}@localhost",
                                                                          subject="while c1 is cut off"))
        settle(db, [other], sampler, inbox, "c2 took them over", timeout=40, since=silenced,
               moved={inbox[u] for u in theirs})
        print(f"[multinode] c2 listens to all 4 after {time.monotonic() - silenced:.1f} s")

        redis.stall(False)
        redis.cut()  # the silent connections are dropped; c1 reconnects
        wait_for(lambda: leases(cut_off) >= 1, timeout=40, interval=0.5, message="c1 to rejoin")
        settle(db, [cut_off, other], sampler, inbox, "the shares back to 2 and 2")
    finally:
        sampler.stop()
    wait_for(lambda: db.imap_messages.count_documents({"subject": "while c1 is cut off", "ingestState": "done"}),
             timeout=20)
    assert db.imap_messages.count_documents({"subject": "while c1 is cut off"}) == 1
    assert sampler.doubled() == []


def settle(db: Any, nodes: list[RuntimeProcess], sampler: Sampler, inbox: dict[str, str], what: str, *,
           timeout: float = 45, since: float | None = None, moved: set[str] = frozenset()) -> None:
    """Wait until every mailbox of ``inbox`` (user -> inboxId) IDLEs with one session, the live nodes hold one
    lease each and none more than its fair share; ``moved`` mailboxes must have IDLEd again after ``since``."""
    share = -(-len(inbox) // len(nodes))
    after = time.time() - (time.monotonic() - since) if since is not None else 0.0

    def done() -> bool:
        states = {d["inboxId"]: d for d in db.imap_integrations.find({}, {"inboxId": 1, "state": 1,
                                                                           "stateChangedAt": 1})}
        if any(states.get(i, {}).get("state") != "idle" for i in inbox.values()):
            return False
        if any(states[i]["stateChangedAt"].timestamp() < after for i in moved):
            return False
        if not sampler.samples or any(sampler.samples[-1][1].get(u) != 1 for u in inbox):
            return False
        held = [leases(n) for n in nodes]
        return sum(held) == len(inbox) and max(held) <= share

    wait_for(done, timeout=timeout, interval=0.5, message=what)
