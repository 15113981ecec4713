"""Mail corpora for the reliability tests (tests/test_reliability.py) and the parser fuzz test.

- :func:`realistic_mix`: ordinary mail from many senders, a share of it replies that thread onto earlier mails by
  In-Reply-To/References; every item knows its thread, so a test can check conversations.
- :func:`hostile_mails`: malformed and hostile mails (broken MIME boundaries, bad transfer encodings and charsets,
  huge headers, missing/duplicate/absurd Message-IDs, nested message/rfc822, zero-byte and oversized parts,
  binary garbage behind a header, deep multipart nesting, unusable senders, odd line endings, ...), generated
  from a seed, plus :data:`HANDMADE` classics.

Every builder takes a ``random.Random`` and returns bytes, so the same seed always gives the same corpus. The
hypothesis property test (tests/runtime/test_mailparse_fuzz.py) hands the same builders hypothesis's own
``Random`` (``st.randoms()``), so hypothesis explores and shrinks them too. Pure: no I/O.
"""
from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["CorpusMail", "HostileMail", "HANDMADE", "KINDS", "OVERSIZE_LIMIT", "hostile_mail", "hostile_mails",
           "realistic_mix", "unusable_sender_mails"]

CRLF = b"\r\n"
OVERSIZE_LIMIT = 512 * 1024  # the max_mail_bytes the end-to-end corpus test runs with; "oversized" mails exceed it

FIRST = ["Ada", "Bob", "Chen", "Dana", "Eve", "Farid", "Gita", "Hugo", "Ines", "Jon", "Kemal", "Lena", "Mia",
         "Nils", "Olu", "Pia", "Quinn", "Rosa", "Sven", "Tara", "Uma", "Vik", "Wen", "Xena", "Yuki", "Zoe"]
LAST = ["Meier", "Smith", "Okafor", "Nguyen", "Rossi", "Dubois", "Kowalski", "Tanaka", "Silva", "Novak"]
TOPICS = ["Order", "Invoice", "Delivery", "Refund", "Password reset", "Question about pricing", "Broken item",
          "Subscription", "Meeting", "Complaint", "Größenfrage", "Réclamation", "Заказ", "注文について"]


# ------------------------------------------------------------------------------------------------ realistic mix

@dataclass(frozen=True)
class CorpusMail:
    raw: bytes
    message_id: str
    thread: int  # index (in the corpus) of the mail that started the thread
    sender: str  # lowercased address


def realistic_mix(n: int, to: str, *, seed: int, senders: int = 50, reply_ratio: float = 0.3) -> list[CorpusMail]:
    """``n`` ordinary mails to ``to`` from ``senders`` people (every one of them writes at least one thread when
    ``n`` allows); about ``reply_ratio`` of them answer an earlier mail of the corpus (In-Reply-To + References)."""
    rnd = random.Random(seed)
    people = [(f"{rnd.choice(FIRST)} {rnd.choice(LAST)}", f"customer{i:02d}@example.com") for i in range(senders)]
    out: list[CorpusMail] = []
    refs: list[list[str]] = []
    subjects: list[str] = []
    for i in range(n):
        message_id = f"<mix-{seed}-{i}@example.com>"
        if out and i >= senders and rnd.random() < reply_ratio:
            parent = rnd.randrange(max(0, i - 200), i)  # people answer recent mail
            thread = out[parent].thread
            chain = refs[parent] + [out[parent].message_id]
            subject = "Re: " + subjects[thread]
            name, address = (people[[p[1] for p in people].index(out[thread].sender)]
                             if rnd.random() < 0.8 else rnd.choice(people))
            in_reply_to: str | None = out[parent].message_id
        else:
            thread, chain, in_reply_to = i, [], None
            subject = f"{rnd.choice(TOPICS)} #{i}"
            name, address = people[i] if i < senders else rnd.choice(people)
        headers = [("From", f'"{name}" <{address}>'), ("To", to), ("Subject", _encode_word(subject)),
                   ("Date", f"Tue, 25 Nov 2025 {i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d} +0000"),
                   ("Message-ID", message_id), ("MIME-Version", "1.0")]
        if in_reply_to:
            headers += [("In-Reply-To", in_reply_to), ("References", " ".join(chain[-20:]))]
        words = " ".join(rnd.choice(LAST) for _ in range(rnd.randint(5, 80)))
        text = f"Hello,\n\nmail {i} of thread {thread}. " + words
        kind = rnd.random()
        if kind < 0.6:
            raw = _mail(headers, [("Content-Type", "text/plain; charset=utf-8"),
                                  ("Content-Transfer-Encoding", "8bit")], text.encode())
        elif kind < 0.9:
            raw = _multipart(headers, "alternative", [
                _part([("Content-Type", "text/plain; charset=utf-8")], text.encode()),
                _part([("Content-Type", "text/html; charset=utf-8")], f"<p>{text}</p>".encode())])
        else:
            raw = _multipart(headers, "mixed", [
                _part([("Content-Type", "text/plain; charset=utf-8")], text.encode()),
                _part([("Content-Type", "application/pdf"), ("Content-Transfer-Encoding", "base64"),
                       ("Content-Disposition", f'attachment; filename="doc{i}.pdf"')],
                      _b64(rnd.randbytes(rnd.randint(100, 4000))))])
        out.append(CorpusMail(raw, message_id, thread, address))
        refs.append(chain)
        subjects.append(subject)
    return out


