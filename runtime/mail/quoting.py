"""Split an HTML mail body into what the sender wrote (``newContent``) and the quoted mail below it (``replies``).

Pure logic, linear in the body: one pass of :mod:`runtime.mail.htmlscan` (an HTML5-style tokenizer that never scans a
position twice) builds the elements, lines and visible content; the trailing quote is then found with one sweep
over the candidates (a heap of the regions open at each piece of content), never by comparing every candidate
with every piece of content. Work per mail is bounded: a body over ``MAX_CHARS`` characters or ``MAX_TOKENS``
tokens is not split (``newContent`` is the whole body). Recognised quotes:

- Gmail: ``<div class="gmail_quote">`` (the "On ... wrote:" line is inside it); Yahoo ``yahoo_quoted`` and
  Proton ``protonmail_quote`` likewise;
- Outlook: ``#appendonsend`` / ``#divRplyFwdMsg`` (Outlook on the web; ``x_``-prefixed when quoted again), the
  desktop header box (a ``border-top:solid`` div whose text starts with ``From:``), a line
  ``-----Original Message-----``, or a line of underscores followed by ``From:``; everything after it is quoted;
- Apple Mail and Thunderbird: ``<blockquote type="cite">``;
- plain text (also as our ``<div>..<br>..</div>`` rendering of it): the trailing run of ``>``-quoted lines.

The split is made only when the quote is *trailing*: nothing the sender wrote comes after it (an inline answer
between quotes keeps the whole body as ``newContent``). An "On <date>, <someone> wrote:" line right before the
quote goes with the replies. When the sender wrote nothing outside the quote (a bare forward), nothing is hidden:
``newContent`` is the whole body and ``replies`` is empty. ``newContent`` gets closing tags for the elements left
open at the split and ``replies`` loses the end tags of elements that began before it.

:func:`split_record` gives the split as a small record of offsets (``SPLIT_VERSION``, the body's length, where
``newContent`` ends, its closing tags, where ``replies`` starts and the end tags it skips), to be kept with the
message so that a mail is split once; :func:`from_record` rebuilds the two halves from it with plain string work.
"""
from __future__ import annotations

import bisect
import heapq
import html as html_lib
import itertools
import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from runtime.mail.htmlscan import attributes, tokens

__all__ = ["MAX_CHARS", "MAX_TOKENS", "SPLIT_VERSION", "Split", "from_record", "split_quoted", "split_record"]

MAX_CHARS = 1_000_000  # bigger bodies are not split
MAX_TOKENS = 100_000   # nor bodies of more tokens (tags, texts, comments): at most about 0.4 s of CPU a mail
SPLIT_VERSION = 2      # of split_record's record and of the rules that make it: a record of another version is redone

_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param",
                   "source", "track", "wbr"})
_BLOCK = frozenset({"address", "article", "aside", "blockquote", "body", "center", "dd", "details", "dialog", "dir",
                    "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4",
                    "h5", "h6", "head", "header", "hr", "html", "li", "main", "nav", "ol", "p", "pre", "section",
                    "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul"})
_HIDDEN = frozenset({"head", "title", "style", "script", "template", "xml"})
_PREFORMATTED = frozenset({"pre", "textarea", "plaintext"})
_QUOTE_CLASSES = frozenset({"gmail_quote", "gmail_quote_container", "yahoo_quoted", "protonmail_quote"})
_OUTLOOK_ID = re.compile(r"(?:x_)*(?:divRplyFwdMsg|appendonsend)", re.IGNORECASE)
_FROM_LINE = re.compile(r"\s*(?:From|Von|De|Da|Van|Från|Fra|Od|От)\s*:", re.IGNORECASE)
_ORIGINAL = re.compile(r"-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Message d'origine|Mensaje original|"
                       r"Messaggio originale|Oorspronkelijk bericht|Mensagem original)\s*-{2,}", re.IGNORECASE)
