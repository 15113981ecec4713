"""Sanitise mail HTML before the erxes UI renders it: pure logic on ``nh3`` (the Python binding of the Rust
``ammonia`` sanitiser, an allow-list HTML5 parser-based cleaner).

Applied to what is *served* (``imapConversationDetail``'s ``body``, ``newContent`` and ``replies``), never to what
is stored: the raw body stays in ``imap_messages``.

- Only an allow-list of formatting tags and attributes survives; ``script``/``style``/``iframe``/``object``/
  ``embed``/``form``/``svg``/``math`` and every ``on*`` handler go (script and style with their content).
- Links keep ``http``, ``https``, ``mailto`` and ``tel`` targets only (no ``javascript:``, ``data:``, nor a path
  relative to the UI), and get ``rel="noopener noreferrer"`` and ``target="_blank"``.
- ``class`` keeps only mail clients' own names (``gmail_quote``, ``MsoNormal``, ...), never the UI's.
- ``style`` attributes keep a declaration only when its value has no ``url(``, ``expression(``, ``javascript:``,
  ``behavior``/``-moz-binding``, ``@import``, CSS escapes or comments; ``position`` is dropped (no overlays).
- Images never load remote content (tracking pixels): an ``<img>`` keeps its ``src`` only when it is a ``cid:``
  reference to one of the message's own attachments, rewritten to the attachment route
  ``<prefix>/read-mail-attachment?messageId=<doc _id>&integrationId=<inbox id>&filename=<filename>``. A remote
  (or ``data:``, or unknown ``cid:``) image loses its ``src`` and shows its ``alt`` text.
"""
from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

import nh3

__all__ = ["attachment_url", "sanitize_html"]

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
    "a": {"href", "name"},
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
_UNSAFE_PROPERTIES = frozenset({"position", "behavior", "-moz-binding", "content", "cursor"})


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
        if not sep or not re.fullmatch(r"-?[a-z][a-z0-9-]*", name) or name in _UNSAFE_PROPERTIES:
            continue
        if _UNSAFE_CSS.search(val) or _UNSAFE_CSS.search(name):
            continue
        kept.append(f"{name}:{val.strip()}")
    return "; ".join(kept) or None


def sanitize_html(html: str, *, attachments: Iterable[dict[str, Any]] = (), message_id: str = "",
                  integration_id: str = "", url_prefix: str = "") -> str:
    """``html`` safe to render in the UI; ``cid:`` images point at the message's own attachments."""
    if not html:
        return html or ""
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
        return nh3.clean(html, tags=set(), clean_content_tags=set(_DROP_WITH_CONTENT))
