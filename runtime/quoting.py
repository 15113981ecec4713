"""Split an HTML mail body into what the sender wrote (``newContent``) and the quoted mail below it (``replies``).

Pure logic on the standard library's tolerant :class:`html.parser.HTMLParser` (it never raises on bad markup).
Recognised quotes:

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
"""
from __future__ import annotations

import bisect
import html as html_lib
import itertools
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import NamedTuple

__all__ = ["Split", "split_quoted"]

MAX_CHARS = 1_000_000  # bigger bodies are not split (the pure-Python parser takes about 1 s per MB)

_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param",
                   "source", "track", "wbr"})
_BLOCK = frozenset({"address", "article", "aside", "blockquote", "body", "center", "dd", "details", "dialog", "dir",
                    "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4",
                    "h5", "h6", "head", "header", "hr", "html", "li", "main", "nav", "ol", "p", "pre", "section",
                    "summary", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul"})
_HIDDEN = frozenset({"head", "title", "style", "script", "template", "xml"})
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
_INVISIBLE = re.compile(r"[\s\u00a0\u200b\u200c\u200d\u2060\ufeff]+")
_TRAILING_BREAKS = re.compile(r"(?:\s|&nbsp;|&#160;|<br\s*/?>)+$", re.IGNORECASE)
_LEADING_BREAKS = re.compile(r"^(?:\s|&nbsp;|&#160;|<br\s*/?>)+", re.IGNORECASE)


class Split(NamedTuple):
    new_content: str
    replies: str


def split_quoted(body: str | None) -> Split:
    """``(newContent, replies)`` of an HTML body; ``(body, "")`` when there is no trailing quote."""
    body = body or ""
    if not body.strip() or len(body) > MAX_CHARS:
        return Split(body, "")
    doc = _Document(body)
    split_at = doc.split_point()
    if split_at is None or not doc.has_content(0, split_at):
        return Split(body, "")
    return Split(doc.new_content(split_at), doc.replies(split_at))


# ------------------------------------------------------------------------------------------------- tokenizing

class _Tokenizer(HTMLParser):
    """Records every token with its absolute offset: ``(kind, start, end, tag, attrs)``."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self._source = source
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", source)]
        self.tokens: list[tuple[str, int, int, str, dict[str, str]]] = []

    def _pos(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        start = self._pos()
        end = start + len(self.get_starttag_text() or "")
        self.tokens.append(("start", start, end, tag, {k: v or "" for k, v in attrs}))

    handle_startendtag = handle_starttag  # HTML ignores the "/" of <div/>; void elements never close anyway

    def handle_endtag(self, tag: str) -> None:
        start = self._pos()
        end = self._source.find(">", start)
        self.tokens.append(("end", start, len(self._source) if end < 0 else end + 1, tag, {}))

    def handle_data(self, data: str) -> None:
        self.tokens.append(("data", self._pos(), -1, "", {}))

    def _other(self) -> None:
        self.tokens.append(("other", self._pos(), -1, "", {}))

    def handle_comment(self, data: str) -> None:
        self._other()

    def handle_decl(self, decl: str) -> None:
        self._other()

    def handle_pi(self, data: str) -> None:
        self._other()

    def unknown_decl(self, data: str) -> None:
        self._other()


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

    @property
    def text(self) -> str:
        return _INVISIBLE.sub(" ", "".join(self.texts)).strip()


class _Document:
    def __init__(self, source: str) -> None:
        self.source = source
        tokenizer = _Tokenizer(source)
        tokenizer.feed(source)
        tokenizer.close()
        self.elements: list[_Element] = []
        self.lines: list[_Line] = [_Line(0)]
        self.content: list[int] = []          # offsets of visible content (text, images), ascending
        self.markers: list[tuple[int, int]] = []   # (start, end of the quoted region)
        self._walk(tokenizer.tokens)

    # -- one pass over the tokens: elements, lines, visible content ------------------------------------------------
    def _walk(self, tokens: list[tuple[str, int, int, str, dict[str, str]]]) -> None:
        stack: list[_Element] = []
        size = len(self.source)
        plain = not any(kind in ("start", "end") for kind, *_rest in tokens)  # text without any markup
        for index, (kind, start, end, tag, attrs) in enumerate(tokens):
            hidden = any(e.tag in _HIDDEN for e in stack)
            if kind == "data":
                if not hidden:
                    raw_end = tokens[index + 1][1] if index + 1 < len(tokens) else size
                    preformatted = plain or any(e.tag in ("pre", "textarea", "plaintext") for e in stack)
                    self._text(start, self.source[start:raw_end], preformatted)
            elif kind == "start":
                if tag in _BLOCK:
                    self._break(start)
                element = _Element(tag, start, attrs)
                self.elements.append(element)
                if tag == "img" and not hidden:
                    self._mark_content(start)
                if tag in _VOID:
                    if tag in _BLOCK or tag == "br":
                        self._break(end)
                else:
                    stack.append(element)
            elif kind == "end":
                matching = next((i for i in range(len(stack) - 1, -1, -1) if stack[i].tag == tag), None)
                if matching is None:
                    continue  # a stray end tag: browsers ignore it, so do we
                for element in stack[matching + 1:]:
                    element.close, element.end = start, start
                element = stack[matching]
                element.close, element.end, element.end_tag = start, end, (start, end)
                del stack[matching:]
                if tag in _BLOCK:
                    self._break(end)

    def _text(self, start: int, raw: str, preformatted: bool) -> None:
        offset = start
        for number, piece in enumerate(raw.split("\n") if preformatted else [raw]):
            if number:
                self._break(offset)
            text = html_lib.unescape(piece)
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
        size = len(self.source)
        candidates = [(e.start, e.end if e.end >= 0 else size) for e in self.elements if self._is_container_quote(e)]
        candidates += [(e.start, size) for e in self.elements if self._is_header_quote(e)]
        candidates += [(start, size) for start in self._quote_lines()]
        candidates.sort()
        for number, (start, _end) in enumerate(candidates):
            regions = candidates[number:]
            if all(any(s <= pos < e for s, e in regions) for pos in self._content_from(start)):
                return self._with_attribution(self._line_start(start))
        return None

    def _is_container_quote(self, element: _Element) -> bool:
        if element.tag == "blockquote" and element.attrs.get("type", "").lower() == "cite":
            return True
        return element.tag == "div" and not _QUOTE_CLASSES.isdisjoint(element.attrs.get("class", "").split())

    def _is_header_quote(self, element: _Element) -> bool:
        if _OUTLOOK_ID.fullmatch(element.attrs.get("id", "")):
            return True
        style = re.sub(r"\s+", "", element.attrs.get("style", "").lower())
        if element.tag != "div" or "border-top:solid" not in style:
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
        before = [line for line in self.lines if line.content and line.start < split_at]
        for count in (1, 2, 3):
            if len(before) < count:
                break
            lines = before[-count:]
            if _ATTRIBUTION.fullmatch(" ".join(line.text for line in lines)) and \
                    not self.has_content(self._line_end(lines[-1]), split_at):
                return lines[0].start
        return split_at

    # -- helpers ------------------------------------------------------------------------------------------------------
    def _content_from(self, offset: int) -> list[int]:
        return self.content[bisect.bisect_left(self.content, offset):]

    def _next_content(self, offset: int) -> int | None:
        after = self._content_from(offset)
        return after[0] if after else None

    def has_content(self, start: int, end: int) -> bool:
        return bisect.bisect_left(self.content, start) < bisect.bisect_left(self.content, end)

    def _line_at(self, offset: int | None) -> _Line | None:
        if offset is None:
            return None
        starts = [line.start for line in self.lines]
        return self.lines[max(0, bisect.bisect_right(starts, offset) - 1)]

    def _line_end(self, line: _Line) -> int:
        later = [other.start for other in self.lines if other.start > line.start]
        return min(later) if later else len(self.source)

    def _line_start(self, offset: int) -> int:
        """The start of the line holding ``offset`` when nothing visible precedes it on that line."""
        line = self._line_at(offset)
        return line.start if line is not None and not self.has_content(line.start, offset) else offset

    # -- the two halves -----------------------------------------------------------------------------------------------
    def _open_at(self, offset: int) -> list[_Element]:
        size = len(self.source)
        return [e for e in self.elements
                if e.tag not in _VOID and e.start < offset <= (e.close if e.close >= 0 else size)]

    def new_content(self, split_at: int) -> str:
        head = self.source[:split_at]
        tail = head[-2000:]  # bounded: the trailing-match regex backtracks on long whitespace runs
        head = head[:len(head) - len(tail)] + _TRAILING_BREAKS.sub("", tail)
        closing = "".join(f"</{e.tag}>" for e in reversed(self._open_at(split_at)))
        return head + closing

    def replies(self, split_at: int) -> str:
        stray = sorted(e.end_tag for e in self._open_at(split_at) if e.end_tag and e.end_tag[0] >= split_at)
        out, position = [], split_at
        for start, end in stray:
            out.append(self.source[position:start])
            position = end
        out.append(self.source[position:])
        return _LEADING_BREAKS.sub("", "".join(out)).rstrip()
