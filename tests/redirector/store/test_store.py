"""Click stores against real SQLite files and a real PostgreSQL ($CLICKRELAY_TEST_PG)."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from redirector.clicks import Click, _ClickIds, clean_text, new_click_id
from redirector.store import ClickStore, StoreError, open_store
from redirector.store.pg import PgStore, safe_dsn_name
from redirector.store.pg.schema import migrations
from redirector.store.sqlite import SqliteStore
from redirector.store.sqlite.schema import MIGRATIONS

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


#: A click id: 32 lower-case hex digits.
CLICK_ID_RE = re.compile(r"[0-9a-f]{32}")


def make_click(n: int = 0, **changes: object) -> Click:
    click = Click(
        time=T0 + timedelta(seconds=n),
        queue_id="4XyZ1abc",
        link_index=n % 3,
        url=f"https://example.com/{n % 3}",
        recipient="alice@example.org",
        client_ip="192.0.2.0",
        user_agent="Mozilla/5.0",
        method="GET",
        classification="human",
        reason=None,
    )
    return click._replace(**changes)  # type: ignore[arg-type]


async def count_rows(store: ClickStore) -> int:
    """Rows in the store's table, read with a separate client (not through the store)."""
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM clicks").fetchone()[0])
    assert isinstance(store, PgStore)
    conn = await asyncpg.connect(store.dsn)
    try:
        return int(await conn.fetchval(f"SELECT COUNT(*) FROM {store.table}"))
    finally:
        await conn.close()


async def fetch_ids(store: ClickStore) -> list[str]:
    if isinstance(store, SqliteStore):
        with sqlite3.connect(store.path) as conn:
            return [r[0] for r in conn.execute("SELECT id FROM clicks")]
    assert isinstance(store, PgStore)
    conn = await asyncpg.connect(store.dsn)
    try:
        return [r[0] for r in await conn.fetch(f"SELECT id FROM {store.table}")]
    finally:
        await conn.close()


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}_"


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ClickStore]:
    if request.param == "sqlite":
        s: ClickStore = SqliteStore(tmp_path / "data" / "clicks.sqlite3")
        await s.open()
        yield s
        await s.close()
    else:
        dsn = request.getfixturevalue("pg_dsn")
        pg = PgStore(dsn, table_prefix=unique_prefix())
        await pg.open()
        yield pg
        await pg.drop_tables()
        await pg.close()


def test_click_ids_are_32_hex_unique_and_ascending_within_a_process() -> None:
    ids = [make_click(n).id for n in range(20_000)]
    assert all(CLICK_ID_RE.fullmatch(i) for i in ids), [
        i for i in ids if not CLICK_ID_RE.fullmatch(i)
    ]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # ascending: the stores' id indexes are appended to
    # One process prefix (20 hex digits) and a counter (12) that steps by one.
    assert len({i[:20] for i in ids}) == 1
    counters = [int(i[20:], 16) for i in ids]
    assert counters == list(range(counters[0], counters[0] + len(ids)))


def test_click_ids_of_different_processes_differ() -> None:
    code = "from redirector.clicks import new_click_id as n; print(n(), n())"
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    ids = [i for out in outputs for i in out] + [new_click_id()]
    assert len(set(ids)) == 5
    assert len({i[:20] for i in ids}) == 3  # one random prefix per process


def test_click_ids_never_wrap_the_counter() -> None:
    ids = _ClickIds()
    first = ids.new()
    prefix, _ = ids._state
    ids._state = (prefix, itertools.count((1 << 48) - 1))  # the last number of the counter
    last = ids.new()
    after = ids.new()
    assert last == prefix + "f" * 12
    assert after[:20] != prefix and after.endswith("0" * 12)  # a fresh prefix, from zero
    assert len({first, last, after}) == 3


