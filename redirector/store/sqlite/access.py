"""What every part of the SQLite store reads and writes with: the stored form of a time,
stored rows back to clicks, and the write transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from redirector.clicks import CLICK_COLUMNS, Click, click_from_row, utc
from redirector.store.records import StoredClick

#: Every column of a click, in CLICK_COLUMNS order (what :func:`click_of` reads).
SELECT_CLICKS = f"SELECT {', '.join(CLICK_COLUMNS)} FROM clicks"
#: Ids per ``IN (...)`` list (SQLite's variable limit is far above).
IDS_PER_STATEMENT = 500


def time_text(value: datetime) -> str:
    """The stored form of a time: fixed-width UTC text, so text order is time order.

    ``2026-11-01T12:00:00.000000+00:00`` (isoformat is several times faster than strftime).
    """
    if value.tzinfo is UTC:  # what the redirector makes: no conversion needed
        return value.isoformat(timespec="microseconds")
    return utc(value).isoformat(timespec="microseconds")


def parse_time(value: str) -> datetime:
    return utc(datetime.fromisoformat(value))


def stored_click(seq: int, row: Sequence[Any]) -> StoredClick:
    """A stored click from ``rowid`` and a row in READ_COLUMNS order."""
    sent_at = row[-1]
    return StoredClick.from_row(
        seq, row, parse_time(row[1]), parse_time(sent_at) if sent_at else None
    )


def click_of(row: Sequence[Any]) -> Click:
    """A click from a :data:`SELECT_CLICKS` row."""
    return click_from_row(row, parse_time)


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` (the write lock up front, not half-way through), COMMIT at the
    end, ROLLBACK if anything fails."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One read transaction: every query inside sees the same snapshot."""
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")
