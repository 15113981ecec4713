"""Tests for runtime.mail.parse: raw mail bytes -> ParsedMail."""
from __future__ import annotations

import base64
import email
import email.policy
import time
from datetime import datetime, timezone
from email.message import EmailMessage

import pytest

from runtime.errors import MailParseError
from runtime.mail.parse import (
    ParsedMail,
    find_part,
    is_addressed_to,
    parse_mail,
    synthetic_message_id,
    text_to_html,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 20


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("ascii")


def simple_mail(**extra: str) -> bytes:
    headers = {
        "From": "Alice Example <alice@example.com>",
        "To": "Bob <bob@example.org>",
        "Subject": "Hello",
        "Date": "Tue, 02 Jan 2024 10:20:30 +0200",
        "Message-ID": "<abc123@example.com>",
    }
    headers.update(extra)
    lines = [f"{k}: {v}" for k, v in headers.items() if v is not None]
    return crlf("\n".join(lines) + "\n\nHi Bob,\nsee you <soon> & bye.\n")


def nested_mail() -> bytes:
    """mixed > [related > [alternative > [plain, html], inline png], pdf attachment]."""
    png = base64.encodebytes(PNG).decode()
    pdf = base64.encodebytes(PDF).decode()
    return crlf(
        "From: Carol <carol@example.com>\nTo: dave@example.org\nSubject: Nested\n"
        "Message-ID: <nested@example.com>\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="mixed"\n\npreamble\n'
        '--mixed\nContent-Type: multipart/related; boundary="rel"; type="multipart/alternative"\n\n'
        '--rel\nContent-Type: multipart/alternative; boundary="alt"\n\n'
        "--alt\nContent-Type: text/plain; charset=utf-8\n\nplain version\n"
        "--alt\nContent-Type: text/html; charset=utf-8\n\n"
        '<p>html version <img src="cid:logo123@example.com"></p>\n'
        "--alt--\n"
        "--rel\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n"
        "Content-ID: <logo123@example.com>\nContent-Disposition: inline\n\n" + png +
        "--rel--\n"
        "--mixed\nContent-Type: application/pdf; name=report.pdf\nContent-Transfer-Encoding: base64\n"
        'Content-Disposition: attachment; filename="report.pdf"\n\n' + pdf +
        "--mixed--\nepilogue\n"
    )


# ------------------------------------------------------------------------------------------------ bodies

def test_plain_text_mail_becomes_escaped_html() -> None:
    mail = parse_mail(simple_mail())
    assert isinstance(mail, ParsedMail)
    assert mail.text == "Hi Bob,\r\nsee you <soon> & bye.\r\n"
    assert mail.html == "<div>Hi Bob,<br>see you &lt;soon&gt; &amp; bye.<br></div>"
    assert mail.html != "false"
    assert mail.attachments == []
    assert mail.subject == "Hello"
    assert mail.from_ == [{"name": "Alice Example", "address": "alice@example.com"}]
    assert mail.to == [{"name": "Bob", "address": "bob@example.org"}]
    assert mail.cc == [] and mail.bcc == [] and mail.reply_to == []
    assert mail.sender == "alice@example.com"
    assert mail.message_id == "<abc123@example.com>" and mail.synthetic_id is False
    assert mail.date == datetime(2024, 1, 2, 8, 20, 30, tzinfo=timezone.utc)
    assert mail.size == len(simple_mail())


def test_text_to_html() -> None:
    assert text_to_html("a < b\r\nc & d\re") == "<div>a &lt; b<br>c &amp; d<br>e</div>"
    assert text_to_html("") == ""


def test_literal_false_body_is_not_stored_as_false() -> None:
    raw = crlf("From: a@example.com\nContent-Type: text/html\n\nfalse")
    assert parse_mail(raw).html == "<div>false</div>"


def test_multipart_alternative_prefers_html() -> None:
    raw = crlf(
        "From: a@example.com\nTo: b@example.com\nSubject: alt\nMIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="B"\n\n'
        "--B\nContent-Type: text/plain; charset=utf-8\n\nplain body\n"
        "--B\nContent-Type: text/html; charset=utf-8\n\n<b>html body</b>\n"
        "--B--\n"
    )
    mail = parse_mail(raw)
    assert mail.html.strip() == "<b>html body</b>"
    assert mail.text.strip() == "plain body"
    assert mail.attachments == []


def test_nested_mixed_related_alternative() -> None:
    raw = nested_mail()
    mail = parse_mail(raw)
    assert "html version" in mail.html and "<p>" in mail.html
    assert mail.text.strip() == "plain version"
    by_type = {a["mimeType"]: a for a in mail.attachments}
    assert set(by_type) == {"image/png", "application/pdf"}

    inline = by_type["image/png"]
    assert inline["type"] == "inline"
    assert inline["contentId"] == "logo123@example.com"
    assert inline["size"] == len(PNG)
    assert inline["partIndex"] == "1.2"
    assert inline["filename"].endswith(".png")

    pdf = by_type["application/pdf"]
    assert pdf == {
        "filename": "report.pdf", "mimeType": "application/pdf", "type": "attachment", "size": len(PDF),
        "attachmentId": pdf["attachmentId"], "contentId": None, "partIndex": "2",
    }
    assert len(pdf["attachmentId"]) == 16 and pdf["attachmentId"] != inline["attachmentId"]
    # stable across parses of the same mail
    assert [a["attachmentId"] for a in parse_mail(raw).attachments] == [a["attachmentId"] for a in mail.attachments]


def test_alternative_containing_related_as_built_by_emailmessage() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg.set_content("plain version")
    msg.add_alternative('<p>html <img src="cid:pic@x"></p>', subtype="html")
    msg.get_payload()[1].add_related(PNG, maintype="image", subtype="png", cid="<pic@x>")
    mail = parse_mail(msg.as_bytes())            # alternative > [plain, related > [html, png]]
    assert mail.html.startswith("<p>html") and mail.text.strip() == "plain version"
    assert [(a["partIndex"], a["type"], a["contentId"]) for a in mail.attachments] == [("2.2", "inline", "pic@x")]


def test_related_start_parameter_picks_the_root() -> None:
    raw = crlf(
        "From: a@example.com\n"
        'Content-Type: multipart/related; boundary="R"; start="<root@x>"\n\n'
        "--R\nContent-Type: image/gif\nContent-ID: <img@x>\n\nGIF89a\n"
        "--R\nContent-Type: text/html\nContent-ID: <root@x>\n\n<i>root</i>\n"
        "--R--\n"
    )
    mail = parse_mail(raw)
    assert mail.html.strip() == "<i>root</i>"
    assert [(a["partIndex"], a["mimeType"], a["type"]) for a in mail.attachments] == [("1", "image/gif", "inline")]


def test_calendar_alternative_is_kept_as_attachment() -> None:
    raw = crlf(
        "From: a@example.com\n"
        'Content-Type: multipart/alternative; boundary="A"\n\n'
        "--A\nContent-Type: text/plain\n\ninvite\n"
        "--A\nContent-Type: text/html\n\n<b>invite</b>\n"
        "--A\nContent-Type: text/calendar; method=REQUEST\n\nBEGIN:VCALENDAR\nEND:VCALENDAR\n"
        "--A--\n"
    )
    mail = parse_mail(raw)
    assert mail.html.strip() == "<b>invite</b>"
    assert [(a["filename"], a["mimeType"]) for a in mail.attachments] == [("attachment-3.ics", "text/calendar")]
    assert find_part(raw, "3")[2].startswith(b"BEGIN:VCALENDAR")


def test_text_part_with_attachment_disposition_is_an_attachment() -> None:
    raw = crlf(
        "From: a@example.com\nSubject: notes\n"
        'Content-Type: multipart/mixed; boundary="M"\n\n'
        "--M\nContent-Type: text/plain\n\nthe body\n"
        '--M\nContent-Type: text/plain\nContent-Disposition: attachment; filename="notes.txt"\n\nattached notes\n'
        "--M--\n"
    )
    mail = parse_mail(raw)
    assert mail.text.strip() == "the body"
    assert "attached notes" not in mail.html
    assert [(a["filename"], a["mimeType"], a["type"], a["partIndex"]) for a in mail.attachments] == [
        ("notes.txt", "text/plain", "attachment", "2")
    ]
    assert find_part(raw, "2") == ("notes.txt", "text/plain", b"attached notes")


def test_mixed_inline_text_parts_are_concatenated() -> None:
    raw = crlf(
        "From: a@example.com\n"
        'Content-Type: multipart/mixed; boundary="M"\n\n'
        "--M\nContent-Type: text/html\n\n<p>first</p>\n"
        "--M\nContent-Type: text/plain\n\nfooter <text>\n"
        "--M--\n"
    )
    mail = parse_mail(raw)
    assert mail.html.startswith("<p>first</p>")
    assert "footer &lt;text&gt;" in mail.html
    assert mail.attachments == []


def test_mail_without_text_has_empty_body() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg.set_content(PDF, maintype="application", subtype="pdf", filename="only.pdf")
    mail = parse_mail(msg.as_bytes())
    assert mail.html == "" and mail.text is None
    assert [(a["filename"], a["partIndex"], a["size"]) for a in mail.attachments] == [("only.pdf", "1", len(PDF))]


# --------------------------------------------------------------------------------------------- charsets

def test_iso_8859_1_8bit_body() -> None:
    raw = (b"From: a@example.com\r\nSubject: latin\r\nContent-Type: text/plain; charset=ISO-8859-1\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\nGr\xfc\xdfe, caf\xe9\r\n")
    mail = parse_mail(raw)
    assert mail.text.strip() == "Grüße, café"
    assert "Grüße, café" in mail.html


@pytest.mark.parametrize("cte, payload", [
    ("quoted-printable", b"Gr=FC=DFe, caf=E9 =80"),
    ("base64", base64.b64encode("Grüße, café €".encode("cp1252"))),
])
def test_latin1_encoded_bodies(cte: str, payload: bytes) -> None:
    raw = (b"From: a@example.com\r\nContent-Type: text/plain; charset=\"iso-8859-1\"\r\n"
           b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + payload + b"\r\n")
    assert parse_mail(raw).text.strip() == "Grüße, café €"


def test_windows_1252_html_body() -> None:
    raw = (b"From: a@example.com\r\nContent-Type: text/html; charset=windows-1252\r\n\r\n"
           b"<p>\x93quoted\x94 caf\xe9</p>")
    assert parse_mail(raw).html == "<p>\u201cquoted\u201d café</p>"


@pytest.mark.parametrize("charset", ["x-made-up", "us-ascii", "utf-8", "base64", ""])
def test_mislabelled_8bit_latin1_degrades_without_raising(charset: str) -> None:
    raw = (b"From: a@example.com\r\nContent-Type: text/plain; charset=" + charset.encode()
           + b"\r\n\r\ncaf\xe9 ok\r\n")
    text = parse_mail(raw).text
    assert text.startswith("caf") and text.strip().endswith("ok")
    assert text.strip() in ("café ok", "caf\ufffd ok")


def test_utf8_8bit_labelled_ascii_reads_as_utf8() -> None:
    raw = "From: a@example.com\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nGrüße\r\n".encode()
    assert parse_mail(raw).text.strip() == "Grüße"


@pytest.mark.parametrize("subject, expected", [
    ("=?UTF-8?B?R3LDvMOfZSDwn5iA?=", "Grüße 😀"),
    ("=?utf-8?q?caf=C3=A9?= =?utf-8?q?_au_lait?=", "café au lait"),
    ("=?ISO-8859-1?Q?Gr=FC=DFe_aus_K=F6ln?=", "Grüße aus Köln"),
    ("=?iso-8859-1?b?" + base64.b64encode("Déjà vu".encode("latin-1")).decode() + "?=", "Déjà vu"),
])
def test_rfc2047_subjects(subject: str, expected: str) -> None:
    assert parse_mail(simple_mail(Subject=subject)).subject == expected


def test_raw_8bit_headers_decode() -> None:
    utf8 = "From: Jörg Müller <joerg@example.de>\r\nSubject: Grüße\r\n\r\nx".encode()
    mail = parse_mail(utf8)
    assert mail.subject == "Grüße"
    assert mail.from_ == [{"name": "Jörg Müller", "address": "joerg@example.de"}]
    latin = b"From: J\xf6rg <joerg@example.de>\r\nSubject: caf\xe9\r\n\r\nx"
    mail = parse_mail(latin)
    assert mail.subject == "café"
    assert mail.from_ == [{"name": "Jörg", "address": "joerg@example.de"}]


def test_rfc2047_display_name_and_attachment_filename() -> None:
    raw = crlf(
        "From: =?utf-8?q?Bj=C3=B6rn?= <bjorn@example.com>\n"
        'Content-Type: multipart/mixed; boundary="M"\n\n'
        "--M\nContent-Type: text/plain\n\nbody\n"
        "--M\nContent-Type: application/octet-stream\n"
        "Content-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.bin\n\nxyz\n"
        "--M\nContent-Type: application/octet-stream\n"
        'Content-Disposition: attachment; filename="=?utf-8?q?=C3=A4=C3=B6.bin?="\n\nxyz\n'
        "--M\nContent-Type: application/octet-stream\n"
        'Content-Disposition: attachment; filename="../../etc/passwd"\n\nxyz\n'
        "--M--\n"
    )
    mail = parse_mail(raw)
    assert mail.from_ == [{"name": "Björn", "address": "bjorn@example.com"}]
    assert [a["filename"] for a in mail.attachments] == ["résumé.bin", "äö.bin", "passwd"]


# ------------------------------------------------------------------------------------- ids and threading

def test_missing_message_id_gets_stable_synthetic_id() -> None:
    raw = simple_mail(**{"Message-ID": None})
    first, second = parse_mail(raw), parse_mail(raw)
    assert first.synthetic_id is True
    assert first.message_id == second.message_id
    assert first.message_id.startswith("<") and first.message_id.endswith("@imap-runtime.invalid>")
    assert len(first.message_id) == len("<@imap-runtime.invalid>") + 64
    assert parse_mail(simple_mail(**{"Message-ID": None, "Subject": "Other"})).message_id != first.message_id
    longer = raw + b"one more line\r\n"
    assert parse_mail(longer).message_id != first.message_id
    same_length = raw[:-3] + bytes([raw[-3] ^ 1]) + raw[-2:]  # same headers, same size, another body
    assert parse_mail(same_length).message_id != first.message_id
    assert synthetic_message_id(raw, email.message_from_bytes(raw, policy=email.policy.default)) == first.message_id
    assert synthetic_message_id(raw, None) == first.message_id


def test_message_id_normalisation() -> None:
    assert parse_mail(simple_mail(**{"Message-ID": "  < abc@x.y >  (comment)"})).message_id == "<abc@x.y>"
    assert parse_mail(simple_mail(**{"Message-ID": "bare-id@x.y"})).message_id == "<bare-id@x.y>"
    assert parse_mail(simple_mail(**{"Message-ID": "noat"})).message_id == "<noat>"
    mail = parse_mail(simple_mail(**{"Message-ID": "   "}))
    assert mail.synthetic_id is True


def test_references_folded_commas_duplicates() -> None:
    raw = simple_mail(References="<a@x.y>\n <b@x.y>,<c@x.y>, c@x.y\n\t<a@x.y> d@x.y (comment <e@x.y>)")
    assert parse_mail(raw).references == ["<a@x.y>", "<b@x.y>", "<c@x.y>", "<d@x.y>"]
    assert parse_mail(simple_mail()).references == []


def test_multiple_references_headers_are_joined() -> None:
    raw = crlf("From: a@example.com\nReferences: <1@x>\nReferences: <2@x> <1@x>\n\nbody")
    assert parse_mail(raw).references == ["<1@x>", "<2@x>"]


@pytest.mark.parametrize("value, expected", [
    ("<orig@example.com> (Alice's message of Mon, 1 Jan 2024 <junk@x>)", "<orig@example.com>"),
    ("(comment) <orig@example.com>", "<orig@example.com>"),
    ('"Your message of Monday" <orig@example.com>', "<orig@example.com>"),
    ("orig@example.com", "<orig@example.com>"),
    ("<first@x> <second@x>", "<first@x>"),
    ("garbage", None),
])
def test_in_reply_to(value: str, expected: str | None) -> None:
    assert parse_mail(simple_mail(**{"In-Reply-To": value})).in_reply_to == expected


# ------------------------------------------------------------------------------------------- addresses

def test_cc_only_mail_is_addressed_case_insensitively() -> None:
    raw = simple_mail(To="undisclosed-recipients:;", Cc='"Support Team" <Support@Example.COM>, other@x.y')
    mail = parse_mail(raw)
    assert mail.to == []
    assert mail.cc[0] == {"name": "Support Team", "address": "Support@Example.COM"}
    assert is_addressed_to(mail, "support@example.com")
    assert is_addressed_to(mail, "", None, "SUPPORT@example.com")
    assert not is_addressed_to(mail, "nobody@example.com")
    assert not is_addressed_to(mail, "", None)
    assert not is_addressed_to(mail, "alice@example.com")   # the sender is not a recipient


def test_delivered_to_matches() -> None:
    raw = simple_mail(**{"To": "list@lists.example.org", "Delivered-To": "Me@Example.com",
                         "X-Original-To": "alias@example.com"})
    mail = parse_mail(raw)
    assert mail.delivered_to == ["Me@Example.com", "alias@example.com"]
    assert is_addressed_to(mail, "me@example.com")
    assert is_addressed_to(mail, "ALIAS@example.com")
    assert not is_addressed_to(mail, "bob@example.org")


def test_group_syntax_and_empty_entries() -> None:
    mail = parse_mail(simple_mail(To='Team: a@x.y, "B" <b@x.y>;, , c@x.y', Bcc="d@x.y", **{"Reply-To": "r@x.y"}))
    assert [e["address"] for e in mail.to] == ["a@x.y", "b@x.y", "c@x.y"]
    assert mail.bcc == [{"name": "", "address": "d@x.y"}]
    assert mail.reply_to == [{"name": "", "address": "r@x.y"}]


@pytest.mark.parametrize("value, expected", [
    ("broken <<a@b.c", ["a@b.c"]),
    ("John Smith john@x.y", ["john@x.y"]),
    ("a@b.c <d@e.f>", ["a@b.c", "d@e.f"]),
    ("<>", []),
    ('"unterminated <x@y.z>', None),
    ("@@@", None),
])
def test_malformed_from_does_not_raise(value: str, expected: list[str] | None) -> None:
    mail = parse_mail(simple_mail(From=value))
    assert isinstance(mail.from_, list)
    assert all(isinstance(e["name"], str) and e["address"] for e in mail.from_)
    if expected is not None:
        assert [e["address"] for e in mail.from_] == expected


def test_no_from_has_no_sender() -> None:
    assert parse_mail(simple_mail(From=None)).sender is None


@pytest.mark.parametrize("value", ["not a date", "Mon, 32 Foo 2020 99:99", "Tue, 02 Jan 99999 10:20:30 +0200", ""])
def test_bad_date_is_none(value: str) -> None:
    assert parse_mail(simple_mail(Date=value)).date is None


def test_date_without_zone_is_utc() -> None:
    assert parse_mail(simple_mail(Date="2 Jan 2024 10:20:30 -0000")).date == datetime(
        2024, 1, 2, 10, 20, 30, tzinfo=timezone.utc)


def test_policy_headers_are_kept() -> None:
    raw = simple_mail(**{"Auto-Submitted": "auto-replied", "Precedence": "bulk", "Return-Path": "<>",
                         "X-Imap-Runtime-Id": "abc", "X-Other": "dropped"})
    assert parse_mail(raw).headers == {"auto-submitted": "auto-replied", "precedence": "bulk",
                                       "return-path": "<>", "x-imap-runtime-id": "abc"}
    assert parse_mail(simple_mail()).headers == {}


# -------------------------------------------------------------------------------------------- not a mail

@pytest.mark.parametrize("raw", [b"", b"   \r\n", b"hello", b"hello world\r\n\r\nbody", b"\x00\x01\x02binary"])
def test_not_a_mail_raises(raw: bytes) -> None:
    with pytest.raises(MailParseError):
        parse_mail(raw)


@pytest.mark.parametrize("raw", [
    b"Subject: only a header",
    b"X-Foo: bar\r\n\r\n",
    b"From sender@example.com Mon Jan  1 00:00:00 2024\nFrom: a@b.c\n\nbody\n",
    b"\r\nFrom: a@b.c\r\n\r\nleading blank line",
])
def test_minimal_mails_parse(raw: bytes) -> None:
    mail = parse_mail(raw)
    assert mail.size == len(raw)
    assert mail.html != "false"


def test_mbox_and_leading_newline_headers_are_read() -> None:
    assert parse_mail(b"From x@y Mon Jan  1 00:00:00 2024\nFrom: a@b.c\n\nbody\n").sender == "a@b.c"
    assert parse_mail(b"\r\nSubject: s\r\n\r\nx").subject == "s"


def test_multipart_without_boundary_degrades_to_text() -> None:
    raw = crlf("From: a@example.com\nContent-Type: multipart/mixed\n\nsome text\n")
    mail = parse_mail(raw)
    assert "some text" in mail.html


# ---------------------------------------------------------------------------------------- attachments

def test_find_part_returns_attachment_bytes() -> None:
    raw = nested_mail()
    assert find_part(raw, "2") == ("report.pdf", "application/pdf", PDF)
    name, mime, data = find_part(raw, "1.2")
    assert mime == "image/png" and data == PNG and name.endswith(".png")
    assert find_part(raw, "1.1.2") is None        # the html body is not an attachment
    assert find_part(raw, "9") is None
    listed = {a["partIndex"]: a["filename"] for a in parse_mail(raw).attachments}
    assert listed == {"1.2": name, "2": "report.pdf"}


def test_forwarded_message_is_an_eml_attachment() -> None:
    inner = simple_mail()
    outer = EmailMessage()
    outer["From"] = "f@example.com"
    outer["Subject"] = "Fwd"
    outer.set_content("see attached")
    outer.add_attachment(email.message_from_bytes(inner, policy=email.policy.default))
    mail = parse_mail(outer.as_bytes())
    assert mail.text.strip() == "see attached"
    [att] = mail.attachments
    assert att["mimeType"] == "message/rfc822" and att["partIndex"] == "2"
    name, mime, data = find_part(outer.as_bytes(), "2")
    assert name.endswith(".eml") and b"Subject: Hello" in data and att["size"] == len(data)


def test_five_megabyte_attachment() -> None:
    big = bytes(range(256)) * (5 * 1024 * 1024 // 256)
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["Subject"] = "big"
    msg.set_content("body")
    msg.add_attachment(big, maintype="application", subtype="octet-stream", filename="big.bin")
    raw = msg.as_bytes()
    started = time.perf_counter()
    mail = parse_mail(raw)
    elapsed = time.perf_counter() - started
    assert mail.attachments[0]["size"] == len(big)
    assert mail.size == len(raw) > 5 * 1024 * 1024
    assert find_part(raw, "2") == ("big.bin", "application/octet-stream", big)
    assert elapsed < 10


def test_large_8bit_text_body_is_linear() -> None:
    body = ("Grüße café " * 400_000).encode("latin-1")       # ~4.4 MB of 8-bit text
    raw = b"From: a@example.com\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n" + body
    started = time.perf_counter()
    mail = parse_mail(raw)
    assert time.perf_counter() - started < 10
    assert mail.text.startswith("Grüße café") and len(mail.text) == len(body)


def test_many_references_are_handled() -> None:
    refs = " ".join(f"<id{i}@example.com>" for i in range(20_000))
    mail = parse_mail(simple_mail(References=refs))
    assert len(mail.references) == 20_000 and mail.references[0] == "<id0@example.com>"
