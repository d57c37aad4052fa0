"""The rewriting engine's public entry point: raw message bytes in, rewritten bytes out.

:func:`rewrite_message` points every trackable link of a message at the tracking domain
and changes nothing else. It works in three phases:

1. **Scan** — :func:`smtp_proxy.engine.mime_parts.walk` finds every MIME entity as offsets into
   the original bytes. Each text/html and text/plain body part is transfer-decoded and
   charset-decoded (only if re-encoding gives back the very same bytes) and its links are
   found (:mod:`smtp_proxy.engine.html_scan`, :mod:`smtp_proxy.engine.text_links`).
2. **Decide** — each link, counted across the whole message, is either skipped with a
   reason (:func:`smtp_proxy.engine.linkrules.link_skip_reason`, opt-out attributes,
   an anchor whose visible text is a URL (:mod:`smtp_proxy.engine.anchor_text`), length,
   a text/plain part tracking would leave without spaces
   (:mod:`smtp_proxy.engine.uri_only_text`)) or sealed into a token
   (:meth:`redirector.tokens.Keyring.seal`). A URL opted out in the HTML is also left
   alone in the text part.
3. **Splice** (:mod:`smtp_proxy.engine.splice`) — only the bytes of the changed href
   values are replaced, the part is re-encoded in its own charset and transfer encoding
   (unchanged quoted-printable lines are kept as they were), and the message is
   reassembled from the original bytes plus the changed bodies.

Anything doubtful leaves the part (or the whole message) as it was, with a reason; the
function never raises.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import getaddresses

from clickrelay.common.errors import TokenError
from redirector.hosts import base_url_host
from redirector.tokens import Keyring, encode_extras
from smtp_proxy.engine import (
    b64,
    dkim_sign,
    headers,
    message_tags,
    mime_parts,
    qp,
    sender_domains,
    utm,
)
from smtp_proxy.engine.anchor_text import anchor_text, is_url_text
from smtp_proxy.engine.dkim_sign import DkimKey
from smtp_proxy.engine.html_scan import FoundLink, HtmlScan
from smtp_proxy.engine.html_verify import check_links, find_html_links
from smtp_proxy.engine.linkrules import OPT_OUT_REASON, LinkPolicy, link_skip_reason
from smtp_proxy.engine.mime_parts import Entity, MimeError
from smtp_proxy.engine.splice import Edit, assemble, encode_part, spliced_decoded
from smtp_proxy.engine.text_links import find_text_links
from smtp_proxy.engine.uri_only_text import loses_its_spaces

OPT_OUT_HEADER = "X-Clickrelay-Track"
#: Tag and metadata (compact JSON) larger than this are refused before any link is
#: sealed, whatever max_link_length allows: every token carries them.
MAX_EXTRAS_BYTES = 8192
_OFF_VALUES = frozenset({"off", "no", "false", "0", "none"})
_HREF_RE = re.compile(r"href", re.I)
_HTTP_RE = re.compile(r"https?:", re.I)
_HREF_B_RE = re.compile(rb"href", re.I)
_HTTP_B_RE = re.compile(rb"https?:", re.I)
_PGP_MARK = "-----BEGIN PGP "


@dataclass(frozen=True)
class TrackingSettings:
    """Everything the engine needs to mint tracked links for one message.

    Plain values: the SMTP side builds them from the configuration
    (:mod:`smtp_proxy.smtp.tracking`), with the DKIM keys already read.
    """

    base_url: str
    keyring: Keyring
    policy: LinkPolicy
    max_link_length: int = 2048
    #: A destination URL longer than this (UTF-8 bytes) stays untracked, "too-long":
    #: tokens compress, so without it one short link could carry megabytes into every
    #: stored click.
    max_url_length: int = 8192
    text_links: bool = True
    #: Track an ``<a>`` whose visible text is a URL or host name (off: skipped as
    #: ``url-text``, see :mod:`smtp_proxy.engine.anchor_text`).
    track_url_text: bool = False
    #: Re-signing keys by normalised signing domain (:func:`dkim_sign.keys_by_domain`).
    dkim_keys: Mapping[str, DkimKey] = field(default_factory=dict)
    #: Add the invisible trap link to each rewritten HTML part (``[tracking] bot_trap``).
    bot_trap: bool = False
    #: More MIME entities than this: the message is relayed unchanged (too-many-parts).
    max_parts: int = 1000

    @functools.cached_property
    def tracking_host(self) -> str:
        """The base URL's normalised host: every token minted is bound to it."""
        return base_url_host(self.base_url)


