"""The rewriting engine's public entry point: raw message bytes in, rewritten bytes out.

:func:`rewrite_message` points every trackable link of a message at the tracking domain
and changes nothing else. This module walks the message; each phase's work per part or
per link is elsewhere:

1. **Scan** — :func:`smtp_proxy.engine.mime_parts.walk` finds every MIME entity as offsets into
   the original bytes. Each text/html and text/plain body part is transfer-decoded and
   charset-decoded (only if re-encoding gives back the very same bytes) and its links are
   found (:mod:`smtp_proxy.engine.text_parts`).
2. **Decide** — each link, counted across the whole message, is either skipped with a
   reason or sealed into a token (:mod:`smtp_proxy.engine.link_decisions`).
3. **Splice** (:mod:`smtp_proxy.engine.splice`) — only the bytes of the changed href
   values are replaced, the part is re-encoded in its own charset and transfer encoding
   (unchanged quoted-printable lines are kept as they were), and the message is
   reassembled from the original bytes plus the changed bodies.

Around them, message by message: the tag and metadata headers
(:mod:`smtp_proxy.engine.message_tags`), the opt-out header, DKIM (relay a signed message
unchanged, or re-sign it: :mod:`smtp_proxy.engine.dkim_sign`).

Anything doubtful leaves the part (or the whole message) as it was, with a reason; the
function never raises. Its argument and result types (:mod:`smtp_proxy.engine.rewrite_types`)
are importable from here too, as the engine's interface.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import getaddresses

from redirector.tokens import encode_extras
from smtp_proxy.engine import dkim_sign, headers, message_tags, mime_parts, sender_domains, utm
from smtp_proxy.engine.link_decisions import Minter, add_trap, decide
from smtp_proxy.engine.mime_parts import Entity, MimeError
from smtp_proxy.engine.rewrite_types import (
    LinkDecision,
    RewriteResult,
    TrackingSettings,
    as_skipped,
)
from smtp_proxy.engine.splice import Edit, assemble
from smtp_proxy.engine.text_parts import (
    PartJob,
    body_text_kind,
    decode_part,
    encode_part_edits,
    html_verdict,
)

OPT_OUT_HEADER = "X-Clickrelay-Track"
#: Tag and metadata (compact JSON) larger than this are refused before any link is
#: sealed, whatever max_link_length allows: every token carries them.
MAX_EXTRAS_BYTES = 8192
_OFF_VALUES = frozenset({"off", "no", "false", "0", "none"})


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
    when = int((sent_at or datetime.now(UTC)).timestamp())
    minter = Minter(settings, queue_id, recipient, when)
    result = _rewrite_stripped(data, entities, minter, tags, params, dkim_verdict)
    if data is not original and not result.changed:
        # Only the tag headers came out: still a change, and the stripped copy is relayed.
        return RewriteResult(
            data, result.links, True, result.reason, result.notes, result.tag, result.metadata
        )
    return result


def _rewrite_stripped(
    data: bytes,
    entities: list[Entity],
    minter: Minter,
    tags: message_tags.MessageTags,
    utm_params: Mapping[str, str] | None,
    dkim_verdict: dkim_sign.DkimVerdict | None,
) -> RewriteResult:
    settings = minter.settings
    top = entities[0]
    top_headers = top.headers.message

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
    jobs: list[PartJob] = []
    notes: list[str] = []
    for entity in entities:
        kind = body_text_kind(entity)
        if kind is None:
            continue
        job = PartJob(entity, kind)
        try:
            decode_part(data, job, settings)
        except MimeError as exc:
            notes.append(f"{entity.path}:{exc.reason}")
            continue
        jobs.append(job)

    decisions, too_large = decide(
        jobs,
        minter,
        force_reason=force_reason,
        extras=extras if force_reason is None else b"",
        utm_params=utm_params,
    )
    if too_large:
        # Never truncated: the whole message goes out untracked, and says why.
        force_reason = "metadata-too-large"
        for job in jobs:
            job.decisions.clear()
        decisions, _ = decide(jobs, minter, force_reason=force_reason)

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
            problem = html_verdict(job.text, job.scan, upto, job.decoded if utf8 else None)
        trap: LinkDecision | None = None
        if problem is None and job.kind == "html" and settings.bot_trap and not sigs:
            trap = add_trap(job, minter, len(decisions) + len(traps))
        result = encode_part_edits(data, job) if problem is None else problem
        # The part's decoded content is not needed any more: let a large one go before
        # the next part is encoded and the message is assembled (peak memory).
        job.body, job.decoded, job.text = b"", b"", ""
        if isinstance(result, str):
            notes.append(f"{job.entity.path}:{result}")
            final.extend(as_skipped(d, result) for _, d in job.decisions)
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
                tuple(as_skipped(d, "dkim-error") for d in final),
                False,
                f"dkim-error:{type(exc).__name__}",
                tuple(notes),
            )
    return RewriteResult(
        out, tuple(final), True, "rewritten", tuple(notes), tags.tag, dict(tags.metadata)
    )


__all__ = [
    "MAX_EXTRAS_BYTES",
    "OPT_OUT_HEADER",
    "LinkDecision",
    "RewriteResult",
    "TrackingSettings",
    "rewrite_message",
]
