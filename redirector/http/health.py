"""The dashboard's health strip: items from a list of providers, red when one needs work.

Each part of the product that knows something an operator must act on registers a
provider (a function returning :class:`HealthItem` s) on the redirector service: the
redirector itself adds its click store, refused redirects, certificates and webhook
backlog; ``clickrelay serve`` adds the preflight verdict of every tracking domain. The
page lists whatever the providers return.

A provider is called for every page: plain functions answer from memory; one that has
to ask the store is a coroutine function. They all run at once, each coroutine under
:data:`PROVIDER_TIMEOUT`, so a store that hangs costs a page that long and no more, and
the page is always current (no cache to go stale while an operator watches a fix land).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
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


HealthProvider = Callable[[], Iterable[HealthItem] | Awaitable[Iterable[HealthItem]]]

#: Seconds a coroutine provider may take before its line turns red.
PROVIDER_TIMEOUT = 2.0


async def _items(provider: HealthProvider, limit: float) -> list[HealthItem]:
    name = getattr(provider, "__name__", type(provider).__name__)
    try:
        answer = provider()
        if inspect.isawaitable(answer):
            async with asyncio.timeout(limit):
                answer = await answer
        return list(answer)
    except TimeoutError:
        error = f"no answer within {limit:g} s"
        state = "timed out"
    except Exception as exc:
        error, state = repr(exc), "failed"
    log_event(log, logging.WARNING, "health-provider-failed", provider=name, error=error)
    return [HealthItem("health", name, "bad", state, error)]


async def collect(
    providers: Iterable[HealthProvider], *, limit: float = PROVIDER_TIMEOUT
) -> list[HealthItem]:
    """Every provider's items in provider order; one that fails or takes longer than
    ``limit`` seconds becomes a red item, not a 500."""
    answers = await asyncio.gather(*(_items(p, limit) for p in providers))
    return [item for items in answers for item in items]


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
