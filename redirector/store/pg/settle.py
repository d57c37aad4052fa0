"""Settled classification in the PostgreSQL store: the unsettled clicks and their
messages' clicks, the relabels and the settling in one transaction, and the settled
clicks consumers read. ``p`` is the store's table prefix.

A relabel is an UPDATE of the click's label and reason; the roll-up trigger moves the
click in every roll-up with it (see :mod:`redirector.store.pg.schema`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg

from redirector.clicks import CLICK_COLUMNS, Click, click_from_row, utc


async def _clicks(conn: asyncpg.Connection, p: str, where: str, *args: Any) -> list[Click]:
    rows = await conn.fetch(f"SELECT {', '.join(CLICK_COLUMNS)} FROM {p}clicks {where}", *args)
    return [click_from_row(row, utc) for row in rows]


async def unsettled(conn: asyncpg.Connection, p: str, limit: int) -> list[Click]:
    return await _clicks(conn, p, "WHERE settled = 0 ORDER BY time LIMIT $1", limit)


async def message_clicks(
    conn: asyncpg.Connection, p: str, queue_ids: Sequence[str], start: datetime, end: datetime
) -> list[Click]:
    return await _clicks(
        conn,
        p,
        "WHERE queue_id = ANY($1) AND time >= $2 AND time <= $3",
        sorted(set(queue_ids)),
        utc(start),
        utc(end),
    )


async def settle(
    conn: asyncpg.Connection,
    p: str,
    relabels: Sequence[tuple[str, str, str]],
    settled_ids: Sequence[str],
) -> int:
    """Relabel and settle in one transaction; the number of clicks relabelled.

    Two settlers may take up the same clicks, so the clicks are locked in id order first,
    and the relabels are one UPDATE (one roll-up trigger run, rows in the global order:
    see :mod:`redirector.store.pg.rollups`)."""
    first: dict[str, tuple[str, str]] = {}
    for click_id, reason, evidence in relabels:
        first.setdefault(click_id, (reason, evidence))  # as if applied one by one
    ids = sorted(set(first) | set(settled_ids))
    if not ids:
        return 0
    async with conn.transaction():
        await conn.execute(
            f"SELECT 1 FROM {p}clicks WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE", ids
        )
        changed = 0
        if first:
            status = await conn.execute(
                f"UPDATE {p}clicks AS c SET classification = 'bot', reason = v.reason,"
                " evidence = v.evidence FROM unnest($1::text[], $2::text[], $3::text[])"
                " AS v(id, reason, evidence) WHERE c.id = v.id"
                " AND c.classification = 'human' AND c.settled = 0",
                list(first),
                [reason for reason, _ in first.values()],
                [evidence for _, evidence in first.values()],
            )
            changed = int(status.rsplit(" ", 1)[-1])
        if settled_ids:
            await conn.execute(
                f"UPDATE {p}clicks SET settled = 1 WHERE id = ANY($1)", list(settled_ids)
            )
    return changed


async def click(conn: asyncpg.Connection, p: str, click_id: str) -> Click | None:
    found = await _clicks(conn, p, "WHERE id = $1", click_id)
    return found[0] if found else None


async def settled_clicks(
    conn: asyncpg.Connection, p: str, since: datetime | None, limit: int
) -> list[Click]:
    if since is None:
        return await _clicks(conn, p, "WHERE settled = 1 ORDER BY time, id LIMIT $1", limit)
    return await _clicks(
        conn, p, "WHERE settled = 1 AND time >= $1 ORDER BY time, id LIMIT $2", utc(since), limit
    )
