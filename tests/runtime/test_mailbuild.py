"""runtime.mail.build: the outgoing mail, checked by parsing it back (pure logic, no servers)."""
from __future__ import annotations

import datetime as dt
import email
import email.policy
import os

import pytest

from runtime.errors import RequestError
from runtime.mail.build import (Attachment, Outgoing, build, html_to_text, make_message_id, normalize_message_id,
                               parse_addresses, reply_subject, thread_references)
from runtime.mail.parse import parse_mail


def outgoing(**changes):
    base = dict(sender=("Support Team", "support@shop.example"), to=[("Alice", "alice@example.com")],
                subject="Re: Order 42", html="<p>Hello <b>Alice</b></p>", runtime_id="inbox-1")
    return Outgoing(**{**base, **changes})


def parsed(built):
    return email.message_from_bytes(built.raw, policy=email.policy.default)


@pytest.mark.parametrize("subject, expected", [
    ("Order 42", "Re: Order 42"),
    ("Re: Order 42", "Re: Order 42"),
    ("RE: Order 42", "RE: Order 42"),
    ("re:Order 42", "re:Order 42"),
    ("Aw: Bestellung", "Aw: Bestellung"),
    ("Re[2]: Order", "Re[2]: Order"),
    ("Fwd: Order", "Re: Fwd: Order"),
    ("Rebate offer", "Re: Rebate offer"),
    ("", "Re:"),
    ("two\r\nlines", "Re: two lines"),
])
def test_reply_subject_adds_re_once(subject, expected):
    assert reply_subject(subject) == expected
    assert reply_subject(reply_subject(subject)) == reply_subject(subject)


def test_references_chain_is_deduplicated_in_order_and_bounded():
    assert thread_references(["<a@x>", "b@x", "<a@x>", "junk"], "<c@x>") == ["<a@x>", "<b@x>", "<c@x>"]
    assert thread_references([], "<c@x>") == ["<c@x>"]
    assert thread_references(["<a@x>", "<c@x>"], "<c@x>") == ["<a@x>", "<c@x>"]
    assert thread_references([], None) == []
    long = [f"<{i}@x>" for i in range(300)]
    chain = thread_references(long, "<last@x>")
    assert len(chain) == 100 and chain[0] == "<0@x>" and chain[-1] == "<last@x>" and chain[-2] == "<299@x>"


def test_normalize_message_id():
    assert normalize_message_id("<a.b@c>") == "<a.b@c>"
    assert normalize_message_id(" a.b@c ") == "<a.b@c>"
    assert normalize_message_id("5f0c1a2b3c4d5e6f7a8b9c0d") is None
    assert normalize_message_id("") is None and normalize_message_id(None) is None


def test_message_id_is_unique_and_under_the_domain():
    ids = {make_message_id("Shop.Example") for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("<") and i.endswith("@shop.example>") for i in ids)
    assert make_message_id("bücher.example").endswith("@xn--bcher-kva.example>")
    assert make_message_id("bad domain!").endswith("@localhost>")


def test_headers_threading_cc_and_runtime_id():
    parent = "<" + "p" * 90 + "@customer.example>"  # longer than a header line: must not be RFC 2047-encoded
    built = build(outgoing(cc=[("Carol", "carol@example.org")], reply_to=[("", "help@shop.example")],
                           in_reply_to=parent, references=["<root@customer.example>", parent],
                           date=dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)))
    msg = parsed(built)
    assert built.message_id.endswith("@shop.example>") and msg["Message-ID"] == built.message_id
    assert msg["In-Reply-To"] == parent
    assert msg["References"].split() == ["<root@customer.example>", parent]
    assert msg["Subject"] == "Re: Order 42"
    assert msg["From"] == "Support Team <support@shop.example>"
    assert msg["To"] == "Alice <alice@example.com>"
    assert msg["Cc"] == "Carol <carol@example.org>"
    assert msg["Reply-To"] == "help@shop.example"
    assert msg["X-Imap-Runtime-Id"] == "inbox-1"
    assert msg["Date"] == "Wed, 01 May 2024 12:00:00 +0000"
    assert msg["MIME-Version"] == "1.0"
    mail = parse_mail(built.raw)  # our own parser threads it the same way
    assert mail.in_reply_to == parent and mail.references == ["<root@customer.example>", parent]
    assert all(len(line) <= 78 for line in built.raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if b"p" * 90 not in line)
    assert b"\r\n" in built.raw and b"\n" not in built.raw.replace(b"\r\n", b"")


def test_bcc_is_in_the_envelope_only():
    built = build(outgoing(cc=[("", "carol@example.org")], bcc=[("Secret Boss", "boss@shop.example"),
                                                                 ("", "ALICE@example.com")]))
    assert built.recipients == ["alice@example.com", "carol@example.org", "boss@shop.example"]
    assert built.envelope_from == "support@shop.example"
    raw = built.raw.lower()  # (not a bare "bcc": the random Message-ID and boundary may spell it)
    assert b"boss@shop.example" not in raw and b"secret boss" not in raw and b"\nbcc:" not in raw
    assert build(outgoing(envelope_from="bounces@shop.example")).envelope_from == "bounces@shop.example"


