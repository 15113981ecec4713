"""A linear HTML tokenizer for the quote split (``runtime.mail.quoting``): offsets of tags, text and comments,
nothing else.

The standard library's :class:`html.parser.HTMLParser` is quadratic on unclosed constructs in the Python we run
(``"<a b='" * 20000``, 120 KB, takes 30 s; ``"<!--" * 20000`` 2.7 s) and raises ``AssertionError`` on ``"<!["``
repeated. This scanner follows the HTML5 tokenizer's rule instead: a construct that is not closed before the end of
the input runs to the end (a comment, a quoted attribute value, a tag), so no position is ever scanned twice. Every
pattern is anchored at the current position and uses possessive quantifiers, so a match costs the characters it
consumes. It is used only to decide *where* to cut a body; what the UI renders is decided by ``runtime.mail.sanitize``.
"""
from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterator
from typing import NamedTuple

__all__ = ["Token", "attributes", "tokens"]

_WS = "\t\n\f\r "
_ATTR = rf"""[^{_WS}/>][^{_WS}/>=]*+(?:[{_WS}]*+=[{_WS}]*+(?:"[^"]*+"?|'[^']*+'?|[^{_WS}>]*+))?+"""
_START_TAG = re.compile(rf"<([a-zA-Z][^{_WS}/>\x00]*+)((?:[{_WS}/]++|{_ATTR})*+)(>|\Z)")
_END_TAG = re.compile(rf"</([a-zA-Z][^{_WS}/>\x00]*+)[^>]*+(>|\Z)")
_ATTRIBUTE = re.compile(rf"""([^{_WS}/>][^{_WS}/>=]*+)(?:[{_WS}]*+=[{_WS}]*+("[^"]*+"?|'[^']*+'?|[^{_WS}>]*+))?+""")
_TEXT = re.compile(r"[^<]++")
# Elements whose content is text up to their own end tag (script and style as HTMLParser has them, and HTML5's other
# raw-text and escapable raw-text elements); <plaintext> runs to the end.
_RAW = {tag: re.compile(rf"</{tag}(?=[{_WS}/>])", re.IGNORECASE)
        for tag in ("script", "style", "title", "textarea", "xmp", "iframe", "noembed", "noframes")}


class Token(NamedTuple):
    kind: str   # "start", "end", "data" or "other" (comments, declarations, a tag cut off by the end of input)
    start: int
    end: int
    tag: str    # lower-cased, for "start" and "end"
    attrs: str  # the raw attribute text of a start tag (read with :func:`attributes`)


def tokens(source: str) -> Iterator[Token]:
    """The tokens of ``source`` in order; every character belongs to exactly one token."""
    pos, size = 0, len(source)
    while pos < size:
        if source[pos] != "<":
            end = _TEXT.match(source, pos).end()  # type: ignore[union-attr]
            yield Token("data", pos, end, "", "")
            pos = end
            continue
        following = source[pos + 1:pos + 2]
        if following.isascii() and following.isalpha():
            match = _START_TAG.match(source, pos)
            assert match is not None  # the pattern consumes anything up to ">" or the end
            end = match.end()
            if not match.group(3):  # the input ended inside the tag: HTML drops it
                yield Token("other", pos, end, "", "")
                return
            tag = match.group(1).lower()
            yield Token("start", pos, end, tag, match.group(2))
            pos = end
            if tag == "plaintext":
                if pos < size:
                    yield Token("data", pos, size, "", "")
                return
            if tag in _RAW:
                closing = _RAW[tag].search(source, pos)
                text_end = closing.start() if closing else size
                if text_end > pos:
                    yield Token("data", pos, text_end, "", "")
                pos = text_end
            continue
        if following == "/":
            match = _END_TAG.match(source, pos)
            if match is not None:
                yield Token("end", pos, match.end(), match.group(1).lower(), "")
                pos = match.end()
                continue
            end = _bogus_end(source, pos)
        elif source.startswith("<!--", pos):
            if source.startswith(">", pos + 4) or source.startswith("->", pos + 4):  # <!--> and <!--->
                end = source.index(">", pos + 4) + 1
            else:
                found = source.find("-->", pos + 4)
                end = size if found < 0 else found + 3
        elif following in ("!", "?"):
            end = _bogus_end(source, pos)
        else:  # a "<" that starts nothing is text
            yield Token("data", pos, pos + 1, "", "")
            pos += 1
            continue
        yield Token("other", pos, end, "", "")
        pos = end


def _bogus_end(source: str, pos: int) -> int:
    found = source.find(">", pos)
    return len(source) if found < 0 else found + 1


def attributes(raw: str) -> dict[str, str]:
    """The attributes of a start tag's raw attribute text, names lower-cased, values unescaped; the first wins."""
    found: dict[str, str] = {}
    if not raw:
        return found
    for match in _ATTRIBUTE.finditer(raw):
        name, value = match.group(1).lower(), match.group(2) or ""
        if value[:1] in ("'", '"'):
            value = value[1:-1] if len(value) > 1 and value[-1] == value[0] else value[1:]
        found.setdefault(name, html_lib.unescape(value) if "&" in value else value)
    return found