async def test_write_is_exactly_once_by_click_id(store: ClickStore) -> None:
    batch = [make_click(i) for i in range(5)]
    extra = make_click(9)
    await store.write(batch)
    await store.write(batch)  # a retried batch, e.g. after a lost COMMIT acknowledgement
    await store.write([*batch[2:], extra])
    assert await count_rows(store) == 6
    assert sorted(await fetch_ids(store)) == sorted([c.id for c in batch] + [extra.id])


async def test_large_batches_with_overlap_land_exactly_once(store: ClickStore) -> None:
    # Sizes around the SQLite store's 100 rows per INSERT: full statements, a short
    # last one, and a retried batch overlapping the last.
    first = [make_click(i) for i in range(250)]
    second = [*first[150:], *(make_click(1000 + i) for i in range(101))]
    await store.write(first)
    await store.write(second)
    await store.write(first[:100])
    assert await count_rows(store) == 351
    assert sorted(await fetch_ids(store)) == sorted({c.id for c in first + second})


async def test_empty_write_checks_the_store_and_writes_nothing(store: ClickStore) -> None:
    await store.write([])
    assert await count_rows(store) == 0
    doc = await store.stats()
    assert doc == {
        "messages": [],
        "totals": {
            "human_clicks": 0,
            "bot_clicks": 0,
            "messages": 0,
            "links": 0,
            "bot_reasons": {},
            "unsettled_clicks": 0,
            "settled_only": False,
        },
        "tags": [],
    }


async def test_open_is_idempotent_and_keeps_data(store: ClickStore) -> None:
    await store.write([make_click(1)])
    await store.open()
    await store.close()
    await store.open()
    await store.write([make_click(2)])
    assert await count_rows(store) == 2


async def test_hostile_text_is_stored_not_refused(store: ClickStore) -> None:
    # PostgreSQL refuses NUL in text and no store can encode a lone surrogate: one
    # hostile user agent must not make a whole batch unwritable.
    nasty = make_click(1, user_agent="evil\x00agent\udcff", recipient="r\x00@x")
    await store.write([nasty, make_click(2)])
    assert await count_rows(store) == 2
    assert clean_text("a\x00b\udcff") == "a\ufffdb?"


async def test_malformed_click_is_a_non_retryable_store_error(store: ClickStore) -> None:
    bad = make_click(1, link_index="not a number")
    with pytest.raises(StoreError) as info:
        await store.write([bad])
    assert info.value.retryable is False
    assert await count_rows(store) == 0


async def test_an_integer_no_store_can_hold_is_refused_not_retried(store: ClickStore) -> None:
    with pytest.raises(StoreError) as info:
        await store.write([make_click(1, link_index=2**70)])
    assert info.value.retryable is False
    await store.write([make_click(2)])  # the store itself is fine
    assert await count_rows(store) == 1


async def test_naive_times_are_taken_as_utc(store: ClickStore) -> None:
    await store.write([make_click(0, time=datetime(2026, 11, 1, 12, 0))])
    doc = await store.stats()
    assert doc["messages"][0]["first_click"] == "2026-11-01T12:00:00Z"


# -- SQLite specifics ------------------------------------------------------------------


async def test_sqlite_creates_parent_dirs_uses_wal_and_records_schema_version(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a" / "b" / "clicks.sqlite3"
    store = open_store(f"sqlite:{path}")
    assert isinstance(store, SqliteStore)
    await store.open()
    await store.write([make_click(1)])
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(len(MIGRATIONS),)]
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(clicks)")}
    assert {
        "clicks_queue_id",
        "clicks_time",
        "clicks_queue_time",
        "clicks_url_time",
        "clicks_tag_time",
    } <= indexes


async def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "clicks.sqlite3"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    store = SqliteStore(path)
    with pytest.raises(StoreError, match="newer"):
        await store.open()
    await store.close()


