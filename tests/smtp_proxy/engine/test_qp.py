"""The quoted-printable codec: decoding (strict about stray "="), re-encoding around
changes (unchanged lines kept byte for byte), encoding, and the C speedups' agreement
with the Python reference."""

from __future__ import annotations

import binascii
import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtp_proxy.engine import qp
from smtp_proxy.engine.mime_parts import MimeError
from smtp_proxy.engine.speedups import speedups

PROFILE = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def test_qp_decode_refuses_a_stray_equals_sign() -> None:
    assert qp.qp_decode(b"a=3Db=\r\nc\r\n") == b"a=bc\r\n"
    assert qp.qp_decode(memoryview(b"x=20y")) == b"x y"
    for bad in (b"a=ZZ", b"=", b"a = b", b"=4", b"=\x00"):
        with pytest.raises(MimeError) as info:
            qp.qp_decode(bad + b"z")
        assert info.value.reason == "bad-quoted-printable"


def test_qp_logical_lines_join_soft_breaks() -> None:
    body = b"one=\r\ntwo\r\nthree=  \r\nfour=\r\n"
    assert qp.qp_logical_lines(body) == [b"one=\r\ntwo\r\n", b"three=  \r\nfour=\r\n"]
    assert b"".join(qp.qp_logical_lines(body)) == body
    assert qp.qp_logical_lines(b"") == []


def test_qp_encode_limits_and_round_trip() -> None:
    data = ("x" * 74 + "\u00e9=" + " " * 3 + "\r\n" + "y" * 200 + " \r\nend").encode()
    encoded = qp.qp_encode(data, b"\r\n")
    assert all(len(line) <= 76 for line in encoded.split(b"\r\n"))
    assert binascii.a2b_qp(encoded) == data


@PROFILE
@given(data=st.binary(max_size=300), crlf=st.booleans())
def test_qp_encode_round_trip(data: bytes, crlf: bool) -> None:
    eol = b"\r\n" if crlf else b"\n"
    encoded = qp.qp_encode(data, eol)
    assert binascii.a2b_qp(encoded) == data
    assert all(len(line) <= qp.QP_LINE for line in encoded.split(eol))
    lines = qp.qp_logical_lines(encoded)
    assert b"".join(lines) == encoded
    assert b"".join(map(binascii.a2b_qp, lines)) == data == qp.qp_decode(encoded)


_ANY_LINE = st.binary(max_size=120)


@st.composite
def qp_edits(
    draw: st.DrawFn,
    line: st.SearchStrategy[bytes] = _ANY_LINE,
    new_chars: str = "abc:/._-",
) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    """CRLF-separated ``line``s and sorted, disjoint changes of some of their bytes."""
    lines = draw(st.lists(line, min_size=1, max_size=30))
    data = b"\r\n".join(lines) + draw(st.sampled_from([b"", b"\r\n"]))
    cuts = sorted(draw(st.sets(st.integers(0, len(data)), max_size=8)))
    changes = []
    for start, end in itertools.pairwise(cuts):
        if end > start and draw(st.booleans()):
            changes.append((start, end, draw(st.text(new_chars, min_size=1)).encode()))
    return data, changes


@PROFILE
@given(edit=qp_edits(), chunk=st.sampled_from([16, 100, 8192]), pure_python=st.booleans())
def test_qp_reencode_changes_only_what_it_must(
    edit: tuple[bytes, list[tuple[int, int, bytes]]], chunk: int, pure_python: bool
) -> None:
    data, changes = edit
    body = qp.qp_encode(data, b"\r\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qp, "_QP_CHUNK", chunk)
        if pure_python:  # the general path (the only one without the C extension)
            mp.setattr(qp, "_qp_line_starts", None)
        out = qp.qp_reencode(body, data, changes, b"\r\n")
    expected = bytearray(data)
    for start, end, new in reversed(changes):
        expected[start:end] = new
    assert binascii.a2b_qp(out) == bytes(expected)
    assert all(len(line) <= qp.QP_LINE for line in out.split(b"\r\n"))
    if not changes:
        assert out == body
    else:  # lines before the first change are the original encoded lines
        untouched = data[: changes[0][0]].count(b"\r\n")
        head = b"\r\n".join(body.split(b"\r\n")[:untouched])
        assert out.startswith(head)


LINE_STARTS = speedups.qp_line_starts if speedups else None
needs_speedups = pytest.mark.skipif(speedups is None, reason="C extension not built")


def qp_text_edits() -> st.SearchStrategy[tuple[bytes, list[tuple[int, int, bytes]]]]:
    """Text-like content (what HTML parts hold): long and short lines, "=" and 8-bit
    bytes to escape, no CR or LF inside a line; so its encoding maps line to line."""
    line = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
    return qp_edits(line=line, new_chars="abc:/._=-")


@needs_speedups
@PROFILE
@given(edit=qp_text_edits(), trailing_soft_break=st.booleans())
def test_qp_reencode_line_mapping_matches_the_general_path(
    edit: tuple[bytes, list[tuple[int, int, bytes]]], trailing_soft_break: bool
) -> None:
    """The fast path (lines found by counting line breaks, only touched lines decoded)
    gives the very bytes of the general one (every piece decoded and compared)."""
    data, changes = edit
    body = qp.qp_encode(data, b"\r\n") + (b"=" if trailing_soft_break else b"")
    assert qp.qp_decode(body) == data
    mapped = None
    if changes:
        mapped = qp._qp_reencode_mapped(body, data, changes, b"\r\n", LINE_STARTS)
        assert mapped is not None  # text content always maps line to line
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qp, "_qp_line_starts", None)
        general = qp.qp_reencode(body, data, changes, b"\r\n")
    assert bytes(qp.qp_reencode(body, data, changes, b"\r\n")) == bytes(general)
    if mapped is not None:
        assert bytes(mapped) == bytes(general)


