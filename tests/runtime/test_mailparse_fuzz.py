"""Property tests of the pure mail parser with hypothesis: whatever the bytes, ``parse_mail`` either returns a mail
the pipeline can store and send, or raises MailParseError; never anything else (which would crash a mailbox).

Inputs: the seeded hostile-mail builders of tests/corpus.py driven by hypothesis's own Random, structured MIME trees
assembled from hostile pieces, and plain random bytes behind a header. Deterministic (``derandomize``) and without
an example database, so CI runs are repeatable and nothing is written into the tree.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
from typing import Any

import bson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.conversation import Conversations
from runtime.broker._envelope import encode_request
from runtime.pipeline import Incoming
from runtime.errors import MailParseError
from runtime.mail.loops import classify
from runtime.mail.parse import ParsedMail, find_part, parse_mail
from tests import corpus

TO = "support@example.com"
SLOW_PARSE_SECONDS = 5.0  # far above the worst seen (~0.3 s); catches quadratic blow-ups, not noise

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _strings(k) + _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def check(raw: bytes) -> ParsedMail | None:
    """The property: a storable, sendable ParsedMail, stable across parses, or MailParseError."""
    started = time.monotonic()
    try:
        mail = parse_mail(raw)
    except MailParseError:
        return None
    elapsed = time.monotonic() - started
    assert elapsed < SLOW_PARSE_SECONDS, f"parse took {elapsed:.1f} s for {len(raw)} bytes"

    for text in _strings(dataclasses.asdict(mail)):  # BSON and JSON need valid UTF-8: no lone surrogates
        text.encode("utf-8")
    assert mail.message_id.startswith("<") and mail.message_id.endswith(">") and len(mail.message_id) > 2
    assert parse_mail(raw).message_id == mail.message_id  # deduplication after a re-fetch relies on this
    assert mail.html.strip() != "false"
    assert mail.size == len(raw)
    assert mail.sender is None or (isinstance(mail.sender, str) and mail.sender == mail.sender.lower())
    classify(mail)

    # what the conversation actor stores, and what it sends to inbox, must encode
    job = Incoming("inbox", "os", "INBOX", 1, mail, None, dt.datetime(2025, 11, 25, tzinfo=dt.timezone.utc))
    doc = Conversations._document(job, "customer-id", None)
    bson.encode(doc)
    encode_request("os", {"action": "create-or-update-conversation", "payload": json.dumps({
        "integrationId": "inbox", "customerId": "c", "createdAt": doc["createdAt"].isoformat(),
        "content": doc["subject"]})})
    encode_request("os", {"_id": "m", "content": doc["body"], "conversationId": "c"})

    ids = [a["attachmentId"] for a in mail.attachments]
    assert len(ids) == len(set(ids))
    for attachment in mail.attachments[:20]:  # the attachment route finds every listed part again
        found = find_part(raw, attachment["partIndex"])
        assert found is not None, attachment
    return mail


# -- strategies ------------------------------------------------------------------------------------------------------

TOKENS = [b"=?utf-8?B?", b"?=", b"=?x-unknown?Q?=FF?=", b"<", b">", b"@", b";", b":", b",", b'"', b"\\", b"(", b")",
          b"\r\n", b"\n", b"\r", b"\r\n ", b"\t", b"\x00", b"\xff", b"\xc3", b"\xed\xb3\xbf", b"=", b"--", b"%ZZ",
          b"boundary=", b"charset=", b"*0*=", b"''"]
HEADER_NAMES = ["From", "To", "Cc", "Bcc", "Reply-To", "Subject", "Date", "Message-ID", "In-Reply-To", "References",
                "Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "Content-ID", "MIME-Version",
                "Delivered-To", "Auto-Submitted", "Return-Path", "X-Imap-Runtime-Id", "Precedence"]
MEDIA = ["text/plain", "text/html", "message/rfc822", "multipart/mixed", "multipart/alternative", "multipart/related",
         "application/octet-stream", "image/png", "text/calendar", "message/delivery-status", "multipart/report"]

junk_bytes = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=12)), max_size=25).map(b"".join)
header_value = st.one_of(junk_bytes, st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")))
headers = st.lists(st.tuples(st.sampled_from(HEADER_NAMES), header_value), max_size=12)


@st.composite
def content_type(draw: st.DrawFn) -> bytes:
    media = draw(st.sampled_from(MEDIA)).encode()
    params = draw(st.lists(st.tuples(st.sampled_from([b"boundary", b"charset", b"name", b"name*0*", b"filename*",
                                                      b"start", b"report-type"]), header_value), max_size=3))
    return media + b"".join(b"; " + k + b'="' + v + b'"' for k, v in params)


def mime_tree() -> st.SearchStrategy[bytes]:
    leaf = st.tuples(content_type(), headers, junk_bytes).map(
        lambda t: b"Content-Type: " + t[0] + b"\r\n" + b"".join(k.encode() + b": " + v + b"\r\n" for k, v in t[1])
        + b"\r\n" + t[2])

    def extend(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
        return st.tuples(st.sampled_from([b"mixed", b"alternative", b"related", b"digest"]),
                         st.sampled_from([b"b1", b"b2", b"", b"b1 ", b"--"]), st.lists(children, max_size=4),
                         st.booleans()).map(_assemble)

    return st.recursive(leaf, extend, max_leaves=12)


def _assemble(t: tuple[bytes, bytes, list[bytes], bool]) -> bytes:
    subtype, boundary, parts, close = t
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    body += b"--" + boundary + b"--" if close else b""
    return b'Content-Type: multipart/' + subtype + b'; boundary="' + boundary + b'"\r\n\r\n' + body


@st.composite
def structured_mail(draw: st.DrawFn) -> bytes:
    top = b"".join(k.encode() + b": " + v + b"\r\n" for k, v in draw(headers))
    return b"From: a@example.org\r\n" + top + draw(mime_tree())


# -- properties ------------------------------------------------------------------------------------------------------

@FUZZ
@given(rnd=st.randoms(use_true_random=False), kind=st.sampled_from(sorted(set(corpus.KINDS) - {"oversized"})))
def test_hostile_corpus_builders(rnd: Any, kind: str) -> None:
    check(corpus.hostile_mail(rnd, TO, kind))


@FUZZ
@given(raw=structured_mail())
def test_structured_hostile_mime(raw: bytes) -> None:
    check(raw)


@FUZZ
@given(head=headers, body=st.binary(max_size=3000))
def test_random_bytes_behind_headers(head: list[tuple[str, bytes]], body: bytes) -> None:
    check(b"".join(k.encode() + b": " + v + b"\r\n" for k, v in head) + b"\r\n" + body)


@FUZZ
@given(raw=st.binary(min_size=1, max_size=2000))
def test_arbitrary_bytes(raw: bytes) -> None:
    check(raw)


def test_the_whole_end_to_end_corpus_parses_or_is_refused() -> None:
    """The exact corpus tests/test_reliability.py appends to Dovecot (same seed)."""
    mails = corpus.hostile_mails(TO, seed=20251125, oversized_count=1)
    assert len(mails) >= 300
    refused = sum(check(m.raw) is None for m in mails)
    assert 0 < refused < len(mails) // 4
