"""Header editing on raw header blocks: only the named header's lines change."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from smtp_proxy.engine import headers


def test_replace_header_handles_folded_values() -> None:
    block = b"A: 1\r\nContent-Transfer-Encoding:\r\n  7bit\r\nB: 2\r\n"
    out = headers.replace_header(block, "Content-Transfer-Encoding", "quoted-printable", b"\r\n")
    assert out == b"A: 1\r\nContent-Transfer-Encoding: quoted-printable\r\nB: 2\r\n"


def test_replace_header_appends_when_absent_and_keeps_one_line() -> None:
    block = b"A: 1\nB: 2"
    out = headers.replace_header(block, "Content-Transfer-Encoding", "quoted-printable", b"\n")
    assert out == b"A: 1\nB: 2\nContent-Transfer-Encoding: quoted-printable\n"
    twice = b"X: a\r\nx: b\r\n c\r\nY: d\r\n"
    assert headers.replace_header(twice, "X", "new", b"\r\n") == b"X: new\r\nY: d\r\n"


def test_remove_header_removes_every_occurrence_with_its_folded_lines() -> None:
    block = (
        b"DKIM-Signature: v=1; a=rsa-sha256;\r\n\tb=abc\r\nFrom: a@example.com\r\n"
        b"dkim-signature : v=1;\r\n  d=x\r\nX-DKIM-Signature: kept\r\nSubject: s\r\n"
    )
    assert headers.remove_header(block, "DKIM-Signature") == (
        b"From: a@example.com\r\nX-DKIM-Signature: kept\r\nSubject: s\r\n"
    )
    assert headers.remove_header(block, "Missing") == block
    # A header name that is a prefix of another is not that other header.
    assert headers.remove_header(b"Subject-X: 1\nSubject: 2\n", "Subject") == b"Subject-X: 1\n"


_NAME = st.sampled_from(["From", "To", "Subject", "X-Clickrelay-Track", "DKIM-Signature"])
_VALUE = st.text(alphabet="abc =;:", max_size=10)


@given(st.lists(st.tuples(_NAME, _VALUE, st.booleans()), max_size=8), _NAME)
def test_remove_header_keeps_every_other_line(
    fields: list[tuple[str, str, bool]], name: str
) -> None:
    lines = []
    for field_name, value, folded in fields:
        line = f"{field_name}: {value}\r\n" + (" more\r\n" if folded else "")
        lines.append((field_name, line.encode()))
    block = b"".join(line for _, line in lines)
    expected = b"".join(line for n, line in lines if n.lower() != name.lower())
    assert headers.remove_header(block, name) == expected
