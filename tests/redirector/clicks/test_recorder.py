"""ClickRecorder against a real SQLite store: batching, overflow, outages, shutdown."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from redirector.clicks.recorder import ClickRecorder
from redirector.store.sqlite import SqliteStore
from tests.support.click_helpers import make_click
from tests.support.polling import until

LOGGER = "clickrelay.recorder"


def stored_ids(store: SqliteStore) -> list[str]:
    with sqlite3.connect(store.path) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM clicks ORDER BY time")]


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"event={name}" in r.getMessage()]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "clicks.sqlite3", busy_timeout=0.05)
    await s.open()
    yield s
    await s.close()


def recorder_for(store: SqliteStore, **kw: object) -> tuple[ClickRecorder, CollectorRegistry]:
    registry = CollectorRegistry()
    options: dict[str, object] = {
        "queue_size": 1000,
        "batch_size": 50,
        "flush_interval": 0.02,
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
    }
    options.update(kw)
    return ClickRecorder(store, registry=registry, **options), registry  # type: ignore[arg-type]


async def test_a_full_batch_is_written_without_waiting_for_the_interval(
    store: SqliteStore,
) -> None:
    # flush_interval of an hour: only the batch size can trigger these writes.
    recorder, _ = recorder_for(store, batch_size=5, flush_interval=3600)
    await recorder.start()
    clicks = [make_click(i) for i in range(10)]
    for click in clicks:
        recorder.record(click)
    await until(lambda: recorder.written == 10, "two full batches written")
    assert recorder.queued == 0
    assert sorted(stored_ids(store)) == sorted(c.id for c in clicks)
    await recorder.stop(timeout=5)


async def test_a_partial_batch_is_written_after_the_flush_interval(store: SqliteStore) -> None:
    recorder, _ = recorder_for(store, batch_size=1000, flush_interval=0.02)
    await recorder.start()
    clicks = [make_click(i) for i in range(3)]
    for click in clicks:
        recorder.record(click)
    await until(lambda: recorder.queued == 0, "partial batch flushed")
    assert recorder.state == "ok"
    assert sorted(stored_ids(store)) == sorted(c.id for c in clicks)
    await recorder.stop(timeout=5)


async def test_stop_flushes_what_is_queued(store: SqliteStore) -> None:
    recorder, _ = recorder_for(store, batch_size=1000, flush_interval=3600)
    await recorder.start()
    await until(lambda: recorder.state == "ok", "first store contact")
    clicks = [make_click(i) for i in range(7)]
    for click in clicks:
        recorder.record(click)
    await recorder.stop(timeout=10)
    assert recorder.queued == 0
    assert sorted(stored_ids(store)) == sorted(c.id for c in clicks)


async def test_overflow_drops_the_oldest_counts_and_logs_once(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    recorder, registry = recorder_for(store, queue_size=5, batch_size=5)
    clicks = [make_click(i) for i in range(12)]
    for click in clicks:  # not started yet: nothing drains the queue
        recorder.record(click)
    assert recorder.queued == 5
    assert recorder.dropped == 7
    lines = events(caplog, "clicks-dropped")
    assert len(lines) == 1, lines  # rate-limited, not one line per click
    assert "count=1" in lines[0]
    assert registry.get_sample_value("clickrelay_clicks_dropped_total") == 7
    assert registry.get_sample_value("clickrelay_clicks_recorded_total") == 12
    assert registry.get_sample_value("clickrelay_click_queue") == 5
    await recorder.start()
    await recorder.stop(timeout=10)
    assert stored_ids(store) == [c.id for c in clicks[-5:]]  # the newest five survive
    # The drops held back by the rate limit are reported by the shutdown at the latest.
    lines = events(caplog, "clicks-dropped")
    assert len(lines) == 2, lines
    assert "count=6" in lines[1] and "total=7" in lines[1]


async def test_store_down_keeps_clicks_logs_state_changes_once(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    recorder, registry = recorder_for(store, batch_size=4)
    await recorder.start()
    await until(lambda: recorder.state == "ok", "first store contact")
    assert registry.get_sample_value("clickrelay_click_store_up") == 1
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        clicks = [make_click(i) for i in range(10)]
        for click in clicks:
            recorder.record(click)
        await until(
            lambda: (
                (registry.get_sample_value("clickrelay_click_store_write_failures_total") or 0) >= 3
            ),
            "several failed attempts",
        )
        assert recorder.state == "down"
        assert recorder.queued == 10
        assert registry.get_sample_value("clickrelay_click_store_up") == 0
        assert len(events(caplog, "click-store-down")) == 1  # once per change, not per retry
        other.execute("ROLLBACK")
        await until(lambda: recorder.queued == 0, "drained after the lock is released")
    finally:
        other.close()
    assert recorder.state == "ok"
    assert len(events(caplog, "click-store-up")) == 1
    assert sorted(stored_ids(store)) == sorted(c.id for c in clicks)
    await recorder.stop(timeout=5)


async def test_clicks_queued_before_start_while_locked_are_written_once_unlocked(
    store: SqliteStore,
) -> None:
    other = sqlite3.connect(store.path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    clicks = [make_click(n) for n in range(3)]
    try:
        recorder, _ = recorder_for(store)
        for click in clicks:
            recorder.record(click)
        await recorder.start()
        await until(lambda: recorder.state == "down", "down")
        assert stored_ids(store) == []
    finally:
        other.execute("ROLLBACK")
        other.close()
    await until(lambda: recorder.state == "ok", "ok again")
    await until(lambda: recorder.queued == 0, "drained")
    await recorder.stop(timeout=5)
    # Each click is in the store exactly once: the retries after the lock wrote no copy.
    assert sorted(stored_ids(store)) == sorted(c.id for c in clicks)


async def test_stop_with_the_store_down_gives_up_at_the_timeout_and_says_how_many(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    recorder, _ = recorder_for(store)
    await recorder.start()
    other = sqlite3.connect(store.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        for i in range(6):
            recorder.record(make_click(i))
        await recorder.stop(timeout=0.3)
        assert recorder.queued == 6
        (line,) = events(caplog, "clicks-unsaved")
        assert "count=6" in line
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert stored_ids(store) == []


async def test_clicks_the_store_refuses_are_dropped_one_by_one_not_the_batch(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    recorder, _ = recorder_for(store, batch_size=10, flush_interval=3600)
    good = [make_click(i) for i in range(9)]
    bad = make_click(99)._replace(link_index="not-a-number")  # type: ignore[arg-type]
    for click in [*good[:4], bad, *good[4:]]:
        recorder.record(click)
    await recorder.start()
    await until(lambda: recorder.queued == 0, "batch settled")
    assert recorder.dropped == 1
    assert len(events(caplog, "click-refused")) == 1
    assert sorted(stored_ids(store)) == sorted(c.id for c in good)
    assert recorder.state == "ok"
    await recorder.stop(timeout=5)


async def test_start_and_stop_are_idempotent(store: SqliteStore) -> None:
    recorder, _ = recorder_for(store)
    await recorder.stop(timeout=1)  # never started: nothing to do
    await recorder.start()
    await recorder.start()
    recorder.record(make_click(1))
    await recorder.stop(timeout=5)
    await recorder.stop(timeout=5)
    assert recorder.store is store
    assert len(stored_ids(store)) == 1


@pytest.mark.parametrize(
    "kw", [{"queue_size": 0}, {"batch_size": 0}, {"flush_interval": 0}, {"flush_interval": -1}]
)
def test_bad_settings_are_refused(tmp_path: Path, kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ClickRecorder(SqliteStore(tmp_path / "x"), **kw)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(queue_size=st.integers(1, 30), count=st.integers(0, 80))
def test_the_queue_keeps_the_newest_and_counts_every_drop(
    tmp_path_factory: pytest.TempPathFactory, queue_size: int, count: int
) -> None:
    store = SqliteStore(tmp_path_factory.mktemp("q") / "never-opened.sqlite3")
    recorder = ClickRecorder(store, queue_size=queue_size, registry=CollectorRegistry())
    clicks = [make_click(i) for i in range(count)]
    for click in clicks:
        recorder.record(click)
    assert recorder.queued == min(count, queue_size)
    assert recorder.dropped == max(0, count - queue_size)
    if count:
        assert list(recorder._queue) == clicks[-queue_size:]