@dataclass(frozen=True, slots=True)
class LinkDecision:
    """What happened to one link: ``action`` is "tracked" or "skipped" (with ``reason``)."""

    part: str
    index: int
    url: str
    action: str
    reason: str
    tracked_url: str | None


@dataclass(frozen=True)
class RewriteResult:
    """The message to relay and what was done to it.

    ``reason`` is message-level: "rewritten", "no-links", "no-trackable-links",
    "opt-out-header" (ours or an ESP's click-tracking switch), "metadata-invalid",
    "metadata-too-large", "dkim-signed", "dkim-unverified", "too-many-parts", "signed",
    "encrypted", a malformed-MIME reason
    ("missing-boundary", "too-deep", "nul-bytes", "8bit-headers", …), a part-level reason
    when nothing was rewritten because of it, or "error:<ExceptionType>".
    ``notes`` lists parts left alone: ``"<part>:<reason>"``.
    """

    data: bytes
    links: tuple[LinkDecision, ...]
    changed: bool
    reason: str
    notes: tuple[str, ...] = ()
    #: The tag and metadata sealed into the links (from the message's headers).
    tag: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


# --- phase 1: scan ---------------------------------------------------------------------


@dataclass
class _Job:
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


def _is_body_text(entity: Entity) -> str | None:
    h = entity.headers
    if h.disposition == "attachment":
        return None
    if h.content_type == "text/html":
        return "html"
    if h.content_type == "text/plain":
        return "text"
    return None


def _decode_job(data: bytes, job: _Job, settings: TrackingSettings) -> None:
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
    # changed part is encoded again (_spliced_decoded compares every byte).
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


def _html_verdict(html: str, scan: HtmlScan, upto: int, data: bytes | None) -> str | None:
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


# --- phase 2: decide -------------------------------------------------------------------


def _decide(
    jobs: list[_Job],
    settings: TrackingSettings,
    *,
    queue_id: str,
    recipient: str | None,
    sent_at: int,
    force_reason: str | None,
    extras: bytes = b"",
    utm_params: Mapping[str, str] | None = None,
) -> tuple[list[LinkDecision], bool]:
    """Every link's decision, and whether ``extras`` (tag and metadata) pushed some link
    past ``max_link_length`` that would have fitted without them."""
    too_large = False
    opted_out = {
        link.url for job in jobs if job.kind == "html" for link in job.links if link.opt_out
    }
    prefix = settings.base_url.rstrip("/") + "/c/"
    max_url = settings.max_url_length
    decisions: list[LinkDecision] = []
    index = 0
    for job in jobs:
        for position, link in enumerate(job.links):
            reason = force_reason or link_skip_reason(link.url, settings.policy)
            if reason is None and (link.opt_out or (link.kind == "text" and link.url in opted_out)):
                reason = OPT_OUT_REASON
            if reason is None and link.url.startswith(prefix):
                reason = "already-tracked"
            if reason is None and len(link.url.encode("utf-8", "surrogatepass")) > max_url:
                reason = "too-long"
            if reason is None and link.kind == "a" and not settings.track_url_text:
                reason = _url_text_reason(job, position)
            tracked: str | None = None
            if reason is None:
                try:
                    token = settings.keyring.seal(
                        utm.add_utm(link.url, utm_params) if utm_params else link.url,
                        host=settings.tracking_host,
                        queue_id=queue_id,
                        link_index=index,
                        recipient=recipient,
                        sent_at=sent_at,
                        extras=extras,
                    )
                except TokenError as exc:
                    # seal() refuses what url_is_sealable refuses (link_skip_reason already
                    # took out surrogates and everything else but the byte length), and
                    # a URL too long for any token.
                    reason = "too-long" if exc.reason == "too-long" else "malformed"
                else:
                    tracked = prefix + token
                    if len(tracked) > settings.max_link_length:
                        if extras and not too_large:
                            bare = settings.keyring.seal(
                                link.url,
                                host=settings.tracking_host,
                                queue_id=queue_id,
                                link_index=index,
                                sent_at=sent_at,
                            )
                            too_large = len(prefix + bare) <= settings.max_link_length
                        reason, tracked = "too-long", None
            decision = LinkDecision(
                part=job.entity.path,
                index=index,
                url=link.url,
                action="tracked" if tracked else "skipped",
                reason=reason or "tracked",
                tracked_url=tracked,
            )
            job.decisions.append((link, decision))
            index += 1
        if job.kind == "text":
            _keep_spaces(job)
        decisions.extend(d for _, d in job.decisions)
    return decisions, too_large


