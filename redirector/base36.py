"""Fixed-length base36 (``0-9a-z``) for byte strings: one word, no separators, any case.

A byte string of length ``n`` always encodes to :func:`encoded_length` ``(n)``
lower-case characters (leading zero bytes included), so the length tells the decoder how
many bytes to produce. Decoding ignores case: a link that a gateway or a person
upper-cased still decodes to the same bytes; apart from case, a string whose length no
byte count encodes to, or whose value does not fit in that many bytes, is refused, so a
changed character never decodes to the same bytes.

Decoding is one C call (``int(text, 36)``) after a C check of the characters: it runs
for every click. Encoding (once per tracked link) is a short Python loop over 12-digit
chunks (36**12 < 2**63) with a table of 2-digit pairs.
"""

from __future__ import annotations

import math

ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_CHUNK = 12
_CHUNK_BASE = 36**_CHUNK
_PAIR_BASE = 36 * 36
_PAIRS = tuple(a + b for a in ALPHABET for b in ALPHABET)
#: Longest input we encode or decode (a token is far shorter; this bounds the int()).
MAX_BYTES = 8192


def encoded_length(nbytes: int) -> int:
    """Characters that ``nbytes`` bytes take: the smallest c with 36**c >= 256**nbytes."""
    chars = math.ceil(nbytes * 8 / math.log2(36))
    while 36**chars < 256**nbytes:  # make the float estimate exact
        chars += 1
    while chars and 36 ** (chars - 1) >= 256**nbytes:
        chars -= 1
    return chars


#: Character count -> byte count. Each byte adds more than one character (8 bits >
#: 5.17), so no two byte counts share a character count.
_BYTES_FOR_CHARS = {encoded_length(n): n for n in range(MAX_BYTES + 1)}


def encode(data: bytes) -> str:
    """``data`` as :func:`encoded_length` ``(len(data))`` lower-case base36 characters."""
    if len(data) > MAX_BYTES:
        raise ValueError("too long for base36 encoding")
    value = int.from_bytes(data, "big")
    pairs = _PAIRS
    out: list[str] = []
    while value:
        value, chunk = divmod(value, _CHUNK_BASE)
        for _ in range(_CHUNK // 2):  # least significant pair first; reversed below
            chunk, pair = divmod(chunk, _PAIR_BASE)
            out.append(pairs[pair])
    out.reverse()
    return "".join(out).lstrip("0").rjust(encoded_length(len(data)), "0")


def decode(text: str) -> bytes:
    """The bytes that ``text`` encodes (any case); ValueError for anything else."""
    nbytes = _BYTES_FOR_CHARS.get(len(text))
    # isascii + isalnum: exactly [0-9A-Za-z] (int() alone would also take "_", spaces
    # and a sign).
    if nbytes is None or not (text.isascii() and text.isalnum()):
        raise ValueError("not base36")
    value = int(text, 36)
    if value >> (8 * nbytes):
        raise ValueError("not a canonical base36 encoding")
    return value.to_bytes(nbytes, "big")
