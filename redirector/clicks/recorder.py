"""The click queue between the redirector's handlers and the store.

A redirect must never wait for the store, so handlers call :meth:`ClickRecorder.record`
— synchronous, O(1), never blocking, never raising — and one background task writes
batches: as soon as ``batch_size`` clicks are queued, or ``flush_interval`` seconds
after the first click of a batch arrived.

When a write fails (:class:`StoreError`) the batch stays at the head of the queue and is
retried with exponential backoff (``backoff_base`` doubling up to ``backoff_cap``); new
clicks keep queueing meanwhile. Retrying is safe because clicks carry ids the store
de-duplicates. While idle the store is checked every ``probe_interval`` seconds (an
empty write), so ``state`` — shown by ``/healthz`` — stays truthful. The queue is bounded in
clicks and in bytes: past ``queue_size`` clicks or ``queue_bytes`` (roughly, see
:func:`~redirector.clicks.click_weight`) the oldest queued clicks are dropped, counted and
logged (rate-limited) — never silently. :meth:`stop` flushes what it can within its timeout.

Usage::

    await store.open()                    # StoreError here is survivable: writes retry
    recorder = ClickRecorder(store, queue_size=100_000, batch_size=500,
                             flush_interval=0.25, registry=registry)
    await recorder.start()
    recorder.record(click)                # from request handlers, same event loop
    await recorder.stop(timeout=10)

``record`` must be called from the event loop thread that ran ``start``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from clickrelay.common.aiotasks import cancel_and_wait
from clickrelay.common.logfmt import log_event
from redirector.clicks import Click, click_weight
from redirector.store import ClickStore, StoreError

logger = logging.getLogger("clickrelay.recorder")

#: Overflow is logged at most this often (seconds), with the count since the last line.
DROP_LOG_INTERVAL = 10.0


class _RecordedCollector(Collector):
    """Exports ``clickrelay_clicks_recorded_total`` from the recorder's plain counter."""

    def __init__(self, recorder: ClickRecorder) -> None:
        self._recorder = recorder

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "clickrelay_clicks_recorded", "Clicks handed to the recorder by the redirector"
        )
        family.add_metric([], self._recorder._recorded)
        yield family


