"""Fixed-length base36 (``0-9a-z``) for byte strings: one word, no separators, any case.

A byte string of length ``n`` always encodes to :func:`encoded_length` ``(n)``
lower-case characters (leading zero bytes included), so the length tells the decoder how
many bytes to produce. Decoding ignores case: a link that a gateway or a person
upper-cased still decodes to the same bytes; apart from case, a string whose length no
byte count encodes to, or whose value does not fit in that many bytes, is refused, so a
changed character never decodes to the same bytes.

Decoding is one C call (``int(text, 36)``) after a C check of the characters: it runs
for every click. Encoding (once per tracked link) is a short Python loop over 12-digit
chunks (36**12 < 2**63), each split into four 3-digit groups looked up in a table
(46,656 strings, built on the first encode: the redirector never needs it).
"""

from __future__ import annotations

import math
from functools import cache

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_CHUNK_BASE = 36**12
_TRIPLE_BASE = 36**3
#: Longest input we encode or decode (a token is far shorter; this bounds the int()).
MAX_BYTES = 8192


_BITS_PER_CHAR = math.log2(36)


def _length(nbytes: int) -> int:
    """The smallest c with 36**c >= 256**nbytes."""
    estimate = nbytes * 8 / _BITS_PER_CHAR
    chars = math.ceil(estimate)
    if abs(estimate - round(estimate)) < 1e-6:  # too close to call in floating point
        chars = round(estimate)
        while 36**chars < 256**nbytes:
            chars += 1
    return chars


def encoded_length(nbytes: int) -> int:
    """Characters that ``nbytes`` bytes take: the smallest c with 36**c >= 256**nbytes."""
    return _length(nbytes)


_MAX_CHARS = _length(MAX_BYTES)


@cache  # one entry per length up to _MAX_CHARS: at most a few thousand
def _bytes_for_chars(chars: int) -> int | None:
    """The byte count that encodes to ``chars`` characters, None if there is none. Each
    byte adds more than one character (8 bits > 5.17), so no two byte counts share a
    character count; the one that could is next to ``chars * 5.17 / 8``."""
    if chars > _MAX_CHARS:
        return None
    estimate = int(chars * _BITS_PER_CHAR / 8)
    for nbytes in (estimate, estimate + 1, estimate - 1):
        if 0 <= nbytes <= MAX_BYTES and _length(nbytes) == chars:
            return nbytes
    return None


def encode(data: bytes) -> str:
    """``data`` as :func:`encoded_length` ``(len(data))`` lower-case base36 characters."""
    if len(data) > MAX_BYTES:
        raise ValueError("too long for base36 encoding")
    value = int.from_bytes(data, "big")
    triples = _triples()
    out: list[str] = []
    while value:  # least significant group first; reversed below
        value, chunk = divmod(value, _CHUNK_BASE)
        chunk, d = divmod(chunk, _TRIPLE_BASE)
        chunk, c = divmod(chunk, _TRIPLE_BASE)
        a, b = divmod(chunk, _TRIPLE_BASE)
        out += (triples[d], triples[c], triples[b], triples[a])
    out.reverse()
    return "".join(out).lstrip("0").rjust(_length(len(data)), "0")


@cache
def _triples() -> tuple[str, ...]:
    return tuple(a + b + c for a in ALPHABET for b in ALPHABET for c in ALPHABET)


def decode(text: str) -> bytes:
    """The bytes that ``text`` encodes (any case); ValueError for anything else."""
    nbytes = _bytes_for_chars(len(text))
    # isascii + isalnum: exactly [0-9A-Za-z] (int() alone would also take "_", spaces
    # and a sign).
    if nbytes is None or not (text.isascii() and text.isalnum()):
        raise ValueError("not base36")
    value = int(text, 36)
    if value >> (8 * nbytes):
        raise ValueError("not a canonical base36 encoding")
    return value.to_bytes(nbytes, "big")
