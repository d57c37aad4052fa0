"""The opt-in trap link: one hidden anchor per rewritten HTML part, never anywhere else."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import quopri
import re
from pathlib import Path

import lxml.html
import pytest

from clickrelay.config import load_config_text
from redirector.tokens import Keyring
from smtp_proxy.engine.rewriter import RewriteResult, TrackingSettings, rewrite_message
from smtp_proxy.smtp.tracking import tracking_settings

BASE = "https://t.example.net"
HTML = (
    b'<html><body><p>Hello <a href="https://example.com/a">one</a>'
    b' <a href="https://example.org/b">two</a></p></body></html>\r\n'
)
HEAD = "From: a@example.com\r\nTo: b@example.org\r\nMIME-Version: 1.0\r\n"


@pytest.fixture
def settings(keyring: Keyring, tmp_path: Path) -> TrackingSettings:
    config = load_config_text(
        f'[tracking]\nbase_url = "{BASE}"\nbot_trap = true\n', base_dir=tmp_path
    )
    return tracking_settings(config, keyring, {})


def rw(data: bytes, settings: TrackingSettings) -> RewriteResult:
    return rewrite_message(data, settings, queue_id="Q1", recipient="b@example.org")


def html_message(body: bytes, cte: str = "7bit") -> bytes:
    head = f"{HEAD}Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: {cte}\r\n"
    return head.encode() + b"\r\n" + body


def html_of(data: bytes) -> str:
    message = email.message_from_bytes(data, policy=email.policy.default)
    for part in message.walk():
        if part.get_content_type() == "text/html":
            return str(part.get_content())
    raise AssertionError("no html part")


def traps_in(html: str) -> list[lxml.html.HtmlElement]:
    doc = lxml.html.document_fromstring(html)
    return [a for a in doc.iter("a") if a.get("tabindex") == "-1"]


def test_one_hidden_anchor_is_added_before_the_end_of_body(
    settings: TrackingSettings, keyring: Keyring
) -> None:
    result = rw(html_message(HTML), settings)
    assert result.changed
    trap = [d for d in result.links if d.action == "trap"]
    assert len(trap) == 1 and trap[0].reason == "trap-link"
    assert [d.index for d in result.links] == [0, 1, 2]  # the trap takes the next index
    html = html_of(result.data)
    anchors = traps_in(html)
    assert len(anchors) == 1
    a = anchors[0]
    assert a.get("aria-hidden") == "true"
    assert "display:none" in (a.get("style") or "")
    assert (a.text or "") == "" and len(a) == 0  # nothing to see or read out
    assert a.getparent().tag == "body" and a.getnext() is None  # last thing in <body>
    token = a.get("href").rsplit("/c/", 1)[1]
    link = keyring.open(token, "t.example.net")
    assert link.trap and link.link_index == 2 and link.queue_id == "Q1"
    assert link.url == "https://example.com/a"  # a scanner lands on an ordinary page
    # The other links are ordinary (not trap) tokens.
    others = [d for d in result.links if d.action == "tracked"]
    assert all(
        not keyring.open(d.tracked_url.rsplit("/", 1)[1], "t.example.net").trap for d in others
    )  # type: ignore[union-attr]


def test_without_a_body_tag_the_anchor_goes_at_the_end(settings: TrackingSettings) -> None:
    result = rw(html_message(b'<p><a href="https://example.com/a">x</a></p>\r\n'), settings)
    assert len(traps_in(html_of(result.data))) == 1


@pytest.mark.parametrize("cte", ["quoted-printable", "base64"])
def test_encoded_parts_stay_valid(settings: TrackingSettings, cte: str) -> None:
    body = quopri.encodestring(HTML) if cte == "quoted-printable" else base64.encodebytes(HTML)
    result = rw(html_message(body, cte), settings)
    assert result.reason == "rewritten"
    assert len(traps_in(html_of(result.data))) == 1
    if cte == "quoted-printable":
        assert all(len(line) <= 76 for line in result.data.split(b"\r\n")[6:])


def test_off_by_default_the_message_is_as_before(
    settings: TrackingSettings, keyring: Keyring
) -> None:
    off = dataclasses.replace(settings, bot_trap=False)
    result = rw(html_message(HTML), off)
    assert not [d for d in result.links if d.action == "trap"]
    assert traps_in(html_of(result.data)) == []
    assert len(re.findall(rb"<a ", result.data)) == 2


def test_plain_text_parts_get_no_trap(settings: TrackingSettings) -> None:
    data = (HEAD + "Content-Type: text/plain\r\n\r\n").encode() + b"See https://example.com/a\r\n"
    result = rw(data, settings)
    assert result.changed
    assert not [d for d in result.links if d.action == "trap"]
    assert b"tabindex" not in result.data


def test_opted_out_and_untracked_messages_get_no_trap(settings: TrackingSettings) -> None:
    opted = html_message(HTML).replace(b"MIME-Version", b"X-Clickrelay-Track: off\r\nMIME-Version")
    result = rw(opted, settings)
    assert result.reason == "opt-out-header"
    assert b"tabindex" not in result.data
    nothing = html_message(b'<p><a href="mailto:x@example.com">m</a></p>\r\n')
    result = rw(nothing, settings)
    assert not result.changed and b"tabindex" not in result.data


def test_a_signed_message_gets_no_trap(settings: TrackingSettings) -> None:
    signed = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=other.example; s=s; h=from; bh=x; b=y\r\n"
    ) + html_message(HTML)
    result = rw(signed, settings)
    assert not result.changed and result.reason == "dkim-signed"
    assert b"tabindex" not in result.data


def test_each_html_part_of_a_multipart_gets_its_own(settings: TrackingSettings) -> None:
    data = (
        (
            HEAD + 'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nhttps://example.com/a\r\n"
            "--b\r\nContent-Type: text/html\r\n\r\n"
        ).encode()
        + HTML
        + b"--b\r\nContent-Type: text/html\r\n\r\n"
        + HTML
        + b"--b--\r\n"
    )
    result = rw(data, settings)
    traps = [d for d in result.links if d.action == "trap"]
    assert len(traps) == 2
    assert len({d.index for d in result.links}) == len(result.links)  # indexes stay unique
    assert result.data.count(b'tabindex="-1"') == 2
