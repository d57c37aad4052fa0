"""Settled classification in the SQLite store: the unsettled clicks and their messages'
clicks (read on the writer thread, so they see the latest writes), the relabels and the
settling in one transaction, and the settled clicks consumers read (reader thread).

A relabel is an UPDATE of the click's label and reason; the roll-up triggers move the
click in every roll-up with it (see :mod:`redirector.store.sqlite.schema`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from redirector.clicks import Click
from redirector.store.sqlite.access import (
    IDS_PER_STATEMENT,
    SELECT_CLICKS,
    click_of,
    time_text,
    write_transaction,
)


def unsettled(conn: sqlite3.Connection, limit: int) -> list[Click]:
    rows = conn.execute(
        f"{SELECT_CLICKS} WHERE settled = 0 ORDER BY time LIMIT ?", (limit,)
    ).fetchall()
    return [click_of(row) for row in rows]


def message_clicks(
    conn: sqlite3.Connection, queue_ids: Sequence[str], start: datetime, end: datetime
) -> list[Click]:
    out: list[Click] = []
    ids = sorted(set(queue_ids))
    for at in range(0, len(ids), IDS_PER_STATEMENT):
        chunk = ids[at : at + IDS_PER_STATEMENT]
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(
            f"{SELECT_CLICKS} WHERE queue_id IN ({marks}) AND time >= ? AND time <= ?",
            (*chunk, time_text(start), time_text(end)),
        ).fetchall()
        out.extend(click_of(row) for row in rows)
    return out


def settle(
    conn: sqlite3.Connection, relabels: Sequence[tuple[str, str, str]], settled_ids: Sequence[str]
) -> int:
    changed = 0
    with write_transaction(conn):
        for click_id, reason, evidence in relabels:
            cursor = conn.execute(
                "UPDATE clicks SET classification = 'bot', reason = ?, evidence = ?"
                " WHERE id = ? AND classification = 'human' AND settled = 0",
                (reason, evidence, click_id),
            )
            changed += cursor.rowcount
        ids = list(settled_ids)
        for at in range(0, len(ids), IDS_PER_STATEMENT):
            chunk = ids[at : at + IDS_PER_STATEMENT]
            marks = ", ".join("?" * len(chunk))
            conn.execute(f"UPDATE clicks SET settled = 1 WHERE id IN ({marks})", chunk)
    return changed


def click(conn: sqlite3.Connection, click_id: str) -> Click | None:
    row = conn.execute(f"{SELECT_CLICKS} WHERE id = ?", (click_id,)).fetchone()
    return None if row is None else click_of(row)


def settled_clicks(conn: sqlite3.Connection, since: datetime | None, limit: int) -> list[Click]:
    start = time_text(since) if since else ""
    rows = conn.execute(
        f"{SELECT_CLICKS} WHERE settled = 1 AND time >= ? ORDER BY time, id LIMIT ?",
        (start, limit),
    ).fetchall()
    return [click_of(row) for row in rows]
