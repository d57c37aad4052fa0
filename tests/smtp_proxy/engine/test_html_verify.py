"""The lxml cross-check of the HTML scanner: disagreements reported, what is checked,
and agreement on the real corpus."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from smtp_proxy.engine.html_scan import HtmlScan
from smtp_proxy.engine.html_verify import check_links, find_html_links
from smtp_proxy.engine.splice import splice
from tests.support.corpus import corpus_eml_files, corpus_html_files
from tests.support.html_checks import checked, links, lxml_hrefs

# --- lxml cross-check -------------------------------------------------------------------


# lxml drops everything nested deeper than a few thousand elements: a disagreement the
# scanner cannot avoid, so a handy one for tests.
DEEP = "<div>" * 6000


def test_disagreement_is_reported() -> None:
    html = DEEP + "<a href=https://x.example/>"
    scan = find_html_links(html)
    assert scan.problem == "html-disagrees"
    assert check_links(html, find_html_links(html, check=False)) == "html-disagrees"


def test_script_escape_states_like_lxml() -> None:
    # In script data "<!--<script>" starts a double-escaped stretch where </script>
    # does not end the element.
    html = (
        "<script><!--<script></script><a href=https://in.example/></script>"
        "<a href=https://1.example/><script><!-- </script><a href=https://2.example/>"
        "<script><!--<script>--></script><a href=https://3.example/>"
        "<script><!--></script><a href=https://4.example/>"
        "<SCRIPT><!--<SCRIPT/></SCRIPT>--></script><a href=https://5.example/>"
    )
    assert [u for _, u in links(html)] == [f"https://{i}.example/" for i in range(1, 6)]


def test_disagreement_inside_conditional_comments_is_reported() -> None:
    # lxml keeps the comment as text; its content is parsed on its own and compared.
    # (lxml drops what follows "</html>" in the comment's text; the scanner does not.)
    html = "<p>x</p><!--[if mso]></html><v:rect href=https://x.example/><![endif]-->"
    assert find_html_links(html).problem == "html-disagrees"


def test_disagreement_on_vml_outside_comments_is_reported() -> None:
    html = DEEP + "<v:rect href=https://x.example/>"
    assert find_html_links(html).problem == "html-disagrees"


def test_comment_only_part_agrees() -> None:
    html = '<!--[if mso]><v:roundrect href="https://x.example/?a=1&amp;b=2"><![endif]-->'
    scan = find_html_links(html)
    assert scan.problem is None
    assert [link.url for link in scan.links] == ["https://x.example/?a=1&b=2"]


def test_deep_nesting_lxml_drops_is_reported() -> None:
    html = "<div>" * 6000 + '<a href="https://deep.example/">x</a>'
    assert find_html_links(html).problem == "html-disagrees"


def test_no_check_when_nothing_could_be_tracked() -> None:
    # The same disagreement, but every link is skipped by a policy-free rule: the part
    # stays as it is anyway, so lxml is not asked.
    html = DEEP + (
        '<a href=#top><a href="mailto:x@example.com"><a href="{{url}}">'
        "<a href=https://x.example/ ses:no-track>"
    )
    assert find_html_links(html).problem is None
    assert checked(html).problem == "html-disagrees"


def test_links_after_the_end_of_html() -> None:
    # libxml2 drops what follows </html>; footers appended there are real, so the
    # check parses each piece on its own instead of calling it a disagreement.
    html = (
        "<html><body><a href=https://a.example/>A</a></body></html>\n"
        "<p>Footer <a href='https://b.example/'>B</a></p>"
        "<!--[if mso]><v:rect href=https://v.example/></v:rect><![endif]-->"
        "</HTML><a href=https://c.example/>C</a>"
    )
    scan = checked(html)
    assert scan.problem is None
    assert [link.url for link in scan.links] == [
        "https://a.example/",
        "https://b.example/",
        "https://v.example/",
        "https://c.example/",
    ]
    # "</html>" inside a script is no end of the document: the cut makes lxml see a
    # link the scanner (rightly) does not, and the part is left alone.
    html = "<script>w('</html><a href=https://x.example/>')</script><a href=https://y.example/>"
    assert checked(html).problem == "html-disagrees"


def test_check_stops_after_the_last_link_that_may_change() -> None:
    # What follows the last trackable link cannot move it: lxml reads only up to there.
    html = "<a href=https://x.example/>x</a>" + DEEP + "<a href=#top><a href=mailto:a@b>"
    assert find_html_links(html).problem is None
    assert checked(html).problem == "html-disagrees"
    html = "<a href=https://x.example/>x</a>" + DEEP + "<a href=https://y.example/>"
    assert find_html_links(html).problem == "html-disagrees"


def test_check_links_upto() -> None:
    html = "<a href=https://x.example/>x</a>" + DEEP + "<a href=https://y.example/>"
    scan = find_html_links(html, check=False)
    assert len(scan.tag_ends) == 2
    assert html[: scan.tag_ends[0]] == "<a href=https://x.example/>"
    assert check_links(html, scan) == "html-disagrees"
    assert check_links(html, scan, upto=2) == "html-disagrees"
    assert check_links(html, scan, upto=1) is None
    assert check_links(html, scan, upto=0) is None
    # Without tag ends (a scan built by hand) the whole text is read.
    assert check_links(html, HtmlScan(scan.links, None), upto=1) == "html-disagrees"


@pytest.mark.parametrize(
    "html",
    [
        "<a href=https://x.example/>x</a>" + DEEP + "<a href=https://y.example/>",
        "<html><body><a href=https://a.example/>A</a></body></html>\n"
        "<p>Footer <a href='https://b.example/'>B</a></p></HTML><a href=https://c.example/>C</a>",
        "<script>w('</html><a href=https://x.example/>')</script><a href=https://y.example/>",
        "<p><!--[if mso]><v:rect href=https://v.example/></v:rect><![endif]-->"
        "<a href='https://a.example/?a=1&amp;b=2'>x</a></p>",
        "<p>caf\u00e9 <a href=https://x.example/\u00e9>x</a></p>",
    ],
)
def test_check_links_reading_the_callers_bytes_gives_the_same_verdict(html: str) -> None:
    """``data=`` (the part's UTF-8 bytes) only saves a copy: same verdict for every
    ``upto``; bytes that cannot be the text's (non-ASCII text, wrong length) are ignored."""
    scan = find_html_links(html, check=False)
    data = html.encode("utf-8")
    for upto in (None, *range(len(scan.links) + 1)):
        expected = check_links(html, scan, upto=upto)
        assert check_links(html, scan, upto=upto, data=data) == expected
        assert check_links(html, scan, upto=upto, data=data + b"<a href=z>") == expected


def test_check_links_reads_ascii_bytes_as_given() -> None:
    # An ASCII text's bytes are what lxml reads: bytes naming another link disagree
    # (so the rewriter must only ever pass the text's own bytes, which it does).
    html = "<p><a href=https://x.example/>x</a></p>"
    scan = find_html_links(html, check=False)
    assert check_links(html, scan, data=html.encode()) is None
    other = html.replace("x.example", "y.example").encode()
    assert check_links(html, scan, data=other) == "html-disagrees"


def test_unchecked_scan() -> None:
    html = DEEP + "<a href=https://x.example/><a href=y>"
    scan = find_html_links(html, check=False)
    assert scan.problem is None
    assert len(scan.links) == 2


def test_empty_and_linkless() -> None:
    assert find_html_links("") == HtmlScan((), None)
    assert find_html_links("   \n") == HtmlScan((), None)
    assert find_html_links("<p>hello</p>") == HtmlScan((), None)
    assert find_html_links("<!-- only a comment -->").problem is None


def test_newlines_and_nul_in_values_agree_with_lxml() -> None:
    scan = find_html_links('<a href="https://x.example/a\r\nb">x</a><a href="c\0d">')
    assert scan.problem is None
    assert scan.links[0].url == "https://x.example/a\r\nb"


def test_non_ascii_and_lone_surrogates() -> None:
    assert links('<a href="https://bücher.example/straße?q=€">') == [
        ("a", "https://bücher.example/straße?q=€")
    ]
    scan = find_html_links('<a href="https://x.example/\udcff">')
    assert scan.problem is None
    assert scan.links[0].url == "https://x.example/\udcff"


# --- the real corpus -------------------------------------------------------------------------


def test_corpus_templates_agree_with_lxml(corpus: Path) -> None:
    files = corpus_html_files()
    assert files, f"no corpus files under {corpus}"
    disagree = []
    total = 0
    for path in files:
        html = path.read_bytes().decode("utf-8", "replace")
        scan = checked(html)
        if scan.problem is not None:
            disagree.append(path.name)
            continue
        visible = [
            link.url
            for i, link in enumerate(scan.links)
            if link.kind in ("a", "area") and i not in scan.hidden and link.url
        ]
        assert visible == lxml_hrefs(html), path
        for link in scan.links:
            assert html[link.start : link.end] == link.raw
        assert splice(html, [(link, "https://t.example/c/X") for link in scan.links]).count(
            "https://t.example/c/X"
        ) >= len(scan.links)
        total += len(scan.links)
    print(f"corpus: {len(files)} templates, {total} links, {len(disagree)} disagree")
    assert len(disagree) <= len(files) // 20, disagree
    assert total > 1000


# --- the real corpus: messages -----------------------------------------------------------


def test_corpus_messages_html_parts_agree_with_lxml(corpus: Path) -> None:
    files = corpus_eml_files()
    assert files, f"no corpus files under {corpus}"
    parts = disagree = found = 0
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)
        for part in message.walk():
            if part.get_content_type() != "text/html":
                continue
            payload = part.get_payload(decode=True)
            if not isinstance(payload, bytes):
                continue
            try:
                html = payload.decode(part.get_content_charset() or "utf-8", "replace")
            except LookupError:
                html = payload.decode("utf-8", "replace")
            parts += 1
            scan = checked(html)
            if scan.problem is not None:
                disagree += 1
                continue
            visible = [
                link.url.strip("\t\n\f\r ")
                for i, link in enumerate(scan.links)
                if link.kind in ("a", "area") and i not in scan.hidden
            ]
            assert [v for v in visible if v] == lxml_hrefs(html), path
            found += len(scan.links)
    print(f"corpus messages: {parts} HTML parts, {found} links, {disagree} disagree")
    assert parts > 10
    assert disagree <= parts // 10
