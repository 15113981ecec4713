"""Sanitise mail HTML before the erxes UI renders it: pure logic on ``nh3`` (the Python binding of the Rust
``ammonia`` sanitiser, an allow-list HTML5 parser-based cleaner).

Applied to every piece of mail HTML that leaves the runtime, never to what is stored (the raw body stays in
``imap_messages``). :func:`outward_html` is the one function that decides: ``imapConversationDetail``'s ``body``,
``newContent`` and ``replies``, ``logs.collectItems``' ``contentTypeDetail.body`` (erxes's ``ActivityLog.tsx``
renders it with ``dangerouslySetInnerHTML``) and the ``content`` of ``inbox:conversationClientMessageInserted``
(inbox passes it to the UI's subscription and to mobile notifications) all go through it.

- Only an allow-list of formatting tags and attributes survives; ``script``/``style``/``iframe``/``object``/
  ``embed``/``form``/``svg``/``math`` and every ``on*`` handler go (script and style with their content).
- Links keep ``http``, ``https``, ``mailto`` and ``tel`` targets only (no ``javascript:``, ``data:``, nor a path
  relative to the UI), and get ``rel="noopener noreferrer"`` and ``target="_blank"``.
- ``class`` keeps only mail clients' own names (``gmail_quote``, ``MsoNormal``, ...), never the UI's.
- ``style`` attributes keep only an allow-list of formatting properties (colours, fonts, text, box sizes, margins,
  paddings, borders, tables, lists, ``display``/``float``): nothing that takes an element out of the flow or moves
  it over its neighbours (``position``, ``top``/``left``/``inset``, ``transform``/``translate``, ``z-index``,
  ``offset-*``, ``zoom``, animations, outlines and shadows painted outside the box). A declaration goes when its
  value holds a negative number (negative margins pull content over the UI) or a computed value (``calc()``,
  ``var()``, ``min()``...), ``url(``, ``expression(``, ``javascript:``, ``@import``, CSS escapes or comments.
- No ``id`` and no ``name`` attribute survives on any element (DOM clobbering: ``<a name=x>``, ``<img name=x>``
  or ``<form name=x>`` would shadow ``document.x`` or ``window.x`` in the UI's own scripts).
- Images never load remote content (tracking pixels): an ``<img>`` keeps its ``src`` only when it is a ``cid:``
  reference to one of the message's own attachments, rewritten to the attachment route
  ``<prefix>/read-mail-attachment?messageId=<doc _id>&integrationId=<inbox id>&filename=<filename>``. A remote
  (or ``data:``, or unknown ``cid:``) image loses its ``src`` and shows its ``alt`` text.
"""
from __future__ import annotations

import html as html_lib
import logging
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

import nh3

__all__ = ["attachment_url", "clean_style", "costly_markup", "outward_html", "outward_message_html", "sanitize_html",
           "text_only"]

logger = logging.getLogger(__name__)

_TAGS = frozenset({
    "a", "abbr", "acronym", "address", "b", "bdi", "bdo", "big", "blockquote", "br", "caption", "center", "cite",
    "code", "col", "colgroup", "dd", "del", "details", "dfn", "div", "dl", "dt", "em", "figcaption", "figure",
    "font", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "kbd", "li", "mark", "ol", "p", "pre",
    "q", "s", "samp", "small", "span", "strike", "strong", "sub", "summary", "sup", "table", "tbody", "td",
    "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var", "wbr",
})
# Removed together with their content (the rest of a disallowed tag is unwrapped, keeping its text).
_DROP_WITH_CONTENT = frozenset({"script", "style", "title", "head", "template", "iframe", "object", "embed",
                                "applet", "noscript", "svg", "math", "select", "textarea", "button", "frameset",
                                "noembed", "xml"})
_COMMON = {"style", "class", "title", "dir", "lang", "align", "valign", "width", "height", "bgcolor"}
_ATTRIBUTES: dict[str, set[str]] = {
    "*": _COMMON,
    "a": {"href"},  # never "name" (nor "id" anywhere): DOM clobbering
    "img": {"src", "alt", "border", "hspace", "vspace"},
    "font": {"color", "face", "size"},
    "table": {"border", "cellpadding", "cellspacing", "summary", "frame", "rules"},
    "td": {"colspan", "rowspan", "nowrap", "headers", "abbr", "scope"},
    "th": {"colspan", "rowspan", "nowrap", "headers", "abbr", "scope"},
    "col": {"span"}, "colgroup": {"span"},
    "ol": {"start", "type", "reversed"}, "ul": {"type"}, "li": {"value", "type"},
    "hr": {"size", "noshade", "color"},
    "blockquote": {"type"},
    "del": {"datetime"}, "ins": {"datetime"},
}
_LINK = re.compile(r"^\s*(https?:|mailto:|tel:)", re.IGNORECASE)
_UNSAFE_CSS = re.compile(r"url\s*\(|expression|javascript:|vbscript:|behavior|-moz-binding|@import|image-set|"
                         r"\\|/\*|<|>", re.IGNORECASE)
