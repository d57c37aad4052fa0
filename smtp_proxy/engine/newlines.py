"""Bare CR / bare LF detection and normalisation for DATA content (SMTP smuggling).

SMTP ends a line with CRLF and the data with ``CRLF.CRLF``. Some MTAs also accept
``LF.LF`` or ``CR.CR`` (or mixtures) as the end of data; a client that puts such a
sequence *inside* a message, followed by ``MAIL FROM:…``, can make such a downstream
MTA see two messages where we saw one ("SMTP smuggling", CVE-2023-51764 and friends).

aiosmtpd (>= 1.4.5) ends DATA only at ``CRLF.CRLF`` and hands every other byte to the
handler unchanged, so the proxy sees the hostile sequences as bare CR / bare LF inside
``envelope.original_content``. Like Postfix's ``smtpd_forbid_bare_newline``, the proxy
then either rejects the message (``550 5.6.0``) or normalises each bare CR and bare LF
to CRLF before anything parses the message, so the upstream only ever receives
well-formed CRLF lines (and its client dot-stuffs any line that now starts with ".").

Pure functions on bytes; no I/O.
"""

from __future__ import annotations

import re

#: A CR not followed by LF, or an LF not preceded by CR.
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
#: Any line ending, well-formed or not: CRLF first so it is kept as one ending.
_ANY_EOL = re.compile(rb"\r\n|\r|\n")


def has_bare_newline(data: bytes) -> bool:
    """True when ``data`` holds a CR without LF after it or an LF without CR before it.

    Counting is done in C and is ~100x faster than the regex on a clean message: every
    CR and every LF belongs to a CRLF exactly when all three counts agree.
    """
    pairs = data.count(b"\r\n")
    return data.count(b"\r") != pairs or data.count(b"\n") != pairs


def find_bare_newline(data: bytes) -> int:
    """Offset of the first bare CR or bare LF in ``data``, or -1 when there is none."""
    if not has_bare_newline(data):
        return -1
    match = _BARE.search(data)
    return match.start() if match else -1


def normalize_newlines(data: bytes) -> bytes:
    """Every bare CR and bare LF becomes CRLF; CRLF pairs and all other bytes stay.

    Returns ``data`` itself (no copy) when there is nothing to change, so clean
    messages — nearly all of them — cost one regex scan.
    """
    if not has_bare_newline(data):
        return data
    return _ANY_EOL.sub(b"\r\n", data)
