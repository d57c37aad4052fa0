"""Plain-text parts that tracking would turn into "one long word" stay untracked
(``uri-only-text``); everything else in text/plain is tracked as before."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clickrelay.config import load_config_text
from redirector.tokens import Keyring
from smtp_proxy.engine.rewriter import TrackingSettings, rewrite_message
from smtp_proxy.engine.text_links import find_text_links
from smtp_proxy.engine.uri_only_text import loses_its_spaces
from smtp_proxy.smtp.tracking import tracking_settings

LONG = "https://links.example.com/c/" + "A" * 100


def _long(text: str) -> bool:
    return loses_its_spaces(text, [(link, LONG) for link in find_text_links(text)])


@pytest.mark.parametrize(
    "text",
    [
        # A signature: before, "-- Name -- URL phone" has spaces enough; after, not.
        "\n--\nJane Doe -- http://www.example.no\n924 38 051 -- jane@example.no\n",
        "see http://a.example/x ok\n",
    ],
)
def test_tracking_would_remove_the_spaces(text: str) -> None:
    assert _long(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no links at all, just words\n",
        # Already one long word before tracking: nothing to lose.
        "https://files.example.com/slides/2026-12.pdf\n",
        "Read https://example.org/post.\n",
        # A paragraph of prose keeps the message's spaces, whatever the links do.
        "Hi Robin,\n\nthe notes from this morning are at the link below, see you on Monday"
        " and thanks again.\n\nhttps://wiki.example.com/notes/2026-12-04\n",
        "Dear customer,\n\na payment of EUR 120.00 was made from your account ending in"
        " 4321 on 3 December.\n\nReview it: https://www.bank.example/activity?id=98231\n",
    ],
)
def test_tracking_keeps_enough_spaces(text: str) -> None:
    assert not _long(text)


def test_no_replacements_change_nothing() -> None:
    assert not loses_its_spaces("a b c d e f g http://x.example/", [])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab \n\t\r\xa0.:/-https"), max_size=200))
def test_any_text_gives_an_answer(text: str) -> None:
    links = find_text_links(text)
    assert _long(text) in (True, False)
    if not links:
        assert not _long(text)


@pytest.fixture
def tracking(keyring: Keyring, tmp_path: Path) -> TrackingSettings:
    config = load_config_text(
        '[tracking]\nbase_url = "https://links.example.com"\n', base_dir=tmp_path
    )
    return tracking_settings(config, keyring, {})


def _text_message(body: str) -> bytes:
    return (
        "From: a@example.com\r\nTo: b@example.org\r\nSubject: s\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.replace("\n", "\r\n")
    ).encode()


def test_rewriter_leaves_such_a_part_alone(tracking: TrackingSettings) -> None:
    data = _text_message("--\nJane Doe -- http://www.example.no\n924 38 051\n")
    result = rewrite_message(data, tracking, queue_id="Q1")
    assert not result.changed
    assert result.data == data
    assert [(d.action, d.reason) for d in result.links] == [("skipped", "uri-only-text")]


def test_rewriter_tracks_text_with_words_enough(tracking: TrackingSettings) -> None:
    data = _text_message(
        "Hi Robin,\n\nthe notes from this morning are at the link below, see you on"
        " Monday and thanks again.\n\nhttps://wiki.example.com/notes/2026-12-04\n"
    )
    result = rewrite_message(data, tracking, queue_id="Q1")
    assert result.changed
    assert [d.reason for d in result.links] == ["tracked"]


def test_the_html_part_is_decided_on_its_own(tracking: TrackingSettings) -> None:
    data = (
        b"From: a@example.com\r\nTo: b@example.org\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\n--\r\nJane -- http://www.example.no\r\n"
        b"--b\r\nContent-Type: text/html\r\n\r\n"
        b'<p>Jane <a href="http://www.example.no">my site</a></p>\r\n--b--\r\n'
    )
    result = rewrite_message(data, tracking, queue_id="Q1")
    assert [(d.part, d.reason) for d in result.links] == [
        ("1", "uri-only-text"),
        ("2", "tracked"),
    ]
