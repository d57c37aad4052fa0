"""One text body part on its way through the rewriter: decoded, scanned for links, and
encoded again with the changed links spliced in.

A :class:`PartJob` is made for each text/html and text/plain part that is not an
attachment (:func:`body_text_kind`). :func:`decode_part` undoes its transfer encoding and
charset (refusing what it cannot read back the same) and finds its links
(:mod:`smtp_proxy.engine.html_scan`, :mod:`smtp_proxy.engine.text_links`);
:func:`html_verdict` runs the lxml cross-check on an HTML part that is going to change;
:func:`encode_part_edits` turns its tracked links into byte edits of the message
(:mod:`smtp_proxy.engine.splice`). The scan and the cross-check of recent HTML texts are
cached (:func:`clear_caches`).
"""

from __future__ import annotations

import codecs
import functools
import re
from dataclasses import dataclass, field

from smtp_proxy.engine import b64, qp
from smtp_proxy.engine.html_scan import FoundLink, HtmlScan
from smtp_proxy.engine.html_verify import check_links, find_html_links
from smtp_proxy.engine.mime_parts import Entity, MimeError
from smtp_proxy.engine.rewrite_types import LinkDecision, TrackingSettings
from smtp_proxy.engine.splice import Edit, encode_part, spliced_decoded
from smtp_proxy.engine.text_links import find_text_links

_HREF_RE = re.compile(r"href", re.I)
_HTTP_RE = re.compile(r"https?:", re.I)
_HREF_B_RE = re.compile(rb"href", re.I)
_HTTP_B_RE = re.compile(rb"https?:", re.I)
_PGP_MARK = "-----BEGIN PGP "


@dataclass
class PartJob:
    """One text body part with its decoded content and the links found in it."""

    entity: Entity
    kind: str  # "html" | "text"
    #: The encoded body: a view into the message for quoted-printable (never copied
    #: whole), else a copy of its bytes.
    body: bytes | memoryview = b""
    decoded: bytes = b""  # after transfer decoding
    text: str = ""
    codec: str = "ascii"
    errors: str = "strict"
    links: tuple[FoundLink, ...] = ()
    scan: HtmlScan | None = None  # HTML parts: the scan, lxml cross-check still to do
    decisions: list[tuple[FoundLink, LinkDecision]] = field(default_factory=list)
    #: Markup inserted at a point (start == end) rather than a link replaced: the trap.
    insertions: list[tuple[FoundLink, str]] = field(default_factory=list)


def body_text_kind(entity: Entity) -> str | None:
    """ "html" or "text" for a text body part the rewriter reads, else None."""
    h = entity.headers
    if h.disposition == "attachment":
        return None
    if h.content_type == "text/html":
        return "html"
    if h.content_type == "text/plain":
        return "text"
    return None


def decode_part(data: bytes, job: PartJob, settings: TrackingSettings) -> None:
    """Fill in ``job``'s body, decoded bytes, text and links from ``data`` (the message).
    Raises MimeError with the reason the part must be left alone."""
    entity = job.entity
    cte = entity.headers.transfer_encoding
    if cte in ("", "7bit", "8bit", "binary"):
        job.body = job.decoded = data[entity.body_start : entity.end]
    elif cte == "quoted-printable":
        # A view: the encoded body is only read (decoded now, unchanged lines copied
        # into the new body later), so a large part costs no copy of it.
        job.body = memoryview(data)[entity.body_start : entity.end]
        job.decoded = qp.qp_decode(job.body)
    elif cte == "base64":
        job.body = data[entity.body_start : entity.end]
        job.decoded = b64.b64_decode(job.body)
    else:
        raise MimeError("unknown-transfer-encoding")
    # Most parts have no link at all: look for one in the bytes before paying for the
    # charset decoding (links are ASCII in every charset a mail client would use here).
    if job.kind == "text" and not settings.text_links:
        return
    marker, marker_re = (b"href", _HREF_B_RE) if job.kind == "html" else (b"http", _HTTP_B_RE)
    if marker not in job.decoded and marker_re.search(job.decoded) is None:
        return
    charset = entity.headers.charset
    if charset is None:
        # No charset: read as ASCII, keep 8-bit bytes as surrogates so they round-trip;
        # a link containing one is skipped (we cannot know what it means).
        job.codec, job.errors = "ascii", "surrogateescape"
    else:
        try:
            job.codec = codecs.lookup(charset).name
        except LookupError:
            raise MimeError("unknown-charset") from None
    try:
        job.text = job.decoded.decode(job.codec, job.errors)
    except (UnicodeDecodeError, ValueError):
        raise MimeError("charset-decode-error") from None
    # Whether the charset gives back the same bytes is checked where it matters, when a
    # changed part is encoded again (spliced_decoded compares every byte).
    if _PGP_MARK in job.text:
        raise MimeError("inline-pgp")
    if job.kind == "html":
        # Plain substring tests first: a case-insensitive regex search costs far more.
        if "href" not in job.text and _HREF_RE.search(job.text) is None:
            return
        # The lxml cross-check is the costly half: it runs later, only for parts in
        # which some link is really going to be tracked.
        job.scan = _scan_html(job.text)
        job.links = job.scan.links
    elif "http" in job.text or _HTTP_RE.search(job.text):
        job.links = find_text_links(job.text)


# A campaign sends the same HTML to many recipients, one message each: the scan and the
# lxml cross-check depend on the text alone, so their results are kept for recent texts.
# Bounded: at most _CACHE_ENTRIES texts of at most _CACHE_MAX_CHARS characters are held.
_CACHE_ENTRIES = 64
_CACHE_MAX_CHARS = 256 * 1024


@functools.lru_cache(maxsize=_CACHE_ENTRIES)
def _cached_scan(html: str) -> HtmlScan:
    return find_html_links(html, check=False)


@functools.lru_cache(maxsize=_CACHE_ENTRIES)
def _cached_verdict(html: str, upto: int) -> str | None:
    return check_links(html, _cached_scan(html), upto=upto)


def _scan_html(html: str) -> HtmlScan:
    """The links of ``html`` (without the lxml cross-check)."""
    if len(html) > _CACHE_MAX_CHARS:
        return find_html_links(html, check=False)
    return _cached_scan(html)


def html_verdict(html: str, scan: HtmlScan, upto: int, data: bytes | None) -> str | None:
    """lxml's verdict on the first ``upto`` links of ``scan`` of ``html`` (links after
    the last changed one do not matter): None, or why the part must be left alone.
    ``data``: ``html`` in UTF-8 if the part has those bytes (lxml may read them)."""
    if len(html) > _CACHE_MAX_CHARS:
        return check_links(html, scan, upto=upto, data=data)
    return _cached_verdict(html, upto)


def clear_caches() -> None:
    """Forget cached scans (benchmarks measure the cold path with it)."""
    _cached_scan.cache_clear()
    _cached_verdict.cache_clear()


def encode_part_edits(data: bytes, job: PartJob) -> list[Edit] | str:
    """Byte edits for a rewritten part, or a reason to leave it alone."""
    tracked = [(link, d.tracked_url) for link, d in job.decisions if d.tracked_url]
    tracked += job.insertions  # the trap, if any: markup inserted at a point
    quoted_printable = job.entity.headers.transfer_encoding == "quoted-printable"
    spliced = spliced_decoded(
        job.decoded, job.text, job.codec, job.errors, tracked, quoted_printable
    )
    if spliced is None:
        return "charset-not-roundtrip"
    job.text = ""  # not needed any more (a large part's text can go before encoding)
    new_decoded, changes = spliced
    return encode_part(data, job.entity, job.body, job.decoded, new_decoded, changes)
