"""What goes on the wire to the upstream: command arguments and the DATA phase's bytes.

Pure functions, no I/O: the transaction writes what these return.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from smtp_proxy.engine.newlines import normalize_newlines
from smtp_proxy.upstream.types import Reply

#: Target size of one DATA write; pieces are cut after a line end.
DATA_CHUNK = 256 * 1024
_LEADING_DOT = re.compile(rb"(?m)^\.")


def chunk_for_wire(piece: bytes) -> bytes:
    """CRLF line ends and dot-stuffing for a piece that starts at a line start."""
    piece = normalize_newlines(piece)
    if piece.startswith(b".") or b"\n." in piece:
        piece = _LEADING_DOT.sub(b"..", piece)
    return piece


def data_pieces(message: bytes) -> Iterator[bytes]:
    """``message`` as the DATA phase sends it, in pieces of about :data:`DATA_CHUNK` bytes.

    Each piece is cut after a newline, so it starts at a line start, where stuffing is
    decided; bare CR or LF become CRLF and a leading ``.`` is doubled, so no byte sequence
    in ``message`` can end the DATA early. The end-of-data mark is not included (see
    :func:`end_of_data`).
    """
    size = len(message)
    pos = 0
    while pos < size:
        end = pos + DATA_CHUNK
        if end < size:
            newline = message.find(b"\n", end)
            end = size if newline < 0 else newline + 1
        else:
            end = size
        yield chunk_for_wire(message[pos:end])
        pos = end


def end_of_data(last_piece: bytes) -> bytes:
    """The end-of-data mark after ``last_piece`` (empty for an empty message)."""
    return b".\r\n" if last_piece.endswith(b"\r\n") else b"\r\n.\r\n"


def command_args(
    verb: bytes, address: str, options: Sequence[str], *, utf8: bool
) -> tuple[bytes, ...] | Reply:
    """``MAIL FROM:<addr> opts`` as bytes, or a local refusal for unsendable input.

    ``utf8``: the transaction's MAIL carried SMTPUTF8, so addresses go out as UTF-8.
    """
    try:
        addr = address.encode("utf-8" if utf8 else "ascii")
        opts = tuple(option.encode("ascii") for option in options)
    except UnicodeEncodeError:
        return Reply(553, "5.6.7 Non-ASCII address needs SMTPUTF8")
    if any((c < 0x21 and c != 0x20) or c == 0x7F for c in addr) or any(
        c < 0x21 or c == 0x7F for opt in opts for c in opt
    ):
        return Reply(501, "5.5.4 Control characters in address or parameter")
    return (verb + b"<" + addr + b">", *opts)