# ----------------------------------------------------------------------------------------------- building blocks

def _h(name: str, value: str | bytes) -> bytes:
    return name.encode() + b": " + (value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape"))


def _mail(headers: list[tuple[str, str | bytes]], part_headers: list[tuple[str, str | bytes]], body: bytes,
          *, eol: bytes = CRLF) -> bytes:
    lines = [_h(k, v) for k, v in headers + part_headers]
    return eol.join(lines) + eol + eol + body


def _part(headers: list[tuple[str, str | bytes]], body: bytes) -> bytes:
    return CRLF.join(_h(k, v) for k, v in headers) + CRLF + CRLF + body


def _multipart(headers: list[tuple[str, str | bytes]], subtype: str, parts: list[bytes], *,
               boundary: str = "=_b0und4ry_", close: bool = True) -> bytes:
    body = b"".join(b"--" + boundary.encode() + CRLF + p + CRLF for p in parts)
    if close:
        body += b"--" + boundary.encode() + b"--" + CRLF
    return _mail(headers, [("Content-Type", f'multipart/{subtype}; boundary="{boundary}"')], body)


def _b64(data: bytes) -> bytes:
    enc = base64.b64encode(data)
    return CRLF.join(enc[i:i + 76] for i in range(0, len(enc), 76))


def _encode_word(text: str) -> str:
    if text.isascii():
        return text
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


def _junk_text(rnd: random.Random, n: int) -> str:
    """Unicode junk: controls, surrogate-range escapes in bytes, RTL marks, combining marks, astral planes."""
    pool = ["\u202e", "\u200b", "\ufeff", "\u0301" * 5, "\U0001f4a9", "\x00", "\x1b[31m", "\t", "ÿ", "€", "\u2028",
            "a", "<", ">", "&", '"', "'", "\\", "=?", "?=", ";", ":", ",", "@"]
    return "".join(rnd.choice(pool) for _ in range(n))


def _junk_bytes(rnd: random.Random, n: int) -> bytes:
    return rnd.randbytes(n).replace(b"\x00", b"\x01")


def _base(rnd: random.Random, to: str, **over: str | bytes | None) -> list[tuple[str, str | bytes]]:
    """Sane default headers; ``over`` replaces (value) or drops (None) one of them."""
    n = rnd.randrange(10 ** 9)
    values: dict[str, str | bytes | None] = {
        "From": f"Sender {n % 97} <hostile{n % 97}@example.org>", "To": to, "Subject": f"hostile {n}",
        "Date": "Tue, 25 Nov 2025 10:00:00 +0000", "Message-ID": f"<h{n}@example.org>", "MIME-Version": "1.0"}
    values.update(over)
    return [(k, v) for k, v in values.items() if v is not None]


# --------------------------------------------------------------------------------------------- hostile builders
# Each takes (rnd, to) and returns raw bytes; every one keeps a usable From unless its kind is about senders.

def broken_boundary(rnd: random.Random, to: str) -> bytes:
    text = _part([("Content-Type", "text/plain")], b"part one")
    html = _part([("Content-Type", "text/html")], b"<b>part two</b>")
    variant = rnd.randrange(8)
    if variant == 0:  # declared boundary never appears
        return _mail(_base(rnd, to), [("Content-Type", 'multipart/mixed; boundary="nowhere"')],
                     b"--elsewhere\r\n" + text + b"\r\n--elsewhere--\r\n")
    if variant == 1:  # no closing boundary, truncated mid-part
        return _multipart(_base(rnd, to), "alternative", [text, html[: rnd.randint(1, len(html))]], close=False)
    if variant == 2:  # empty boundary parameter
        return _mail(_base(rnd, to), [("Content-Type", 'multipart/mixed; boundary=""')],
                     b"--\r\n" + text + b"\r\n----\r\n")
    if variant == 3:  # no boundary parameter at all
        return _mail(_base(rnd, to), [("Content-Type", "multipart/related")], b"--x\r\n" + text)
    if variant == 4:  # nested multipart reusing its parent's boundary
        inner = _multipart([], "alternative", [text, html], boundary="same")
        return _multipart(_base(rnd, to), "mixed", [inner, text], boundary="same")
    if variant == 5:  # boundary of 300 characters, and junk characters in it
        b = "".join(rnd.choice("ab'()+_,-./:=? ") for _ in range(300))
        return _multipart(_base(rnd, to), "mixed", [text, html], boundary=b.replace('"', ""))
    if variant == 6:  # parts without headers or blank lines, preamble and epilogue junk
        return _mail(_base(rnd, to), [("Content-Type", 'multipart/mixed; boundary="q"')],
                     _junk_bytes(rnd, 200) + b"\r\n--q\r\nno header here\r\n--q\r\n\r\n--q--\r\n"
                     + _junk_bytes(rnd, 200))
    subtype = rnd.choice(["", "x-weird", "mixed;;", "alternative"])
    boundary = rnd.choice(["a", "a b", '"', "--", "a;b=c"])
    return _mail(_base(rnd, to), [("Content-Type", f"multipart/{subtype}; boundary={boundary}")],
                 b"--a\r\n" + text + b"\r\n--a--")


def bad_transfer_encoding(rnd: random.Random, to: str) -> bytes:
    cte, body = rnd.choice([
        ("base64", b"!!!not base64 at all@@@" + _junk_bytes(rnd, 50)),
        ("base64", base64.b64encode(rnd.randbytes(rnd.randint(1, 300)))[:-3]),  # bad padding
        ("base64", b"=" * 100),
        ("quoted-printable", b"broken =ZZ escape =\r\nsoft break at the end=" + _junk_bytes(rnd, 30)),
        ("quoted-printable", b"=" * 77 + b"=0"),
        ("x-uuencode", b"begin 644 a.txt\r\n" + _junk_bytes(rnd, 60) + b"\r\nend\r\n"),
        ("binary", _junk_bytes(rnd, 500)),
        ("7bit", "naïve 8-bit in a 7bit part €".encode()),
        ("gzip", _junk_bytes(rnd, 100)),
        ("", b"empty encoding name"),
    ])
    ctype = rnd.choice(["text/plain; charset=utf-8", "text/html", "application/octet-stream", "image/png"])
    if rnd.random() < 0.5:
        return _mail(_base(rnd, to), [("Content-Type", ctype), ("Content-Transfer-Encoding", cte),
                                      ("Content-Transfer-Encoding", rnd.choice(["base64", "8bit"]))], body)
    return _multipart(_base(rnd, to), "mixed", [
        _part([("Content-Type", "text/plain")], b"intro"),
        _part([("Content-Type", ctype), ("Content-Transfer-Encoding", cte),
               ("Content-Disposition", "attachment; filename=x.bin")], body)])


CHARSETS = ["x-nonexistent", "utf-7", "utf-16", "utf-32", "base64", "rot13", "idna", "punycode", "unicode-escape",
            "zlib", "hex", "", '"', "utf-8\\0", "ｕｔｆ８", "cp1252", "iso-2022-jp", "gb2312", "shift_jis", "koi8-r",
            "utf-8-sig", "uu", "mbcs", "ascii", "latin1", "big5", "undefined", "charmap", "a" * 300]


def bad_charset(rnd: random.Random, to: str) -> bytes:
    charset = rnd.choice(CHARSETS)
    body = rnd.choice([_junk_bytes(rnd, rnd.randint(1, 400)), "Grüße €".encode("utf-8"), b"\xff\xfe\x00",
                       "日本語".encode("utf-16"), b"+AGEAYgBj-", b"\\N{bogus}\\x"])
    subject_charset = rnd.choice(CHARSETS).replace("?", "")
    words = [f"=?{subject_charset}?B?{base64.b64encode(_junk_bytes(rnd, 12)).decode()}?=",
             f"=?{subject_charset}?Q?=FF=FE=00_x?=", "=?utf-8?B?AAA?=", "=?utf-8?Q?=?=", "=?x?y?z?=", "=?utf-8?",
             "=?unknown-8bit?q?=FF?=", "=?utf-8*de?q?Hallo?="]
    subject = " ".join(rnd.choice(words) for _ in range(rnd.randint(1, 6)))
    name = rnd.choice(words)
    headers = _base(rnd, to, Subject=subject, From=f"{name} <charset{rnd.randrange(99)}@example.org>")
    return _mail(headers, [("Content-Type", f'text/{rnd.choice(["plain", "html"])}; charset="{charset}"'),
                           ("Content-Transfer-Encoding", rnd.choice(["8bit", "binary", "base64"]))],
                 body if rnd.random() < 0.7 else _b64(body))


def huge_header(rnd: random.Random, to: str) -> bytes:
    variant = rnd.randrange(6)
    size = rnd.randint(50_000, 300_000)
    if variant == 0:
        return _mail(_base(rnd, to, Subject="S" * size), [], b"huge subject")
    if variant == 1:  # thousands of header lines
        extra = [(f"X-Junk-{i}", _junk_text(rnd, 8)) for i in range(rnd.randint(2000, 8000))]
        return _mail(_base(rnd, to) + extra, [], b"many headers")
    if variant == 2:  # a To with thousands of addresses
        addresses = ", ".join(f"r{i}@example.net" for i in range(rnd.randint(2000, 10000)))
        return _mail(_base(rnd, to, To=addresses + ", " + to), [], b"many recipients")
    if variant == 3:  # thousands of References
        refs = " ".join(f"<ref{i}.{rnd.randrange(10 ** 6)}@example.net>" for i in range(rnd.randint(1000, 5000)))
        return _mail(_base(rnd, to) + [("References", refs), ("In-Reply-To", refs[:5000])], [], b"many refs")
    if variant == 4:  # one header folded over thousands of lines
        folded = "\r\n ".join("w" * rnd.randint(1, 70) for _ in range(rnd.randint(1000, 5000)))
        return _mail(_base(rnd, to, Subject=folded), [], b"folded")
    return _mail(_base(rnd, to, From=f"{'N' * size} <long@example.org>"), [], b"long display name")


_ID_POOL = [f"<shared-{i}@example.org>" for i in range(3)]  # duplicate Message-IDs across the corpus


def message_ids(rnd: random.Random, to: str) -> bytes:
    choice = rnd.randrange(10)
    if choice == 0:
        headers = _base(rnd, to, **{"Message-ID": None})
    elif choice == 1:
        headers = _base(rnd, to, **{"Message-ID": ""})
    elif choice == 2:
        headers = _base(rnd, to, **{"Message-ID": "<>"})
    elif choice == 3:  # two different Message-ID headers
        headers = _base(rnd, to) + [("Message-ID", f"<second{rnd.randrange(10 ** 6)}@example.org>")]
    elif choice == 4:  # spaces, unicode, 8-bit, comments
        headers = _base(rnd, to, **{"Message-ID": rnd.choice([
            f"< spaced id {rnd.randrange(10 ** 6)} @ example.org >", f"<ü{rnd.randrange(10 ** 6)}@bücher.de>",
            b"<\xff\xfe" + str(rnd.randrange(10 ** 6)).encode() + b"@x>",
            f"(comment) <c{rnd.randrange(10 ** 6)}@x> (more)", f"no-brackets-{rnd.randrange(10 ** 6)}@x",
            "<a@b> <c@d>", "<<<>>>", "\t"])})
    elif choice == 5:  # absurdly long
        headers = _base(rnd, to, **{"Message-ID": f"<{'L' * rnd.randint(1000, 20000)}{rnd.randrange(10 ** 6)}@x>"})
    elif choice in (6, 7):  # shared with other mails of the corpus: deduplicated by design
        headers = _base(rnd, to, **{"Message-ID": rnd.choice(_ID_POOL)})
    elif choice == 8:  # In-Reply-To/References junk
        headers = _base(rnd, to) + [("In-Reply-To", _junk_text(rnd, 40)), ("References", "<" * 500 + ">" * 3)]
    else:  # no Message-ID and identical visible headers: two such mails differ only by size
        headers = _base(rnd, to, **{"Message-ID": None, "Subject": "same", "From": "same@example.org"})
    return _mail(headers, [("Content-Type", "text/plain")], f"body {rnd.randrange(10 ** 6)}".encode())


def nested_rfc822(rnd: random.Random, to: str) -> bytes:
    depth = rnd.randint(2, 60)
    inner = _mail(_base(rnd, to), [("Content-Type", "text/plain")], b"innermost")
    if rnd.random() < 0.3:
        inner = rnd.choice(GENERATED)(rnd, to)  # a hostile mail inside
    for level in range(depth):
        if level % 2:
            inner = _multipart(_base(rnd, to, Subject=f"level {level}"), "mixed",
                               [_part([("Content-Type", "text/plain")], b"wrapper"),
                                _part([("Content-Type", "message/rfc822")], inner)], boundary=f"lvl{level}")
        else:
            inner = _mail(_base(rnd, to, Subject=f"fwd {level}"), [("Content-Type", "message/rfc822")], inner)
    return inner


def zero_byte_parts(rnd: random.Random, to: str) -> bytes:
    variant = rnd.randrange(6)
    if variant == 0:
        return _mail(_base(rnd, to), [("Content-Type", "text/plain")], b"")
    if variant == 1:  # header-only mail: no blank line, no body
        return CRLF.join(_h(k, v) for k, v in _base(rnd, to))
    if variant == 2:  # multipart with no parts
        return _mail(_base(rnd, to), [("Content-Type", 'multipart/mixed; boundary="e"')], b"--e--\r\n")
    if variant == 3:  # empty parts of every kind
        parts = [_part([("Content-Type", t)], b"") for t in ("text/plain", "text/html", "message/rfc822",
                                                            "application/octet-stream", "multipart/mixed")]
        parts.append(_part([("Content-Type", "application/pdf"), ("Content-Disposition", 'attachment; filename="")')],
                           b""))
        return _multipart(_base(rnd, to), "mixed", parts)
    if variant == 4:  # empty base64 attachment and an empty part with no headers at all
        return _multipart(_base(rnd, to), "mixed", [
            _part([("Content-Type", "image/png"), ("Content-Transfer-Encoding", "base64")], b""), CRLF])
    return _mail(_base(rnd, to), [("Content-Type", "message/rfc822")], b"")


def oversized(rnd: random.Random, to: str) -> bytes:
    """Over :data:`OVERSIZE_LIMIT`: quarantined from its RFC822.SIZE, never downloaded."""
    payload = rnd.randbytes(OVERSIZE_LIMIT + rnd.randint(1024, 256 * 1024))
    return _multipart(_base(rnd, to), "mixed", [
        _part([("Content-Type", "text/plain")], b"see the attachment"),
        _part([("Content-Type", "application/zip"), ("Content-Transfer-Encoding", "base64"),
               ("Content-Disposition", 'attachment; filename="big.zip"')], _b64(payload))])


def binary_garbage(rnd: random.Random, to: str) -> bytes:
    body = rnd.randbytes(rnd.randint(1, 64 * 1024))
    if rnd.random() < 0.5:
        return _mail(_base(rnd, to), [], body)
    return _mail(_base(rnd, to), [("Content-Type", rnd.choice(["text/plain", "text/html", "multipart/mixed",
                                                               "message/rfc822", "image/gif"]))], body)


def deep_multipart(rnd: random.Random, to: str) -> bytes:
    depth = rnd.randint(30, 400)
    inner = _part([("Content-Type", "text/plain")], b"deep down")
    for level in range(depth):
        inner = (f'Content-Type: multipart/{rnd.choice(["mixed", "alternative", "related"])}; '
                 f'boundary="d{level}"\r\n\r\n--d{level}\r\n').encode() + inner + f"\r\n--d{level}--".encode()
    return CRLF.join(_h(k, v) for k, v in _base(rnd, to)) + CRLF + inner


def odd_senders(rnd: random.Random, to: str) -> bytes:
    """Odd but usable From headers (a customer can be made from each)."""
    sender = rnd.choice([
        f'"=?utf-8?b?{base64.b64encode("Jürgen Üß".encode()).decode()}?=" <j{rnd.randrange(99)}@example.de>',
        f"ÄÖÜ <ü{rnd.randrange(99)}@bücher.example>", f"UPPER{rnd.randrange(99)}@EXAMPLE.ORG",
        f"a{rnd.randrange(99)}@example.org, b@example.org, c@example.org",
        f"(comment) c{rnd.randrange(99)}@example.org (another)", f"Name With Spaces n{rnd.randrange(99)}@example.org",
        f'"quoted \\" name" <q{rnd.randrange(99)}@example.org>', b"\xff\xfe <raw8bit@example.org>",
        f"<angle{rnd.randrange(99)}@example.org>", f"x{'y' * 3000}@example.org"])
    return _mail(_base(rnd, to, From=sender), [("Content-Type", "text/plain")], b"odd sender")


def line_endings(rnd: random.Random, to: str) -> bytes:
    headers = _base(rnd, to)
    variant = rnd.randrange(4)
    if variant == 0:
        return _mail(headers, [("Content-Type", "text/plain")], b"bare\nLF\nonly\n", eol=b"\n")
    if variant == 1:
        return _mail(headers, [("Content-Type", "text/plain")], b"bare\rCR\ronly\r", eol=b"\r")
    if variant == 2:
        return _mail(headers, [("Content-Type", "text/plain")], b"x" * rnd.randint(100_000, 400_000))  # one line
    return _mail(headers, [("Content-Type", "text/plain")], b"mixed\r\nends\n\rhere\r\r\n\n" * 50, eol=b"\n\r")


def bad_dates(rnd: random.Random, to: str) -> bytes:
    date = rnd.choice(["31 Feb 2021 25:61:61 +9999", "Mon, 01 Jan 10000 00:00:00 +0000", "0", "",
                       "Mon, 01 Jan 0001 00:00:00 +0000", "Thu, 01 Jan 1970 00:00:00 -2400", "yesterday",
                       "Tue, 25 Nov 2025 10:00:00 +0000 (UTC) extra junk", "\udcff", "9" * 400,
                       "Fri, 31 Dec 9999 23:59:59 -1200"])
    return _mail(_base(rnd, to, Date=date), [("Content-Type", "text/plain")], b"bad date")


def header_syntax(rnd: random.Random, to: str) -> bytes:
    junk = rnd.choice([b"this line has no colon", b" continuation before any header", b"Bad Name: with space",
                       b"\xff\xfe-Header: 8-bit name", b": empty name", b"X-Long" + b"n" * 2000 + b": v"])
    ctype = rnd.choice([b"Content-Type: multipart/", b"Content-Type: ;;;;", b"Content-Type: text/plain; charset",
                        b"Content-Type: text/plain\r\nContent-Type: multipart/mixed; boundary=z",
                        b"Content-Type: text/plain; name*0*=utf-8''%ZZ; name*1=x; filename*=bogus''%E2%82",
                        b"Content-Type: application/x; " + b"; ".join(b"p%d=v" % i for i in range(500)),
                        b"Content-Disposition: attachment; filename=\"../../etc/passwd\x07\"",
                        b"Content-Disposition: attachment; filename*=utf-8''" + b"%41" * 5000])
    head = CRLF.join(_h(k, v) for k, v in _base(rnd, to))
    lines = [head, junk, ctype] if rnd.random() < 0.5 else [junk, head, ctype]
    return CRLF.join(lines) + CRLF + CRLF + b"body after odd headers"


def html_bodies(rnd: random.Random, to: str) -> bytes:
    body = rnd.choice([b"false", b"<div>" * 20000 + b"deep" + b"</div>" * 3, b"<script>alert(1)</script>",
                       b"<html><body onload=x()>\x00</body>", b"<!--" + b"-" * 10000, b"&#xDCFF;&#0;&#x110000;"])
    return _mail(_base(rnd, to), [("Content-Type", "text/html; charset=utf-8")], body)


GENERATED: list[Callable[[random.Random, str], bytes]] = [
    broken_boundary, bad_transfer_encoding, bad_charset, huge_header, message_ids, zero_byte_parts,
    binary_garbage, deep_multipart, odd_senders, line_endings, bad_dates, header_syntax, html_bodies]
KINDS: dict[str, Callable[[random.Random, str], bytes]] = {
    f.__name__: f for f in [*GENERATED, nested_rfc822, oversized]}


def hostile_mail(rnd: random.Random, to: str, kind: str | None = None) -> bytes:
    """One hostile mail of ``kind`` (default: a kind drawn from ``rnd``); never empty (IMAP cannot store that)."""
    builder = KINDS[kind] if kind else rnd.choice(list(KINDS.values()))
    return builder(rnd, to) or b"X: y"


# --------------------------------------------------------------------------------------------------- hand-made

HANDMADE: list[tuple[str, bytes]] = [
    ("not a mail: binary", bytes(range(1, 256)) * 4),
    ("not a mail: text without header", b"just some text\r\nwith lines\r\n"),
    ("not a mail: html", b"<html><body>hi</body></html>"),
    ("mbox From_ line", b"From someone@example.org Tue Nov 25 10:00:00 2025\r\nFrom: mbox@example.org\r\n"
                        b"Subject: mbox\r\nMessage-ID: <mbox@example.org>\r\n\r\nbody"),
    ("only a blank line", b"\r\n"),
    ("base64 multipart container", b"From: b64mp@example.org\r\nMessage-ID: <b64mp@example.org>\r\n"
                                   b"Content-Type: multipart/mixed; boundary=x\r\nContent-Transfer-Encoding: base64\r\n"
                                   b"\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--"),
    ("message/partial", b"From: partial@example.org\r\nMessage-ID: <partial@example.org>\r\n"
                        b"Content-Type: message/partial; id=\"abc\"; number=2; total=3\r\n\r\nSubject: part\r\n\r\nx"),
    ("message/external-body", b"From: ext@example.org\r\nMessage-ID: <ext@example.org>\r\n"
                              b"Content-Type: message/external-body; access-type=URL; URL=\"file:///etc/passwd\"\r\n\r\n"),
    ("multipart/digest of junk", b"From: digest@example.org\r\nMessage-ID: <digest@example.org>\r\n"
                                 b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n\xff\xfe\r\n--d\r\n"
                                 b"\r\nnot: headers\r\n--d--"),
    ("multipart/signed without signature", b"From: signed@example.org\r\nMessage-ID: <signed@example.org>\r\n"
                                           b"Content-Type: multipart/signed; protocol=\"application/pgp-signature\";"
                                           b" boundary=s\r\n\r\n--s\r\nContent-Type: text/plain\r\n\r\nsigned\r\n--s--"),
    ("winmail.dat", b"From: tnef@example.org\r\nMessage-ID: <tnef@example.org>\r\nContent-Type: multipart/mixed; "
                    b"boundary=t\r\n\r\n--t\r\nContent-Type: application/ms-tnef; name=winmail.dat\r\n"
                    b"Content-Transfer-Encoding: base64\r\n\r\neJ8+IhAAAQaQCAAEAAAAAAAB\r\n--t--"),
    ("uuencoded body", b"From: uu@example.org\r\nMessage-ID: <uu@example.org>\r\n\r\nbegin 644 x.txt\r\n"
                       b"#86)C\r\n`\r\nend\r\n"),
    ("10000 encoded words", b"From: words@example.org\r\nMessage-ID: <words@example.org>\r\nSubject: "
                            + b" ".join(b"=?utf-8?q?w=C3=BC?=" for _ in range(10000)) + b"\r\n\r\nx"),
    ("header of NUL-like bytes", b"From: nul@example.org\r\nMessage-ID: <nul@example.org>\r\nSubject: a\x01\x02\x7f\r\n"
                                 b"\r\nbody\x01"),
    ("Content-Type loop", b"From: ctloop@example.org\r\nMessage-ID: <ctloop@example.org>\r\n"
                          b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n"
                          b"Content-Type: message/rfc822\r\n\r\n"),
    ("utf-16 declared, utf-8 sent", b"From: u16@example.org\r\nMessage-ID: <u16@example.org>\r\n"
                                    b"Content-Type: text/plain; charset=utf-16\r\n\r\nGr\xc3\xbc\xc3\x9fe"),
    ("html body 'false'", b"From: false@example.org\r\nMessage-ID: <false@example.org>\r\n"
                          b"Content-Type: text/html\r\n\r\nfalse"),
    ("attachment with path traversal name", b"From: path@example.org\r\nMessage-ID: <path@example.org>\r\n"
                                            b"Content-Type: multipart/mixed; boundary=p\r\n\r\n--p\r\n"
                                            b"Content-Type: application/x; name=\"..\\\\..\\\\boot.ini\"\r\n"
                                            b"Content-Disposition: attachment; filename=\"/etc/../../x\"\r\n\r\nx\r\n--p--"),
    ("Received chain of 3000", b"".join(b"Received: from h%d by h%d; Tue, 25 Nov 2025 10:00:00 +0000\r\n" % (i, i)
                                        for i in range(3000)) + b"From: rcv@example.org\r\nMessage-ID: <rcv@example.org>"
                                                                 b"\r\n\r\nx"),
    ("auto-reply loop bait", b"From: auto@example.org\r\nMessage-ID: <auto@example.org>\r\n"
                             b"Auto-Submitted: auto-replied\r\nPrecedence: bulk\r\nX-Autoreply: yes\r\n\r\nI am away"),
    ("bounce", b"From: MAILER-DAEMON@example.org\r\nMessage-ID: <bounce@example.org>\r\nReturn-Path: <>\r\n"
               b"Content-Type: multipart/report; report-type=delivery-status; boundary=r\r\n\r\n--r\r\n"
               b"Content-Type: message/delivery-status\r\n\r\nAction: failed\r\n--r--"),
    ("same Message-ID as the bounce", b"From: dup@example.org\r\nMessage-ID: <bounce@example.org>\r\n\r\ndup"),
    ("Message-ID only differs in case", b"From: dupcase@example.org\r\nMessage-ID: <BOUNCE@example.org>\r\n\r\ncase"),
    ("header line of 1 MB", b"From: long@example.org\r\nMessage-ID: <longline@example.org>\r\nX-Long: "
                            + b"z" * 300_000 + b"\r\n\r\nx"),
    ("MIME-Version junk and CTE on multipart", b"From: mv@example.org\r\nMessage-ID: <mv@example.org>\r\n"
                                               b"MIME-Version: 99.99 (junk)\r\nContent-Type: multipart/alternative;"
                                               b" boundary=m\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                                               b"--m\r\nContent-Type: text/plain\r\n\r\n=E2=82=AC\r\n--m--"),
]


def unusable_sender_mails(to: str) -> list[tuple[str, bytes]]:
    """Mails no customer can be made from (no From, no address in it): the runtime quarantines them."""
    body = [("Content-Type", "text/plain")]
    return [
        ("no From header", _mail([("To", to), ("Subject", "no from"), ("Message-ID", "<nofrom@example.org>")], body,
                                 b"x")),
        ("From without an address", _mail([("From", "undisclosed-recipients:;"), ("To", to),
                                           ("Message-ID", "<nofromaddr@example.org>")], body, b"x")),
        # obsolete syntax (RFC 5322 4.5.x: white space before the colon) as the first line: Python's parser takes
        # the whole header section for body, so the From below is never seen
        ("first header with white space before the colon",
         b"X-Tab\t: value\r\n" + _mail([("From", "tab@example.org"), ("To", to),
                                          ("Message-ID", "<tabfirst@example.org>")], body, b"x")),
    ]


# ------------------------------------------------------------------------------------------------- the corpus

@dataclass(frozen=True)
class HostileMail:
    kind: str
    raw: bytes
    notes: dict[str, str] = field(default_factory=dict)


def hostile_mails(to: str, *, seed: int, generated: int = 300, oversized_count: int = 3,
                  unusable_senders: bool = True) -> list[HostileMail]:
    """``generated`` seeded hostile mails (every kind about equally often), ``oversized_count`` mails over
    :data:`OVERSIZE_LIMIT`, the hand-made classics and (optionally) mails with no usable sender, in a seeded
    shuffled order."""
    rnd = random.Random(seed)
    kinds = [f.__name__ for f in [*GENERATED, nested_rfc822]]
    out = [HostileMail(kinds[i % len(kinds)], hostile_mail(rnd, to, kinds[i % len(kinds)]))
           for i in range(generated)]
    out += [HostileMail("oversized", oversized(rnd, to)) for _ in range(oversized_count)]
    out += [HostileMail(f"handmade: {name}", raw) for name, raw in HANDMADE]
    if unusable_senders:
        out += [HostileMail(f"unusable sender: {name}", raw) for name, raw in unusable_sender_mails(to)]
    rnd.shuffle(out)
    return out