def test_alternative_html_and_text_without_attachments():
    msg = parsed(build(outgoing(html="<p>Caf&eacute; &amp; cr&egrave;me</p><p>2nd<br>line</p>"
                                     "<ul><li>one</li><li>two</li></ul><a href='https://x.example/t'>track</a>"
                                     "<style>p {color: red}</style><script>alert(1)</script>")))
    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.iter_parts()
    assert text.get_content_type() == "text/plain" and html.get_content_type() == "text/html"
    assert text.get_content().replace("\r\n", "\n") == (
        "Café & crème\n\n2nd\nline\n\n- one\n- two\n\ntrack <https://x.example/t>\n")
    assert "Caf&eacute;" in html.get_content()
    assert text["Content-Transfer-Encoding"] in ("quoted-printable", "base64")  # 7-bit clean


def test_attachments_are_base64_and_byte_identical():
    blob = os.urandom(5000)
    built = build(outgoing(attachments=[Attachment("../../etc/Résumé.pdf", "application/pdf", blob),
                                        Attachment("notes.txt", "text/plain", b"a\nb\r\nc\x00"),
                                        Attachment("x.bin", "not a type", b"xyz"),
                                        Attachment("mail.eml", "message/rfc822", b"Subject: x\r\n\r\nhi")]))
    msg = parsed(built)
    assert msg.get_content_type() == "multipart/mixed"
    body, *parts = msg.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert [p.get_filename() for p in parts] == ["Résumé.pdf", "notes.txt", "x.bin", "mail.eml"]
    assert [p.get_content_type() for p in parts] == ["application/pdf", "text/plain", "application/octet-stream",
                                                     "application/octet-stream"]
    assert all(p["Content-Transfer-Encoding"] == "base64" for p in parts)
    assert [p.get_payload(decode=True) for p in parts] == [blob, b"a\nb\r\nc\x00", b"xyz",
                                                           b"Subject: x\r\n\r\nhi"]
    assert [a["filename"] for a in parse_mail(built.raw).attachments] == ["Résumé.pdf", "notes.txt", "x.bin",
                                                                          "mail.eml"]
    built.raw.decode("ascii")  # 7-bit clean


def test_non_ascii_names_and_subject_are_encoded():
    built = build(outgoing(sender=("Jürgen Müller", "jm@shop.example"), to=[("Zoë", "zoe@example.com")],
                           subject="Grüße aus Köln"))
    built.raw.decode("ascii")
    msg = parsed(built)
    assert msg["Subject"] == "Grüße aus Köln"
    assert msg["From"] == "Jürgen Müller <jm@shop.example>" and msg["To"] == "Zoë <zoe@example.com>"


def test_parse_addresses():
    assert parse_addresses(["Bob <b@x.org>", "c@y.org, \"Doe, D\" <d@z.org>"]) == [
        ("Bob", "b@x.org"), ("", "c@y.org"), ("Doe, D", "d@z.org")]
    assert parse_addresses("e@x.org") == [("", "e@x.org")]
    assert parse_addresses(None) == [] and parse_addresses([]) == []
    for bad in (["not an address"], ["x@"], [42], ["a@b.c\r\nBcc: evil@x.org"], 42, {"a@b.c": 1}):
        with pytest.raises(RequestError):
            parse_addresses(bad, "to")


def test_build_refuses_what_it_cannot_write():
    with pytest.raises(RequestError, match="recipient"):
        build(outgoing(to=[]))
    with pytest.raises(RequestError):
        build(outgoing(to=[("", "jürgen@example.com")]))  # a non-ASCII local part needs SMTPUTF8
    with pytest.raises(RequestError, match="non-ASCII"):
        parse_addresses(["jürgen@example.com"])
    assert parse_addresses(["bob@bücher.example"]) == [("", "bob@xn--bcher-kva.example")]


def test_header_injection_through_subject_or_runtime_id_is_flattened():
    msg = parsed(build(outgoing(subject="Hi\r\nBcc: evil@x.org", runtime_id="inbox-1\r\nX-Evil: 1")))
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert msg["Subject"] == "Hi Bcc: evil@x.org"


def test_html_to_text():
    assert html_to_text("") == ""
    assert html_to_text("plain &lt;text&gt;") == "plain <text>\n"
    assert html_to_text("<pre>a\n  b</pre>") == "a\n  b\n"
    assert html_to_text("<a href='mailto:x@y.z'>x@y.z</a>") == "x@y.z\n"
    assert html_to_text("<table><tr><td>a</td><td>b</td></tr></table>") == "a\tb\n"