async def test_sqlite_path_under_a_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "notadir").write_text("x")
    store = SqliteStore(tmp_path / "notadir" / "clicks.sqlite3")
    with pytest.raises(StoreError, match="notadir"):
        await store.open()
    with pytest.raises(StoreError):
        await store.write([make_click(1)])
    await store.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
async def test_sqlite_read_only_data_dir_is_a_store_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o500)
    try:
        store = SqliteStore(data / "clicks.sqlite3")
        with pytest.raises(StoreError):
            await store.open()
        await store.close()
    finally:
        data.chmod(0o700)


async def test_sqlite_locked_database_is_a_store_error_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "clicks.sqlite3"
    store = SqliteStore(path, busy_timeout=0.05)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(StoreError, match="locked"):
            await store.write([make_click(1)])
        other.execute("ROLLBACK")
        await store.write([make_click(1)])
    finally:
        other.close()
    assert await count_rows(store) == 1
    await store.close()


async def test_sqlite_stats_read_while_another_writer_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "clicks.sqlite3"
    store = SqliteStore(path, busy_timeout=0.05)
    await store.open()
    await store.write([make_click(1)])
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute(
            "INSERT INTO clicks (id, time, queue_id, link_index, url, method, classification)"
            " VALUES ('x', '2026-11-01T12:00:00.000000+00:00', 'Q', 0, 'u', 'GET', 'human')"
        )
        doc = await store.stats()  # WAL: a reader sees the last commit, not the lock
        assert doc["totals"]["human_clicks"] == 1
        with pytest.raises(StoreError, match="locked"):
            await store.write([make_click(2)])
        other.execute("COMMIT")
    finally:
        other.close()
    assert (await store.stats())["totals"]["human_clicks"] == 2
    await store.close()


async def test_sqlite_deleted_file_is_recreated_after_an_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    store = SqliteStore(data / "clicks.sqlite3")
    await store.open()
    await store.write([make_click(1)])
    # The data dir is replaced by a file: the next fresh connection cannot work.
    for child in data.iterdir():
        child.unlink()
    data.rmdir()
    data.write_text("not a directory")
    await store.close()
    with pytest.raises(StoreError):
        await store.write([make_click(2)])
    data.unlink()
    await store.write([make_click(3)])  # fixed: the store reconnects and migrates
    assert await count_rows(store) == 1
    await store.close()


# -- PostgreSQL specifics --------------------------------------------------------------


async def test_pg_schema_version_and_indexes(pg_dsn: str) -> None:
    store = PgStore(pg_dsn, table_prefix=unique_prefix())
    await store.open()
    try:
        conn = await asyncpg.connect(pg_dsn)
        try:
            version = await conn.fetchval(f"SELECT version FROM {store.prefix}schema_version")
            indexes = {
                r[0]
                for r in await conn.fetch(
                    "SELECT indexname FROM pg_indexes WHERE tablename = $1", store.table
                )
            }
        finally:
            await conn.close()
        assert version == len(migrations(store.prefix))
        assert {
            f"{store.prefix}clicks_queue_id",
            f"{store.prefix}clicks_time",
            f"{store.prefix}clicks_tag_time",
            f"{store.prefix}clicks_seq",
            f"{store.prefix}clicks_unsettled",
        } <= indexes
        # A second node opening the same tables: no error, nothing re-created.
        other = PgStore(pg_dsn, table_prefix=store.prefix)
        await other.open()
        await other.close()
    finally:
        await store.drop_tables()
        await store.close()


async def test_pg_several_nodes_opening_at_once_migrate_once(pg_dsn: str) -> None:
    prefix = unique_prefix()
    nodes = [PgStore(pg_dsn, table_prefix=prefix) for _ in range(4)]
    try:
        await asyncio.gather(*(node.open() for node in nodes))
        await asyncio.gather(*(node.write([make_click(i)]) for i, node in enumerate(nodes)))
        conn = await asyncpg.connect(pg_dsn)
        try:
            versions = await conn.fetch(f"SELECT version FROM {prefix}schema_version")
        finally:
            await conn.close()
        assert [r[0] for r in versions] == [len(migrations(prefix))]
        assert await count_rows(nodes[0]) == 4
    finally:
        await nodes[0].drop_tables()
        for node in nodes:
            await node.close()


