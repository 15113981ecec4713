"""A realistic, deterministic mail mix for the benchmarks (same seed, same bytes).

About 4 KiB a mail on average: many senders, about 30% replies that thread onto an earlier mail by In-Reply-To and
References (with quoted text), about half multipart/alternative with an HTML part, about 10% with a small
attachment (PDF/PNG/CSV), Received headers and the usual header noise of real mail. Pure: no I/O.

    .venv/bin/python -m bench.corpus 1000     # prints size statistics
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import random
import sys
from dataclasses import dataclass
from email.utils import format_datetime

__all__ = ["BenchMail", "realistic_mix"]

FIRST = ["Ada", "Bob", "Chen", "Dana", "Eve", "Farid", "Gita", "Hugo", "Ines", "Jon", "Kemal", "Lena", "Mia",
         "Nils", "Olu", "Pia", "Quinn", "Rosa", "Sven", "Tara", "Uma", "Vik", "Wen", "Xena", "Yuki", "Zoe"]
LAST = ["Meier", "Smith", "Okafor", "Nguyen", "Rossi", "Dubois", "Kowalski", "Tanaka", "Silva", "Novak"]
TOPICS = ["Order", "Invoice", "Delivery", "Refund", "Password reset", "Question about pricing", "Broken item",
          "Subscription", "Meeting", "Complaint", "Größenfrage", "Réclamation", "Заказ", "注文について"]
WORDS = ["the", "order", "arrived", "yesterday", "but", "one", "item", "was", "missing", "from", "the", "box", "and", "the", "invoice", "shows", "a", "different", "amount", "than", "the", "confirmation", "we", "received", "please", "check", "the", "delivery", "address", "and", "let", "me", "know", "when", "the", "replacement", "can", "be", "shipped", "we", "have", "been", "customers", "for", "years", "and", "would", "like", "to", "keep", "it", "that", "way", "thanks", "again", "for", "the", "quick", "answer", "last", "time", "could", "you", "also", "send", "the", "tracking", "number", "and", "a", "copy", "of", "the", "terms", "größe", "lieferung", "rechnung", "réponse", "commande", "заказ", "доставка"]
MAILERS = ["Microsoft Outlook 16.0", "Apple Mail (2.3731)", "Mozilla Thunderbird 115.5", "Gmail", "K-9 Mail"]


@dataclass(frozen=True)
class BenchMail:
    raw: bytes
    message_id: str
    sender: str
    thread: int  # index of the mail that started the thread


def _paragraphs(rnd: random.Random, size: int) -> list[str]:
    out, total = [], 0
    while total < size:
        words = [rnd.choice(WORDS) for _ in range(rnd.randint(20, 60))]
        text = " ".join(words).capitalize() + "."
        out.append(text)
        total += len(text) + 2
    return out


def _wrap(text: str, width: int = 76) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return "\r\n".join(lines)


def _qp_safe(text: str) -> bytes:
    """UTF-8 body as 8bit (Dovecot and our parser take it; real mail mostly uses QP/base64, the parser handles
    those too)."""
    return text.encode("utf-8")


def realistic_mix(n: int, to: str, *, seed: int = 1, senders: int = 200, reply_ratio: float = 0.3,
                  html_ratio: float = 0.5, attachment_ratio: float = 0.1, tag: str = "mix") -> list[BenchMail]:
    rnd = random.Random(seed)
    people = [(f"{rnd.choice(FIRST)} {rnd.choice(LAST)}", f"customer{i:03d}@example{i % 7}.com")
              for i in range(senders)]
    start = dt.datetime(2024, 3, 1, 8, 0, tzinfo=dt.UTC)
    out: list[BenchMail] = []
    chains: list[list[str]] = []
    subjects: list[str] = []
    bodies: list[str] = []
    for i in range(n):
        message_id = f"<{tag}-{seed}-{i}@example.com>"
        date = start + dt.timedelta(seconds=37 * i)
        if out and rnd.random() < reply_ratio:
            parent = rnd.randrange(max(0, i - 300), i)
            thread = out[parent].thread
            name, address = next(p for p in people if p[1] == out[thread].sender) if rnd.random() < 0.8 \
                else rnd.choice(people)
            subject = "Re: " + subjects[thread]
            refs = chains[parent] + [out[parent].message_id]
            quoted = "\r\n".join("> " + line for line in _wrap(bodies[parent][:600]).split("\r\n"))
            paras = _paragraphs(rnd, rnd.randint(450, 1500))
            text = "\r\n\r\n".join(_wrap(p) for p in paras) + f"\r\n\r\nOn {format_datetime(date)} wrote:\r\n" + quoted
        else:
            thread = i
            name, address = people[i % senders] if i < senders else rnd.choice(people)
            subject = f"{rnd.choice(TOPICS)} #{10000 + i}"
            refs = []
            paras = _paragraphs(rnd, rnd.randint(800, 2400))
            text = "\r\n\r\n".join(_wrap(p) for p in paras)
        text += f"\r\n\r\n--\r\n{name}\r\n{address}\r\n"
        headers = [
            f"Return-Path: <{address}>",
            f"Received: from mail{rnd.randint(1, 40)}.example.net (mail.example.net [203.0.113.{rnd.randint(1, 254)}])"  # noqa: ISC004
            f"\r\n\tby mx.localhost (Postfix) with ESMTPS id {rnd.getrandbits(40):010X}\r\n\tfor <{to}>; "
            f"{format_datetime(date)}",
            f"Received: from [10.0.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}] (unknown [198.51.100.7])\r\n\t"  # noqa: ISC004
            f"by mail.example.net (Postfix) with ESMTPSA id {rnd.getrandbits(32):08X};\r\n\t{format_datetime(date)}",
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.net; s=mail;\r\n\tt=1709280000; "
            "bh=" + base64.b64encode(rnd.randbytes(32)).decode() + ";\r\n\th=From:To:Subject:Date:Message-ID;\r\n\t"
            "b=" + base64.b64encode(rnd.randbytes(96)).decode(),
            f"From: {name} <{address}>",
            f"To: {to}",
            f"Subject: {subject}" if subject.isascii() else
            f"Subject: =?UTF-8?B?{base64.b64encode(subject.encode()).decode()}?=",
            f"Date: {format_datetime(date)}",
            f"Message-ID: {message_id}",
            "MIME-Version: 1.0",
            f"X-Mailer: {rnd.choice(MAILERS)}",
        ]
        if refs:
            headers.append(f"In-Reply-To: {refs[-1]}")
            headers.append("References: " + "\r\n ".join(refs[-8:]))
        want_html = rnd.random() < html_ratio
        attachment = rnd.random() < attachment_ratio
        body_text = _qp_safe(text)
        if want_html:
            html_body = ("<html><head><meta charset=\"utf-8\"></head><body><div style=\"font-family:Arial\">"
                         + "".join(f"<p>{html.escape(p)}</p>" for p in paras)
                         + f"</div><div class=\"signature\">{html.escape(name)}</div></body></html>")
            alternative = b"\r\n".join([
                b"--alt-" + str(i).encode(),
                b"Content-Type: text/plain; charset=utf-8", b"Content-Transfer-Encoding: 8bit", b"", body_text,
                b"--alt-" + str(i).encode(),
                b"Content-Type: text/html; charset=utf-8", b"Content-Transfer-Encoding: 8bit", b"",
                html_body.encode("utf-8"),
                b"--alt-" + str(i).encode() + b"--", b""])
            body_part = (b"Content-Type: multipart/alternative; boundary=\"alt-" + str(i).encode() + b"\"\r\n\r\n"
                         + alternative)
        else:
            body_part = b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body_text
        if attachment:
            kind = rnd.choice([("application/pdf", "invoice.pdf"), ("image/png", "photo.png"),
                               ("text/csv", "items.csv")])
            data = base64.encodebytes(rnd.randbytes(rnd.randint(600, 2400))).replace(b"\n", b"\r\n")
            body = b"\r\n".join([
                b"Content-Type: multipart/mixed; boundary=\"mix-" + str(i).encode() + b"\"", b"",
                b"--mix-" + str(i).encode(), body_part,
                b"--mix-" + str(i).encode(),
                f"Content-Type: {kind[0]}; name=\"{kind[1]}\"".encode(),
                f"Content-Disposition: attachment; filename=\"{kind[1]}\"".encode(),
                b"Content-Transfer-Encoding: base64", b"", data,
                b"--mix-" + str(i).encode() + b"--", b""])
        else:
            body = body_part
        raw = ("\r\n".join(headers) + "\r\n").encode("utf-8") + body
        out.append(BenchMail(raw, message_id, address.lower(), thread))
        chains.append(refs)
        subjects.append(subject if thread == i else subjects[thread])
        bodies.append(text)
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    mails = realistic_mix(n, "someone@localhost")
    sizes = sorted(len(m.raw) for m in mails)
    threads = len({m.thread for m in mails})
    print(f"{n} mails: mean {sum(sizes) / n:.0f} B, median {sizes[n // 2]} B, max {sizes[-1]} B, "
          f"{threads} threads, {len({m.sender for m in mails})} senders")


if __name__ == "__main__":
    main()
