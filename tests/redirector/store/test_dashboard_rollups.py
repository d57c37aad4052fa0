"""The overview's roll-ups follow what happens to a click after its insert: the settler's
relabels, any other change of a label or reason, retention's deletes. After any of them
the overview equals a count of what the clicks table holds; a store at schema step 4
upgrades with every roll-up rebuilt from its clicks (stale ones included)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
from hypothesis import given, settings
from hypothesis import strategies as st

from redirector.clicks import Click
from redirector.store import ClickStore
from redirector.store.dashboard import DashboardQuery
from redirector.store.pg import PgStore
from redirector.store.records import ClickFilter
from redirector.store.sqlite import SqliteStore
from redirector.store.sqlite.schema import MIGRATIONS
from tests.redirector.store.schema_steps import Relabel, pg_tables_at_step, sqlite_file_at_step
from tests.redirector.store.test_dashboard import (
    QUERIES,
    REASONS,
    T0,
    actual,
    expected,
    random_clicks,
)
from tests.redirector.store.test_store import store

__all__ = ["store"]

#: A window over every click random_clicks makes, and more.
EVERYTHING = DashboardQuery(T0 - timedelta(days=1), T0 + timedelta(days=4))


async def table_clicks(store: ClickStore) -> list[Click]:
    """What the clicks table holds now (read past the roll-ups)."""
    rows = await store.export_page(ClickFilter(), 0, 1_000_000)
    return [
        Click(
            r.time,
            r.queue_id,
            r.link_index,
            r.url,
            r.recipient,
            r.client_ip,
            r.user_agent,
            r.method,
            r.classification,
            r.reason,
            id=r.id,
            tag=r.tag,
        )
        for r in rows
    ]


async def assert_pages_match_the_clicks_table(
    store: ClickStore, queries: list[DashboardQuery]
) -> None:
    clicks = await table_clicks(store)
    for query in queries:
        want = expected(clicks, query)
        want.pop("recent")
        assert actual(await store.dashboard(query)) == want, query
    # And the overview of everything agrees with the stats document.
    data = await store.dashboard(EVERYTHING)
    totals = (await store.stats())["totals"]
    assert (data.human, data.bot) == (totals["human_clicks"], totals["bot_clicks"])
    assert dict(data.bot_reasons) == totals["bot_reasons"]


async def update_label(store: ClickStore, click_id: str, label: str, reason: str | None) -> None:
    """A label change by another writer than the settler (a script, a later release)."""
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            conn.execute(
                "UPDATE clicks SET classification = ?, reason = ? WHERE id = ?",
                (label, reason, click_id),
            )
        conn.close()
        return
    assert isinstance(store, PgStore)
    conn = await asyncpg.connect(store.dsn)
    try:
        await conn.execute(
            f"UPDATE {store.table} SET classification = $1, reason = $2 WHERE id = $3",
            label,
            reason,
            click_id,
        )
    finally:
        await conn.close()


async def test_relabels_and_retention_keep_the_overview_equal_to_the_clicks(
    store: ClickStore,
) -> None:
    clicks = random_clicks(11, 800)
    await store.write(clicks)
    rnd = random.Random(3)
    humans = [c for c in clicks if c.classification == "human"]
    bots = [c for c in clicks if c.classification == "bot"]
    # The settler's relabels (human → bot) and settling of everything.
    relabels = [(c.id, rnd.choice(REASONS), "{}") for c in rnd.sample(humans, 60)]
    assert await store.settle(relabels, [c.id for c in clicks]) == 60
    await assert_pages_match_the_clicks_table(store, QUERIES)
    assert (await store.stats(settled_only=True))["totals"] == {
        **(await store.stats())["totals"],
        "settled_only": True,
    }
    # Other writers: bot → human, and a bot with a new reason.
    for c in rnd.sample(bots, 30):
        await update_label(store, c.id, "human", None)
    for c in rnd.sample(bots, 30):
        await update_label(store, c.id, "bot", "walk")
    await assert_pages_match_the_clicks_table(store, QUERIES)
    # Retention: what it deletes leaves the overview too (the window shows what the
    # clicks table holds, the same as an export of it would).
    deleted = await store.delete_before(T0 + timedelta(hours=30), 10_000)
    assert deleted > 200
    await assert_pages_match_the_clicks_table(store, QUERIES)
    before = await store.dashboard(DashboardQuery(T0, T0 + timedelta(hours=29)))
    assert before.hours == [] and before.top_tags == [] and before.unique_human_recipients == 0


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(["settle", "to-human", "new-reason", "delete"]),
        st.integers(0, 10_000),
        st.sampled_from(REASONS),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    count=st.integers(1, 200),
    operations=OPERATIONS,
    retention_hours=st.one_of(st.none(), st.integers(0, 80)),
    window=st.tuples(st.integers(0, 72), st.integers(1, 80)),
)
def test_any_relabels_and_deletes_leave_the_sqlite_overview_exact(
    seed: int,
    count: int,
    operations: list[tuple[str, int, str]],
    retention_hours: int | None,
    window: tuple[int, int],
) -> None:
    clicks = random_clicks(seed, count)
    start = T0 + timedelta(hours=window[0])
    queries = [
        EVERYTHING,
        DashboardQuery(start, start + timedelta(hours=window[1])),
        DashboardQuery(start, start + timedelta(hours=window[1]), tag="spring"),
    ]

    async def run(path: Path) -> None:
        store = SqliteStore(path)
        try:
            await store.write(clicks)
            for kind, at, reason in operations:
                click = clicks[at % len(clicks)]
                if kind == "settle":  # only an unsettled human turns bot
                    await store.settle([(click.id, reason, "{}")], [])
                elif kind == "to-human":
                    await update_label(store, click.id, "human", None)
                elif kind == "new-reason":
                    await update_label(store, click.id, "bot", reason)
                else:
                    with sqlite3.connect(path) as conn:
                        conn.execute("DELETE FROM clicks WHERE id = ?", (click.id,))
                    conn.close()
            if retention_hours is not None:
                await store.delete_before(T0 + timedelta(hours=retention_hours), 10_000)
            await assert_pages_match_the_clicks_table(store, queries)
        finally:
            await store.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp) / "clicks.sqlite3"))


def stale_relabels(clicks: list[Click]) -> list[Relabel]:
    """Labels changed at schema step 4, whose roll-ups did not follow them."""
    rnd = random.Random(9)
    return [
        (c.id, "bot", "walk") if c.classification == "human" else (c.id, "human", None)
        for c in rnd.sample(clicks, 80)
    ]


async def test_sqlite_upgrade_from_step_4_rebuilds_every_rollup(tmp_path: Path) -> None:
    path = tmp_path / "step4.sqlite3"
    clicks = random_clicks(21, 500)
    sqlite_file_at_step(path, 4, clicks, stale_relabels(clicks))
    store = SqliteStore(path)
    try:
        await store.open()
        await assert_pages_match_the_clicks_table(store, QUERIES)
        assert (await store.dashboard(QUERIES[0])).top_tags
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchone() == (len(MIGRATIONS),)
    conn.close()


async def test_pg_upgrade_from_step_4_rebuilds_every_rollup(pg_dsn: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    clicks = random_clicks(22, 500)
    await pg_tables_at_step(pg_dsn, prefix, 4, clicks, stale_relabels(clicks))
    store = PgStore(pg_dsn, table_prefix=prefix)
    try:
        await store.open()
        await assert_pages_match_the_clicks_table(store, QUERIES)
        assert (await store.dashboard(QUERIES[0])).top_tags
        await store.write(random_clicks(23, 50))  # the new trigger counts new clicks
        await assert_pages_match_the_clicks_table(store, QUERIES)
    finally:
        await store.drop_tables()
        await store.close()