async def test_pg_unreachable_is_a_store_error_and_open_is_retried_by_write(
    unused_tcp_port: int,
) -> None:
    dsn = f"postgresql://postgres@127.0.0.1:{unused_tcp_port}/nothing"
    store = PgStore(dsn, connect_timeout=2)
    with pytest.raises(StoreError) as info:
        await store.open()
    assert info.value.retryable
    with pytest.raises(StoreError):
        await store.write([make_click(1)])
    with pytest.raises(StoreError):
        await store.stats()
    await store.close()


def test_pg_names_never_carry_passwords() -> None:
    assert safe_dsn_name("postgresql://u:s3cret@db.example:5433/clicks") == (
        "postgresql://db.example:5433/clicks"
    )
    assert "s3cret" not in PgStore("postgresql://u:s3cret@h/db").name


@pytest.mark.parametrize("prefix", ["", "1abc", "a-b", "x; DROP TABLE y", "A" * 50])
def test_pg_rejects_unsafe_table_prefixes(prefix: str) -> None:
    with pytest.raises(StoreError, match="prefix"):
        PgStore("postgresql://h/db", table_prefix=prefix)


@pytest.mark.parametrize("url", ["", "sqlite:", "mysql://h/db", "/var/clicks.db", "SQLITE:x"])
def test_open_store_rejects_unknown_urls(url: str) -> None:
    with pytest.raises(StoreError, match="store URL"):
        open_store(url)


def test_open_store_takes_a_table_prefix_from_the_pg_url() -> None:
    store = open_store("postgresql://u@h:5433/db?sslmode=disable&table_prefix=site2_")
    assert isinstance(store, PgStore)
    assert store.prefix == "site2_" and store.table == "site2_clicks"
    assert store.dsn == "postgresql://u@h:5433/db?sslmode=disable"
    plain = open_store("postgresql://h/db")
    assert isinstance(plain, PgStore) and plain.prefix == "clickrelay_"
    with pytest.raises(StoreError, match="prefix"):
        open_store("postgresql://h/db?table_prefix=x;drop")


def test_open_store_picks_the_implementation() -> None:
    assert isinstance(open_store("sqlite:/tmp/x.db"), SqliteStore)
    assert isinstance(open_store("postgres://h/db"), PgStore)
    assert isinstance(open_store("postgresql://h/db"), PgStore)


async def test_tag_and_metadata_are_kept_and_counted_per_tag(store: ClickStore) -> None:
    await store.write(
        [
            make_click(1, tag="spring", metadata={"user_id": "42"}),
            make_click(2, tag="spring", classification="bot", reason="prefetch"),
            make_click(3, tag="autumn", queue_id="other"),
            make_click(4),
        ]
    )
    doc = await store.stats()
    assert doc["tags"] == [
        {"tag": "autumn", "human_clicks": 1, "bot_clicks": 0},
        {"tag": "spring", "human_clicks": 1, "bot_clicks": 1},
    ]
    assert doc["totals"]["human_clicks"] == 3
    spring = await store.stats(tag="spring")
    assert spring["totals"] == {
        "human_clicks": 1,
        "bot_clicks": 1,
        "messages": 1,
        "links": 2,
        "bot_reasons": {"prefetch": 1},
        "unsettled_clicks": 2,
        "settled_only": False,
    }
    from redirector.store.records import ClickFilter

    page = await store.export_page(ClickFilter(), 0, 10)
    assert [(c.tag, c.metadata) for c in page] == [
        ("spring", {"user_id": "42"}),
        ("spring", None),
        ("autumn", None),
        (None, None),
    ]
