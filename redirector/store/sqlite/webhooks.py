"""The webhook delivery queue in the SQLite store: cursors over the clicks' rowids and the
events taken from them (pending or failed), claimed with a lease. Writes run on the
writer thread, the status on the reader thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from redirector.store.records import READ_COLUMNS, EndpointStatus, WebhookEvent
from redirector.store.sqlite.access import stored_click, time_text, write_transaction
from redirector.store.webhook_sql import Ahead, Statements, Target, cursor_step


def enqueue(
    conn: sqlite3.Connection,
    endpoints: Sequence[Target],
    cutoff: datetime,
    limit: int,
    now: float,
) -> int:
    """See :meth:`redirector.store.base.ClickStore.webhook_enqueue`."""
    taken = 0
    with write_transaction(conn):
        for endpoint, include_bots, settled_only in endpoints:
            conn.execute(
                "INSERT OR IGNORE INTO webhook_cursors (endpoint, last_seq)"
                " VALUES (?, (SELECT COALESCE(MAX(rowid), 0) FROM clicks))",
                (endpoint,),
            )
            (last,) = conn.execute(
                "SELECT last_seq FROM webhook_cursors WHERE endpoint = ?", (endpoint,)
            ).fetchone()
            rows = conn.execute(
                "SELECT rowid, id, classification, time <= ?, settled FROM clicks"
                " WHERE rowid > ? ORDER BY rowid LIMIT ?",
                (time_text(cutoff), last, limit),
            )
            # Stepped only up to the first click the cursor must wait for (usually the
            # first: the newest clicks are not settled yet), on the writer thread.
            try:
                took, events = cursor_step(
                    (Ahead(int(r[0]), r[1], r[2], bool(r[3]), bool(r[4])) for r in rows),
                    include_bots,
                    settled_only,
                )
            finally:
                rows.close()
            if not took:
                continue
            conn.executemany(
                "INSERT OR IGNORE INTO webhook_events (endpoint, click_id, seq, state,"
                " enqueued_at, next_attempt_at) VALUES (?, ?, ?, 'pending', ?, ?)",
                [(endpoint, c.id, c.seq, now, now) for c in events],
            )
            conn.execute(
                "UPDATE webhook_cursors SET last_seq = ? WHERE endpoint = ?",
                (took[-1].seq, endpoint),
            )
            taken += len(took)
    return taken


def claim(
    conn: sqlite3.Connection, endpoint: str, now: float, lease: float, limit: int
) -> list[WebhookEvent]:
    with write_transaction(conn):
        rows = conn.execute(
            f"SELECT e.attempts, e.enqueued_at, c.settled, c.rowid,"
            f" {', '.join('c.' + col for col in READ_COLUMNS)}"
            " FROM webhook_events e JOIN clicks c ON c.id = e.click_id"
            " WHERE e.endpoint = ? AND e.state = 'pending' AND e.next_attempt_at <= ?"
            " ORDER BY e.seq LIMIT ?",
            (endpoint, now, limit),
        ).fetchall()
        conn.executemany(
            "UPDATE webhook_events SET attempts = attempts + 1, next_attempt_at = ?"
            " WHERE endpoint = ? AND click_id = ?",
            [(now + lease, endpoint, r[4]) for r in rows],
        )
    return [
        WebhookEvent(
            endpoint,
            int(r[0]) + 1,
            float(r[1]),
            stored_click(r[3], r[4:]),
            bool(r[2]),
        )
        for r in rows
    ]


def run(conn: sqlite3.Connection, statements: Statements) -> None:
    """Statements of :mod:`redirector.store.webhook_sql` in one transaction."""
    with write_transaction(conn):
        for sql, params in statements:
            conn.execute(sql, params)


def replay(
    conn: sqlite3.Connection, endpoint: str, since: datetime, now: float, include_bots: bool
) -> int:
    with write_transaction(conn):
        cur = conn.execute(
            "INSERT INTO webhook_events (endpoint, click_id, seq, state, enqueued_at,"
            " next_attempt_at) SELECT ?, id, rowid, 'pending', ?, ? FROM clicks"
            " WHERE time >= ? AND (? OR classification = 'human') AND rowid <= COALESCE("
            "   (SELECT last_seq FROM webhook_cursors WHERE endpoint = ?), 0)"
            " ON CONFLICT (endpoint, click_id) DO UPDATE SET state = 'pending',"
            " attempts = 0, enqueued_at = excluded.enqueued_at,"
            " next_attempt_at = excluded.next_attempt_at, last_error = NULL",
            (endpoint, now, now, time_text(since), include_bots, endpoint),
        )
    return int(cur.rowcount)


def status(conn: sqlite3.Connection, endpoints: Sequence[str]) -> list[EndpointStatus]:
    out: list[EndpointStatus] = []
    for endpoint in endpoints:
        pending, failed, oldest = conn.execute(
            "SELECT SUM(state = 'pending'), SUM(state = 'failed'),"
            " MIN(CASE WHEN state = 'pending' THEN enqueued_at END)"
            " FROM webhook_events WHERE endpoint = ?",
            (endpoint,),
        ).fetchone()
        cursor = conn.execute(
            "SELECT last_seq, last_error FROM webhook_cursors WHERE endpoint = ?",
            (endpoint,),
        ).fetchone()
        out.append(
            EndpointStatus(
                endpoint,
                int(pending or 0),
                int(failed or 0),
                float(oldest) if oldest is not None else None,
                cursor[1] if cursor else None,
                int(cursor[0]) if cursor else None,
            )
        )
    return out
