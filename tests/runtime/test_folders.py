"""Folder resolution (kinds/imap/folders.py) and a mailbox with a folder it cannot select, tick by tick (no servers)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import imaplib
from imapclient.imapclient import Namespace

from kinds.imap.folders import FolderSkips, resolve
from kinds.imap.actor import Mailbox
from kinds.imap.logins import LoginPacer
from tests.actors.test_mailbox import CONFIG, FakeImap, MemoryStorage, Pipeline, clock
from tests.conftest import make_mail

CYRUS = [((b"\\HasChildren",), b".", "INBOX"), ((b"\\HasNoChildren",), b".", "INBOX.Support"),
         ((b"\\HasNoChildren", b"\\Sent"), b".", "INBOX.Sent Items"), ((b"\\Noselect",), b".", "INBOX.Archive"),
         ((b"\\HasNoChildren",), b".", "INBOX.Support.Tier 2")]
CYRUS_NS = [("INBOX.", ".")]
DOVECOT = [((b"\\HasNoChildren",), b"/", "INBOX"), ((b"\\HasNoChildren",), b"/", "Support"),
           ((b"\\HasNoChildren", b"\\Sent"), b"/", "Sent")]


def test_a_configured_folder_is_found_in_the_personal_namespace():
    assert resolve("Support", CYRUS, CYRUS_NS).name == "INBOX.Support"
    assert resolve("Support/Tier 2", CYRUS, CYRUS_NS).name == "INBOX.Support.Tier 2"
    assert resolve("Support.Tier 2", CYRUS, CYRUS_NS).name == "INBOX.Support.Tier 2"
    assert resolve("INBOX.Support", CYRUS, CYRUS_NS).name == "INBOX.Support"  # the server's own name: as it is
    assert resolve("inbox", CYRUS, CYRUS_NS).name == "INBOX"
    assert resolve("Support", DOVECOT, [("", "/")]).name == "Support"


def test_special_use_and_case_are_last_resorts_and_never_guess_between_two():
    assert resolve("Sent", CYRUS, CYRUS_NS).name == "INBOX.Sent Items"  # the one folder flagged \Sent
    assert resolve("support", CYRUS, CYRUS_NS).name == "INBOX.Support"  # ignoring case, without the prefix
    two = DOVECOT + [((b"\\HasNoChildren",), b"/", "SUPPORT")]
    assert resolve("Support", two, [("", "/")]).name == "Support"  # an exact name wins
    found = resolve("support", two, [("", "/")])
    assert found.name is None and "ambiguous" in found.why and "SUPPORT" in found.why and "Support" in found.why


def test_an_unselectable_or_missing_folder_resolves_to_nothing_and_says_what_there_is():
    archive = resolve("Archive", CYRUS, CYRUS_NS)  # \Noselect: never selected
    assert archive.name is None and "'Archive'" in archive.why and "INBOX.Support" in archive.why
    assert resolve("Billing", DOVECOT, [("", "/")]).why == "no folder 'Billing' on the server (it has: INBOX, Sent, Support)"


def test_a_skipped_folder_is_retried_on_its_own_slower_schedule():
    skips = FolderSkips(first=60.0, cap=900.0)
    assert skips.due("Support", 0.0) and skips.reason() is None
    assert skips.failed("Support", "not there", now=0.0) == 60.0
    assert not skips.due("Support", 59.9) and skips.due("Support", 60.0)
    assert skips.due("INBOX", 1.0)  # the others are never held back
    assert [skips.failed("Support", "not there", now=t) for t in (60.0, 180.0, 420.0, 900.0, 1800.0)] == \
        [120.0, 240.0, 480.0, 900.0, 900.0]
    assert skips.reason() == "folder 'Support' skipped: not there"
    assert skips.selected("Support") and not skips.selected("Support")
    assert skips.reason() is None and skips.failed("Support", "again", now=0.0) == 60.0  # the schedule restarts


class CyrusLikeImap(FakeImap):
    """Folders as Cyrus names them: ``Support`` is ``INBOX.Support`` (or missing when ``support`` is False)."""

    def __init__(self, mails: dict[int, bytes], *, support: bool = True) -> None:
        super().__init__(mails)
        self.support = support
        self.selects: list[str] = []
        self.listed = 0

    def select_folder(self, name: str, readonly: bool = False) -> dict[bytes, Any]:
        self.selects.append(name)
        if name not in ("INBOX", *(("INBOX.Support",) if self.support else ())):
            raise imaplib.IMAP4.error("select failed: Mailbox does not exist")
        return super().select_folder(name, readonly)

    def has_capability(self, name: str) -> bool:
        return name == "NAMESPACE"

    def namespace(self) -> Namespace:
        return Namespace([("INBOX.", ".")], None, None)

    def list_folders(self) -> list[Any]:
        self.listed += 1
        return CYRUS[:1] + (CYRUS[1:2] if self.support else [])


def folder_mailbox(imap_factory: Any, storage: MemoryStorage, pipeline: Pipeline) -> Mailbox:
    integration = {"inboxId": "i1", "host": "h", "user": "u@x", "password": "p", "folders": ["INBOX", "Support"]}
    return Mailbox(integration, config=CONFIG, storage=storage, pipeline=pipeline, imap_factory=imap_factory,
                   clock=clock, sleep=lambda s: setattr(clock, "now", clock.now + s),
                   pacer=LoginPacer(per_mailbox=10, window=600.0, per_host_per_second=1000.0, clock=clock))


def test_support_is_found_as_inbox_support_and_ingested():
    imap = CyrusLikeImap({1: make_mail(to="u@x", subject="hello")})
    storage, pipeline = MemoryStorage(), Pipeline()
    box = folder_mailbox(lambda settings: imap, storage, pipeline)
    for _ in range(6):
        box.tick()
    assert imap.selects[:3] == ["INBOX", "Support", "INBOX.Support"]  # refused, resolved, selected
    assert {(j.folder, j.uid) for j in pipeline.jobs} == {("INBOX", 1), ("Support", 1)}
    assert box.status()["state"] == "idle" and box.status()["error"] is None
    imap.selects.clear()
    box._selected = None
    box.tick()  # later SELECTs use the server's name at once
    box.mail_done("Support", 1)
    assert "Support" not in imap.selects and storage.cursors[("i1", "Support")] == (7, 1)


def test_a_folder_that_cannot_be_selected_hurts_only_itself():
    imap = CyrusLikeImap({1: make_mail(to="u@x", subject="hello")}, support=False)
    storage, pipeline = MemoryStorage(), Pipeline()
    connects = []
    box = folder_mailbox(lambda settings: connects.append(1) or imap, storage, pipeline)
    clock.now = 1000.0
    for _ in range(8):
        box.tick()
    assert len(connects) == 1  # never disconnected
    assert [(j.folder, j.uid) for j in pipeline.jobs] == [("INBOX", 1)]
    status = box.status()
    assert status["state"] == "idle" and imap.idling  # INBOX reached IDLE
    assert status["error"].startswith("folder 'Support' skipped: folder 'Support' cannot be selected: "
                                      "select failed: Mailbox does not exist; no folder 'Support' on the server")
    assert storage.health[-1]["healthy"] is True
    tried = imap.selects.count("Support")
    for _ in range(30):  # 30 one-second IDLE slices: no retry before its minute
        box.tick()
    assert imap.selects.count("Support") == tried and len(connects) == 1
    imap.support = True  # someone creates the folder; the retry after a minute finds it
    for _ in range(40):
        box.tick()
    assert imap.selects.count("INBOX.Support") == 1 and len(connects) == 1
    assert box.status()["error"] is None and box.status()["state"] == "idle"


class TwoFolders(FakeImap):
    """INBOX and Support, each with mails of its own; ``selected`` is the folder the session is in."""

    def __init__(self, inbox: dict[int, bytes], support: dict[int, bytes]) -> None:
        super().__init__(inbox)
        self.folders = {"INBOX": inbox, "Support": support}
        self.selected = ""
        self.statuses = 0

    def select_folder(self, name: str, readonly: bool = False) -> dict[bytes, Any]:
        self.selected, self.mails = name, self.folders[name]
        return super().select_folder(name, readonly)

    def folder_status(self, name: str, items: list[bytes]) -> dict[bytes, Any]:
        assert name != self.selected  # RFC 3501: STATUS is not for the selected folder
        self.statuses += 1
        return {b"UIDVALIDITY": self.uidvalidity, b"UIDNEXT": max(self.folders[name], default=0) + 1}


def two_folder_mailbox(imap: TwoFolders, pipeline: Pipeline, **config: Any) -> Mailbox:
    integration = {"inboxId": "i1", "host": "h", "user": "u@x", "password": "p", "folders": ["INBOX", "Support"]}
    return Mailbox(integration, config=SimpleNamespace(**{**vars(CONFIG), **config}), storage=MemoryStorage(),
                   pipeline=pipeline, imap_factory=lambda settings: imap, clock=clock,
                   sleep=lambda s: setattr(clock, "now", clock.now + s),
                   pacer=LoginPacer(per_mailbox=10, window=600.0, per_host_per_second=1000.0, clock=clock))


def dispatched(pipeline: Pipeline) -> list[tuple[str, int]]:
    return [(j.folder, j.uid) for j in pipeline.jobs]


def test_a_new_inbox_mail_is_fetched_while_the_second_folder_catches_up():
    """Issue 14 finding 4: while Support's backlog goes through a full pipeline, INBOX is not selected and nothing
    announces its mail; it used to wait for all of Support and then for the IDLE renewal (9 minutes)."""
    support = {u: make_mail(to="u@x", subject=f"support {u}") for u in range(1, 21)}
    imap = TwoFolders({1: make_mail(to="u@x", subject="inbox 1")}, support)
    pipeline = Pipeline()
    box = two_folder_mailbox(imap, pipeline, max_inflight=2)
    for _ in range(3):  # connect, INBOX's mail, Support's first mail (the pipeline holds 2)
        box.tick()
    assert dispatched(pipeline) == [("INBOX", 1), ("Support", 1)] and imap.selected == "Support"
    imap.folders["INBOX"][2] = make_mail(to="u@x", subject="inbox 2")  # arrives while Support is selected
    answered = 0
    for _ in range(40):  # the pipeline answers one mail per tick, oldest first
        job = pipeline.jobs[answered]
        answered += 1
        box.mail_done(job.folder, job.uid)
        box.tick()
        if ("INBOX", 2) in dispatched(pipeline):
            break
    assert ("INBOX", 2) in dispatched(pipeline), dispatched(pipeline)
    supports = [uid for folder, uid in dispatched(pipeline) if folder == "Support"]
    assert len(supports) < 20  # fetched before Support's backlog was through
    assert imap.statuses >= 1  # noticed by STATUS, INBOX not selected for it in vain


def test_a_mail_that_came_while_the_second_folder_was_selected_is_fetched_before_idle():
    """Back in INBOX after a search of Support: a mail that arrived meanwhile was never announced (INBOX was not
    selected) and its SELECT's EXISTS is only the folder's size; UIDNEXT shows it. It used to wait for the IDLE
    renewal."""
    imap = TwoFolders({1: make_mail(to="u@x", subject="inbox 1")}, {})
    pipeline = Pipeline()
    box = two_folder_mailbox(imap, pipeline)
    for _ in range(3):  # connect, INBOX's search, Support's search
        box.tick()
    assert dispatched(pipeline) == [("INBOX", 1)] and imap.selected == "Support" and not imap.idling
    imap.folders["INBOX"][2] = make_mail(to="u@x", subject="inbox 2")
    box._primary_checked = clock.now  # the STATUS was just asked: it is the SELECT that must see the mail
    for _ in range(4):
        box.tick()
        if imap.idling:
            break
    assert dispatched(pipeline) == [("INBOX", 1), ("INBOX", 2)] and imap.idling
