"""Retention: clicks older than ``[redirector] retention_days`` are deleted in the background.

Small batches (:data:`BATCH` clicks, one short transaction each) with a pause between
them, so neither the recorder's writes nor the redirects notice; a pass runs every
``interval`` seconds and keeps going while full batches come back. Deleted clicks are
counted (``clickrelay_clicks_expired_total``). SQLite hands the freed pages back to the
file system with ``incremental_vacuum`` (see :mod:`redirector.store.sqlite`), so the file
does not grow without bound. ``retention_days = 0`` keeps every click.

The dashboard's roll-ups follow the deletes (a delete trigger in each store): an
overview shows what the clicks table still holds, the same clicks an export or the
stats would find, rather than totals of clicks that can no longer be looked at. That
costs a few roll-up updates per deleted click, in the same small batches.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter

from clickrelay.common.aiotasks import cancel_and_wait
from clickrelay.common.logfmt import log_event
from redirector.store.base import ClickStore, StoreError

logger = logging.getLogger("clickrelay.retention")

BATCH = 1000
#: Seconds between two batches of one pass: the store's other users go first.
BATCH_PAUSE = 0.05


class Retention:
    def __init__(
        self,
        store: ClickStore,
        days: int,
        *,
        registry: CollectorRegistry | None = None,
        interval: float = 600.0,
    ) -> None:
        self.store = store
        self.days = days
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._expired = Counter(
            "clickrelay_clicks_expired",
            "Clicks deleted by retention (older than retention_days)",
            registry=registry if registry is not None else CollectorRegistry(),
        )

    async def start(self) -> None:
        if self.days > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="clickrelay-retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def run_once(self, now: datetime | None = None) -> int:
        """One pass: delete every click older than the cutoff, batch by batch."""
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.days)
        total = 0
        while True:
            deleted = await self.store.delete_before(cutoff, BATCH)
            total += deleted
            self._expired.inc(deleted)
            if deleted < BATCH:
                break
            await asyncio.sleep(BATCH_PAUSE)
        if total:
            log_event(
                logger, logging.INFO, "clicks-expired", count=total, before=cutoff.isoformat()
            )
        return total

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except StoreError as exc:
                log_event(logger, logging.WARNING, "retention-failed", error=str(exc))
            await asyncio.sleep(self.interval)
