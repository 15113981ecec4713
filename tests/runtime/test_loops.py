from __future__ import annotations

import pytest

from runtime.mail.loops import AUTO_REPLY, BOUNCE, classify, is_own_mail
from runtime.mail.parse import parse_mail
from tests.conftest import make_mail


@pytest.mark.parametrize("extra, sender, expected", [
    ({}, "alice@example.com", None),
    ({"Auto-Submitted": "auto-replied"}, "alice@example.com", AUTO_REPLY),
    ({"Auto-Submitted": "no"}, "alice@example.com", None),
    ({"X-Autoreply": "yes"}, "alice@example.com", AUTO_REPLY),
    ({"Precedence": "bulk"}, "alice@example.com", AUTO_REPLY),
    ({"Precedence": "junk"}, "alice@example.com", AUTO_REPLY),
    ({}, "MAILER-DAEMON@mx.example.com", BOUNCE),
    ({}, "postmaster@example.com", BOUNCE),
])
def test_classify(extra, sender, expected):
    assert classify(parse_mail(make_mail(to="u@x", sender=sender, extra=extra))) == expected


def test_delivery_status_report_is_a_bounce():
    raw = (b"From: Mail Delivery System <bounces@mx.example.com>\r\nTo: u@x\r\nSubject: Undelivered\r\n"
           b"Return-Path: <>\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
           b"--b\r\nContent-Type: text/plain\r\n\r\nCould not deliver.\r\n"
           b"--b\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\n\r\n--b--\r\n")
    assert classify(parse_mail(raw)) == BOUNCE


def test_own_mail_is_recognised_per_integration():
    mail = parse_mail(make_mail(to="u@x", extra={"X-Imap-Runtime-Id": "inbox-1"}))
    assert is_own_mail(mail, "inbox-1")
    assert not is_own_mail(mail, "inbox-2")
    assert not is_own_mail(parse_mail(make_mail(to="u@x")), "inbox-1")