@needs_speedups
@pytest.mark.parametrize(
    "body",
    [
        b'a=3Db=0Ac\r\nhref=3D"x"\r\n',  # an escaped line feed: lines do not map
        b'a=0a\nhref=3D"x"\n',
    ],
)
def test_qp_reencode_line_mapping_declines_bodies_it_cannot_map(body: bytes) -> None:
    decoded = qp.qp_decode(body)
    start = decoded.index(b"x")
    changes = [(start, start + 1, b"https://t.example/c/T")]
    assert qp._qp_reencode_mapped(body, decoded, changes, b"\r\n", LINE_STARTS) is None
    out = qp.qp_reencode(body, decoded, changes, b"\r\n")  # the general path
    assert binascii.a2b_qp(bytes(out)) == decoded.replace(b"x", b"https://t.example/c/T")


@PROFILE
@given(edit=qp_edits(), chunk=st.sampled_from([16, 100, 8192]), small_run=st.sampled_from([0, 64]))
def test_qp_reencode_of_a_view_keeps_the_lines_after_the_last_change(
    edit: tuple[bytes, list[tuple[int, int, bytes]]], chunk: int, small_run: int
) -> None:
    """The rewriter passes a memoryview into the whole message; pieces after the last
    change are copied without being decoded: they must come out as they were.
    ``small_run``: below this decoded size pieces are decoded all at once, above it
    one by one, only up to the last change (the path of large parts)."""
    data, changes = edit
    body = qp.qp_encode(data, b"\r\n")
    message = b"head\r\n\r\n" + body + b"\r\n--tail--\r\n"
    view = memoryview(message)[8 : 8 + len(body)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qp, "_QP_CHUNK", chunk)
        mp.setattr(qp, "_SMALL_RUN", small_run)
        reference = qp.qp_reencode(body, data, changes, b"\r\n")
        mp.setattr(qp, "_SMALL_RUN", 1 << 30)
        assert bytes(qp.qp_reencode(body, data, changes, b"\r\n")) == bytes(reference)
        mp.setattr(qp, "_SMALL_RUN", small_run)
        from_view = qp.qp_reencode(view, data, changes, b"\r\n")
        from_bytes = qp.qp_reencode(body, data, changes, b"\r\n")
    assert bytes(from_view) == bytes(from_bytes)
    if changes:
        after = data[changes[-1][1] :]
        if b"\r\n" in after:  # the whole lines after the last change's line
            tail_lines = after.split(b"\r\n", 1)[1]
            assert binascii.a2b_qp(bytes(from_view)).endswith(tail_lines)
            encoded_tail = qp.qp_encode(tail_lines, b"\r\n")
            assert bytes(from_view).endswith(encoded_tail)


@PROFILE
@given(data=st.binary(max_size=600), crlf=st.booleans(), size=st.integers(1, 64))
def test_qp_encode_in_slices_is_the_same_as_whole(data: bytes, crlf: bool, size: int) -> None:
    eol = b"\r\n" if crlf else b"\n"
    whole = qp.qp_encode(data, eol)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(qp, "_ENCODE_SLICE", size)
        sliced = qp.qp_encode(data, eol)
    assert sliced == whole
    assert binascii.a2b_qp(sliced) == data


@needs_speedups
@PROFILE
@given(body=st.binary(max_size=300).map(lambda b: b.replace(b"\0", b"=")))
def test_qp_line_starts_agree_with_decoding_line_by_line(body: bytes) -> None:
    """Any bytes, soft breaks and "==" included: where the C helper says decoded line
    n starts, decoding the body from there gives the decoded content from line n on."""
    decoded = binascii.a2b_qp(body)
    count = decoded.count(b"\n")
    starts = LINE_STARTS(body, list(range(count + 1)))
    if starts is None:
        assert b"=0a" in body.lower()  # only an escaped line feed may refuse
        return
    assert starts[0] == 0
    for n, start in enumerate(starts):
        expected = decoded.split(b"\n", n)[n] if n else decoded
        assert binascii.a2b_qp(body[start:]) == expected


@needs_speedups
@PROFILE
@given(body=st.binary(max_size=200).map(lambda b: b.replace(b"\0", b"=")))
def test_qp_valid_is_the_regex(body: bytes) -> None:
    assert speedups is not None
    assert speedups.qp_valid(body) == (qp._BAD_QP_RE.search(body) is None)
    assert speedups.qp_valid(memoryview(body)) == speedups.qp_valid(body)
