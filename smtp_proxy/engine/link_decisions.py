"""Which links of a message are tracked, and their tracked URLs: the rewriter's decisions.

Each link, counted across the whole message, is either skipped with a reason
(:func:`smtp_proxy.engine.linkrules.link_skip_reason`, opt-out attributes, an anchor whose
visible text is a URL (:mod:`smtp_proxy.engine.anchor_text`), length, a text/plain part
tracking would leave without spaces (:mod:`smtp_proxy.engine.uri_only_text`)) or sealed
into a token (:meth:`redirector.tokens.Keyring.seal`) by the message's :class:`Minter`.
A URL opted out in the HTML is also left alone in the text part. :func:`add_trap` adds
the invisible trap link to an HTML part that has tracked links.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from clickrelay.common.errors import TokenError
from smtp_proxy.engine import utm
from smtp_proxy.engine.anchor_text import anchor_text, is_url_text
from smtp_proxy.engine.html_scan import FoundLink
from smtp_proxy.engine.linkrules import OPT_OUT_REASON, link_skip_reason
from smtp_proxy.engine.rewrite_types import LinkDecision, TrackingSettings, as_skipped
from smtp_proxy.engine.text_parts import PartJob
from smtp_proxy.engine.uri_only_text import loses_its_spaces


@dataclass(frozen=True)
class Minter:
    """Seals the links of one message: its settings and what every token of it carries."""

    settings: TrackingSettings
    queue_id: str
    recipient: str | None
    sent_at: int

    @property
    def prefix(self) -> str:
        """What every tracked URL starts with."""
        return self.settings.base_url.rstrip("/") + "/c/"

    def seal(
        self,
        url: str,
        index: int,
        *,
        extras: bytes = b"",
        trap: bool = False,
        with_recipient: bool = True,
    ) -> str:
        """The token of link ``index`` to ``url`` (raises TokenError like ``seal``)."""
        return self.settings.keyring.seal(
            url,
            host=self.settings.tracking_host,
            queue_id=self.queue_id,
            link_index=index,
            recipient=self.recipient if with_recipient else None,
            sent_at=self.sent_at,
            extras=extras,
            trap=trap,
        )


def decide(
    jobs: list[PartJob],
    minter: Minter,
    *,
    force_reason: str | None,
    extras: bytes = b"",
    utm_params: Mapping[str, str] | None = None,
) -> tuple[list[LinkDecision], bool]:
    """Every link's decision, and whether ``extras`` (tag and metadata) pushed some link
    past ``max_link_length`` that would have fitted without them."""
    settings = minter.settings
    too_large = False
    opted_out = {
        link.url for job in jobs if job.kind == "html" for link in job.links if link.opt_out
    }
    prefix = minter.prefix
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
                    destination = utm.add_utm(link.url, utm_params) if utm_params else link.url
                    token = minter.seal(destination, index, extras=extras)
                except TokenError as exc:
                    # seal() refuses what url_is_sealable refuses (link_skip_reason already
                    # took out surrogates and everything else but the byte length), and
                    # a URL too long for any token.
                    reason = "too-long" if exc.reason == "too-long" else "malformed"
                else:
                    tracked = prefix + token
                    if len(tracked) > settings.max_link_length:
                        if extras and not too_large:
                            # The bare link: no tag, metadata or recipient.
                            bare = minter.seal(link.url, index, with_recipient=False)
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


def _keep_spaces(job: PartJob) -> None:
    """Leave a text/plain part untracked (``uri-only-text``) if tracking would make it
    read as one long word (see :mod:`smtp_proxy.engine.uri_only_text`)."""
    tracked = [(link, d.tracked_url) for link, d in job.decisions if d.tracked_url]
    if tracked and loses_its_spaces(job.text, tracked):
        job.decisions = [(link, as_skipped(d, "uri-only-text")) for link, d in job.decisions]


def _url_text_reason(job: PartJob, position: int) -> str | None:
    """``"url-text"`` if the visible text of the job's ``position``-th link is a URL."""
    if job.scan is None or position >= len(job.scan.tag_ends):
        return None
    text = anchor_text(job.text, job.scan.tag_ends[position])
    return "url-text" if text is not None and is_url_text(text) else None


#: Where the trap goes: before the last ``</body>`` (else ``</html>``, else the end).
_BODY_END = re.compile(r"</body\s*>|</html\s*>", re.IGNORECASE)
#: The trap link: an empty anchor, hidden from sight (display:none, plus the Outlook and
#: zero-size fallbacks for clients that drop display), from the keyboard (tabindex -1)
#: and from screen readers (aria-hidden). Mail scanners fetch every href in the markup.
TRAP_MARKUP = (
    '<a href="{url}" tabindex="-1" aria-hidden="true" style="display:none !important;'
    'mso-hide:all;font-size:0;line-height:0;max-height:0;overflow:hidden;opacity:0"></a>'
)


def add_trap(job: PartJob, minter: Minter, index: int) -> LinkDecision | None:
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
    try:
        token = minter.seal(target, index, trap=True)
    except TokenError:
        return None
    url = minter.prefix + token
    point = FoundLink(at, at, "", target, "trap", None)
    job.insertions.append((point, TRAP_MARKUP.format(url=url)))
    return LinkDecision(job.entity.path, index, target, "trap", "trap-link", url)
