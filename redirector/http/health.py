"""The dashboard's health strip: items from a list of providers, red when one needs work.

Each part of the product that knows something an operator must act on registers a
provider (a function returning :class:`HealthItem` s) on the redirector service: the
redirector itself adds its click store and refused redirects; ``clickrelay serve`` adds
the preflight verdict of every tracking domain. Other parts (certificates, webhooks)
add their own the same way; the page lists whatever the providers return.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from clickrelay.common.logfmt import log_event
from redirector.http.refusals import RefusalLog

log = logging.getLogger("clickrelay.redirector")

#: Levels, mildest first: ``info`` (nothing to judge), ``ok``, ``warn``, ``bad`` (red).
LEVELS = ("info", "ok", "warn", "bad")


@dataclass(frozen=True)
class HealthItem:
    """One line of the strip: ``group`` (e.g. ``preflight``), ``name`` (e.g. a tracking
    domain), ``state`` (a short verdict), ``detail``, and the ``fix`` a person has to
    make when the item is not fine."""

    group: str
    name: str
    level: str
    state: str
    detail: str = ""
    fix: str | None = None

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"health level must be one of {LEVELS}, got {self.level!r}")

    @property
    def needs_action(self) -> bool:
        return self.level == "bad"


HealthProvider = Callable[[], Iterable[HealthItem]]


def collect(providers: Iterable[HealthProvider]) -> list[HealthItem]:
    """Every provider's items; a provider that fails becomes a red item, not a 500."""
    items: list[HealthItem] = []
    for provider in providers:
        try:
            items.extend(provider())
        except Exception as exc:
            name = getattr(provider, "__name__", type(provider).__name__)
            log_event(
                log, logging.WARNING, "health-provider-failed", provider=name, error=repr(exc)
            )
            items.append(HealthItem("health", name, "bad", "failed", repr(exc)))
    return items


def store_item(state: str, queued: int, dropped: int, queue_size: int) -> HealthItem:
    """The click store's line: red while it is down or once clicks were dropped."""
    detail = f"{queued:,} queued of {queue_size:,}, {dropped:,} dropped since start"
    if dropped or state == "down":
        level, fix = "bad", "check the click store (disk, permissions, database) and its log"
    elif state in ("ok", "disabled"):
        level, fix = "ok", None
    else:
        level, fix = "warn", None
    return HealthItem("store", "click store", level, state, detail, fix)


def refusals_provider(refusals: RefusalLog) -> HealthProvider:
    """Refused redirects by reason; ``unknown-key`` is red (links we minted may fail)."""

    def refused_redirects() -> list[HealthItem]:
        totals = refusals.totals
        if not totals:
            return [HealthItem("redirects", "refused redirects", "ok", "none")]
        parts = ", ".join(
            f"{reason} {n:,}" for reason, n in sorted(totals.items(), key=lambda kv: -kv[1])
        )
        if "unknown-key" in totals:
            return [
                HealthItem(
                    "redirects",
                    "refused redirects",
                    "bad",
                    f"{sum(totals.values()):,} refused",
                    parts,
                    "tokens minted with a key this redirector does not have: put that key"
                    " line back in its key file and reload",
                )
            ]
        return [
            HealthItem("redirects", "refused redirects", "info", f"{sum(totals.values()):,}", parts)
        ]

    return refused_redirects