def _keep_spaces(job: _Job) -> None:
    """Leave a text/plain part untracked (``uri-only-text``) if tracking would make it
    read as one long word (see :mod:`smtp_proxy.engine.uri_only_text`)."""
    tracked = [(link, d.tracked_url) for link, d in job.decisions if d.tracked_url]
    if tracked and loses_its_spaces(job.text, tracked):
        job.decisions = [(link, _as_skipped(d, "uri-only-text")) for link, d in job.decisions]


def _url_text_reason(job: _Job, position: int) -> str | None:
    """``"url-text"`` if the visible text of the job's ``position``-th link is a URL."""
    if job.scan is None or position >= len(job.scan.tag_ends):
        return None
    text = anchor_text(job.text, job.scan.tag_ends[position])
    return "url-text" if text is not None and is_url_text(text) else None


# --- phase 3: splice and re-encode -----------------------------------------------------


def _encode_job(data: bytes, job: _Job) -> list[Edit] | str:
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


# --- entry point -----------------------------------------------------------------------


def rewrite_message(
    data: bytes,
    settings: TrackingSettings,
    *,
    queue_id: str,
    recipient: str | None = None,
    sent_at: datetime | None = None,
    utm_values: Mapping[str, str] | None = None,
    dkim_verdict: dkim_sign.DkimVerdict | None = None,
) -> RewriteResult:
    """Rewrite the links of one raw message (see the module docstring). Never raises:
    any internal error gives back the original bytes with reason ``error:<Type>``.

    ``utm_values``: UTM parameters (``{tag}`` not yet filled in) for tracked links.
    ``dkim_verdict``: what the caller verified of the message's DKIM signatures; without
    one a signed message is never re-signed (reason ``dkim-unverified``).
    """
    try:
        return _rewrite_raising(
            data, settings, queue_id, recipient, sent_at, utm_values, dkim_verdict
        )
    except Exception as exc:  # fail open: the original message is always deliverable
        original = data if isinstance(data, bytes) else b""
        return RewriteResult(original, (), False, f"error:{type(exc).__name__}")


def _unchanged(data: bytes, reason: str, links: Sequence[LinkDecision] = ()) -> RewriteResult:
    return RewriteResult(data, tuple(links), False, reason)


def _strip_tag_headers(
    data: bytes, top: Entity, tags: message_tags.MessageTags, sigs: Sequence[dkim_sign.Signature]
) -> bytes:
    """``data`` without the tag headers, unless a DKIM signature covers one of them
    (removing it would break a signature we may not be able to renew)."""
    names = {name.lower() for name in tags.headers}
    if any(name in s.signed_headers for s in sigs for name in names):
        return data
    block = data[: top.header_end]
    for name in names:
        block = headers.remove_header(block, name)
    return block + data[top.header_end :]


def _rewrite_raising(
    data: bytes,
    settings: TrackingSettings,
    queue_id: str,
    recipient: str | None,
    sent_at: datetime | None,
    utm_values: Mapping[str, str] | None,
    dkim_verdict: dkim_sign.DkimVerdict | None,
) -> RewriteResult:
    original = data = bytes(data)
    try:
        entities = mime_parts.walk(data, settings.max_parts)
    except MimeError as exc:
        return _unchanged(data, exc.reason)
    top = entities[0]
    # The application's tag, metadata and ESP tracking switches: read, then the headers
    # go (a message that had some is walked again: every offset after them moved).
    tags = message_tags.read_block(data[: top.header_end])
    if tags.headers:
        data = _strip_tag_headers(data, top, tags, dkim_sign.signatures(top.headers.message))
        if data is not original:
            entities = mime_parts.walk(data, settings.max_parts)
            top = entities[0]
    params = utm.utm_params(utm_values, tags.tag) if utm_values else None
    result = _rewrite_stripped(
        data, entities, settings, queue_id, recipient, sent_at, tags, params, dkim_verdict
    )
    if data is not original and not result.changed:
        # Only the tag headers came out: still a change, and the stripped copy is relayed.
        return RewriteResult(
            data, result.links, True, result.reason, result.notes, result.tag, result.metadata
        )
    return result


