"""Checks shared by the rewriter and proxy torture tests: "a valid rewrite or the original".

A *valid rewrite* here means: the header block is byte-identical (minus the opt-out
header), and every tracked link in the output decodes with our key to a URL that was
present in the original message (link abuse: nothing can be smuggled in).
"""

from __future__ import annotations

import email
import html
import quopri
import re

from clickrelay.common.errors import TokenError
from redirector.hosts import request_host
from redirector.tokens import Keyring

TOKEN_PATH_RE = re.compile(rb"/c/([A-Za-z0-9_-]{20,})")
#: A tracked link: its host (a version 2 token opens only with it) and its token.
TRACKED_RE = re.compile(rb"//([A-Za-z0-9.:\[\]-]+)/c/([A-Za-z0-9_-]{20,})")


_EOL_RE = re.compile(rb"\r\n|\r|\n")


def header_block(data: bytes) -> bytes:
    """The header block as a MIME parser sees it: up to the first empty line, where any
    of CRLF, CR or LF ends a line (email.feedparser's rule)."""
    previous_end = -1
    for match in _EOL_RE.finditer(data):
        if match.start() == previous_end:
            return data[: match.start()]
        previous_end = match.end()
    return data


def _variants(original: bytes) -> list[str]:
    unfolded = original.replace(b"=\r\n", b"").replace(b"=\n", b"")
    decoded = quopri.decodestring(unfolded)
    blobs = [original, unfolded, decoded]
    if b"base64" in original.lower():
        blobs.extend(_decoded_parts(original))
    out: list[str] = []
    for blob in blobs:
        for charset in ("utf-8", "latin-1"):
            text = blob.decode(charset, "replace")
            out.append(text)
            out.append(html.unescape(text))
    return out


_HTTP_START_RE = re.compile(r"(?i)https?:")
_DELIM_RE = re.compile(r"[\s\"'<>]")
_ENDS_PER_START = 4


class OriginalUrls:
    """Answers "does this URL occur in the original message?" fast for 100,000 links.

    Every URL we may mint starts with ``http:``/``https:`` (any case). For each such
    position in each decoded view of the original (raw, QP-decoded, base64 parts,
    HTML-unescaped) the substrings up to the next few delimiters (space, quote, ``<``,
    ``>``, end) go into a set; a URL found there is present. Anything else (a URL with
    a quote or space inside) falls back to an exact substring search. A plain ``in`` per
    URL would make a 100,000-link message quadratic.
    """

    def __init__(self, original: bytes) -> None:
        self._texts = _variants(original)
        self._known: set[str] = set()
        for text in self._texts:
            for match in _HTTP_START_RE.finditer(text):
                pos = match.start()
                ends = 0
                for delim in _DELIM_RE.finditer(text, pos):
                    self._known.add(text[pos : delim.start()])
                    ends += 1
                    if ends == _ENDS_PER_START:
                        break
                else:
                    self._known.add(text[pos:])

    def __contains__(self, url: str) -> bool:
        return url in self._known or any(url in text for text in self._texts)


def url_in_original(url: str, original: bytes) -> bool:
    """Whether ``url`` (as the sender wrote it) occurs in the original message."""
    return url in OriginalUrls(original)


def _decoded_parts(data: bytes) -> list[bytes]:
    """Transfer-decoded body parts (best effort; nothing for absurd nesting)."""
    out: list[bytes] = []
    try:
        for part in email.message_from_bytes(data).walk():
            if not part.is_multipart():
                payload = part.get_payload(decode=True)
                if isinstance(payload, bytes):
                    out.append(payload)
    except RecursionError:
        pass
    return out


def tracked_in(data: bytes) -> list[tuple[str, str]]:
    """(host, token) of every tracked link in ``data``, found as :func:`tokens_in` does."""
    flat = data.replace(b"=\r\n", b"").replace(b"=\n", b"")
    blobs = [flat, *(_decoded_parts(data) if b"base64" in data.lower() else [])]
    found = [
        (m.group(1).decode("ascii"), m.group(2).decode("ascii"))
        for blob in blobs
        for m in TRACKED_RE.finditer(blob)
    ]
    return list(dict.fromkeys(found))


def tokens_in(data: bytes) -> list[str]:
    """Every ``/c/<token>`` in ``data``: in the raw bytes (quoted-printable soft breaks
    removed) and in every transfer-decoded body part (base64 parts)."""
    flat = data.replace(b"=\r\n", b"").replace(b"=\n", b"")
    found = [m.decode("ascii") for m in TOKEN_PATH_RE.findall(flat)]
    if b"base64" in data.lower():
        for payload in _decoded_parts(data):
            found.extend(m.decode("ascii") for m in TOKEN_PATH_RE.findall(payload))
    return list(dict.fromkeys(found))


def check_tracked_links(data: bytes, original: bytes, keyring: Keyring) -> int:
    """Every token in ``data`` decodes, to a URL present in ``original``. Returns the count.

    Tokens already present in the original (a message carrying tracked links) are allowed
    as they are.
    """
    urls = OriginalUrls(original)
    already = set(tokens_in(original))
    count = 0
    for host, token in tracked_in(data):
        if token in already:
            continue
        try:
            link = keyring.open(token, request_host(host))
        except TokenError as exc:
            raise AssertionError(
                f"a /c/ link in the output does not decode: {token[:40]}…"
            ) from exc
        assert link.url in urls, f"link abuse: {link.url!r} not in the original"
        count += 1
    return count


def check_relayed(data: bytes, original: bytes, keyring: Keyring) -> str:
    """``data`` is the original or a valid rewrite of it; returns "original" or "rewrite"."""
    if data == original:
        return "original"
    orig_head = header_block(original)
    new_head = header_block(data)
    if new_head != orig_head:
        stripped = re.sub(
            rb"(?im)^X-Clickrelay-Track:[^\r\n]*(\r\n|\r|\n)", b"", orig_head + b"\r\n"
        )
        assert new_head + b"\r\n" == stripped, "headers changed by the rewrite"
    tracked = check_tracked_links(data, original, keyring)
    assert tracked > 0, "message changed but no tracked link found"
    return "rewrite"
