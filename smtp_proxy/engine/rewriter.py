"""The rewriting engine's public entry point: raw message bytes in, rewritten bytes out.

:func:`rewrite_message` points every trackable link of a message at the tracking domain
and changes nothing else. It works in three phases:

1. **Scan** — :func:`smtp_proxy.engine.mime_parts.walk` finds every MIME entity as offsets into
   the original bytes. Each text/html and text/plain body part is transfer-decoded and
   charset-decoded (only if re-encoding gives back the very same bytes) and its links are
   found (:mod:`smtp_proxy.engine.html_links`, :mod:`smtp_proxy.engine.text_links`).
2. **Decide** — each link, counted across the whole message, is either skipped with a
   reason (:func:`smtp_proxy.engine.linkrules.skip_reason`, opt-out attributes, length) or sealed
   into a token (:meth:`redirector.tokens.Keyring.seal`). A URL opted out in the HTML is
   also left alone in the text part.
3. **Splice** — only the bytes of the changed href values are replaced, the part is
   re-encoded in its own charset and transfer encoding (unchanged quoted-printable lines
   are kept as they were), and the message is reassembled from the original bytes plus
   the changed bodies.

Anything doubtful leaves the part (or the whole message) as it was, with a reason; the
function never raises.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import getaddresses

from clickrelay.common.errors import TokenError
from redirector.tokens import Keyring
from smtp_proxy.config import DkimConfig, ProxySettings
from smtp_proxy.engine import dkim_sign, mime_parts
from smtp_proxy.engine.html_links import FoundLink, HtmlScan, check_links, find_html_links, splice
from smtp_proxy.engine.linkrules import OPT_OUT_REASON, LinkPolicy, normalize_host, skip_reason
from smtp_proxy.engine.mime_parts import Entity, MimeError
from smtp_proxy.engine.text_links import find_text_links

OPT_OUT_HEADER = "X-Clickrelay-Track"
_OFF_VALUES = frozenset({"off", "no", "false", "0", "none"})
_HREF_RE = re.compile(r"href", re.I)
_HTTP_RE = re.compile(r"https?:", re.I)
_HREF_B_RE = re.compile(rb"href", re.I)
_HTTP_B_RE = re.compile(rb"https?:", re.I)
_PGP_MARK = "-----BEGIN PGP "
#: Charsets (Python codec names) in which every byte < 0x80 is that ASCII character on its
#: own, whatever comes before or after it.
_STATELESS_ASCII_CODECS = frozenset(
    {"ascii", "utf-8", "iso8859-1", "iso8859-15", "cp1252", "cp1250", "cp1251", "koi8-r"}
)


@dataclass(frozen=True)
class TrackingSettings:
    """Everything the engine needs to mint tracked links for one message."""

    base_url: str
    keyring: Keyring
    policy: LinkPolicy
    max_link_length: int = 2048
    text_links: bool = True
    dkim: DkimConfig = field(default_factory=DkimConfig)
    #: Add the invisible trap link to each rewritten HTML part (``[tracking] bot_trap``).
    bot_trap: bool = False

    @classmethod
    def from_config(
        cls, config: ProxySettings, keyring: Keyring, base_url: str | None = None
    ) -> TrackingSettings:
        """Settings from ``[tracking]``/``[dkim]``; ``base_url`` overrides the default
        (e.g. the sender's domain from :func:`sender_base_url`)."""
        tracking = config.tracking
        urls = [*tracking.base_urls(), *([base_url] if base_url else [])]
        return cls(
            base_url=base_url or tracking.base_url,
            keyring=keyring,
            policy=LinkPolicy.from_base_urls(urls, tracking.skip_domains),
            max_link_length=tracking.max_link_length,
            text_links=tracking.text_links,
            dkim=config.dkim,
            bot_trap=tracking.bot_trap,
        )


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
    "opt-out-header", "dkim-signed", "signed", "encrypted", a malformed-MIME reason
    ("missing-boundary", "too-deep", "nul-bytes", "8bit-headers", …), a part-level reason
    when nothing was rewritten because of it, or "error:<ExceptionType>".
    ``notes`` lists parts left alone: ``"<part>:<reason>"``.
    """

    data: bytes
    links: tuple[LinkDecision, ...]
    changed: bool
    reason: str
    notes: tuple[str, ...] = ()


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
        job.decoded = mime_parts.qp_decode(job.body)
    elif cte == "base64":
        job.body = data[entity.body_start : entity.end]
        job.decoded = mime_parts.b64_decode(job.body)
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
) -> list[LinkDecision]:
    opted_out = {
        link.url for job in jobs if job.kind == "html" for link in job.links if link.opt_out
    }
    prefix = settings.base_url.rstrip("/") + "/c/"
    decisions: list[LinkDecision] = []
    index = 0
    for job in jobs:
        for link in job.links:
            reason = force_reason or skip_reason(link.url, settings.policy)
            if reason is None and (link.opt_out or (link.kind == "text" and link.url in opted_out)):
                reason = OPT_OUT_REASON
            if reason is None and link.url.startswith(prefix):
                reason = "already-tracked"
            tracked: str | None = None
            if reason is None:
                try:
                    token = settings.keyring.seal(
                        link.url,
                        queue_id=queue_id,
                        link_index=index,
                        recipient=recipient,
                        sent_at=sent_at,
                    )
                except TokenError:
                    # seal() refuses what url_is_sealable refuses (skip_reason already
                    # took out surrogates and everything else but the byte length).
                    reason = "malformed"
                else:
                    tracked = prefix + token
                    if len(tracked) > settings.max_link_length:
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
            decisions.append(decision)
            index += 1
    return decisions


# --- phase 3: splice and re-encode -----------------------------------------------------


def _spliced_decoded(job: _Job) -> tuple[bytes | None, list[tuple[int, int, bytes]]] | None:
    """The part's new decoded bytes and the byte ranges (in the old ones) that changed;
    None when the charset does not let us map text offsets to bytes exactly.

    The new bytes are None for a quoted-printable part in a charset in which every byte
    < 0x80 is ASCII: re-encoding needs only the changes there, and a large part then
    costs no copy of its content.
    """
    tracked = [(link, d.tracked_url) for link, d in job.decisions if d.tracked_url]
    tracked += job.insertions
    tracked.sort(key=lambda item: (item[0].start, item[0].end))
    enc = job.codec
    stateless = enc in _STATELESS_ASCII_CODECS
    want_bytes = not stateless or job.entity.headers.transfer_encoding != "quoted-printable"
    decoded = job.decoded
    old = memoryview(decoded)
    text = job.text
    # Unchanged stretches are compared with the old bytes in place (no copies) and, when
    # the new content is wanted, taken from there as memoryview slices.
    pieces: list[bytes | memoryview] = []
    changes: list[tuple[int, int, bytes]] = []
    text_pos = 0
    byte_pos = 0
    for link, new_url in tracked:
        if link.start < text_pos:
            return None  # overlapping links: refuse rather than guess
        before = text[text_pos : link.start].encode(enc, job.errors)
        raw = link.raw.encode(enc, job.errors)
        start = byte_pos + len(before)
        # startswith compares in place (memcmp), without a copy of the old bytes.
        if not decoded.startswith(before, byte_pos) or not decoded.startswith(raw, start):
            return None
        new = new_url.encode(enc)
        if want_bytes:
            pieces += (old[byte_pos:start], new)
        changes.append((start, start + len(raw), new))
        byte_pos = start + len(raw)
        text_pos = link.end
    # The tail; in a stateless charset compared in slices, so that a large part is not
    # encoded again whole (a stateful one must be encoded in one go).
    step = 1 << 20 if stateless else max(1, len(text))
    tail_start = byte_pos
    while text_pos < len(text):
        chunk = text[text_pos : text_pos + step].encode(enc, job.errors)
        if not decoded.startswith(chunk, byte_pos):
            return None
        text_pos += step
        byte_pos += len(chunk)
    if byte_pos != len(old):
        return None
    if not want_bytes:
        # Every unchanged byte was compared above and the new values are ASCII: in these
        # charsets the bytes with the changes applied decode to exactly the spliced text.
        return None, changes
    pieces.append(old[tail_start:])
    new_decoded = b"".join(pieces)
    del pieces
    if stateless:
        return new_decoded, changes
    # Other charsets (stateful ones like ISO-2022-JP): check against the reference, what
    # the link finder's own splice says the text must become.
    expected = splice(job.text, tracked)
    try:
        if new_decoded.decode(enc, job.errors) != expected:
            return None
    except UnicodeDecodeError:
        return None
    return new_decoded, changes


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    new: bytes | bytearray


def _encode_job(data: bytes, job: _Job) -> list[_Edit] | str:
    """Byte edits for a rewritten part, or a reason to leave it alone."""
    spliced = _spliced_decoded(job)
    if spliced is None:
        return "charset-not-roundtrip"
    new_decoded, changes = spliced
    job.text = ""  # not needed any more (a large part's text can go before encoding)
    entity = job.entity
    cte = entity.headers.transfer_encoding
    eol = _body_eol(data, entity.body_start, entity.end, entity.eol)
    edits: list[_Edit] = []
    if cte == "quoted-printable":
        new_body: bytes | bytearray = mime_parts.qp_reencode(job.body, job.decoded, changes, eol)
    elif new_decoded is None:  # only quoted-printable parts go without new bytes
        return "charset-not-roundtrip"
    elif cte == "base64":
        body = bytes(job.body)
        trailer = body[len(body.rstrip()) :]
        length = mime_parts.b64_line_length(body)
        new_body = mime_parts.b64_encode(new_decoded, length, eol, trailer)
    elif mime_parts.has_long_line(new_decoded, _new_offsets(changes)):
        # A 7bit/8bit line would grow past 998 octets: switch this part to QP.
        new_body = mime_parts.qp_encode(new_decoded, eol)
        block = data[entity.start : entity.header_end]
        new_block = mime_parts.replace_header(
            block, "Content-Transfer-Encoding", "quoted-printable", entity.eol
        )
        edits.append(_Edit(entity.start, entity.header_end, new_block))
    else:
        new_body = new_decoded
    edits.append(_Edit(entity.body_start, entity.end, new_body))
    return edits


def _new_offsets(changes: Sequence[tuple[int, int, bytes]]) -> list[int]:
    """Where each change starts in the new content (only lines with a change can have
    grown past the line limit)."""
    out = []
    delta = 0
    for start, end, new in changes:
        out.append(start + delta)
        delta += len(new) - (end - start)
    return out


def _body_eol(data: bytes, start: int, end: int, default: bytes) -> bytes:
    """The line ending of the body ``data[start:end]`` (``default`` if it has none)."""
    nl = data.find(b"\n", start, end)
    if nl < 0:
        return default
    return b"\r\n" if nl > start and data[nl - 1] == 0x0D else b"\n"


def _assemble(data: bytes, edits: Sequence[_Edit]) -> bytes:
    view = memoryview(data)
    pieces: list[bytes | bytearray | memoryview] = []
    pos = 0
    for edit in sorted(edits, key=lambda e: e.start):
        pieces.append(view[pos : edit.start])
        pieces.append(edit.new)
        pos = edit.end
    pieces.append(view[pos:])
    return b"".join(pieces)


# --- entry point -----------------------------------------------------------------------


def rewrite_message(
    data: bytes,
    settings: TrackingSettings,
    *,
    queue_id: str,
    recipient: str | None = None,
    sent_at: datetime | None = None,
) -> RewriteResult:
    """Rewrite the links of one raw message (see the module docstring). Never raises:
    any internal error gives back the original bytes with reason ``error:<Type>``."""
    try:
        return _rewrite(data, settings, queue_id, recipient, sent_at)
    except Exception as exc:  # fail open: the original message is always deliverable
        original = data if isinstance(data, bytes) else b""
        return RewriteResult(original, (), False, f"error:{type(exc).__name__}")


def _unchanged(data: bytes, reason: str, links: Sequence[LinkDecision] = ()) -> RewriteResult:
    return RewriteResult(data, tuple(links), False, reason)


def _rewrite(
    data: bytes,
    settings: TrackingSettings,
    queue_id: str,
    recipient: str | None,
    sent_at: datetime | None,
) -> RewriteResult:
    data = bytes(data)
    try:
        entities = mime_parts.walk(data)
    except MimeError as exc:
        return _unchanged(data, exc.reason)
    top = entities[0]
    top_headers = top.headers.message
    when = int((sent_at or datetime.now(UTC)).timestamp())

    # Per-message opt-out: report the links, change nothing but removing the header.
    opt_out = [str(v).strip().lower() for v in top_headers.get_all(OPT_OUT_HEADER) or []]
    force_reason = "opt-out-header" if any(v in _OFF_VALUES for v in opt_out) else None

    sigs = dkim_sign.signatures(top_headers)
    resign_keys = dkim_sign.resign_keys(sigs, settings.dkim) if sigs else []
    if sigs and not resign_keys and force_reason is None:
        return _unchanged(data, "dkim-signed")
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

    decisions = _decide(
        jobs,
        settings,
        queue_id=queue_id,
        recipient=recipient,
        sent_at=when,
        force_reason=force_reason,
    )

    if force_reason is not None:
        if not any(OPT_OUT_HEADER.lower() in s.signed_headers for s in sigs):
            block = mime_parts.remove_header(data[: top.header_end], OPT_OUT_HEADER)
            out = block + data[top.header_end :]
            return RewriteResult(out, tuple(decisions), out != data, force_reason, tuple(notes))
        return RewriteResult(data, tuple(decisions), False, force_reason, tuple(notes))

    edits: list[_Edit] = []
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
    out = _assemble(data, edits)
    if resign_keys:
        header_end = top.header_end + sum(
            len(e.new) - (e.end - e.start) for e in edits if e.end <= top.header_end
        )
        try:
            out = dkim_sign.resign(out, header_end, resign_keys)
        except Exception as exc:  # bad key file, dkimpy error: relay the original
            return RewriteResult(
                data,
                tuple(_as_skipped(d, "dkim-error") for d in final),
                False,
                f"dkim-error:{type(exc).__name__}",
                tuple(notes),
            )
    return RewriteResult(out, tuple(final), True, "rewritten", tuple(notes))


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


# --- which tracking domain -------------------------------------------------------------


def _domain_of(address: str) -> str:
    _, _, domain = address.strip().strip("<>").rpartition("@")
    # As link hosts are compared: a sender domain configured as ``bücher.example``
    # matches mail from ``xn--bcher-kva.example`` (and the other way round).
    return normalize_host(domain.strip().strip(">"))


def _lookup_domain(domain: str, mapping: dict[str, str]) -> str | None:
    """Exact sender domain first, then its parent domains."""
    labels = domain.split(".")
    for i in range(len(labels) - 1):
        url = mapping.get(".".join(labels[i:]))
        if url:
            return url
    return None


def sender_base_url(config: ProxySettings, envelope_from: str, data: bytes) -> str:
    """The tracking base URL for a message: by envelope sender domain, then by the From
    header's domain, else ``[tracking] base_url``."""
    mapping = {normalize_host(k): v for k, v in config.tracking.sender_domains.items()}
    if not mapping:
        return config.tracking.base_url
    if envelope_from and "@" in envelope_from:
        url = _lookup_domain(_domain_of(envelope_from), mapping)
        if url:
            return url
    try:
        header_end, _, _ = mime_parts.split_entity(data, 0, len(data))
        headers = mime_parts.read_headers(data[:header_end])
        # Raw values: an SMTPUTF8 message may write the address in UTF-8 (RFC 6532), which
        # the parser keeps as surrogate escapes (and str() of its Header turns into U+FFFD).
        values = [
            value.encode("ascii", "surrogateescape").decode("utf-8", "replace")
            for name, value in headers.raw_items()
            if name.lower() == "from"
        ]
        for _, addr in getaddresses(values):
            if "@" in addr:
                url = _lookup_domain(_domain_of(addr), mapping)
                if url:
                    return url
    except Exception:  # an unreadable From header just means: the default
        pass
    return config.tracking.base_url
