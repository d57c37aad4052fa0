"""The HTML link scanner: what it finds, where it does not look, opt-outs, and that
it agrees with lxml on generated and random HTML."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_proxy.engine.html_scan import FoundLink, unescape_attribute
from smtp_proxy.engine.html_verify import find_html_links
from smtp_proxy.engine.splice import splice
from tests.support.html_checks import checked, links, lxml_hrefs
from tests.support.html_pieces import LINK_PIECES


def dom(link: FoundLink) -> str:
    """The value a DOM holds for the link: newlines normalised, NUL replaced, trimmed."""
    raw = link.raw.replace("\r\n", "\n").replace("\r", "\n").replace("\0", "\ufffd")
    return unescape_attribute(raw).strip("\t\n\f\r ")


# --- attribute syntax -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("html", "raw"),
    [
        ('<a href="https://x.example/d">', "https://x.example/d"),
        ("<a href='https://x.example/s'>", "https://x.example/s"),
        ("<a href=https://x.example/u>", "https://x.example/u"),
        ("<a href=https://x.example/u/>", "https://x.example/u/"),
        ('<A HREF="https://x.example/upper">', "https://x.example/upper"),
        ('<a\n  href\n=\n  "https://x.example/nl"\n>', "https://x.example/nl"),
        ('<a/href="https://x.example/slash">', "https://x.example/slash"),
        ('<a class="b" href="https://x.example/2nd" style="c">', "https://x.example/2nd"),
        ('<a title="x"href="https://x.example/nospace">', "https://x.example/nospace"),
        ('<a title="href=no" href="https://x.example/yes">', "https://x.example/yes"),
        ("<a title='<a href=no>' href=\"https://x.example/yes\">", "https://x.example/yes"),
        ('<a href="https://x.example/?q=\'">', "https://x.example/?q='"),
        ("<a href='https://x.example/?q=\"'>", 'https://x.example/?q="'),
        ('<a href="https://x.example/a>b">', "https://x.example/a>b"),
        ('<a href=" \n https://x.example/trim \t">', "https://x.example/trim"),
        ('<a href="https://x.example/first" href="https://x.example/second">', None),
        ('<a HREF="https://x.example/first" href="https://x.example/second">', None),
        ('<a href="">', ""),
        ('<area shape="rect" href="https://x.example/area">', "https://x.example/area"),
    ],
)
def test_attribute_quoting(html: str, raw: str | None) -> None:
    scan = find_html_links(html)
    assert scan.problem is None
    assert len(scan.links) == 1
    link = scan.links[0]
    expected = raw if raw is not None else "https://x.example/first"
    assert link.raw == expected
    assert html[link.start : link.end] == expected


def test_no_link_without_href_value() -> None:
    assert find_html_links("<a href>x</a><a name=top>y</a><a>z</a>").links == ()


def test_tags_that_are_not_links() -> None:
    html = (
        '<abbr href="https://no.example/1"><a:b href="https://no.example/2">'
        '<link href="https://no.example/3"><base href="https://no.example/4">'
        '<img src="https://no.example/5"><aside href="https://no.example/6">'
        '</a href="https://no.example/7"><a href="https://yes.example/">'
    )
    assert links(html) == [("a", "https://yes.example/")]


# --- character references ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "url"),
    [
        ("https://x.example/?a=1&amp;b=2", "https://x.example/?a=1&b=2"),
        ("https://x.example/?a=1&b=2", "https://x.example/?a=1&b=2"),
        ("https://x.example/?a=1&copy=2", "https://x.example/?a=1&copy=2"),
        ("https://x.example/?a=1&amp=2", "https://x.example/?a=1&amp=2"),
        ("https://x.example/?a=1&ampx", "https://x.example/?a=1&ampx"),
        ("https://x.example/?a=1&amp", "https://x.example/?a=1&"),
        ("https://x.example/?a&reg;", "https://x.example/?a®"),
        ("https://x.example/?a&lt3", "https://x.example/?a&lt3"),
        ("https://x.example/?a&notit;", "https://x.example/?a&notit;"),
        ("https://x.example/&#38;&#x26;&#X26", "https://x.example/&&&"),
        ("https://x.example/&#0;&#x110000;", "https://x.example/\ufffd\ufffd"),
        ("https://x.example/&#26;&#128;&#x81;", "https://x.example/\x1a€\x81"),
        ("https://x.example/&#0000038;&#99999999999999999999;", "https://x.example/&\ufffd"),
        ("https://x.example/&AMP;&Amp;", "https://x.example/&&Amp;"),
        ("https://x.example/&nosuch;&", "https://x.example/&nosuch;&"),
        ("https://x.example/%20&#37;", "https://x.example/%20%"),
    ],
)
def test_entities(raw: str, url: str) -> None:
    assert unescape_attribute(raw) == url
    html = f'<a href="{raw}">x</a>'
    scan = find_html_links(html)
    assert scan.problem is None  # lxml decodes the same way
    assert [link.url for link in scan.links] == [url]
    assert scan.links[0].raw == raw


_ENTITY_PIECES = st.sampled_from(
    [
        "&",
        "amp",
        "AMP",
        ";",
        "copy",
        "=",
        "#",
        "x",
        "X",
        "26",
        "38",
        "0",
        "1114112",
        "lt",
        "notin",
        "not",
        "it",
        "a",
        "9",
        "nbsp",
        "&#",
        "&#x",
        "AElig",
        "eacute",
        "?",
        "/",
        "%",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_ENTITY_PIECES, max_size=12).map("".join))
def test_entity_decoding_matches_lxml(raw: str) -> None:
    html = f'<a href="https://x.example/{raw}">x</a>'
    scan = find_html_links(html)
    assert scan.problem is None
    assert [link.url.strip("\t\n\f\r ") for link in scan.links] == lxml_hrefs(html)


# --- where links are not looked for ------------------------------------------------------


@pytest.mark.parametrize(
    "wrapper",
    [
        "<!-- {} -->",
        "<!--{}-->",
        "<!-- x --!><!-- {} -->",
        "<script>{}</script>",
        "<SCRIPT type=text/javascript>var s = '{}';</SCRIPT >",
        "<style>{}</style>",
        "<title>{}</title>",
        "<textarea>{}</textarea>",
        "<xmp>{}</xmp>",
        "<iframe>{}</iframe>",
        "<noembed>{}</noembed>",
        "<noframes>{}</noframes>",
        "<img alt='{}'>",
        '<p title="{}">',
        "<?php {} ?>",
        "<!DOCTYPE {}>",
    ],
)
def test_not_scanned(wrapper: str) -> None:
    html = wrapper.format("<a href=https://hidden.example/>") + '<a href="https://seen.example/">'
    assert links(html) == [("a", "https://seen.example/")]


def test_plaintext_ends_the_scan() -> None:
    assert links("<a href=https://1.example/><plaintext><a href=https://2.example/>") == [
        ("a", "https://1.example/")
    ]


def test_unterminated_constructs_end_the_scan() -> None:
    for tail in ('<a href="https://cut.example/', "<!-- <a href=x>", "<script><a href=x>"):
        html = "<a href=https://ok.example/>" + tail
        assert [link.url for link in find_html_links(html).links] == ["https://ok.example/"]
    assert find_html_links('<a href="https://ok.example/"').links == ()


def test_odd_comment_closings() -> None:
    html = "<!--><a href=https://1.example/><!---><a href=https://2.example/>"
    assert [u for _, u in links(html)] == ["https://1.example/", "https://2.example/"]


def test_noscript_is_scanned_like_lxml() -> None:
    assert links("<noscript><a href=https://n.example/></noscript>") == [
        ("a", "https://n.example/")
    ]


# --- Outlook conditional comments and VML ----------------------------------------------------

MSO = """<!--[if mso]>
<v:roundrect xmlns:v="urn:schemas-microsoft-com:vml" href="https://x.example/vml?a=1&amp;b=2"
  style="height:40px" arcsize="10%" strokecolor="#1e3650" fill="t">
  <w:anchorlock/><center>Go</center>
