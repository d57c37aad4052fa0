"""What the rewriter takes and gives back: the tracking settings of a message, each link's
decision and the result with its reason (plain values, no logic beyond a host lookup)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field

from redirector.hosts import base_url_host
from redirector.tokens import Keyring
from smtp_proxy.engine.dkim_sign import DkimKey
from smtp_proxy.engine.linkrules import LinkPolicy


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


def as_skipped(decision: LinkDecision, reason: str) -> LinkDecision:
    """``decision`` turned into a skip for ``reason`` if it was tracked, else as it was."""
    if decision.action != "tracked":
        return decision
    return LinkDecision(decision.part, decision.index, decision.url, "skipped", reason, None)


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