# Class names mail clients put on quotes and layout; any other (the UI's own, e.g. styled-components') is dropped.
_MAIL_CLASS = re.compile(r"^(gmail|yahoo|protonmail|moz-|x_|mso|apple-|outlook|wordsection|elementtoproof)",
                         re.IGNORECASE)
# The CSS properties a mail may set: formatting inside its own box. Anything that positions, transforms, stacks
# or paints outside the box (position, top/left/inset, transform, translate, z-index, offset-*, zoom, animation,
# outline, box-shadow, ...) is left out, so content cannot overlay erxes's own UI.
_CSS_PROPERTIES = frozenset({
    "color", "background", "background-color",
    "font", "font-family", "font-size", "font-style", "font-variant", "font-weight", "font-stretch",
    "text-align", "text-decoration", "text-decoration-line", "text-decoration-color", "text-decoration-style",
    "text-transform", "text-indent", "text-overflow", "text-size-adjust", "-webkit-text-size-adjust",
    "-ms-text-size-adjust", "line-height", "letter-spacing", "word-spacing", "white-space", "word-break",
    "word-wrap", "overflow-wrap", "hyphens", "vertical-align", "direction",
    "margin", "margin-top", "margin-right", "margin-bottom", "margin-left",
    "padding", "padding-top", "padding-right", "padding-bottom", "padding-left",
    "border", "border-top", "border-right", "border-bottom", "border-left", "border-width", "border-style",
    "border-color", "border-top-width", "border-right-width", "border-bottom-width", "border-left-width",
    "border-top-style", "border-right-style", "border-bottom-style", "border-left-style", "border-top-color",
    "border-right-color", "border-bottom-color", "border-left-color", "border-radius", "border-top-left-radius",
    "border-top-right-radius", "border-bottom-left-radius", "border-bottom-right-radius", "border-collapse",
    "border-spacing", "width", "height", "min-width", "max-width", "min-height", "max-height", "box-sizing",
    "display", "float", "clear", "overflow", "overflow-x", "overflow-y", "visibility",
    "list-style", "list-style-type", "list-style-position", "table-layout", "caption-side", "empty-cells",
})
_MSO_PROPERTY = re.compile(r"mso-[a-z0-9-]+")  # Outlook's own (mso-line-height-rule, ...): layout hints only
# A negative number (margin:-500px pulls content over its neighbours) or a computed value that may be one.
_UNSAFE_VALUE = re.compile(r"(?<![\w])-\.?\d|\b(?:calc|min|max|clamp|var|env|attr)\s*\(", re.IGNORECASE)


def attachment_url(prefix: str, message_id: str, integration_id: str, filename: str) -> str:
    query = urllib.parse.urlencode({"messageId": message_id, "integrationId": integration_id,
                                    "filename": filename})
    return f"{prefix.rstrip('/')}/read-mail-attachment?{query}"


def clean_style(value: str) -> str | None:
    """The declarations of a ``style`` attribute that cannot run code or fetch anything; None when none is left."""
    kept = []
    for declaration in value.split(";"):
        name, sep, val = declaration.partition(":")
        name = name.strip().lower()
        if not sep or not (name in _CSS_PROPERTIES or _MSO_PROPERTY.fullmatch(name)):
            continue
        if _UNSAFE_CSS.search(val) or _UNSAFE_VALUE.search(val):
            continue
        kept.append(f"{name}:{val.strip()}")
    return "; ".join(kept) or None


def outward_html(html: str | None, *, attachments: Iterable[dict[str, Any]] = (), message_id: str = "",
                 integration_id: str = "", url_prefix: str = "") -> str:
    """The one decision for mail HTML leaving the runtime (GraphQL, RPC replies, events): :func:`sanitize_html`."""
    return sanitize_html(html or "", attachments=attachments, message_id=message_id, integration_id=integration_id,
                         url_prefix=url_prefix)


def outward_message_html(doc: dict[str, Any], html: str | None = None, url_prefix: str = "") -> str:
    """:func:`outward_html` of a stored message's ``body`` (or of ``html``, a part of it), ``cid:`` images pointing
    at that message's attachments."""
    return outward_html(doc.get("body") if html is None else html, attachments=doc.get("attachments") or [],
                        message_id=str(doc.get("_id", "")), integration_id=str(doc.get("inboxIntegrationId") or ""),
                        url_prefix=url_prefix)