</v:roundrect>
<V:Rect HREF='https://x.example/rect'></V:Rect><v:oval href=https://x.example/oval></v:oval>
<v:fill type="tile" color="#fff" /><a href="https://x.example/mso-a">Outlook</a>
<![endif]-->
<!--[if !mso]><!-- --><a href="https://x.example/html">Others</a><!--<![endif]-->
<!-- <v:rect href="https://x.example/commented"> -->
"""


def test_vml_in_conditional_comments() -> None:
    scan = find_html_links(MSO)
    assert scan.problem is None
    assert [(link.kind, link.url) for link in scan.links] == [
        ("vml", "https://x.example/vml?a=1&b=2"),
        ("vml", "https://x.example/rect"),
        ("vml", "https://x.example/oval"),
        ("a", "https://x.example/mso-a"),
        ("a", "https://x.example/html"),
    ]
    assert scan.hidden == {0, 1, 2, 3}
    for link in scan.links:
        assert MSO[link.start : link.end] == link.raw


def test_conditional_comment_variants() -> None:
    html = (
        "<!--[IF gte mso 9]><v:rect href=https://x.example/1></v:rect><![endif]-->"
        "<![if !mso]><a href=https://x.example/2><![endif]>"
        "<!-- [if mso]><v:rect href=https://x.example/3><![endif]-->"
        "<!--[if mso]><script><v:rect href=https://no.example/></script><![endif]-->"
    )
    assert [u for _, u in links(html)] == [
        "https://x.example/1",
        "https://x.example/2",
        "https://x.example/3",
    ]


def test_vml_outside_comments() -> None:
    assert links("<v:roundrect href='https://x.example/v'>") == [("vml", "https://x.example/v")]


# --- opt-out attributes ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("attr", "name"),
    [
        ('data-clickrelay="off"', "data-clickrelay"),
        ("DATA-CLICKRELAY=OFF", "data-clickrelay"),
        ('clicktracking="off"', "clicktracking"),
        ("clicktracking=Off", "clicktracking"),
        ('disable-tracking="true"', "disable-tracking"),
        ("disable-tracking", "disable-tracking"),
        ("ses:no-track", "ses:no-track"),
        ('ses:no-track=""', "ses:no-track"),
        ('data-msys-clicktrack="0"', "data-msys-clicktrack"),
        ("data-pm-no-track", "data-pm-no-track"),
        ("mc:disable-tracking", "mc:disable-tracking"),
        ("mautic:disable-tracking", "mautic:disable-tracking"),
    ],
)
def test_opt_out(attr: str, name: str) -> None:
    for html in (
        f'<a {attr} href="https://x.example/">',
        f'<a href="https://x.example/" {attr}>',
        f"<!--[if mso]><v:roundrect href=https://x.example/ {attr}><![endif]-->",
    ):
        scan = find_html_links(html)
        assert [link.opt_out for link in scan.links] == [name], html


@pytest.mark.parametrize(
    "attr",
    [
        'data-clickrelay="on"',
        'clicktracking="on"',
        'disable-tracking="false"',
        'data-msys-clicktrack="1"',
        'data-track="off"',
        'title="clicktracking=off"',
    ],
)
def test_not_opt_out(attr: str) -> None:
    scan = find_html_links(f'<a {attr} href="https://x.example/">')
    assert [link.opt_out for link in scan.links] == [None]


def test_opt_out_only_on_its_own_element() -> None:
    scan = find_html_links(
        '<p data-clickrelay="off"><a href="https://1.example/"></p><a href="https://2.example/">'
    )
    assert [link.opt_out for link in scan.links] == [None, None]


# --- properties ---------------------------------------------------------------------------

_FRAGMENTS = st.lists(st.one_of(LINK_PIECES, st.text(max_size=4)), max_size=30).map("".join)


@settings(max_examples=200, deadline=None)
@given(_FRAGMENTS)
def test_random_fragments(html: str) -> None:
    scan = checked(html)
    assert find_html_links(html).links == scan.links
    assert scan.problem in (None, "html-disagrees", "html-unparseable")
    previous = 0
    for link in scan.links:
        assert previous <= link.start <= link.end <= len(html)
        assert html[link.start : link.end] == link.raw
        assert link.url == unescape_attribute(link.raw)
        assert link.kind in ("a", "area", "vml")
        previous = link.end
    assert splice(html, [(link, link.raw) for link in scan.links]) == html
    out = splice(html, [(link, "https://t.example/c/X") for link in scan.links])
    # Removing the new values from the output gives back the input minus the old values.
    rebuilt, old, pos = [], [], 0
    for link in scan.links:
        rebuilt.append(html[pos : link.start])
        old.append(html[pos : link.start])
        pos = link.end
    assert out.replace("https://t.example/c/X", "") == "".join(old) + html[pos:]
    if scan.problem is None:
        visible = [
            dom(link)
            for i, link in enumerate(scan.links)
            if link.kind != "vml" and i not in scan.hidden
        ]
        assert [v for v in visible if v] == lxml_hrefs(html)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_any_url_round_trips_through_an_attribute(url: str) -> None:
    escaped = url.replace("&", "&amp;").replace('"', "&quot;")
    html = f'<p>x</p><a class="c" href="{escaped}">y</a>'
    scan = find_html_links(html)
    assert len(scan.links) == 1
    assert scan.links[0].url == url.strip("\t\n\f\r ")
    assert splice(html, [(scan.links[0], scan.links[0].raw)]) == html


# --- generated well-formed HTML: the scanner must find exactly the links put in -----------

_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="<&\r\0", blacklist_categories=("Cs",)),
    max_size=12,
)
_VALUE_TEXT = st.text(
    alphabet=st.characters(blacklist_characters="\r\0", blacklist_categories=("Cs",)),
    max_size=15,
)


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("'", "&#39;")


@st.composite
def _attribute(draw: st.DrawFn, name: str | None = None, value: str | None = None) -> str:
    name = name or draw(st.sampled_from(["class", "style", "title", "alt", "data-x", "id"]))
    value = draw(_VALUE_TEXT) if value is None else value
    quote = draw(st.sampled_from(['"', "'", ""]))
    escaped = _escape(value)
    if quote == "" and (not escaped or any(c in escaped for c in "\t\n\f >\"'=<`")):
        quote = '"'
    sep = draw(st.sampled_from([" ", "\n", "  ", "\t"]))
    return f"{sep}{name}={quote}{escaped}{quote}"


@st.composite
def _document(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    parts: list[str] = []
    expected: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(
            st.sampled_from(["text", "tag", "end", "link", "comment", "mso", "script", "style"])
        )
        if kind == "text":
            parts.append(draw(_TEXT))
        elif kind == "tag":
            name = draw(
                st.sampled_from(["p", "div", "td", "img", "abbr", "aside", "B", "noscript"])
            )
            attrs = draw(st.lists(_attribute(), max_size=3))
            parts.append(f"<{name}{''.join(attrs)}>")
        elif kind == "end":
            parts.append(draw(st.sampled_from(["</p>", "</div>", "</a>", "</td>"])))
        elif kind == "link" or kind == "mso":
            url = "https://x.example/" + draw(_VALUE_TEXT)
            if kind == "mso":
                url = url.replace("-", "")  # "-->" in a value would end the comment
            tag = draw(
                st.sampled_from(
                    ["a", "A", "area"] if kind == "link" else ["v:roundrect", "V:Rect", "a"]
                )
            )
            before = draw(st.lists(_attribute(), max_size=2))
            after = draw(st.lists(_attribute(), max_size=2))
            href = draw(_attribute("href" if tag != "A" else "HREF", url))
            element = f"<{tag}{''.join(before)}{href}{''.join(after)}>"
            link_kind = "vml" if tag.lower().startswith("v:") else tag.lower()
            stripped = url.strip("\t\n\f\r ")
            if kind == "mso":
                while "--" in element:  # "-->" anywhere in the tag would end the comment
                    element = element.replace("--", "-")
                element = f"<!--[if mso]>{draw(_TEXT).replace('-', '')}{element}<![endif]-->"
            parts.append(element)
            if stripped:
                expected.append((link_kind, stripped))
        elif kind == "comment":
            body = draw(_TEXT).replace("-", "").replace(">", "").lstrip("[")
            parts.append(f"<!--{body} <a href=https://hidden.example/> -->")
        else:
            body = draw(_TEXT).replace("<", "")
            parts.append(f"<{kind}>{body}<a href=https://raw.example/></{kind}>")
    return "".join(parts), expected


@settings(max_examples=300, deadline=None)
@given(_document())
def test_generated_documents(doc: tuple[str, list[tuple[str, str]]]) -> None:
    html, expected = doc
    scan = find_html_links(html)
    assert scan.problem is None
    assert [(link.kind, link.url.strip("\t\n\f\r ")) for link in scan.links] == expected
    for link in scan.links:
        assert html[link.start : link.end] == link.raw


@pytest.mark.parametrize(
    ("html", "count"),
    [
        ("<" * 200_000, 0),
        ("<a " * 70_000, 0),
        ('<a href="' + "x" * 200_000, 0),
        ("<p " + "a=b " * 50_000 + "><a href=https://x.example/>", 1),
        ("<p " + "a='b' " * 50_000 + "><a href=https://x.example/>", 1),
        ("<!--" * 50_000, 0),
        ("<!" * 100_000, 0),
        ("</" * 100_000, 0),
        ("<a href=https://x.example/>" * 20_000, 20_000),
        ("<!--[if mso]><v:rect href=https://x.example/></v:rect><![endif]-->" * 5_000, 5_000),
        ("<script>" + "<!--<script>" * 20_000, 0),
        ('<a title="' + "&amp;" * 50_000 + '" href=https://x.example/>', 1),
    ],
    ids=lambda v: v[:20] if isinstance(v, str) else str(v),
)
def test_pathological_inputs(html: str, count: int) -> None:
    # Possessive patterns: no catastrophic backtracking, whatever the input.
    assert len(find_html_links(html, check=False).links) == count


def test_found_links_have_no_instance_dict() -> None:
    # A large part has tens of thousands of links: slots keep each one small.
    link = FoundLink(0, 1, "a", "a", "text", None)
    assert not hasattr(link, "__dict__")
    with pytest.raises(AttributeError):
        link.start = 2  # type: ignore[misc]
