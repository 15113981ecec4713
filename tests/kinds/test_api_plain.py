"""The api kind's plain pieces (no servers): signatures, the inbound body's shape, details, the backoff."""
from __future__ import annotations

import json
import random

import pytest

from kinds.api.delivery import Retry
from kinds.api.details import parse_details, parse_inbound, sign, verify
from kinds.api.ingest import content_of
from runtime.errors import RequestError


def test_signatures_are_hmac_sha256_of_the_raw_body():
    # the value of: printf '{"a":1}' | openssl dgst -sha256 -hmac 0123456789abcdef
    assert sign("0123456789abcdef", b'{"a":1}') == \
        "sha256=" + __import__("hmac").new(b"0123456789abcdef", b'{"a":1}', "sha256").hexdigest()
    header = sign("0123456789abcdef", b"body")
    assert verify("0123456789abcdef", b"body", header)
    assert not verify("0123456789abcdef", b"body2", header)
    assert not verify("another-secret-xyz", b"body", header)
    assert not verify("0123456789abcdef", b"body", None) and not verify("", b"body", header)
    assert not verify("0123456789abcdef", b"body", "sha256=\u00e9")


def test_the_inbound_shape():
    message = parse_inbound(json.dumps({"messageId": " m1 ", "from": {"id": "u", "email": "a@b.c", "name": ""},
                                        "text": "hi", "createdAt": "2026-01-02T03:04:05Z"}).encode())
    assert message.message_id == "m1" and message.sender == {"id": "u", "email": "a@b.c"}
    assert message.thread_key == "from:u" and message.created_at.tzinfo is not None
    assert parse_inbound(json.dumps({"messageId": "m", "from": {"id": "u"}, "threadId": "t",
                                     "attachments": [{"name": "a", "url": "https://x/a"}]}).encode()).thread_key == "thread:t"
    for body, why in [({"messageId": "", "from": {"id": "u"}, "text": "x"}, "messageId"),
                      ({"messageId": "m", "from": {"id": 3}, "text": "x"}, "from.id"),
                      ({"messageId": "m", "from": {"id": "u", "email": "nope"}, "text": "x"}, "from.email"),
                      ({"messageId": "m", "from": {"id": "u"}, "text": "  "}, "must be present"),
                      ({"messageId": "m", "from": {"id": "u"}, "attachments": [{"url": "file:///etc"}]}, "url"),
                      ({"messageId": "m", "from": {"id": "u"}, "text": "x", "attachments": {}}, "attachments")]:
        with pytest.raises(RequestError, match=why):
            parse_inbound(json.dumps(body).encode())
    with pytest.raises(RequestError):
        parse_inbound(b"\xff")


def test_text_is_escaped_and_html_sanitised():
    text = parse_inbound(json.dumps({"messageId": "m", "from": {"id": "u"}, "text": "<b>&</b>\nx"}).encode())
    assert content_of(text) == "<p>&lt;b&gt;&amp;&lt;/b&gt;<br>x</p>"
    html = parse_inbound(json.dumps({"messageId": "m", "from": {"id": "u"},
                                     "html": "<p onclick='x()'>hi<script>evil()</script></p>"}).encode())
    assert "script" not in content_of(html) and "onclick" not in content_of(html) and "hi" in content_of(html)


def test_details():
    assert parse_details(json.dumps({"secret": "x" * 16, "callbackUrl": "https://h/cb", "name": "n"}),
                         creating=True) == {"secret": "x" * 16, "callbackUrl": "https://h/cb", "name": "n"}
    assert parse_details(json.dumps({"secret": ""}), creating=False) == {}  # an empty secret keeps the stored one
    for raw, why in [("{}", "secret is required"), (json.dumps({"secret": "short"}), "16"),
                     (json.dumps({"secret": "x" * 16, "callbackUrl": "ftp://h"}), "callbackUrl"), ("[", "JSON")]:
        with pytest.raises(RequestError, match=why):
            parse_details(raw, creating=True)


def test_the_backoff_doubles_up_to_its_cap_with_jitter():
    retry = Retry(base=1.0, cap=10.0)
    rng = random.Random(7)
    delays = [retry.delay(n, rng) for n in range(1, 8)]
    for n, delay in enumerate(delays, start=1):
        ceiling = min(10.0, 2 ** (n - 1))
        assert ceiling * 0.5 <= delay <= ceiling
    assert max(delays) <= 10.0 and delays[-1] >= 5.0
