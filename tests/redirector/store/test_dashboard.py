"""The dashboard's queries on both stores: roll-ups agree with the clicks themselves."""

from __future__ import annotations

import itertools
import random
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redirector.clicks import Click
from redirector.store import ClickStore
from redirector.store.dashboard import (
    TOP_N,
    DashboardData,
    DashboardQuery,
    hour_floor,
    split_days,
)
from redirector.store.pg import PgStore
from redirector.store.sqlite import SqliteStore
from tests.redirector.store.schema_steps import pg_tables_at_step, sqlite_file_at_step
from tests.redirector.store.test_store import store

T0 = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
__all__ = ["store"]

REASONS = ["head", "scanner-agent", "too-soon", "burst"]
TAGS = [None, "spring", "autumn", "promo", "news"]


def random_clicks(seed: int, count: int) -> list[Click]:
    rnd = random.Random(seed)
    clicks = []
    for _ in range(count):
        human = rnd.random() < 0.6
        clicks.append(
            Click(
                time=T0 + timedelta(seconds=rnd.randrange(3 * 86400)),
                queue_id=f"Q{rnd.randrange(6)}",
                link_index=rnd.randrange(3),
                url=f"https://example.com/{rnd.randrange(4)}",
                recipient=rnd.choice([None, "a@x.org", "b@x.org", "c@x.org"]),
                client_ip="192.0.2.0",
                user_agent="Mozilla/5.0",
                method="GET",
                classification="human" if human else "bot",
                reason=None if human else rnd.choice(REASONS),
                tag=rnd.choice(TAGS),
            )
        )
    return clicks


def ranked(counts: dict[str, list[int]]) -> list[tuple[str, int, int]]:
    """A top table the obvious way: most human clicks first, then by key; TOP_N rows."""
    rows = sorted(((k, h, b) for k, (h, b) in counts.items()), key=lambda r: (-r[1], r[0]))
    return rows[:TOP_N]


def top(clicks: list[Click], key: Callable[[Click], str | None]) -> list[tuple[str, int, int]]:
    counts: dict[str, list[int]] = {}
    for c in clicks:
        k = key(c)
        if k is not None:
            counts.setdefault(k, [0, 0])[0 if c.classification == "human" else 1] += 1
    return ranked(counts)


def expected(clicks: list[Click], query: DashboardQuery) -> dict[str, object]:
    """The page's numbers computed the slow, obvious way."""
    chosen = [
        c
        for c in clicks
        if query.start <= c.time < query.end
        and (query.queue_id is None or c.queue_id == query.queue_id)
        and (query.url is None or c.url == query.url)
        and (query.tag is None or c.tag == query.tag)
    ]
    hours: dict[datetime, list[int]] = {}
    for c in chosen:
        slot = hours.setdefault(hour_floor(c.time), [0, 0])
        slot[0 if c.classification == "human" else 1] += 1
    humans = [c for c in chosen if c.classification == "human"]
    return {
        "hours": [(h, a, b) for h, (a, b) in sorted(hours.items())],
        "unique": len({c.recipient for c in humans if c.recipient}),
        "reasons": dict(Counter(c.reason for c in chosen if c.classification != "human")),
        "links": top(chosen, lambda c: c.url),
        "messages": top(chosen, lambda c: c.queue_id),
        "tags": top(chosen, lambda c: c.tag),
        "recent": len(chosen),
    }


def actual(data: DashboardData) -> dict[str, object]:
    return {
        "hours": data.hours,
        "unique": data.unique_human_recipients,
        "reasons": dict(data.bot_reasons),
        "links": [(r.key, r.human, r.bot) for r in data.top_links],
        "messages": [(r.key, r.human, r.bot) for r in data.top_messages],
        "tags": [(r.key, r.human, r.bot) for r in data.top_tags],
    }


