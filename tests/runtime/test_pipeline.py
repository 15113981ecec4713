"""The pipeline's plain pieces: lanes, in-flight routing, backlogs, rounds and in-batch threading (no servers)."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pykka
import pytest

from runtime.pipeline import Backlog, InFlight, ThreadMap, lane_of, pick_thread, thread_ids, thread_root, unique_rounds


def mail(message_id: str, in_reply_to: str | None = None, references: tuple[str, ...] = ()) -> Any:
    return SimpleNamespace(message_id=message_id, in_reply_to=in_reply_to, references=list(references))


def test_thread_root_and_ids():
    assert thread_root(mail("<a>")) == "<a>"
    assert thread_root(mail("<c>", "<b>")) == "<b>"
    assert thread_root(mail("<c>", "<b>", ("<a>", "<b>"))) == "<a>"
    assert thread_ids(mail("<c>", "<b>", ("<a>", "<b>"))) == ["<b>", "<a>"]  # the parent first, no repeats
    assert thread_ids(mail("<a>")) == []


def test_lane_is_stable_and_in_range():
    lanes = {lane_of("inbox", f"<m{i}>", 4) for i in range(200)}
    assert lanes == {0, 1, 2, 3}
    assert lane_of("inbox", "<x>", 4) == lane_of("inbox", "<x>", 4)
    assert lane_of("inbox", "<x>", 1) == 0


def different_lane_roots(inbox: str, lanes: int) -> tuple[str, str]:
    first = "<r0>"
    other = next(f"<r{i}>" for i in range(1, 100) if lane_of(inbox, f"<r{i}>", lanes) != lane_of(inbox, first, lanes))
    return first, other


def test_a_reply_follows_its_parent_while_the_parent_is_in_flight():
    flight = InFlight()
    parent_id, reply_root = different_lane_roots("inbox", 4)
    parent = mail(parent_id)
    reply = mail("<reply>", parent_id, (reply_root,))  # a References chain that does not start at the parent
    parent_lane = flight.route("inbox", parent, 4)
    assert flight.route("inbox", reply, 4) == parent_lane
    assert flight.route("other-inbox", mail("<z>", parent_id, (reply_root,)), 4) == lane_of(
        "other-inbox", reply_root, 4)  # in-flight mails of another integration do not count
    flight.finished("inbox", "<reply>")
    flight.finished("inbox", parent_id)  # stored now: its reply finds it in storage, whatever the lane
    assert flight.route("inbox", reply, 4) == lane_of("inbox", reply_root, 4) != parent_lane


def test_a_second_copy_of_a_mail_in_flight_takes_the_same_lane_and_is_counted():
    flight = InFlight()
    first = flight.route("inbox", mail("<a>"), 8)
    assert flight.route("inbox", mail("<a>"), 8) == first
    flight.finished("inbox", "<a>")
    assert len(flight) == 1
    flight.finished("inbox", "<a>")
    assert len(flight) == 0


def test_backlog_wakes_its_actor_once_for_everything_put_until_taken():
    wakes: list[int] = []
    backlog = Backlog(lambda: wakes.append(1))
    backlog.put("a")
    backlog.put_many(["b", "c"])
    assert len(wakes) == 1
    assert backlog.take() == ["a", "b", "c"]
    assert backlog.take() == []
    backlog.put("d")
    assert len(wakes) == 2


def test_backlog_of_a_stopped_actor_raises_and_keeps_nothing():
    def dead() -> None:
        raise pykka.ActorDeadError("stopped")

    backlog = Backlog(dead)
    with pytest.raises(pykka.ActorDeadError):
        backlog.put("a")
    assert len(backlog) == 0
    with pytest.raises(pykka.ActorDeadError):  # still tries: a restarted actor would be attached anew
        backlog.put("b")


def test_unique_rounds_keep_order_and_put_repeats_in_later_rounds():
    assert unique_rounds(["a", "b", "a", "c", "a"], key=str) == [["a", "b", "c"], ["a"], ["a"]]
    assert unique_rounds([], key=str) == []


def test_thread_map_finds_the_parent_and_siblings_of_the_batch():
    threads = ThreadMap()
    threads.add(mail("<a>"), "conv-a")
    threads.add(mail("<b>", "<x>", ("<x>",)), "conv-x")
    assert threads.find(mail("<c>", "<a>")) == "conv-a"  # a reply to a mail of the batch
    assert threads.find(mail("<d>", "<y>", ("<x>", "<y>"))) == "conv-x"  # shares an ancestor with one
    assert threads.find(mail("<e>", "<unknown>")) is None


def test_pick_thread_takes_the_earliest_stored_match_with_a_conversation():
    found = [{"messageId": "<a>", "references": [], "inboxConversationId": "late", "createdAt": 2},
             {"messageId": "<b>", "references": ["<a>"], "inboxConversationId": "early", "createdAt": 1},
             {"messageId": "<c>", "references": [], "inboxConversationId": None, "createdAt": 0},
             {"messageId": "<d>", "references": [], "inboxConversationId": "other", "createdAt": 0}]
    assert pick_thread(found, ["<a>"]) == "early"  # <b> shares the ancestor <a> and is older
    assert pick_thread(found, ["<c>"]) is None
    assert pick_thread(found, []) is None
