"""Reading tags and metadata from a message's headers (pure): examples and properties."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from redirector.tokens import Keyring
from smtp_proxy.engine import message_tags
from smtp_proxy.engine.message_tags import (
    INVALID,
    MAX_KEY_CHARS,
    MAX_TAG_CHARS,
    read_block,
    read_tags,
    tag_fields,
)

# Printable text without control characters (what a header can carry after unfolding).
text = (
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_characters="\x7f"),
        min_size=1,
        max_size=40,
    )
    .map(str.strip)
    .filter(bool)
)
keys = text.filter(lambda k: len(k) <= MAX_KEY_CHARS)
metadata = st.dictionaries(keys, text, max_size=8)


def block(*lines: str) -> bytes:
    return ("".join(line + "\r\n" for line in lines) + "Subject: x\r\n").encode("utf-8")


def test_own_headers() -> None:
    got = read_block(block("X-Clickrelay-Tag: spring", 'X-Clickrelay-Metadata: {"a": "1"}'))
    assert (got.tag, dict(got.metadata), got.error) == ("spring", {"a": "1"}, None)
    assert got.headers == ("X-Clickrelay-Tag", "X-Clickrelay-Metadata")


def test_ours_win_over_an_esp_for_tag_and_shared_keys() -> None:
    got = read_block(
        block(
            "X-Mailgun-Tag: esp",
            'X-Mailgun-Variables: {"a": "esp", "b": "2"}',
            "X-Clickrelay-Tag: ours",
            'X-Clickrelay-Metadata: {"a": "ours"}',
        )
    )
    assert got.tag == "ours"
    assert dict(got.metadata) == {"a": "ours", "b": "2"}


def test_numbers_and_booleans_are_kept_as_their_json_text() -> None:
    got = read_block(block('X-Mailgun-Variables: {"n": 42, "ok": true}'))
    assert dict(got.metadata) == {"n": "42", "ok": "true"}


def test_folded_header_is_unfolded() -> None:
    got = read_block(block('X-Clickrelay-Metadata: {"a": "1",\r\n  "b": "2"}'))
    assert dict(got.metadata) == {"a": "1", "b": "2"}


def test_sendgrid_category_string_or_list_and_clicktrack_switch() -> None:
    got = read_block(block('X-SMTPAPI: {"category": "c1", "unique_args": {"u": "1"}}'))
    assert (got.tag, dict(got.metadata), got.tracking_off) == ("c1", {"u": "1"}, False)
    off = read_block(block('X-SMTPAPI: {"filters": {"clicktrack": {"settings": {"enable": 0}}}}'))
    assert off.tracking_off and off.error is None


def test_tracking_switches() -> None:
    for line in ("X-Mailgun-Track-Clicks: no", "X-Mailgun-Track: no", "X-PM-TrackLinks: None"):
        assert read_block(block(line)).tracking_off, line
    for line in ("X-Mailgun-Track-Clicks: yes", "X-PM-TrackLinks: HtmlAndText"):
        assert not read_block(block(line)).tracking_off, line


def test_no_tag_headers_is_empty_and_cheap() -> None:
    got = read_block(block("From: a@example.com", "X-Mailer: thing"))
    assert got.empty and got.headers == () and got.error is None


def test_bad_metadata_is_refused_whole_never_truncated() -> None:
    for line in (
        "X-Clickrelay-Metadata: not json",
        "X-Clickrelay-Metadata: [1, 2]",
        'X-Clickrelay-Metadata: {"a": {"nested": "x"}}',
        'X-Clickrelay-Metadata: {"a": null}',
        'X-Clickrelay-Metadata: {"a": "' + "v" * 2000 + '"}',
        "X-SES-MESSAGE-TAGS: novalue",
        "X-Clickrelay-Tag: " + "t" * (MAX_TAG_CHARS + 1),
        'X-SMTPAPI: {"unique_args": [1]}',
    ):
        got = read_block(block(line, "X-Clickrelay-Tag: ok"))
        assert got.error == INVALID, line
        assert got.empty, line  # nothing half-used
        assert len(got.headers) == 2  # still removed


@given(st.one_of(st.none(), text.filter(lambda t: len(t) <= MAX_TAG_CHARS)), metadata)
def test_own_headers_round_trip(tag: str | None, meta: dict[str, str]) -> None:
    lines = [f"X-Clickrelay-Metadata: {json.dumps(meta, ensure_ascii=False)}"]
    if tag is not None:
        lines.append(f"X-Clickrelay-Tag: {tag}")
    got = read_block(block(*lines))
    assert got.error is None
    assert got.tag == tag
    assert dict(got.metadata) == meta


@given(
    st.dictionaries(
        keys.filter(lambda k: "=" not in k and "," not in k),
        text.filter(lambda v: "," not in v),
        min_size=1,
        max_size=8,
    )
)
def test_ses_tags_round_trip(meta: dict[str, str]) -> None:
    value = ", ".join(f"{k}={v}" for k, v in meta.items())
    got = read_block(block(f"X-SES-MESSAGE-TAGS: {value}"))
    assert dict(got.metadata) == {k.strip(): v.strip() for k, v in meta.items()}


@given(st.lists(st.tuples(st.sampled_from(message_tags.FIXED_HEADERS), st.text(max_size=80))))
def test_any_values_never_raise(pairs: list[tuple[str, str]]) -> None:
    got = read_tags(pairs)
    assert got.error in (None, INVALID)
    assert len(got.headers) == len(pairs)


@given(st.binary(max_size=400))
def test_any_header_block_never_raises(raw: bytes) -> None:
    fields = tag_fields(raw)
    got = read_tags(fields)
    assert len(got.headers) == len(fields)


def test_hostile_values_are_refused_not_crashed_on() -> None:
    deep = "X-Clickrelay-Metadata: " + "[" * 100_000 + "]" * 100_000
    huge = 'X-Mailgun-Variables: {"a": "' + "x" * 200_000 + '"}'
    for line in (deep, huge, "X-SMTPAPI: " + "{" * 50_000):
        got = read_block(block(line))
        assert got.error == INVALID and got.empty


def test_rewriter_keeps_tag_headers_a_dkim_signature_covers(keyring: Keyring) -> None:
    from smtp_proxy.engine.linkrules import LinkPolicy
    from smtp_proxy.engine.rewriter import TrackingSettings, rewrite_message

    settings = TrackingSettings(
        base_url="https://t.example.net",
        keyring=keyring,
        policy=LinkPolicy.from_base_urls(["https://t.example.net"], ()),
    )
    signed = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s; h=from:x-clickrelay-tag;"
        b" bh=x; b=y\r\nX-Clickrelay-Tag: spring\r\nFrom: a@example.com\r\n"
        b'Content-Type: text/html\r\n\r\n<a href="https://shop.example/a">a</a>\r\n'
    )
    result = rewrite_message(signed, settings, queue_id="Q1")
    assert result.data == signed  # dkim-signed, not re-signable: byte-identical
    unsigned_tag = signed.replace(b"h=from:x-clickrelay-tag;", b"h=from;")
    result = rewrite_message(unsigned_tag, settings, queue_id="Q1")
    assert b"X-Clickrelay-Tag" not in result.data  # not covered: removed
    assert result.changed


def test_metadata_over_the_extras_cap_is_too_large_whatever_the_link_budget(
    keyring: Keyring,
) -> None:
    import dataclasses

    from smtp_proxy.engine.linkrules import LinkPolicy
    from smtp_proxy.engine.rewriter import MAX_EXTRAS_BYTES, TrackingSettings, rewrite_message

    settings = TrackingSettings(
        base_url="https://t.example.net",
        keyring=keyring,
        policy=LinkPolicy.from_base_urls(["https://t.example.net"], ()),
    )
    settings = dataclasses.replace(settings, max_link_length=1_000_000)
    values = ",\r\n ".join(f'"k{i}": "{"x" * 1000}"' for i in range(MAX_EXTRAS_BYTES // 1000 + 1))
    message = (
        f"X-Clickrelay-Metadata: {{{values}}}\r\nContent-Type: text/html\r\n\r\n"
        '<a href="https://shop.example/a">a</a>\r\n'
    ).encode()
    result = rewrite_message(message, settings, queue_id="Q1")
    assert result.reason == "metadata-too-large"
    assert b"t.example.net" not in result.data
