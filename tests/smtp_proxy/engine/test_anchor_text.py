"""URL-as-text anchors: what counts as URL text, how the visible text is found (also in
hostile markup), and the rewriter's ``url-text`` skip with ``track_url_text``."""

from __future__ import annotations

import dataclasses
import html
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clickrelay.common.errors import ConfigError
from clickrelay.config import load_config_text
from redirector.tokens import Keyring
from smtp_proxy.engine.anchor_text import MAX_TEXT_CHARS, anchor_text, is_url_text
from smtp_proxy.engine.rewriter import TrackingSettings, rewrite_message
from smtp_proxy.smtp.tracking import tracking_settings

BASE = "https://t.example.net"

URL_TEXTS = [
    "https://www.bank.example/login",
    "HTTP://BANK.EXAMPLE",
    "  https://bank.example/a?b=1#c  ",
    "ftp://files.example.org/x",
    "www.bank.example/login",
    "WWW.Bank.Example",
    "www.bank",
    "bank.example",
    "example.com",
    "example.com/",
    "example.com:8443/path?q=1",
    "shop.example.co.uk/sale",
    "Bücher.example",
    "xn--bcher-kva.example/x",
    "files.example.zip",
    "192.0.2.1/admin",
    "192.0.2.1:8080",
    "support@bank.example",
    "mailto:support@bank.example",
    "<https://bank.example/a>",
    "(bank.example)",
    '"bank.example"',
    "bank.example.",
    "bank.example!",
    "Sign in: https://bank.example/login",
    "Visit https://bank.example today",
]

NOT_URL_TEXTS = [
    "",
    "   ",
    "Click here",
    "Read more...",
    "report.pdf",
    "Node.js",
    "v1.2",
    "e.g.",
    "3.14",
    "Visit bank.example today",
    "Read xhttps://bank.example",
    "Sign in at www.bank.example",
    "https://",
    "www.",
    "foo@bar",
    "user@report.pdf",
    "localhost",
    "a..example",
    "-bad-.example",
]


@pytest.mark.parametrize("text", URL_TEXTS)
def test_counts_as_url_text(text: str) -> None:
    assert is_url_text(text)


@pytest.mark.parametrize("text", NOT_URL_TEXTS)
def test_does_not_count_as_url_text(text: str) -> None:
    assert not is_url_text(text)


def _text_of(markup: str) -> str | None:
    """The visible text of the first anchor of ``markup``."""
    doc = f'<p><a href="https://bank.example/login">{markup}</p>'
    return anchor_text(doc, doc.index(">", doc.index("<a")) + 1)


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        ("https://bank.example/login</a>", "https://bank.example/login"),
        ("<b>https://</b><i>bank.example</i></a>", "https://bank.example"),
        ("https&#58;//bank&period;example&#x2F;x</a>", "https://bank.example/x"),
        ("&nbsp;\u200b bank.example\u00a0 </A >", "bank.example"),
        ("bank.<!-- </a> -->example</a>", "bank.example"),
        ("<span\nstyle='color:red'>www.bank.example</span></a>", "www.bank.example"),
        ("bank.example<a href='x'>other</a>", "bank.example"),  # <a> closes an open <a>
        ("bank.example", "bank.example</p>"[:12]),  # the document ends inside the anchor
        ('<img src="x.png" alt="https://bank.example"></a>', ""),  # alt text is not text
        ("Click <b>here</b></a>", "Click here"),
    ],
)
def test_visible_text(markup: str, text: str) -> None:
    assert _text_of(markup) == text


def test_unclosed_comment_or_endless_anchor_is_not_url_text() -> None:
    assert _text_of("bank.example<!-- never closed") is None
    long = "x" * (MAX_TEXT_CHARS + 10) + "</a>"
    assert _text_of("https://bank.example/" + long) is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("<>/!-&#;a:bhtps.ex ample\n\"'=A"), max_size=300))