def _rewrite_stripped(
    data: bytes,
    entities: list[Entity],
    settings: TrackingSettings,
    queue_id: str,
    recipient: str | None,
    sent_at: datetime | None,
    tags: message_tags.MessageTags,
    utm_params: Mapping[str, str] | None,
    dkim_verdict: dkim_sign.DkimVerdict | None,
) -> RewriteResult:
    top = entities[0]
    top_headers = top.headers.message
    when = int((sent_at or datetime.now(UTC)).timestamp())

    # Per-message opt-out: report the links, change nothing but removing the header.
    opt_out = [str(v).strip().lower() for v in top_headers.get_all(OPT_OUT_HEADER) or []]
    force_reason = "opt-out-header" if any(v in _OFF_VALUES for v in opt_out) else None
    if force_reason is None and tags.tracking_off:
        force_reason = "opt-out-header"
    if force_reason is None and tags.error is not None:
        force_reason = tags.error
    extras = encode_extras(tags.tag, tags.metadata)
    if force_reason is None and len(extras) > MAX_EXTRAS_BYTES:
        force_reason = "metadata-too-large"

    sigs = dkim_sign.signatures(top_headers)
    resign_keys = dkim_sign.resign_keys(sigs, settings.dkim_keys) if sigs else []
    if sigs and not resign_keys and force_reason is None:
        return _unchanged(data, "dkim-signed")
    if resign_keys and force_reason is None:
        # The parsed fields above leave From out (it is not a MIME field): read it here,
        # on the rare path of a message we hold a key for.
        all_headers = mime_parts.read_headers(data[: top.header_end])
        from_values = [str(v) for v in all_headers.get_all("From") or []]
        from_domains = [sender_domains.domain_of(addr) for _, addr in getaddresses(from_values)]
        if not dkim_sign.may_resign(resign_keys, dkim_verdict, from_domains):
            return _unchanged(data, "dkim-unverified")
    if top.headers.protection is not None and force_reason is None:
        return _unchanged(data, top.headers.protection)

    # walk() does not descend into signed/encrypted multiparts; everything else that is
    # a text body (not an attachment) is scanned.
    jobs: list[_Job] = []
    notes: list[str] = []
    for entity in entities:
        kind = _is_body_text(entity)
        if kind is None:
            continue
        job = _Job(entity, kind)
        try:
            _decode_job(data, job, settings)
        except MimeError as exc:
            notes.append(f"{entity.path}:{exc.reason}")
            continue
        jobs.append(job)

    decisions, too_large = _decide(
        jobs,
        settings,
        queue_id=queue_id,
        recipient=recipient,
        sent_at=when,
        force_reason=force_reason,
        extras=extras if force_reason is None else b"",
        utm_params=utm_params,
    )
    if too_large:
        # Never truncated: the whole message goes out untracked, and says why.
        force_reason = "metadata-too-large"
        for job in jobs:
            job.decisions.clear()
        decisions, _ = _decide(
            jobs,
            settings,
            queue_id=queue_id,
            recipient=recipient,
            sent_at=when,
            force_reason=force_reason,
        )

    if force_reason is not None:
        if not any(OPT_OUT_HEADER.lower() in s.signed_headers for s in sigs):
            block = headers.remove_header(data[: top.header_end], OPT_OUT_HEADER)
            out = block + data[top.header_end :]
            return RewriteResult(out, tuple(decisions), out != data, force_reason, tuple(notes))
        return RewriteResult(data, tuple(decisions), False, force_reason, tuple(notes))

    edits: list[Edit] = []
    final: list[LinkDecision] = []
    traps: list[LinkDecision] = []
    for job in jobs:
        if not any(d.tracked_url for _, d in job.decisions):
            final.extend(d for _, d in job.decisions)
            continue
        problem = None
        if job.scan is not None:
            upto = 1 + max(i for i, (_, d) in enumerate(job.decisions) if d.tracked_url)
            utf8 = job.codec == "utf-8" and job.errors == "strict"
            problem = _html_verdict(job.text, job.scan, upto, job.decoded if utf8 else None)
        trap: LinkDecision | None = None
        if problem is None and job.kind == "html" and settings.bot_trap and not sigs:
            trap = _add_trap(job, settings, queue_id, recipient, when, len(decisions) + len(traps))
        result = _encode_job(data, job) if problem is None else problem
        # The part's decoded content is not needed any more: let a large one go before
        # the next part is encoded and the message is assembled (peak memory).
        job.body, job.decoded, job.text = b"", b"", ""
        if isinstance(result, str):
            notes.append(f"{job.entity.path}:{result}")
            final.extend(_as_skipped(d, result) for _, d in job.decisions)
            continue
        edits.extend(result)
        final.extend(d for _, d in job.decisions)
        if trap is not None:
            traps.append(trap)

    if not edits:
        reason = "no-trackable-links" if final else "no-links"
        if notes:
            reason = notes[0].split(":", 1)[1]
        return RewriteResult(data, tuple(final), False, reason, tuple(notes))

    final.extend(traps)
    out = assemble(data, edits)
    if resign_keys:
        header_end = top.header_end + sum(
            len(e.new) - (e.end - e.start) for e in edits if e.end <= top.header_end
        )
        try:
            out = dkim_sign.resign(out, header_end, resign_keys)
        except Exception as exc:  # bad key, dkimpy error: relay the original
            return RewriteResult(
                data,
                tuple(_as_skipped(d, "dkim-error") for d in final),
                False,
                f"dkim-error:{type(exc).__name__}",
                tuple(notes),
            )
    return RewriteResult(
        out, tuple(final), True, "rewritten", tuple(notes), tags.tag, dict(tags.metadata)
    )


