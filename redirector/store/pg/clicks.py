"""Clicks in and out of the PostgreSQL store: batched inserts, the stats document, export
pages and retention's deletes. ``p`` is the store's table prefix."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from redirector.clicks import CLICK_COLUMNS, utc
from redirector.store.records import READ_COLUMNS, ClickFilter, StoredClick
from redirector.store.stats import stats_from_rows, stats_queries, where_clause

#: Column types other than text, for the arrays a batch is sent as.
_TYPES = {
    "time": "timestamptz",
    "sent_at": "timestamptz",
    "link_index": "integer",
    "trap": "smallint",
    "settled": "smallint",
}


def insert_sql(p: str) -> str:
    """One INSERT of a whole batch, a column per array parameter, in id order.

    One statement, so the roll-up trigger runs once per batch and takes its rows in the
    global order (see :mod:`redirector.store.pg.rollups`); id order for the clicks' own
    keys, for the same reason."""
    arrays = ", ".join(
        f"${n}::{_TYPES.get(column, 'text')}[]" for n, column in enumerate(CLICK_COLUMNS, 1)
    )
    columns = ", ".join(CLICK_COLUMNS)
    return (
        f"INSERT INTO {p}clicks ({columns}) SELECT * FROM unnest({arrays}) AS r({columns})"
        " ORDER BY id ON CONFLICT (id) DO NOTHING"
    )


async def write(
    conn: asyncpg.Connection, p: str, seq_lock: int, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert rows (in :data:`CLICK_COLUMNS` order) in one transaction; no rows: only
    check that the database answers. ``seq_lock`` is held shared meanwhile (the webhook
    cursor takes it exclusively: see :mod:`redirector.store.pg`)."""
    if not rows:
        await conn.fetchval("SELECT 1")
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", seq_lock)
        await conn.execute(insert_sql(p), *map(list, zip(*rows, strict=True)))


async def stats(
    conn: asyncpg.Connection, p: str, since: datetime | None, tag: str | None, settled_only: bool
) -> dict[str, Any]:
    """The stats document, every query in one snapshot."""
    since_value = utc(since) if since else None
    where, params = where_clause(since_value, tag, lambda n: f"${n}", settled_only)
    # The unsettled count ignores settled_only (it counts exactly what that leaves out).
    all_where, all_params = where_clause(since_value, tag, lambda n: f"${n}")
    *queries, unsettled_sql = stats_queries(f"{p}clicks", where, all_where)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = [await conn.fetch(sql, *params) for sql in queries]
        unsettled = await conn.fetchval(unsettled_sql, *all_params)
    links, messages, tags, reasons = rows
    return stats_from_rows(
        links, messages, tags, reasons, unsettled, settled_only=settled_only, parse_time=utc
    )


async def export_page(
    conn: asyncpg.Connection, p: str, flt: ClickFilter, after: int, limit: int
) -> list[StoredClick]:
    """Up to ``limit`` clicks after ``seq`` ``after`` matching ``flt``."""
    conditions = ["seq > $1"]
    params: list[object] = [after]
    for column, op, value in (
        ("time", ">=", utc(flt.since) if flt.since else None),
        ("time", "<", utc(flt.until) if flt.until else None),
        ("tag", "=", flt.tag),
    ):
        if value is not None:
            params.append(value)
            conditions.append(f"{column} {op} ${len(params)}")
    params.append(limit)
    rows = await conn.fetch(
        f"SELECT seq, {', '.join(READ_COLUMNS)} FROM {p}clicks"
        f" WHERE {' AND '.join(conditions)} ORDER BY seq LIMIT ${len(params)}",
        *params,
    )
    return [stored_click(r) for r in rows]


def stored_click(record: Any) -> StoredClick:
    """A stored click from a record of ``seq`` and READ_COLUMNS."""
    return StoredClick.from_row(record[0], tuple(record)[1:], record[2], record[-1])


async def delete_before(conn: asyncpg.Connection, p: str, cutoff: datetime, limit: int) -> int:
    """Retention: delete up to ``limit`` clicks older than ``cutoff``.

    The roll-ups follow (the trigger runs on delete too), so an overview shows what is left."""
    async with conn.transaction():
        ids = await conn.fetch(
            f"DELETE FROM {p}clicks WHERE id IN (SELECT id FROM {p}clicks"
            " WHERE time < $1 LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id",
            utc(cutoff),
            limit,
        )
        if ids:
            await conn.execute(
                f"DELETE FROM {p}webhook_events WHERE click_id = ANY($1::text[])",
                [r[0] for r in ids],
            )
    return len(ids)