QUERIES = [
    DashboardQuery(T0, T0 + timedelta(days=3)),
    DashboardQuery(T0 + timedelta(hours=5), T0 + timedelta(hours=30)),
    DashboardQuery(T0, T0 + timedelta(days=3), queue_id="Q2"),
    DashboardQuery(T0 + timedelta(hours=7), T0 + timedelta(days=2), url="https://example.com/1"),
    DashboardQuery(T0 - timedelta(days=9), T0 - timedelta(days=1)),
    DashboardQuery(T0 + timedelta(hours=5), T0 + timedelta(days=2, hours=7)),
    DashboardQuery(T0 + timedelta(hours=23), T0 + timedelta(days=1, hours=1)),
    DashboardQuery(T0, T0 + timedelta(days=3), tag="spring"),
    DashboardQuery(T0 + timedelta(hours=5), T0 + timedelta(days=2, hours=7), tag="autumn"),
    DashboardQuery(T0, T0 + timedelta(days=3), tag="never-used"),
]


@pytest.mark.parametrize("query", QUERIES, ids=range(len(QUERIES)))
async def test_dashboard_numbers_equal_a_count_of_the_clicks(
    store: ClickStore, query: DashboardQuery
) -> None:
    clicks = random_clicks(7, 1500)
    await store.write(clicks[:1000])
    await store.write(clicks[500:])  # a retried, overlapping batch counts once
    want = expected(clicks, query)
    data = await store.dashboard(query)
    got = actual(data)
    got_recent = len(data.recent)
    want_recent = want.pop("recent")
    assert got == want
    if query.drill:
        assert got_recent == min(int(str(want_recent)), 100)
        assert [c.time for c in data.recent] == sorted((c.time for c in data.recent), reverse=True)
    else:
        assert got_recent == 0


async def test_top_tables_are_ordered_and_bounded(store: ClickStore) -> None:
    clicks = [
        Click(
            T0,
            f"M{i:02}",
            0,
            f"https://example.com/{i}",
            None,
            None,
            None,
            "GET",
            "human",
            None,
            tag=f"T{i:02}",
        )
        for i in range(30)
        for _ in range(i % 7 + 1)
    ]
    await store.write(clicks)
    data = await store.dashboard(DashboardQuery(T0, T0 + timedelta(hours=1)))
    assert len(data.top_links) == len(data.top_messages) == len(data.top_tags) == 10
    for table in (data.top_messages, data.top_tags):
        assert [r.human for r in table] == sorted((r.human for r in table), reverse=True)
        assert table[0].human == 7
    # Ties go by key: the tags with 7 clicks are T06, T13, T20, T27.
    assert [r.key for r in data.top_tags[:4]] == ["T06", "T13", "T20", "T27"]


def test_window_must_be_whole_hours() -> None:
    with pytest.raises(ValueError, match="whole UTC hours"):
        DashboardQuery(T0 + timedelta(minutes=1), T0 + timedelta(hours=2))
    with pytest.raises(ValueError, match="ends before"):
        DashboardQuery(T0, T0)


async def test_sqlite_upgrade_fills_the_rollups_from_stored_clicks(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    clicks = random_clicks(3, 400)
    sqlite_file_at_step(path, 2, clicks)  # a store written before the roll-ups
    store = SqliteStore(path)
    try:
        await store.open()
        query = QUERIES[0]
        want = expected(clicks, query)
        want.pop("recent")
        assert actual(await store.dashboard(query)) == want
    finally:
        await store.close()


@given(st.integers(0, 24 * 90), st.integers(1, 24 * 90))
def test_day_split_covers_the_window_exactly_once(start_hour: int, hours: int) -> None:
    start = T0 + timedelta(hours=start_hour)
    end = start + timedelta(hours=hours)
    split = split_days(start, end)
    pieces = [(a, b) for a, b in split.edges if a < b]
    day = split.first_day
    while day < split.end_day:
        midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
        pieces.append((midnight, midnight + timedelta(days=1)))
        day += timedelta(days=1)
    pieces.sort()
    assert pieces[0][0] == start and pieces[-1][1] == end
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))


async def test_pg_upgrade_fills_the_rollups_from_stored_clicks(pg_dsn: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    clicks = random_clicks(5, 400)
    await pg_tables_at_step(pg_dsn, prefix, 2, clicks)  # tables from before the roll-ups
    store = PgStore(pg_dsn, table_prefix=prefix)
    try:
        await store.open()
        for query in QUERIES:
            want = expected(clicks, query)
            want.pop("recent")
            assert actual(await store.dashboard(query)) == want
    finally:
        await store.drop_tables()
        await store.close()