_UNDERSCORES = re.compile(r"_{10,}")
_ATTRIBUTION = re.compile(
    r"(?:On|Le|Am|El|Il|Em|Op|Den|W dniu|В)\b.{0,400}?"
    r"(?:wrote|schrieb|a\s+écrit|escribió|ha\s+scritto|escreveu|schreef|skrev|napisał|написал(?:\(а\)|а)?)\s*:",
    re.IGNORECASE | re.DOTALL)
_MAX_ATTRIBUTION = 1_500  # characters: a longer run of lines is not an "On ..., X wrote:" line
_INVISIBLE = re.compile(r"[\s\u00a0\u200b\u200c\u200d\u2060\ufeff]+")
_BR = re.compile(r"<br\s*/?>", re.IGNORECASE)
_ENTITY_BREAKS = ("&nbsp;", "&#160;")


class Split(NamedTuple):
    new_content: str
    replies: str


def split_quoted(body: str | None) -> Split:
    """``(newContent, replies)`` of an HTML body; ``(body, "")`` when there is no trailing quote."""
    body = body or ""
    return from_record(body, split_record(body)) or Split(body, "")


def split_record(body: str | None) -> dict[str, Any]:
    """Where ``body`` splits, as a small JSON-ready record (offsets and tags) for :func:`from_record`."""
    body = body or ""
    record: dict[str, Any] = {"v": SPLIT_VERSION, "size": len(body), "at": None}
    if not body.strip() or len(body) > MAX_CHARS:
        return record
    doc = _Document(body)
    if doc.truncated:
        return record
    split_at = doc.split_point()
    if split_at is None or not doc.has_content(0, split_at):
        return record
    open_elements = doc.open_at(split_at)
    record.update(at=split_at, newEnd=_strip_trailing_breaks(body, split_at),
                  closing="".join(f"</{e.tag}>" for e in reversed(open_elements)),
                  skip=sorted([*e.end_tag] for e in open_elements if e.end_tag and e.end_tag[0] >= split_at))
    return record


def from_record(body: str | None, record: Any) -> Split | None:
    """The halves of ``body`` from its :func:`split_record`; None when the record is not for this body or version."""
    body = body or ""
    if not isinstance(record, dict) or record.get("v") != SPLIT_VERSION or record.get("size") != len(body):
        return None
    split_at = record.get("at")
    if split_at is None:
        return Split(body, "")
    parts, position = [], split_at
    for start, end in record.get("skip") or []:
        parts.append(body[position:start])
        position = end
    parts.append(body[position:])
    replies = "".join(parts)
    return Split(body[:record["newEnd"]] + record["closing"], replies[_leading_breaks(replies):].rstrip())


def _strip_trailing_breaks(source: str, end: int) -> int:
    """``end`` moved back over whitespace, ``&nbsp;`` and ``<br>`` (each character looked at once)."""
    while end > 0:
        last = source[end - 1]
        if last.isspace():
            end -= 1
        elif last == ";" and source[max(0, end - 6):end].lower() in _ENTITY_BREAKS:
            end -= 6
        elif last == ">":
            opening = source.rfind("<", 0, end)
            if opening < 0 or not _BR.fullmatch(source, opening, end):
                break
            end = opening
        else:
            break
    return end


def _leading_breaks(text: str) -> int:
    position, size = 0, len(text)
    while position < size:
        if text[position].isspace():
            position += 1
        elif text[position] == "&" and text[position:position + 6].lower() in _ENTITY_BREAKS:
            position += 6
        elif (found := _BR.match(text, position)) is not None:
            position = found.end()
        else:
            break
    return position


# ------------------------------------------------------------------------------------------------------- model

@dataclass
class _Element:
    tag: str
    start: int
    attrs: dict[str, str]
    close: int = -1       # offset of its end tag (or of the end tag that closed it implicitly); -1: never closed
    end: int = -1         # offset just after its own end tag, or where it was closed implicitly
    end_tag: tuple[int, int] | None = None


@dataclass
class _Line:
    start: int
    texts: list[str] = field(default_factory=list)
    content: bool = False
    _text: str | None = None

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = _INVISIBLE.sub(" ", "".join(self.texts)).strip()
        return self._text


