"""Clicks in and out of the SQLite store: batched inserts, the stats document, export
pages and retention's deletes."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from redirector.clicks import CLICK_COLUMNS, Click, click_row
from redirector.store.base import StoreError
from redirector.store.records import READ_COLUMNS, ClickFilter, StoredClick
from redirector.store.sqlite.access import (
    parse_time,
    snapshot,
    stored_click,
    time_text,
    write_transaction,
)
from redirector.store.stats import stats_from_rows, stats_queries, where_clause

_ROW = f"({', '.join('?' * len(CLICK_COLUMNS))})"
#: Rows per INSERT statement. The sqlite3 module lets go of the GIL only while SQLite
#: runs a statement and takes it back after each one: with one statement per row, the
#: writer thread wrestles the event loop's thread for the GIL at every row (a context
#: switch each, and redirects stalled behind it). With 100 rows per statement it does
#: so once per 100 rows, and the B-tree work runs beside the loop, without the GIL.
#: (20 columns x 100 = 2,000 variables: far under SQLite's limit of 32,766.)
_ROWS_PER_INSERT = 100


def _insert_sql(rows: int) -> str:
    return (
        f"INSERT INTO clicks ({', '.join(CLICK_COLUMNS)})"
        f" VALUES {', '.join([_ROW] * rows)} ON CONFLICT (id) DO NOTHING"
    )


_INSERT_FULL = _insert_sql(_ROWS_PER_INSERT)


def write(conn: sqlite3.Connection, clicks: Sequence[Click], name: str) -> None:
    """Insert a batch in one transaction (writer thread); ``name`` is the store's."""
    if not clicks:
        return
    with write_transaction(conn):
        # Converted here, not on the event loop (it is busy answering redirects), and
        # one INSERT's worth at a time: this thread holds the GIL while it runs Python
        # and lets go inside each INSERT, so short stretches keep redirects prompt.
        for at in range(0, len(clicks), _ROWS_PER_INSERT):
            chunk = clicks[at : at + _ROWS_PER_INSERT]
            try:
                values = [v for click in chunk for v in click_row(click, time_text)]
            except (TypeError, ValueError, AttributeError) as exc:
                raise StoreError(f"{name}: malformed click: {exc}", retryable=False) from exc
            sql = _INSERT_FULL if len(chunk) == _ROWS_PER_INSERT else _insert_sql(len(chunk))
            conn.execute(sql, values)


def stats(
    conn: sqlite3.Connection, since: datetime | None, tag: str | None, settled_only: bool
) -> dict[str, Any]:
    """The stats document (reader thread)."""
    since_value = time_text(since) if since else None
    where, params = where_clause(since_value, tag, lambda _n: "?", settled_only)
    # The unsettled count ignores settled_only (it counts exactly what that leaves out).
    all_where, all_params = where_clause(since_value, tag, lambda _n: "?")
    *queries, unsettled_sql = stats_queries("clicks", where, all_where)
    with snapshot(conn):
        rows = [conn.execute(sql, params).fetchall() for sql in queries]
        (unsettled,) = conn.execute(unsettled_sql, all_params).fetchone()
    links, messages, tags, reasons = rows
    return stats_from_rows(
        links,
        messages,
        tags,
        reasons,
        unsettled,
        settled_only=settled_only,
        parse_time=parse_time,
    )


def export_page(
    conn: sqlite3.Connection, flt: ClickFilter, after: int, limit: int
) -> list[StoredClick]:
    """Up to ``limit`` clicks after rowid ``after`` matching ``flt`` (reader thread)."""
    conditions = ["rowid > ?"]
    params: list[object] = [after]
    if flt.since is not None:
        conditions.append("time >= ?")
        params.append(time_text(flt.since))
    if flt.until is not None:
        conditions.append("time < ?")
        params.append(time_text(flt.until))
    if flt.tag is not None:
        conditions.append("tag = ?")
        params.append(flt.tag)
    rows = conn.execute(
        f"SELECT rowid, {', '.join(READ_COLUMNS)} FROM clicks"
        f" WHERE {' AND '.join(conditions)} ORDER BY rowid LIMIT ?",
        (*params, limit),
    ).fetchall()
    return [stored_click(r[0], r[1:]) for r in rows]


def delete_before(conn: sqlite3.Connection, cutoff: datetime, limit: int) -> int:
    """Retention: delete up to ``limit`` clicks older than ``cutoff`` (writer thread).

    The roll-ups follow (a delete trigger), so an overview shows what is left."""
    with write_transaction(conn):
        # The newest row is never deleted: SQLite hands out max(rowid)+1, and a
        # rowid used again would be behind every webhook cursor.
        rows = conn.execute(
            "SELECT rowid, id FROM clicks WHERE time < ?"
            " AND rowid < (SELECT MAX(rowid) FROM clicks) LIMIT ?",
            (time_text(cutoff), limit),
        ).fetchall()
        if rows:
            conn.executemany(
                "DELETE FROM webhook_events WHERE click_id = ?", [(r[1],) for r in rows]
            )
            conn.executemany("DELETE FROM clicks WHERE rowid = ?", [(r[0],) for r in rows])
    if rows:
        conn.execute(f"PRAGMA incremental_vacuum({max(len(rows) // 8, 16)})").fetchall()
    return len(rows)
