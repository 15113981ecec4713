"""runtime.mail.quoting: the new text of a reply vs the quoted mail below it, for the mailers people use."""
from __future__ import annotations

from html.parser import HTMLParser

import pytest

from runtime.mail.parse import text_to_html
from runtime.mail.quoting import MAX_CHARS, Split, split_quoted

GMAIL = ('<div dir="ltr">Thanks, that works.<div><br></div><div>Bob</div></div><br>'
         '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Mon, Jan 1, 2024 at 10:00 AM Alice &lt;'
         '<a href="mailto:alice@example.com">alice@example.com</a>&gt; wrote:<br></div>'
         '<blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex">Can we meet?</blockquote></div>')
OUTLOOK_WEB = ('<html><head><style>p { margin: 0 }</style></head><body><div dir="ltr">My answer</div>'
               '<div id="appendonsend"></div><hr style="display:inline-block;width:98%" tabindex="-1">'
               '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri"><b>From:</b> Alice<br><b>Sent:</b> Monday'
               '</font><div>&nbsp;</div></div><div>Can we meet?</div></body></html>')
OUTLOOK_DESKTOP = ('<div class=WordSection1><p class=MsoNormal>Yes, Tuesday.<o:p></o:p></p>'
                   '<p class=MsoNormal><o:p>&nbsp;</o:p></p><div><div style="border:none;border-top:solid #E1E1E1 '
                   '1.0pt;padding:3.0pt 0in 0in 0in"><p class=MsoNormal><b>From:</b> Alice &lt;a@x.com&gt;<br>'
                   '<b>Sent:</b> Monday</p></div></div><p class=MsoNormal>Can we meet?</p></div>')
APPLE = ('<html><body dir="auto"><div>Sounds good</div><div><br><div>On Jan 1, 2024, at 10:00, Alice '
         '&lt;a@x.com&gt; wrote:</div><br class="Apple-interchange-newline"><blockquote type="cite">'
         '<div>Can we meet?</div></blockquote></div></body></html>')


def visible_text(html: str) -> str:
    """The text a reader sees, blocks and line breaks as spaces (head, title and style left out)."""
    breaks = {"div", "p", "br", "blockquote", "hr", "td", "tr", "table", "body"}

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self.hidden = 0

        def handle_starttag(self, tag: str, attrs: object) -> None:
            self.hidden += tag in ("head", "style", "title")
            self.parts.append(" " if tag in breaks else "")

        def handle_endtag(self, tag: str) -> None:
            self.hidden -= tag in ("head", "style", "title")
            self.parts.append(" " if tag in breaks else "")

        def handle_data(self, data: str) -> None:
            if not self.hidden:
                self.parts.append(data)
    parser = Text()
    parser.feed(html)
    parser.close()
    return " ".join("".join(parser.parts).replace("\xa0", " ").split())


