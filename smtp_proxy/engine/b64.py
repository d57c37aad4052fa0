"""Base64 bodies: strictly decoded, and encoded again with the original line length."""

from __future__ import annotations

import binascii
import re

from smtp_proxy.engine.mime_parts import MimeError

_B64_CHARS_RE = re.compile(rb"[A-Za-z0-9+/=\s]*")
_WS_RE = re.compile(rb"\s+")
#: Large contents are encoded in slices of about this many bytes, so that only the
#: result is ever held whole.
_ENCODE_SLICE = 1 << 20


def b64_decode(body: bytes) -> bytes:
    """Strictly decode a base64 body; MimeError("bad-base64") on anything irregular."""
    if not _B64_CHARS_RE.fullmatch(body):
        raise MimeError("bad-base64")
    compact = _WS_RE.sub(b"", body)
    try:
        return binascii.a2b_base64(compact, strict_mode=True) if compact else b""
    except binascii.Error:
        raise MimeError("bad-base64") from None


def b64_line_length(body: bytes) -> int:
    """The encoded line length the original used (76 when it cannot be told)."""
    stripped = body.strip()
    if b"\n" not in stripped:
        return 76  # one line only: nothing to imitate
    n = len(stripped.split(b"\n", 1)[0].rstrip(b"\r \t"))
    return n if 0 < n <= 996 and n % 4 == 0 else 76


def b64_encode(data: bytes, line_length: int, eol: bytes, trailer: bytes) -> bytes:
    """Base64 in lines of ``line_length`` characters joined by ``eol``, then ``trailer``
    (the whitespace the original body ended with)."""
    # Slices of whole lines' worth of input (a multiple of 3 bytes), so that only the
    # result is ever held whole.
    step = max(1, _ENCODE_SLICE // (line_length * 3)) * line_length * 3
    view = memoryview(data)
    pieces: list[bytes] = []
    for pos in range(0, len(data), step):
        encoded = binascii.b2a_base64(view[pos : pos + step], newline=False)
        pieces.append(
            eol.join([encoded[i : i + line_length] for i in range(0, len(encoded), line_length)])
        )
    return eol.join(pieces) + trailer
