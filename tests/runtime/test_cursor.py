from __future__ import annotations

import pytest

from kinds.imap.cursor import FolderProgress


def test_cursor_moves_only_over_contiguous_done_uids():
    fp = FolderProgress("INBOX")
    for uid in (3, 5, 8):
        fp.dispatched(uid)
    assert fp.inflight == 3
    assert not fp.complete(5)  # 3 is not done yet
    assert fp.cursor == 0
    assert fp.complete(3)
    assert fp.cursor == 5  # 3 and 5 are done
    assert fp.inflight == 1
    assert fp.complete(8)
    assert fp.cursor == 8 and fp.inflight == 0


def test_late_and_duplicate_answers_are_ignored():
    fp = FolderProgress("INBOX")
    fp.dispatched(1)
    assert fp.complete(1)
    assert not fp.complete(1)
    assert not fp.complete(42)
    assert fp.cursor == 1


def test_reset_starts_again_from_the_cursor():
    fp = FolderProgress("INBOX", cursor=10, high=10)
    fp.dispatched(11)
    fp.dispatched(12)
    fp.complete(12)
    fp.reset()
    assert fp.high == 10 and fp.inflight == 0 and fp.need_sync
    fp.reset(uidvalidity=99, cursor=0)
    assert fp.uidvalidity == 99 and fp.cursor == 0 and fp.high == 0


def test_out_of_order_dispatch_is_a_bug():
    fp = FolderProgress("INBOX")
    fp.dispatched(5)
    with pytest.raises(ValueError):
        fp.dispatched(4)


def test_skip_to_moves_cursor_only_when_idle():
    fp = FolderProgress("INBOX")
    fp.skip_to(7)
    assert fp.cursor == 7
    fp.dispatched(9)
    fp.skip_to(20)
    assert fp.cursor == 7 and fp.high == 20
