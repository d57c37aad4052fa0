"""Health-strip lines of the ``[[webhooks]]`` endpoints: the delivery backlog of each.

One line per endpoint from the store's :class:`~redirector.store.records.EndpointStatus`
(pending events and the age of the oldest, events given up, the last error) and the
dispatcher (an endpoint a 410 Gone disabled). Red when a person must act: the endpoint
is disabled, events were given up (the receiver never gets them unless replayed), or
the oldest pending event has waited :data:`BACKLOG_RED` seconds or more (the receiver
has been failing that long: retries back off, they do not fix it).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence

from redirector.http.health import HealthItem, HealthProvider
from redirector.store.base import ClickStore
from redirector.store.records import EndpointStatus
from redirector.webhooks.config import WebhookConfig

GROUP = "webhook"
#: Oldest pending event age (seconds) from which the line is yellow, then red. A healthy
#: receiver takes events within a poll interval or two.
BACKLOG_WARN = 60.0
BACKLOG_RED = 900.0


def age_text(seconds: float) -> str:
    """``42 s``, ``12 min``, ``3.5 h``, ``2.0 d``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def webhook_item(
    status: EndpointStatus, hook: WebhookConfig, *, disabled: bool, now: float
) -> HealthItem:
    """The line for one endpoint; ``now`` in unix seconds, like the store's times."""
    name = hook.key
    age = now - status.oldest_pending if status.oldest_pending is not None else None
    parts = [f"{status.pending:,} pending"]
    if age is not None:
        parts.append(f"oldest {age_text(age)}")
    if status.failed:
        parts.append(f"{status.failed:,} given up")
    if status.last_error and (status.pending or status.failed or disabled):
        parts.append(f"last error: {status.last_error}")
    detail = f"{hook.url}: " + ", ".join(parts)
    replay = f"`clickrelay webhooks replay --endpoint {shlex.quote(name)} --since 1d`"
    if disabled:
        return HealthItem(
            GROUP,
            name,
            "bad",
            "disabled",
            detail,
            f"the receiver answered 410 Gone: fix or replace it, then reload (SIGHUP) to enable"
            f" the endpoint again; {replay} re-sends clicks it missed",
        )
    if status.failed:
        return HealthItem(
            GROUP,
            name,
            "bad",
            f"{status.failed:,} failed",
            detail,
            f"events were given up after retry_for/max_attempts: once the receiver accepts"
            f" again, {replay} sends them again",
        )
    if age is not None and age >= BACKLOG_RED:
        return HealthItem(
            GROUP,
            name,
            "bad",
            f"backlog {age_text(age)} old",
            detail,
            f"the receiver at {hook.url} is not accepting deliveries (see the last error);"
            " pending events are retried until retry_for, then given up",
        )
    if age is not None and age >= BACKLOG_WARN:
        return HealthItem(GROUP, name, "warn", "retrying", detail)
    state = f"{status.pending:,} pending" if status.pending else "up to date"
    return HealthItem(GROUP, name, "ok", state, detail)


def webhooks_provider(
    store: ClickStore,
    hooks: Sequence[WebhookConfig],
    disabled: Callable[[str], bool],
) -> HealthProvider:
    """One line per endpoint; asks the store, so it is a coroutine function (the strip
    runs it under a timeout). ``disabled(name)``: whether delivery to it is off."""
    by_name = {h.key: h for h in hooks}

    async def webhook_backlog() -> list[HealthItem]:
        statuses = await store.webhook_status(list(by_name))
        now = time.time()
        return [
            webhook_item(s, by_name[s.endpoint], disabled=disabled(s.endpoint), now=now)
            for s in statuses
        ]

    return webhook_backlog
