"""Retention against real stores: old clicks go in batches, new ones stay, SQLite's file
does not grow when clicks keep coming and going."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from redirector.store import ClickStore
from redirector.store.records import ClickFilter
from redirector.store.retention import BATCH, Retention
from redirector.store.sqlite import SqliteStore
from tests.redirector.store.test_store import T0, make_click, store

__all__ = ["store"]


async def test_old_clicks_are_deleted_in_batches_and_counted(store: ClickStore) -> None:
    old = [make_click(i, time=T0 - timedelta(days=400, seconds=i)) for i in range(BATCH + 300)]
    new = [make_click(i, time=T0 - timedelta(days=10, seconds=i)) for i in range(5)]
    await store.write(old)
    await store.write(new)
    registry = CollectorRegistry()
    retention = Retention(store, 395, registry=registry)
    assert await retention.run_once(now=T0) == len(old)
    left = await store.export_page(ClickFilter(), 0, 10_000)
    assert {c.id for c in left} == {c.id for c in new}
    assert registry.get_sample_value("clickrelay_clicks_expired_total") == len(old)
    assert await retention.run_once(now=T0) == 0


async def test_zero_days_keeps_everything(store: ClickStore) -> None:
    retention = Retention(store, 0)
    await retention.start()  # nothing to run
    await store.write([make_click(1, time=T0 - timedelta(days=10_000))])
    await retention.stop()
    assert len(await store.export_page(ClickFilter(), 0, 10)) == 1


async def test_sqlite_file_reuses_freed_pages(tmp_path: Path) -> None:
    path = tmp_path / "clicks.sqlite3"
    store = SqliteStore(path)
    await store.open()
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
        retention = Retention(store, 1)
        sizes = []
        for round_ in range(4):
            day = T0 + timedelta(days=10 * round_)
            clicks = [
                make_click(i, time=day, id=f"{round_:04d}{i:028d}", user_agent="U" * 300)
                for i in range(3000)
            ]
            await store.write(clicks)
            await retention.run_once(now=day + timedelta(days=2))
            await store.write([make_click(0, time=day + timedelta(days=2), id=f"keep{round_}")])
            sizes.append(path.stat().st_size)
        # Every round writes ~1 MB and deletes it again: after the first round (which the
        # WAL holds until a checkpoint) the file stays the same size instead of growing.
        assert sizes[1] > 500_000
        assert sizes[3] <= sizes[1] * 1.1, sizes
    finally:
        await store.close()
