"""Stores as an earlier release left them: the schema at a given step, clicks in it, and
optionally labels changed behind the roll-ups' back (upgrade tests)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import asyncpg

from redirector.clicks import CLICK_COLUMNS, Click, click_row, utc
from redirector.store.pg.schema import migrations
from redirector.store.sqlite.access import time_text
from redirector.store.sqlite.schema import MIGRATIONS

#: ``(click id, classification, reason)``: an UPDATE made at that step.
Relabel = tuple[str, str, str | None]


def columns_at(step: int) -> tuple[str, ...]:
    """The click columns schema step ``step`` has (step 4 added the settling columns)."""
    return CLICK_COLUMNS if step >= 4 else CLICK_COLUMNS[: CLICK_COLUMNS.index("sent_at") + 1]


def sqlite_file_at_step(
    path: Path, step: int, clicks: Sequence[Click], relabels: Sequence[Relabel] = ()
) -> None:
    columns = columns_at(step)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (?)", (step,))
        for statement in (s for statements in MIGRATIONS[:step] for s in statements):
            conn.execute(statement)
        conn.executemany(
            f"INSERT INTO clicks ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
            [click_row(c, time_text)[: len(columns)] for c in clicks],
        )
        conn.executemany(
            "UPDATE clicks SET classification = ?, reason = ? WHERE id = ?",
            [(label, reason, click_id) for click_id, label, reason in relabels],
        )
    conn.close()


async def pg_tables_at_step(
    dsn: str, prefix: str, step: int, clicks: Sequence[Click], relabels: Sequence[Relabel] = ()
) -> None:
    columns = columns_at(step)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE TABLE {prefix}schema_version (version integer NOT NULL)")
        await conn.execute(f"INSERT INTO {prefix}schema_version VALUES ($1)", step)
        for statement in (s for statements in migrations(prefix)[:step] for s in statements):
            await conn.execute(statement)
        marks = ", ".join(f"${i + 1}" for i in range(len(columns)))
        await conn.executemany(
            f"INSERT INTO {prefix}clicks ({', '.join(columns)}) VALUES ({marks})",
            [click_row(c, utc)[: len(columns)] for c in clicks],
        )
        await conn.executemany(
            f"UPDATE {prefix}clicks SET classification = $2, reason = $3 WHERE id = $1",
            relabels,
        )
    finally:
        await conn.close()