#: Where the trap goes: before the last ``</body>`` (else ``</html>``, else the end).
_BODY_END = re.compile(r"</body\s*>|</html\s*>", re.IGNORECASE)
#: The trap link: an empty anchor, hidden from sight (display:none, plus the Outlook and
#: zero-size fallbacks for clients that drop display), from the keyboard (tabindex -1)
#: and from screen readers (aria-hidden). Mail scanners fetch every href in the markup.
TRAP_MARKUP = (
    '<a href="{url}" tabindex="-1" aria-hidden="true" style="display:none !important;'
    'mso-hide:all;font-size:0;line-height:0;max-height:0;overflow:hidden;opacity:0"></a>'
)


def _add_trap(
    job: _Job,
    settings: TrackingSettings,
    queue_id: str,
    recipient: str | None,
    sent_at: int,
    index: int,
) -> LinkDecision | None:
    """Queue the trap link's insertion into an HTML part that has tracked links.

    Its token is sealed with the trap flag and the next link index; it redirects to the
    part's first tracked link's own URL (a scanner sees an ordinary page).
    """
    tracked = [(link, d) for link, d in job.decisions if d.tracked_url]
    if not tracked:
        return None
    target = tracked[0][1].url
    ends = list(_BODY_END.finditer(job.text))
    body_ends = [m for m in ends if m.group(0).lower().startswith("</body")]
    chosen = body_ends[-1] if body_ends else (ends[-1] if ends else None)
    at = chosen.start() if chosen is not None else len(job.text)
    if any(link.start < at < link.end for link, _ in tracked):
        return None  # never inside a link (cannot happen for markup, but never guess)
    prefix = settings.base_url.rstrip("/") + "/c/"
    try:
        token = settings.keyring.seal(
            target,
            host=settings.tracking_host,
            queue_id=queue_id,
            link_index=index,
            recipient=recipient,
            sent_at=sent_at,
            trap=True,
        )
    except TokenError:
        return None
    url = prefix + token
    point = FoundLink(at, at, "", target, "trap", None)
    job.insertions.append((point, TRAP_MARKUP.format(url=url)))
    return LinkDecision(job.entity.path, index, target, "trap", "trap-link", url)


def _as_skipped(decision: LinkDecision, reason: str) -> LinkDecision:
    if decision.action != "tracked":
        return decision
    return LinkDecision(decision.part, decision.index, decision.url, "skipped", reason, None)