def test_hostile_markup_never_raises(markup: str) -> None:
    doc = '<a href="https://bank.example/">' + markup
    text = anchor_text(doc, doc.index(">") + 1)
    if text is not None:
        assert text == text.strip()
        is_url_text(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text_gives_an_answer(text: str) -> None:
    assert is_url_text(text) in (True, False)


_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_TLD = st.sampled_from(["com", "org", "net", "de", "co.uk", "example", "io", "shop"])
_PATH = st.from_regex(r"(/[A-Za-z0-9._~-]{0,12}){0,3}(\?[a-z]=[0-9]{1,3})?", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LABEL, min_size=1, max_size=3), _TLD, _PATH, st.booleans(), st.booleans())
def test_generated_urls_count_as_text_also_entity_encoded(
    labels: list[str], tld: str, path: str, scheme: bool, encode: bool
) -> None:
    url = ("https://" if scheme else "") + ".".join([*labels, tld]) + path
    assert is_url_text(url)
    markup = html.escape(url) if not encode else "".join(f"&#{ord(c)};" for c in url)
    assert _text_of(f"<span>{markup}</span></a>") == url


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(categories=["L", "N", "Zs"]), max_size=60))
def test_words_without_dots_or_schemes_are_not_url_text(text: str) -> None:
    assert not is_url_text(text)


# --- the rewriter ---------------------------------------------------------------------------


@pytest.fixture
def tracking(keyring: Keyring, tmp_path: Path) -> TrackingSettings:
    config = load_config_text(f'[tracking]\nbase_url = "{BASE}"\n', base_dir=tmp_path)
    return tracking_settings(config, keyring, {})


def _message(html_body: str, text_body: str | None = None) -> bytes:
    head = "From: a@example.com\r\nTo: b@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
    if text_body is None:
        return (head + "Content-Type: text/html; charset=utf-8\r\n\r\n" + html_body).encode()
    return (
        head
        + 'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
        + "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        + text_body
        + "\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        + html_body
        + "\r\n--b--\r\n"
    ).encode()


PAGE = (
    '<p><a href="https://www.bank.example/login">https://www.bank.example/login</a> '
    '<a href="https://bank.example/help">bank.example/help</a> '
    '<a href="https://bank.example/offer">See the offer</a> '
    '<area href="https://bank.example/map"> '
    '<!--[if mso]><v:roundrect href="https://bank.example/vml">x</v:roundrect><![endif]-->'
    "</p>\r\n"
)


def test_url_text_links_stay_untracked_by_default(tracking: TrackingSettings) -> None:
    result = rewrite_message(_message(PAGE), tracking, queue_id="Q1")
    reasons = {d.url: d.reason for d in result.links}
    assert reasons == {
        "https://www.bank.example/login": "url-text",
        "https://bank.example/help": "url-text",
        "https://bank.example/offer": "tracked",
        "https://bank.example/map": "tracked",  # <area>/VML: no visible text of their own
        "https://bank.example/vml": "tracked",
    }
    assert b'<a href="https://www.bank.example/login">https://www.bank.example/login</a>' in (
        result.data
    )
    assert b'<a href="https://bank.example/help">' in result.data


def test_track_url_text_tracks_them(tracking: TrackingSettings) -> None:
    on = dataclasses.replace(tracking, track_url_text=True)
    result = rewrite_message(_message(PAGE), on, queue_id="Q1")
    assert {d.reason for d in result.links} == {"tracked"}


def test_the_plain_text_copy_of_a_url_text_link_is_still_tracked(
    tracking: TrackingSettings,
) -> None:
    """In text/plain the URL shown *is* the link: the tracked URL shows where it goes."""
    page = '<a href="https://bank.example/help">https://bank.example/help</a>'
    result = rewrite_message(
        _message(page, "Help: https://bank.example/help"), tracking, queue_id="Q"
    )
    assert [(d.part, d.reason) for d in result.links] == [("1", "tracked"), ("2", "url-text")]


def test_config_key(tmp_path: Path) -> None:
    default = load_config_text("", base_dir=tmp_path)
    assert default.tracking.track_url_text is False
    on = load_config_text("[tracking]\ntrack_url_text = true\n", base_dir=tmp_path)
    assert on.tracking.track_url_text is True
    with pytest.raises(ConfigError, match="track_url_text"):
        load_config_text('[tracking]\ntrack_url_text = "yes"\n', base_dir=tmp_path)
