"""MIME structure as offsets into the original bytes: entities, header blocks, multipart
boundaries, and the bad structure that makes the rewriter leave a message alone."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_proxy.engine import mime_parts
from smtp_proxy.engine.mime_parts import MAX_DEPTH, MimeError, walk
from tests.support.mime_samples import nested_multipart

NESTED = (
    b"From: a@example.com\r\n"
    b'Content-Type: multipart/mixed; boundary="outer"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--outer\r\n"
    b"Content-Type: multipart/alternative; boundary=inner\r\n"
    b"\r\n"
    b"--inner\r\n"
    b"Content-Type: text/plain; charset=UTF-8\r\n"
    b"\r\n"
    b"plain body\r\n"
    b"--inner\r\n"
    b'Content-Type: text/html; charset="ISO-8859-1"\r\n'
    b"Content-Transfer-Encoding: Quoted-Printable\r\n"
    b"\r\n"
    b"<p>html body</p>\r\n"
    b"--inner--\r\n"
    b"--outer\r\n"
    b"Content-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename=x.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"JVBERi0=\r\n"
    b"--outer--  \r\n"
    b"epilogue\r\n"
)


def body(data: bytes, entity: mime_parts.Entity) -> bytes:
    return data[entity.body_start : entity.end]


def test_walk_finds_every_entity_as_offsets() -> None:
    entities = walk(NESTED)
    assert [(e.path, e.depth, e.headers.content_type) for e in entities] == [
        ("1", 0, "multipart/mixed"),
        ("1", 1, "multipart/alternative"),
        ("1.1", 2, "text/plain"),
        ("1.2", 2, "text/html"),
        ("2", 1, "application/pdf"),
    ]
    top, alt, plain, html, pdf = entities
    assert (top.start, top.eol, top.headers.boundary) == (0, b"\r\n", "outer")
    assert alt.headers.boundary == "inner"
    # Bodies end before the line break that belongs to the next delimiter.
    assert body(NESTED, plain) == b"plain body"
    assert body(NESTED, html) == b"<p>html body</p>"
    assert body(NESTED, pdf) == b"JVBERi0="
    assert (plain.headers.charset, plain.headers.transfer_encoding) == ("utf-8", "")
    assert (html.headers.charset, html.headers.transfer_encoding) == (
        "iso-8859-1",
        "quoted-printable",
    )
    assert pdf.headers.disposition == "attachment"
    # Header blocks are where the offsets say.
    assert NESTED[html.start : html.header_end].startswith(b"Content-Type: text/html")
    assert NESTED[html.header_end : html.body_start] == b"\r\n"


def test_lf_only_message_and_defaults() -> None:
    data = b"Subject: hi\n\nbody\n"
    (entity,) = walk(data)
    assert entity.eol == b"\n" and body(data, entity) == b"body\n"
    headers = entity.headers
    assert (headers.content_type, headers.charset, headers.disposition) == ("text/plain", None, "")
    assert headers.protection is None


def test_split_entity_without_blank_line_is_all_headers() -> None:
    data = b"Subject: only headers\r\nX: y\r\n"
    assert mime_parts.split_entity(data, 0, len(data)) == (len(data), len(data), b"\r\n")
    assert mime_parts.split_entity(b"\r\nbody", 0, 6) == (0, 2, b"\r\n")
    assert mime_parts.split_entity(b"\nbody", 0, 5) == (0, 1, b"\n")


def test_multipart_digest_children_default_to_message_rfc822() -> None:
    data = (
        b"Content-Type: multipart/digest; boundary=d\r\n\r\n"
        b"--d\r\n\r\nSubject: inner\r\n\r\ntext\r\n--d--\r\n"
    )
    assert [e.headers.content_type for e in walk(data)] == ["multipart/digest", "message/rfc822"]


def test_signed_and_encrypted_multiparts_are_not_looked_into() -> None:
    data = (
        b'Content-Type: multipart/signed; boundary=s; protocol="application/pgp-signature"\r\n'
        b"\r\n--s\r\nContent-Type: text/html\r\n\r\n<a href=x>x</a>\r\n--s--\r\n"
    )
    (top,) = walk(data)
    assert top.headers.protection == "signed"
    assert mime_parts.parse_headers(b"Content-Type: application/pkcs7-mime\r\n").protection == (
        "encrypted"
    )


def test_rfc2231_charset_and_mbox_separator() -> None:
    block = (
        b"From someone Thu Jan  1 00:00:00 2026\r\n"
        b"Content-Type: text/plain; charset*=utf-8''UTF-8\r\n"
    )
    assert mime_parts.parse_headers(block).charset == "utf-8"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"Subject: x\r\n\r\nnul \x00 byte", "nul-bytes"),
        (b"Subject: caf\xe9\r\n\r\nbody", "8bit-headers"),
        (b"Subject: x\r\nthis is not a header\r\n\r\nbody", "bad-header-line"),
        (b"Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nbody\r\n--x--\r\n", "missing-boundary"),
        (
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nno close",
            "missing-boundary",
        ),
        (
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\nno delimiter at all",
            "missing-boundary",
        ),
        (b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x--\r\n", "missing-boundary"),
        (
            b"Content-Type: multipart/mixed; boundary=" + b"b" * 201 + b"\r\n\r\n",
            "bad-boundary",
        ),
        (
            b"Content-Type: multipart/mixed; boundary=x\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nLS14DQo=\r\n",
            "encoded-multipart",
        ),
    ],
)
def test_bad_structure_is_a_mime_error_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(MimeError) as info:
        walk(data)
    assert info.value.reason == reason


def _nested(depth: int) -> bytes:
    return nested_multipart(depth, b"Content-Type: text/plain\r\n\r\nleaf\r\n")


def test_nesting_limit() -> None:
    assert walk(_nested(MAX_DEPTH))[-1].depth == MAX_DEPTH
    with pytest.raises(MimeError) as info:
        walk(_nested(MAX_DEPTH + 1))
    assert info.value.reason == "too-deep"


def test_has_long_line_only_looks_at_the_lines_given() -> None:
    short = b"a" * 998
    long = b"b" * 999
    data = short + b"\r\n" + long + b"\r\n" + short
    assert mime_parts.has_long_line(data, [len(short) + 5])
    assert not mime_parts.has_long_line(data, [3, len(data) - 3])
    assert not mime_parts.has_long_line(short, [0])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_give_entities_or_a_mime_error(data: bytes) -> None:
    try:
        entities = walk(data)
    except MimeError as exc:
        assert exc.reason
        return
    assert entities[0].start == 0 and entities[0].end == len(data)
    for entity in entities:
        assert 0 <= entity.start <= entity.header_end <= entity.body_start <= entity.end
        assert entity.end <= len(data)


_LINES = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=x",
        b"Content-Type: text/html",
        b"--x",
        b"--x--",
        b"",
        b"body <a href=https://e.example/>",
        b" folded",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINES, max_size=14), st.sampled_from([b"\r\n", b"\n"]))
def test_random_multipart_shapes_never_crash(lines: list[bytes], eol: bytes) -> None:
    data = eol.join(lines)
    try:
        entities = walk(data)
    except MimeError:
        return
    for entity in entities:
        assert entity.start <= entity.body_start <= entity.end <= len(data)
