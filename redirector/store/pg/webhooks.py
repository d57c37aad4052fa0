"""The webhook delivery queue in the PostgreSQL store: cursors over the clicks' ``seq``
and the events taken from them (pending or failed), claimed with a lease that other
nodes skip (``FOR UPDATE SKIP LOCKED``). ``p`` is the store's table prefix."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from redirector.clicks import utc
from redirector.store.pg.clicks import stored_click
from redirector.store.records import READ_COLUMNS, EndpointStatus, WebhookEvent
from redirector.store.webhook_sql import Ahead, Statements, Target, cursor_step, deliverable

#: Clicks after a cursor fetched per round trip.
AHEAD_CHUNK = 50


async def enqueue(
    conn: asyncpg.Connection,
    p: str,
    seq_lock: int,
    endpoints: Sequence[Target],
    cutoff: datetime,
    limit: int,
    now: float,
) -> int:
    """See :meth:`redirector.store.base.ClickStore.webhook_enqueue`; ``seq_lock`` is the
    advisory lock insert transactions hold shared (see :mod:`redirector.store.pg`)."""
    taken = 0
    async with conn.transaction():
        # Waits for insert transactions in flight; new ones wait for this one.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", seq_lock)
        for endpoint, include_bots, settled_only in endpoints:
            await conn.execute(
                f"INSERT INTO {p}webhook_cursors (endpoint, last_seq) VALUES"
                f" ($1, (SELECT COALESCE(MAX(seq), 0) FROM {p}clicks))"
                " ON CONFLICT (endpoint) DO NOTHING",
                endpoint,
            )
            last = await conn.fetchval(
                f"SELECT last_seq FROM {p}webhook_cursors WHERE endpoint = $1 FOR UPDATE",
                endpoint,
            )
            # Read in chunks, only up to the first click the cursor must wait for (usually
            # the first: the newest clicks are not settled yet); this lock is held meanwhile.
            ahead: list[Ahead] = []
            async for r in conn.cursor(
                f"SELECT seq, id, classification, time <= $2, settled <> 0 FROM {p}clicks"
                " WHERE seq > $1 ORDER BY seq LIMIT $3",
                last,
                utc(cutoff),
                limit,
                prefetch=AHEAD_CHUNK,
            ):
                ahead.append(Ahead(int(r[0]), r[1], r[2], bool(r[3]), bool(r[4])))
                if not deliverable(ahead[-1], settled_only):
                    break
            took, events = cursor_step(ahead, include_bots, settled_only)
            if not took:
                continue
            if events:
                await conn.executemany(
                    f"INSERT INTO {p}webhook_events (endpoint, click_id, seq, state,"
                    " enqueued_at, next_attempt_at) VALUES ($1, $2, $3, 'pending', $4, $4)"
                    " ON CONFLICT (endpoint, click_id) DO NOTHING",
                    [(endpoint, c.id, c.seq, now) for c in events],
                )
            await conn.execute(
                f"UPDATE {p}webhook_cursors SET last_seq = $1 WHERE endpoint = $2",
                took[-1].seq,
                endpoint,
            )
            taken += len(took)
    return taken


async def claim(
    conn: asyncpg.Connection, p: str, endpoint: str, now: float, lease: float, limit: int
) -> list[WebhookEvent]:
    cols = ", ".join("c." + col for col in READ_COLUMNS)
    async with conn.transaction():
        # SKIP LOCKED: nodes claiming at once take different events.
        rows = await conn.fetch(
            f"WITH due AS (SELECT endpoint, click_id FROM {p}webhook_events"
            " WHERE endpoint = $1 AND state = 'pending' AND next_attempt_at <= $2"
            " ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED),"
            f" claimed AS (UPDATE {p}webhook_events e SET attempts = e.attempts + 1,"
            " next_attempt_at = $2 + $3 FROM due"
            " WHERE e.endpoint = due.endpoint AND e.click_id = due.click_id"
            " RETURNING e.click_id, e.attempts, e.enqueued_at, e.seq)"
            f" SELECT claimed.attempts, claimed.enqueued_at, c.settled, c.seq, {cols}"
            f" FROM claimed JOIN {p}clicks c ON c.id = claimed.click_id"
            " ORDER BY claimed.seq",
            endpoint,
            now,
            lease,
            limit,
        )
    return [
        WebhookEvent(
            endpoint,
            int(r[0]),
            float(r[1]),
            stored_click(tuple(r)[3:]),
            bool(r[2]),
        )
        for r in rows
    ]


async def run(conn: asyncpg.Connection, p: str, statements: Statements) -> None:
    """Statements of :mod:`redirector.store.webhook_sql` in one transaction."""
    async with conn.transaction():
        for sql, params in statements:
            await conn.execute(sql, *params)


async def replay(
    conn: asyncpg.Connection,
    p: str,
    endpoint: str,
    since: datetime,
    now: float,
    include_bots: bool,
) -> int:
    status = await conn.execute(
        f"INSERT INTO {p}webhook_events (endpoint, click_id, seq, state, enqueued_at,"
        f" next_attempt_at) SELECT $1, id, seq, 'pending', $2, $2 FROM {p}clicks"
        " WHERE time >= $3 AND ($4 OR classification = 'human') AND seq <= COALESCE("
        f"   (SELECT last_seq FROM {p}webhook_cursors WHERE endpoint = $1), 0)"
        " ON CONFLICT (endpoint, click_id) DO UPDATE SET state = 'pending',"
        " attempts = 0, enqueued_at = excluded.enqueued_at,"
        " next_attempt_at = excluded.next_attempt_at, last_error = NULL",
        endpoint,
        now,
        utc(since),
        include_bots,
    )
    return int(str(status).rsplit(" ", 1)[-1])


async def status(
    conn: asyncpg.Connection, p: str, endpoints: Sequence[str]
) -> list[EndpointStatus]:
    out: list[EndpointStatus] = []
    for endpoint in endpoints:
        counts = await conn.fetchrow(
            "SELECT COUNT(*) FILTER (WHERE state = 'pending'),"
            " COUNT(*) FILTER (WHERE state = 'failed'),"
            " MIN(enqueued_at) FILTER (WHERE state = 'pending')"
            f" FROM {p}webhook_events WHERE endpoint = $1",
            endpoint,
        )
        cursor = await conn.fetchrow(
            f"SELECT last_seq, last_error FROM {p}webhook_cursors WHERE endpoint = $1",
            endpoint,
        )
        out.append(
            EndpointStatus(
                endpoint,
                int(counts[0]),
                int(counts[1]),
                float(counts[2]) if counts[2] is not None else None,
                cursor[1] if cursor else None,
                int(cursor[0]) if cursor else None,
            )
        )
    return out