class ClickRecorder:
    """Bounded in-memory click queue with a batching, retrying writer task."""

    def __init__(
        self,
        store: ClickStore,
        *,
        queue_size: int = 100_000,
        queue_bytes: int = 64 * 2**20,
        batch_size: int = 500,
        flush_interval: float = 0.25,
        registry: CollectorRegistry | None = None,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
        probe_interval: float = 30.0,
    ) -> None:
        if queue_size < 1 or batch_size < 1 or flush_interval <= 0:
            raise ValueError("queue_size and batch_size must be >= 1, flush_interval > 0")
        self._store = store
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        #: click_weight() of the clicks in _queue (not of the batch being written).
        self._queue_weight = 0
        self.batch_size = min(batch_size, queue_size)
        self.flush_interval = flush_interval
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        #: While idle, the store is checked this often so ``state`` stays truthful.
        self.probe_interval = probe_interval
        self._queue: deque[Click] = deque()
        #: The batch being written (the oldest clicks); kept until the store has it.
        self._batch: list[Click] = []
        self._state = "starting"
        self._dropped = 0
        self._written = 0
        self._failures = 0  # consecutive, for the backoff
        self._drops_unlogged = 0
        self._last_drop_log = -DROP_LOG_INTERVAL
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

        registry = registry if registry is not None else CollectorRegistry()
        #: Clicks handed to record(): a plain int on the hot path (a prometheus Counter's
        #: inc() takes a lock), exported as a counter when scraped.
        self._recorded = 0
        registry.register(_RecordedCollector(self))
        self._m_dropped = Counter(
            "clickrelay_clicks_dropped",
            "Clicks lost: queue overflow (oldest dropped) or refused by the store",
            registry=registry,
        )
        self._m_failures = Counter(
            "clickrelay_click_store_write_failures",
            "Failed click store writes (each is retried)",
            registry=registry,
        )
        self._m_queue = Gauge(
            "clickrelay_click_queue", "Clicks waiting to be written", registry=registry
        )
        self._m_queue.set_function(lambda: self.queued)
        self._m_up = Gauge(
            "clickrelay_click_store_up",
            "1 while the click store accepts writes, 0 while it is down",
            registry=registry,
        )

    # -- the hot path -----------------------------------------------------------------

    def record(self, click: Click) -> None:
        """Queue one click; O(1), never blocks, never raises."""
        try:
            queue = self._queue
            weight = click_weight(click)
            if (
                len(queue) + len(self._batch) >= self.queue_size
                or self._queue_weight + weight > self.queue_bytes
            ):
                self._make_room(click, weight)
            else:
                queue.append(click)
                self._queue_weight += weight
            self._recorded += 1
            n = len(queue)
            if n == 1 or n >= self.batch_size:
                self._wakeup.set()
        except Exception:  # pragma: no cover - a bug here must not fail a redirect
            logger.exception("click recorder: record failed")

    def _make_room(self, click: Click, weight: int) -> None:
        """Drop the oldest queued clicks (not the batch being written) until ``click``
        fits, then queue it; if it never fits, ``click`` is the one dropped."""
        queue = self._queue
        if weight > self.queue_bytes:
            self._drop(1)  # would never fit: keep the queue as it is
            return
        dropped = 0
        while queue and (
            len(queue) + len(self._batch) >= self.queue_size
            or self._queue_weight + weight > self.queue_bytes
        ):
            self._queue_weight -= click_weight(queue.popleft())
            dropped += 1
        if len(queue) + len(self._batch) < self.queue_size and (
            self._queue_weight + weight <= self.queue_bytes
        ):
            queue.append(click)
            self._queue_weight += weight
        else:
            dropped += 1
        self._drop(dropped)

    def _drop(self, count: int) -> None:
        self._dropped += count
        self._m_dropped.inc(count)
        self._drops_unlogged += count
        self._log_drops()

    def _log_drops(self, *, force: bool = False) -> None:
        """One line per DROP_LOG_INTERVAL at most, with the count since the last line."""
        if not self._drops_unlogged:
            return
        now = time.monotonic()
        if force or now - self._last_drop_log >= DROP_LOG_INTERVAL:
            log_event(
                logger,
                logging.WARNING,
                "clicks-dropped",
                count=self._drops_unlogged,
                total=self._dropped,
                queued=self.queued,
                queue_size=self.queue_size,
                store_state=self._state,
            )
            self._drops_unlogged = 0
            self._last_drop_log = now

    # -- state ------------------------------------------------------------------------

    @property
    def store(self) -> ClickStore:
        return self._store

    @property
    def state(self) -> str:
        """``starting`` until the first store contact, then ``ok`` or ``down``."""
        return self._state

    @property
    def queued(self) -> int:
        """Clicks not yet in the store (including a batch being written)."""
        return len(self._queue) + len(self._batch)

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def written(self) -> int:
        """Clicks the store has accepted since start."""
        return self._written

    def _set_state(self, state: str, error: str | None = None) -> None:
        if state == self._state:
            return
        previous, self._state = self._state, state
        self._m_up.set(1 if state == "ok" else 0)
        if state == "down":
            log_event(
                logger,
                logging.WARNING,
                "click-store-down",
                store=self._store.name,
                error=error,
                queued=self.queued,
            )
        elif previous == "down":
            log_event(
                logger, logging.INFO, "click-store-up", store=self._store.name, queued=self.queued
            )

    # -- the writer task --------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer; it first checks the store (state becomes ``ok`` or ``down``)."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="clickrelay-recorder")

    async def _wait_for_work(self) -> None:
        """Until a batch is due: ``batch_size`` queued, or ``flush_interval`` after the first."""
        if len(self._queue) >= self.batch_size or self._stopping:
            return
        if not self._queue:
            self._wakeup.clear()
            try:
                async with asyncio.timeout(self.probe_interval):
                    await self._wakeup.wait()
            except TimeoutError:
                return  # idle: the caller writes an empty batch, a reachability check
            if self._stopping:
                return
        # Let the batch fill for up to flush_interval; a full batch or stop() ends it early.
        self._wakeup.clear()
        if len(self._queue) < self.batch_size:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await self._wakeup.wait()

    def _take_batch(self) -> None:
        n = min(self.batch_size, len(self._queue))
        self._batch = [self._queue.popleft() for _ in range(n)]
        self._queue_weight -= sum(map(click_weight, self._batch))

    async def _run(self) -> None:
        try:
            await self._loop()
        except Exception:  # pragma: no cover - a bug; clicks stay queued, say so loudly
            logger.exception("click recorder: writer task failed")
            self._set_state("down", "writer task failed")
            raise

    async def _loop(self) -> None:
        probe = True  # contact the store once at start so /healthz tells the truth early
        while True:
            if not self._batch:
                if self._stopping and not self._queue:
                    return
                if not probe:
                    await self._wait_for_work()
                self._take_batch()
            probe = False
            try:
                await self._write_batch()
            except StoreError as exc:
                await self._failed(str(exc))
                # While down, keep probing even with nothing queued, so the state
                # recovers to "ok" without waiting for the next click.
                probe = True
                continue
            except Exception as exc:  # a store bug must not kill the writer
                logger.exception("click recorder: unexpected store error")
                await self._failed(f"{type(exc).__name__}: {exc}")
                probe = True
                continue
            self._failures = 0
            self._set_state("ok")
            self._log_drops()  # drops held back by the rate limit are reported soon

    async def _write_batch(self) -> None:
        batch = self._batch
        try:
            await self._store.write(batch)
        except StoreError as exc:
            if exc.retryable or not batch:
                raise
            await self._write_one_by_one()
            return
        self._written += len(batch)
        self._batch = []

    async def _write_one_by_one(self) -> None:
        """The store refused the batch's data: find and drop the clicks it can never take."""
        while self._batch:
            click = self._batch[0]
            try:
                await self._store.write([click])
            except StoreError as exc:
                if exc.retryable:
                    raise
                log_event(
                    logger,
                    logging.ERROR,
                    "click-refused",
                    store=self._store.name,
                    queue_id=click.queue_id,
                    link_index=click.link_index,
                    error=str(exc),
                )
                self._drop(1)
            else:
                self._written += 1
            self._batch.pop(0)

    async def _failed(self, error: str) -> None:
        self._failures += 1
        self._m_failures.inc()
        self._set_state("down", error)
        delay = min(self.backoff_cap, self.backoff_base * 2 ** min(self._failures - 1, 30))
        await asyncio.sleep(delay)

    async def stop(self, timeout: float) -> None:  # noqa: ASYNC109 - contract signature
        """Write what is queued, for at most ``timeout`` seconds; log what is left."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wakeup.set()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        except TimeoutError:
            await cancel_and_wait(task)
        finally:
            if not task.done():  # stop() itself was cancelled
                task.cancel()
        self._log_drops(force=True)
        left = self.queued
        if left:
            log_event(
                logger,
                logging.ERROR,
                "clicks-unsaved",
                store=self._store.name,
                count=left,
                state=self._state,
            )