class _Document:
    def __init__(self, source: str) -> None:
        self.source = source
        self.elements: list[_Element] = []
        self.lines: list[_Line] = [_Line(0)]
        self.content: list[int] = []          # offsets of visible content (text, images), ascending
        found = list(itertools.islice(tokens(source), MAX_TOKENS + 1))
        self.truncated = len(found) > MAX_TOKENS
        if not self.truncated:
            self._walk(found)
        self._starts = [line.start for line in self.lines]

    # -- one pass over the tokens: elements, lines, visible content ------------------------------------------------
    def _walk(self, found: list[Any]) -> None:
        stack: list[_Element] = []
        open_tags: dict[str, int] = {}  # how many elements of each tag are on the stack: a stray end tag costs O(1)
        hidden = preformatted = 0       # how many hidden / preformatted elements are open
        plain = not any(token.kind in ("start", "end") for token in found)  # text without any markup
        for kind, start, end, tag, raw_attrs in found:
            if kind == "data":
                if not hidden:
                    self._text(start, self.source[start:end], plain or preformatted > 0)
            elif kind == "start":
                if tag in _BLOCK:
                    self._break(start)
                element = _Element(tag, start, attributes(raw_attrs))
                self.elements.append(element)
                if tag == "img" and not hidden:
                    self._mark_content(start)
                if tag in _VOID:
                    if tag in _BLOCK or tag == "br":
                        self._break(end)
                else:
                    stack.append(element)
                    open_tags[tag] = open_tags.get(tag, 0) + 1
                    hidden += tag in _HIDDEN
                    preformatted += tag in _PREFORMATTED
            elif kind == "end":
                if not open_tags.get(tag):
                    continue  # a stray end tag: browsers ignore it, so do we
                while True:  # each element leaves the stack once: linear over the whole walk
                    element = stack.pop()
                    open_tags[element.tag] -= 1
                    hidden -= element.tag in _HIDDEN
                    preformatted -= element.tag in _PREFORMATTED
                    if element.tag == tag:
                        element.close, element.end, element.end_tag = start, end, (start, end)
                        break
                    element.close, element.end = start, start
                if tag in _BLOCK:
                    self._break(end)

    def _text(self, start: int, raw: str, preformatted: bool) -> None:
        offset = start
        for number, piece in enumerate(raw.split("\n") if preformatted else [raw]):
            if number:
                self._break(offset)
            text = html_lib.unescape(piece) if "&" in piece else piece
            self.lines[-1].texts.append(text)
            if _INVISIBLE.sub("", text):
                self._mark_content(offset)
            offset += len(piece) + 1

    def _mark_content(self, offset: int) -> None:
        self.content.append(offset)
        self.lines[-1].content = True

    def _break(self, offset: int) -> None:
        """A new line begins at ``offset``; blank lines collapse into the next one (their start is kept)."""
        if self.lines[-1].content:
            self.lines.append(_Line(offset))
        else:
            self.lines[-1].texts.clear()

    # -- where the quote starts ---------------------------------------------------------------------------------------
    def split_point(self) -> int | None:
        """The earliest candidate whose region, with the regions of the candidates after it, covers all the content
        from its start on. One sweep: for each piece of content, the highest-ranked candidate region covering it
        (a heap of the regions begun so far, the ended ones dropped as the sweep passes them); a candidate wins when
        every piece of content from its start is covered by a candidate ranked at or after it."""
        size = len(self.source)
        candidates = [(e.start, e.end if e.end >= 0 else size) for e in self.elements if self._is_container_quote(e)]
        candidates += [(e.start, size) for e in self.elements if self._is_header_quote(e)]
        candidates += [(start, size) for start in self._quote_lines()]
        if not candidates:
            return None
        candidates.sort()
        covering: list[int] = []  # per piece of content: the highest candidate rank covering it, -1 for none
        heap: list[tuple[int, int]] = []  # (-rank, end) of the regions begun
        following = 0
        for position in self.content:
            while following < len(candidates) and candidates[following][0] <= position:
                heapq.heappush(heap, (-following, candidates[following][1]))
                following += 1
            while heap and heap[0][1] <= position:
                heapq.heappop(heap)
            covering.append(-heap[0][0] if heap else -1)
        lowest = [0] * (len(covering) + 1)  # lowest[k]: the minimum of covering[k:]
        lowest[-1] = len(candidates)
        for k in range(len(covering) - 1, -1, -1):
            lowest[k] = min(covering[k], lowest[k + 1])
        for rank, (start, _end) in enumerate(candidates):
            if lowest[bisect.bisect_left(self.content, start)] >= rank:
                return self._with_attribution(self._line_start(start))
        return None

    def _is_container_quote(self, element: _Element) -> bool:
        if element.tag == "blockquote" and element.attrs.get("type", "").lower() == "cite":
            return True
        return element.tag == "div" and not _QUOTE_CLASSES.isdisjoint(element.attrs.get("class", "").split())

    def _is_header_quote(self, element: _Element) -> bool:
        if _OUTLOOK_ID.fullmatch(element.attrs.get("id", "")):
            return True
        if element.tag != "div" or "border-top" not in element.attrs.get("style", "").lower():
            return False
        if "border-top:solid" not in re.sub(r"\s+", "", element.attrs["style"].lower()):
            return False
        line = self._line_at(self._next_content(element.start))
        return line is not None and bool(_FROM_LINE.match(line.text))

    def _quote_lines(self) -> list[int]:
        """Starts of lines that begin a quoted tail: "Original Message", underscores + From:, or trailing ">"."""
        lines = [line for line in self.lines if line.content]
        found = [line.start for line in lines if _ORIGINAL.fullmatch(line.text)]
        found += [line.start for line, after in itertools.pairwise(lines)
                  if _UNDERSCORES.fullmatch(line.text) and _FROM_LINE.match(after.text)]
        tail = len(lines)
        while tail > 0 and lines[tail - 1].text.startswith(">"):
            tail -= 1
        if tail < len(lines):
            found.append(lines[tail].start)
        return found

    def _with_attribution(self, split_at: int) -> int:
        """Move the split before an "On ..., X wrote:" line (wrapped over up to three lines) just above it."""
        before = [n for n in range(bisect.bisect_left(self._starts, split_at)) if self.lines[n].content][-3:]
        for count in (1, 2, 3):
            if len(before) < count:
                break
            numbers = before[-count:]
            text = " ".join(self.lines[n].text for n in numbers)
            if len(text) <= _MAX_ATTRIBUTION and _ATTRIBUTION.fullmatch(text) and \
                    not self.has_content(self._line_end(numbers[-1]), split_at):
                return self.lines[numbers[0]].start
        return split_at

    # -- helpers ------------------------------------------------------------------------------------------------------
    def _next_content(self, offset: int) -> int | None:
        index = bisect.bisect_left(self.content, offset)
        return self.content[index] if index < len(self.content) else None

    def has_content(self, start: int, end: int) -> bool:
        return bisect.bisect_left(self.content, start) < bisect.bisect_left(self.content, end)

    def _line_at(self, offset: int | None) -> _Line | None:
        if offset is None:
            return None
        return self.lines[max(0, bisect.bisect_right(self._starts, offset) - 1)]

    def _line_end(self, number: int) -> int:
        later = bisect.bisect_right(self._starts, self._starts[number])
        return self._starts[later] if later < len(self._starts) else len(self.source)

    def _line_start(self, offset: int) -> int:
        """The start of the line holding ``offset`` when nothing visible precedes it on that line."""
        line = self._line_at(offset)
        return line.start if line is not None and not self.has_content(line.start, offset) else offset

    def open_at(self, offset: int) -> list[_Element]:
        size = len(self.source)
        return [e for e in self.elements
                if e.tag not in _VOID and e.start < offset <= (e.close if e.close >= 0 else size)]
