"""The upstream's wire bytes, without a socket: DATA pieces, end-of-data, command args."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtp_proxy.upstream import wire
from smtp_proxy.upstream.types import Reply

TRICKY = st.lists(
    st.sampled_from([b".", b"..", b"\r\n", b"\n", b"\r", b"x", b"\r\n.\r\n", b"\n.\n", b"a.b"]),
    max_size=40,
).map(b"".join)


def stuffed_whole(message: bytes) -> bytes:
    """The reference: CRLF everywhere, then every line start's dot doubled, in one go."""
    crlf = re.sub(rb"\r\n|\r|\n", b"\r\n", message)
    return re.sub(rb"(?m)^\.", b"..", crlf)


def stream(message: bytes, monkeypatch: pytest.MonkeyPatch, chunk: int) -> list[bytes]:
    monkeypatch.setattr(wire, "DATA_CHUNK", chunk)
    return list(wire.data_pieces(message))


@settings(max_examples=200)
@given(TRICKY, st.integers(min_value=1, max_value=12))
def test_pieces_are_the_whole_message_stuffed(message: bytes, chunk: int) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        pieces = stream(message, monkeypatch, chunk)
    assert b"".join(pieces) == stuffed_whole(message)
    assert all(pieces), "an empty piece would be a wasted write"
    for piece in pieces[:-1]:
        assert piece.endswith(b"\n"), "a piece must end at a line end"


@settings(max_examples=200)
@given(TRICKY, st.integers(min_value=1, max_value=12))
def test_only_the_end_mark_ends_the_data(message: bytes, chunk: int) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        pieces = stream(message, monkeypatch, chunk)
    sent = b"".join(pieces) + wire.end_of_data(pieces[-1] if pieces else b"")
    lines = sent.split(b"\r\n")
    assert lines[-1] == b"" and lines[-2] == b"."
    assert b"." not in lines[:-2], "a lone dot before the end would end the DATA early"
    assert b"\r" not in sent.replace(b"\r\n", b"") and b"\n" not in sent.replace(b"\r\n", b"")


def test_big_message_is_cut_near_the_chunk_size() -> None:
    line = b"y" * 77 + b"\r\n"
    message = line * (3 * wire.DATA_CHUNK // len(line))
    pieces = list(wire.data_pieces(message))
    assert len(pieces) == 3 or len(pieces) == 4
    assert all(len(p) <= wire.DATA_CHUNK + len(line) for p in pieces)


def test_end_of_data() -> None:
    assert wire.end_of_data(b"x\r\n") == b".\r\n"
    assert wire.end_of_data(b"x") == b"\r\n.\r\n"
    assert wire.end_of_data(b"") == b"\r\n.\r\n"


def test_command_args() -> None:
    assert wire.command_args(b"MAIL FROM:", "a@example.com", ["SIZE=10"], utf8=False) == (
        b"MAIL FROM:<a@example.com>",
        b"SIZE=10",
    )
    assert wire.command_args(b"RCPT TO:", "\u00fc@example.org", [], utf8=True) == (
        "RCPT TO:<\u00fc@example.org>".encode(),
    )
    assert wire.command_args(b"RCPT TO:", "\u00fc@example.org", [], utf8=False) == Reply(
        553, "5.6.7 Non-ASCII address needs SMTPUTF8"
    )


@given(st.text(max_size=20), st.lists(st.text(max_size=8), max_size=3), st.booleans())
def test_command_args_never_carry_a_line_break(
    address: str, options: list[str], utf8: bool
) -> None:
    """Bad input is a local refusal, never a crash and never a second command."""
    args = wire.command_args(b"MAIL FROM:", address, options, utf8=utf8)
    if isinstance(args, Reply):
        assert args.code in (501, 553)
        return
    joined = b" ".join(args)
    assert b"\r" not in joined and b"\n" not in joined and b"\x00" not in joined