def sanitize_html(html: str, *, attachments: Iterable[dict[str, Any]] = (), message_id: str = "",
                  integration_id: str = "", url_prefix: str = "") -> str:
    """``html`` safe to render in the UI; ``cid:`` images point at the message's own attachments."""
    if not html:
        return html or ""
    too_costly = costly_markup(html)
    if too_costly:
        logger.info("A mail body (%d characters) is served as text: %s", len(html), too_costly)
        return text_only(html)
    by_cid: dict[str, str] = {}
    for att in attachments:
        if isinstance(att, dict) and att.get("contentId") and att.get("filename"):
            by_cid.setdefault(str(att["contentId"]).strip("<> ").lower(), str(att["filename"]))

    def attribute(element: str, name: str, value: str) -> str | None:
        if name == "style":
            return clean_style(value)
        if name == "class":
            return " ".join(c for c in value.split() if _MAIL_CLASS.match(c)) or None
        if element == "a" and name == "href":
            return value if _LINK.match(value) else None
        if element == "img" and name == "src":
            if value.strip().lower().startswith("cid:"):
                cid = urllib.parse.unquote(value.strip()[4:]).strip("<> ").lower()
                filename = by_cid.get(cid)
                if filename and message_id and integration_id:
                    return attachment_url(url_prefix, message_id, integration_id, filename)
            return None  # remote (tracking) or unknown content is never loaded
        return value

    try:
        return nh3.clean(html, tags=set(_TAGS), clean_content_tags=set(_DROP_WITH_CONTENT), attributes=_ATTRIBUTES,
                         attribute_filter=attribute, strip_comments=True, link_rel="noopener noreferrer",
                         url_schemes={"http", "https", "mailto", "tel", "cid"},
                         set_tag_attribute_values={"a": {"target": "_blank"}})
    except Exception:  # a sanitiser failure must never serve the raw HTML
        logger.exception("Could not sanitise a mail body (%d characters); serving its text only", len(html))
        return text_only(html)


# -- bounded work: markup the HTML5 tree builder (html5ever, under nh3) would take quadratic time or space on -------
# Deep nesting costs html5ever O(depth) per block tag ("is a <p> in button scope?"): 100 KB of "<div>" took 1.1 s.
# Formatting elements closed implicitly stay in its list of active formatting elements and are re-opened before
# every piece of text (the HTML5 "reconstruct" step; identical ones only up to three, the Noah's Ark clause):
# 70 KB of '<p><b a=N>x</p>' took 8.6 s and came out as 56 MB. Such bodies are served as their text.
FAST_TAGS = 300          # at most this many "<": no markup of that size is costly, no scan
MAX_TAGS = 100_000       # more tags than this: text
MAX_DEPTH = 512          # elements open at once (browsers' parsers stop nesting at 512 too)
MAX_LINGERING = 200      # distinct formatting elements left open by another element's end tag, or never closed
_FORMATTING = frozenset({"a", "b", "big", "code", "em", "font", "i", "nobr", "s", "small", "strike", "strong", "tt",
                         "u"})
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "keygen", "link", "meta", "param",
                   "source", "track", "wbr"})
_TAG_SCAN = re.compile(r"<(/?)([a-zA-Z][^\t\n\f\r />]*+)([^>]*+)")
_STRIP = re.compile(r"<!--.*?(?:-->|\Z)|<(/?)([a-zA-Z][^\t\n\f\r />]*+)?[^>]*+(?:>|\Z)", re.DOTALL)
_HIDDEN_CONTENT = re.compile(r"<(script|style|title|template|xml)\b.*?(?:</\1\s*>|\Z)", re.IGNORECASE | re.DOTALL)
_BREAKING = frozenset({"br", "p", "div", "tr", "li", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "table",
                       "pre", "hr", "dd", "dt", "ul", "ol"})


def costly_markup(html: str) -> str | None:
    """Why sanitising ``html`` would take more than linear work, or None. One scan of its tags (a conservative
    estimate: tags inside comments or attribute values count too)."""
    if html.count("<") <= FAST_TAGS:
        return None
    stack: list[tuple[str, str]] = []
    open_tags: dict[str, int] = {}
    lingering: set[tuple[str, str]] = set()
    depth = tags = 0
    for match in _TAG_SCAN.finditer(html):
        tags += 1
        closing, tag, attrs = match.group(1), match.group(2).lower(), match.group(3)
        if not closing:
            if tag not in _VOID:
                stack.append((tag, attrs))
                open_tags[tag] = open_tags.get(tag, 0) + 1
                depth = max(depth, len(stack))
        elif open_tags.get(tag):
            while True:
                element = stack.pop()
                open_tags[element[0]] -= 1
                if element[0] == tag:
                    break
                if element[0] in _FORMATTING:
                    lingering.add(element)
        if tags > MAX_TAGS or depth > MAX_DEPTH or len(lingering) > MAX_LINGERING:
            break
    lingering.update(element for element in stack if element[0] in _FORMATTING)
    if tags > MAX_TAGS:
        return f"more than {MAX_TAGS} tags"
    if depth > MAX_DEPTH:
        return f"elements nested more than {MAX_DEPTH} deep"
    if len(lingering) > MAX_LINGERING:
        return f"more than {MAX_LINGERING} formatting elements left open"
    return None


def text_only(html: str) -> str:
    """The text of ``html`` as inert HTML: every tag and comment removed (block ends as line breaks), escaped."""
    def tag(match: re.Match[str]) -> str:
        name = (match.group(2) or "").lower()
        return "\n" if name in _BREAKING else ""

    text = html_lib.unescape(_STRIP.sub(tag, _HIDDEN_CONTENT.sub("", html)))
    text = re.sub(r"\n\s*\n\s*\n+", "\n\n", text).strip()
    return "<div>" + html_lib.escape(text, quote=False).replace("\n", "<br>") + "</div>"
