"""Bare CR/LF detection and normalisation (the SMTP smuggling defence), as pure functions.

The end-to-end smuggling tests (raw sockets through the proxy to a sink) are in
tests/smtp_proxy/smtp/test_proxy_security.py.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_proxy.engine.newlines import find_bare_newline, has_bare_newline, normalize_newlines


@pytest.mark.parametrize(
    ("data", "offset"),
    [
        (b"", -1),
        (b"Subject: x\r\n\r\nbody\r\n", -1),
        (b"a\nb\r\n", 1),
        (b"a\rb\r\n", 1),
        (b"body\r\n\n.\nMAIL FROM:<x@y>\r\n", 6),  # \n.\n after a good line
        (b"body\r\r\n", 4),  # CR CR LF: the first CR is bare
        (b"body\r\n\r.\rMAIL\r\n", 6),  # \r.\r
        (b"x\n.\r\n", 1),  # \n.\r\n
        (b"x\r\n.\nMAIL\r\n", 4),  # \r\n.\n
        (b"ends with bare cr\r", 17),
        (b"\nstarts with bare lf\r\n", 0),
    ],
)
def test_find_bare_newline(data: bytes, offset: int) -> None:
    assert find_bare_newline(data) == offset
    assert has_bare_newline(data) is (offset >= 0)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a\r\nb\r\n", b"a\r\nb\r\n"),
        (b"a\nb\r\n", b"a\r\nb\r\n"),
        (b"a\rb\r\n", b"a\r\nb\r\n"),
        (b"a\r\r\nb", b"a\r\n\r\nb"),
        (b"a\n\rb", b"a\r\n\r\nb"),  # LF then CR: two bare endings, not one CRLF
        (b"x\r\n.\nMAIL FROM:<a@b>\r\n", b"x\r\n.\r\nMAIL FROM:<a@b>\r\n"),
    ],
)
def test_normalize_newlines(data: bytes, expected: bytes) -> None:
    assert normalize_newlines(data) == expected


def test_normalize_returns_clean_input_itself() -> None:
    data = b"Subject: x\r\n\r\nclean\r\n"
    assert normalize_newlines(data) is data


_line_bytes = st.binary(max_size=200)


@settings(max_examples=200, deadline=None)
@given(_line_bytes)
def test_normalized_output_has_no_bare_newlines(data: bytes) -> None:
    out = normalize_newlines(data)
    assert not has_bare_newline(out)
    assert find_bare_newline(out) == -1
    # Only line endings change: the non-newline bytes are the same, in the same order.
    assert out.replace(b"\r", b"").replace(b"\n", b"") == data.replace(b"\r", b"").replace(
        b"\n", b""
    )
    # Idempotent.
    assert normalize_newlines(out) == out


@settings(max_examples=200, deadline=None)
@given(_line_bytes)
def test_detection_matches_a_naive_scan(data: bytes) -> None:
    naive = -1
    for i, byte in enumerate(data):
        if byte == 0x0D and data[i + 1 : i + 2] != b"\n":
            naive = i
            break
        if byte == 0x0A and (i == 0 or data[i - 1] != 0x0D):
            naive = i
            break
    assert find_bare_newline(data) == naive


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))))
def test_crlf_lines_are_clean(lines: list[bytes]) -> None:
    data = b"".join(line + b"\r\n" for line in lines)
    assert find_bare_newline(data) == -1
    assert normalize_newlines(data) is data


def test_normalized_smuggling_payload_keeps_one_message_worth_of_lines() -> None:
    payload = b"Subject: a\r\n\r\nhello\n.\nMAIL FROM:<evil@x>\nRCPT TO:<v@y>\nDATA\nevil\r\n"
    out = normalize_newlines(payload)
    assert re.findall(rb"(?<!\r)\n|\r(?!\n)", out) == []
    assert out.count(b"\r\n") == payload.count(b"\n")
