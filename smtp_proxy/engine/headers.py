"""Editing a raw header block in place: replace or remove a header (folded lines too).

Only the named header's lines change; every other byte of the block stays as written.
"""

from __future__ import annotations

import re


def replace_header(block: bytes, name: str, value: str, eol: bytes) -> bytes:
    """``block`` with header ``name`` (every occurrence, folded lines included) replaced by
    one ``name: value`` line, or with that line appended when absent."""
    pattern = _header_re(name)
    new_line = f"{name}: {value}".encode("ascii") + eol
    if not block.endswith(b"\n"):
        block += eol
    if pattern.search(block):
        done = False

        def sub(_m: re.Match[bytes]) -> bytes:
            nonlocal done
            if done:
                return b""
            done = True
            return new_line

        return pattern.sub(sub, block)
    return block + new_line


def remove_header(block: bytes, name: str) -> bytes:
    """``block`` without any occurrence of header ``name`` (folded lines included)."""
    return _header_re(name).sub(b"", block)


def _header_re(name: str) -> re.Pattern[bytes]:
    """Every occurrence of header ``name``: its line and its folded continuation lines."""
    return re.compile(
        rb"(?im)^"
        + re.escape(name.encode("ascii"))
        + rb"[ \t]*:[^\n]*(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*"
    )