def balanced(html: str) -> bool:
    """Every end tag closes the innermost open element and nothing but void elements stays open."""
    void = {"br", "hr", "img", "meta", "link", "input", "wbr"}

    class Checker(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []
            self.ok = True

        def handle_starttag(self, tag: str, attrs: object) -> None:
            if tag not in void:
                self.stack.append(tag)

        def handle_endtag(self, tag: str) -> None:
            if tag in void:
                return
            if not self.stack or self.stack[-1] != tag:
                self.ok = False
            else:
                self.stack.pop()
    checker = Checker()
    checker.feed(html)
    checker.close()
    return checker.ok and not checker.stack


@pytest.mark.parametrize("body, new, quoted", [
    (GMAIL, "Thanks, that works. Bob", "On Mon, Jan 1, 2024 at 10:00 AM Alice <alice@example.com> wrote: Can we meet?"),
    (OUTLOOK_WEB, "My answer", "From: Alice Sent: Monday Can we meet?"),
    (OUTLOOK_DESKTOP, "Yes, Tuesday.", "From: Alice <a@x.com> Sent: Monday Can we meet?"),
    (APPLE, "Sounds good", "On Jan 1, 2024, at 10:00, Alice <a@x.com> wrote: Can we meet?"),
])
def test_mailers_html_quotes_are_split_off(body, new, quoted):
    split = split_quoted(body)
    assert visible_text(split.new_content) == new
    assert visible_text(split.replies) == quoted
    assert balanced(split.new_content)


def test_outlook_original_message_line_and_underscores():
    body = "<div>Answer here</div><div>-----Original Message-----</div><div>From: Bob</div><div>old</div>"
    assert split_quoted(body) == Split("<div>Answer here</div>",
                                       "<div>-----Original Message-----</div><div>From: Bob</div><div>old</div>")
    plain = text_to_html("Answer\n\n________________________________\nFrom: Bob <b@x>\nSent: Monday\n\nold text")
    split = split_quoted(plain)
    assert split.new_content == "<div>Answer</div>"
    assert split.replies.startswith("________________________________<br>From: Bob")
    assert split.replies.endswith("old text")


def test_plain_text_quote_goes_with_its_wrapped_attribution_line():
    body = text_to_html("Fine by me.\n\nOn Mon, Jan 1, 2024 at 10:00 AM Alice Example <\nalice@example.com> wrote:\n"
                        "> first line\n>\n> second")
    split = split_quoted(body)
    assert split.new_content == "<div>Fine by me.</div>"
    assert split.replies.startswith("On Mon, Jan 1, 2024")
    assert split.replies.endswith("&gt; second")
    assert "<div>" not in split.replies and "</div>" not in split.replies  # the wrapper stays with the new text


def test_text_without_markup_splits_on_newlines():
    assert split_quoted("Hi\n\nOn Tue, Bob wrote:\n> x\n> y\n") == Split("Hi", "On Tue, Bob wrote:\n> x\n> y")


def test_thunderbird_attribution_before_blockquote():
    body = ('<p>Agreed.</p><div class="moz-cite-prefix">On 1/1/24 10:00, Alice wrote:<br></div>'
            '<blockquote type="cite" cite="mid:1@x">old</blockquote>')
    split = split_quoted(body)
    assert split.new_content == "<p>Agreed.</p>"
    assert split.replies.startswith('<div class="moz-cite-prefix">')


@pytest.mark.parametrize("body", [
    "<p>Just a mail, no quote at all.</p>",
    text_to_html("> q1\nanswer one\n> q2\nanswer two"),                    # inline answers after the quotes
    ('<blockquote type="cite">q1</blockquote><div>answer one</div><blockquote type="cite">q2</blockquote>'
     '<div>answer two</div>'),
    '<div class="gmail_quote">---------- Forwarded message ---------<br>From: A</div>',  # nothing but the quote
    text_to_html("> only\n> quoted"),
    "",
    "   ",
])
def test_no_trailing_quote_keeps_the_whole_body(body):
    assert split_quoted(body) == Split(body, "")


def test_none_is_empty():
    assert split_quoted(None) == Split("", "")


def test_the_earliest_trailing_quote_wins_and_nested_quotes_stay_inside():
    body = ('<div>new</div><blockquote type="cite">level 1<blockquote type="cite">level 2</blockquote>'
            '-----Original Message-----<br>&gt; older</blockquote>')
    split = split_quoted(body)
    assert split.new_content == "<div>new</div>"
    assert split.replies == body[len("<div>new</div>"):]


def test_a_quote_followed_by_more_new_text_then_a_trailing_quote():
    body = ('<div>a</div><blockquote type="cite">q1</blockquote><div>b</div>'
            '<div class="gmail_quote">q2</div>')
    assert split_quoted(body) == Split('<div>a</div><blockquote type="cite">q1</blockquote><div>b</div>',
                                       '<div class="gmail_quote">q2</div>')


def test_halves_are_balanced_and_hidden_text_is_not_new_content():
    body = ('<html><head><title>Re: hi</title><style>.x{}</style></head><body><table><tr><td>'
            '<div>reply <b>bold</b></div><div class="gmail_quote">quoted <i>it</i></div></td></tr></table>'
            '</body></html>')
    split = split_quoted(body)
    assert split.new_content == ('<html><head><title>Re: hi</title><style>.x{}</style></head><body><table><tr>'
                                 '<td><div>reply <b>bold</b></div></td></tr></table></body></html>')
    assert split.replies == '<div class="gmail_quote">quoted <i>it</i></div>'
    assert balanced(split.new_content) and balanced(split.replies)
    only_hidden = '<html><head><title>Subject</title></head><body><blockquote type="cite">q</blockquote></body></html>'
    assert split_quoted(only_hidden) == Split(only_hidden, "")


def test_an_image_is_new_content():
    body = '<div><img src="cid:sig"></div><blockquote type="cite">q</blockquote>'
    assert split_quoted(body) == Split('<div><img src="cid:sig"></div>', '<blockquote type="cite">q</blockquote>')


def test_malformed_markup_degrades_without_raising():
    for body in ['<div><p>new<blockquote type=cite>q', "<div>new</span></p><div class=gmail_quote>q</div></b>",
                 "<<>>&&;<!-- x <div id=appendonsend>", "<div>a\x00b</div><blockquote type='cite'>q</blockquote>",
                 "</div></div>text<br><br>&gt; quote"]:
        split = split_quoted(body)
        assert isinstance(split.new_content, str) and isinstance(split.replies, str)
    assert split_quoted('<div><p>new<blockquote type=cite>q') == Split("<div><p>new</p></div>",
                                                                       "<blockquote type=cite>q")
    assert split_quoted("</div>text<br><br>&gt; quote") == Split("</div>text", "&gt; quote")


def test_oversized_bodies_are_not_split():
    body = "<div>x</div>" + " " * MAX_CHARS + '<blockquote type="cite">q</blockquote>'
    assert split_quoted(body) == Split(body, "")


def test_user_text_ending_in_wrote_is_not_taken_for_an_attribution():
    body = text_to_html("As you wrote:\n> the old text")
    assert split_quoted(body) == Split("<div>As you wrote:</div>", "&gt; the old text")


# -- issue 12 item 3: linear, bounded, computed once ---------------------------------------------------------------

def calls(function, *args):
    """How many Python and C function calls ``function(*args)`` makes: a measure of work that no clock disturbs."""
    import sys
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        count += event in ("call", "c_call")
    sys.setprofile(profile)
    try:
        function(*args)
    finally:
        sys.setprofile(None)
    return count


@pytest.mark.parametrize("unit, tail", [
    ("<blockquote type=cite>x</blockquote>", "tail"),   # the vector: 62x the calls before (cubic)
    ("<blockquote type=cite>x</blockquote>", ""),       # 11.7x before
    ("<div>", "</p>" * 400),                             # stray end tags below a deep stack: 7.5x before
    ("<div id=x_divRplyFwdMsg>x", ""),                   # nested header quotes: 14.6x before
    ("<div style='border-top:solid'>From: x</div>", "tail"),  # linear before too: guards against a regression
    ("<br>&gt; a", "<br>new"),
])
def test_the_work_of_a_split_grows_linearly(unit, tail):
    small, large = (unit * n + tail for n in (400, 1600))
    ratio = calls(split_quoted, large) / calls(split_quoted, small)
    assert ratio < 5.5, ratio  # 4x the input: about 4x the calls (cubic was 64x)


# html.parser's quadratic cases ("<a b='" or "<!--" repeated) cost time inside its C regex calls, which a call
# count does not see: bench/quote_split.py measures them (docs/benchmarks.md).


def test_hostile_markup_never_raises():  # html.parser raised AssertionError on "<![" repeated
    for body in ["<![" * 50, "<![CDATA[" * 20, "<!" * 30 + "<![", "<a b='" * 30, "</" * 40, "<?" * 40]:
        quote = "<blockquote type=cite>q</blockquote>"
        assert split_quoted(body + quote).replies in ("", quote)


def test_too_many_tokens_are_not_split():
    from runtime.mail.quoting import MAX_TOKENS

    body = "<b></b>" * (MAX_TOKENS // 2) + "<div>new</div><blockquote type=cite>q</blockquote>"
    assert len(body) < MAX_CHARS and split_quoted(body) == Split(body, "")
    fits = "<b></b>" * (MAX_TOKENS // 4) + "<div>new</div><blockquote type=cite>q</blockquote>"
    assert split_quoted(fits).replies == "<blockquote type=cite>q</blockquote>"


def test_a_record_rebuilds_the_split_and_refuses_another_body_or_version():
    from runtime.mail.quoting import SPLIT_VERSION, from_record, split_record

    for body in (GMAIL, OUTLOOK_WEB, OUTLOOK_DESKTOP, APPLE, "<p>no quote</p>", "",
                 '<table><tr><td><div>reply</div><div class="gmail_quote">q</div></td></tr></table>'):
        record = split_record(body)
        assert record["v"] == SPLIT_VERSION and record["size"] == len(body)
        assert from_record(body, record) == split_quoted(body)
        __import__("json").dumps(record)
    record = split_record(GMAIL)
    assert from_record(GMAIL + " ", record) is None
    assert from_record(GMAIL, {**record, "v": SPLIT_VERSION - 1}) is None
    assert from_record(GMAIL, None) is None
