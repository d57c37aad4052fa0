"""The settler: re-reads recent clicks from the store, applies the walk rules, settles labels.

Every ``interval`` seconds it takes the oldest unsettled clicks from the store, reads every
click of their messages within the rules' horizon around them (from the store, so clicks
served by other nodes count too), asks :func:`redirector.clicks.rules.relabel` which human
labels are really bots, writes those relabels, and marks settled the clicks older than
``settle_delay`` — in one transaction. Several nodes may run it against one PostgreSQL
store at once: they read the same evidence and reach the same answer, an update only ever
turns an unsettled human label into a bot one, and marking settled is idempotent.

A label is final once settled; anything that acts on a click (webhooks, exports) should
read settled clicks only (``settled_clicks``, ``stats(settled_only=True)``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from prometheus_client import CollectorRegistry, Counter

from clickrelay.common.aiotasks import cancel_and_wait
from clickrelay.common.errors import ClickrelayError
from clickrelay.common.logfmt import log_event
from redirector.clicks import Click
from redirector.clicks.rules import DEFAULT_RULES, Relabel, Seen, WalkRules, relabel
from redirector.store import ClickStore

logger = logging.getLogger("clickrelay.settle")

#: A failing store is logged at most this often (seconds).
ERROR_LOG_INTERVAL = 60.0


def seen(click: Click) -> Seen:
    """What the rules need of a stored click."""
    return Seen(
        id=click.id,
        at=click.time.timestamp(),
        queue_id=click.queue_id,
        recipient=click.recipient,
        link_index=click.link_index,
        client=click.client_key,
        net=click.net_key,
        network=click.network,
        method=click.method,
        label=click.classification,
        reason=click.reason,
        trap=click.trap,
    )


def plan_settlement(
    pending: Sequence[Click],
    context: Sequence[Click],
    *,
    now: float,
    settle_delay: float,
    rules: WalkRules = DEFAULT_RULES,
) -> tuple[list[Relabel], list[str]]:
    """Pure: the relabels among unsettled clicks of ``context``, and the ids to settle."""
    unsettled = {c.id for c in context if not c.settled} | {c.id for c in pending}
    relabels = [r for r in relabel([seen(c) for c in context], rules) if r.id in unsettled]
    due = now - settle_delay
    settle_ids = [c.id for c in pending if c.time.timestamp() <= due]
    return relabels, settle_ids


class Settler:
    """Runs :func:`plan_settlement` against a store in the background."""

    def __init__(
        self,
        store: ClickStore,
        *,
        settle_delay: float,
        rules: WalkRules = DEFAULT_RULES,
        interval: float | None = None,
        batch: int = 2000,
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.store = store
        self.settle_delay = settle_delay
        self.rules = rules
        self.interval = interval if interval is not None else max(0.5, min(5.0, settle_delay / 10))
        self.batch = batch
        self.clock = clock
        self.relabelled = 0
        self.settled = 0
        self._task: asyncio.Task[None] | None = None
        self._last_error_log = -ERROR_LOG_INTERVAL
        self._m_relabelled = Counter(
            "clickrelay_clicks_relabelled",
            "Clicks served as human that the walk rules relabelled bot, by reason",
            labelnames=["reason"],
            registry=registry if registry is not None else CollectorRegistry(),
        )

    async def run_once(self) -> tuple[int, int]:
        """One pass: ``(clicks relabelled, clicks settled)``. StoreError propagates."""
        pending = await self.store.unsettled(self.batch)
        if not pending:
            return 0, 0
        horizon = timedelta(seconds=self.rules.horizon)
        start = min(c.time for c in pending) - horizon
        end = max(c.time for c in pending) + horizon
        queue_ids = sorted({c.queue_id for c in pending})
        context = await self.store.message_clicks(queue_ids, start, end)
        relabels, settle_ids = plan_settlement(
            pending, context, now=self.clock(), settle_delay=self.settle_delay, rules=self.rules
        )
        if not relabels and not settle_ids:
            return 0, 0
        changed = await self.store.settle(
            [(r.id, r.reason, json.dumps(r.evidence, sort_keys=True)) for r in relabels],
            settle_ids,
        )
        if changed == len(relabels):
            for r in relabels:
                self._m_relabelled.labels(r.reason).inc()
        elif changed:  # another node relabelled some of them first: count without reasons
            self._m_relabelled.labels("mixed").inc(changed)
        self.relabelled += changed
        self.settled += len(settle_ids)
        return changed, len(settle_ids)

    async def _loop(self) -> None:
        while True:
            try:
                _, settled = await self.run_once()
            except ClickrelayError as exc:
                now = time.monotonic()
                if now - self._last_error_log >= ERROR_LOG_INTERVAL:
                    log_event(logger, logging.WARNING, "settle-failed", error=str(exc))
                    self._last_error_log = now
                settled = 0
            except Exception:  # a bug must not stop settling for good
                logger.exception("settler: unexpected error")
                settled = 0
            if settled < self.batch:  # a full batch: more are waiting, go on at once
                await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="clickrelay-settler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
