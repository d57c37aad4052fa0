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
    changed = 0
    async with conn.transaction():
        for click_id, reason, evidence in relabels:
            status = await conn.execute(
                f"UPDATE {p}clicks SET classification = 'bot', reason = $1,"
                " evidence = $2 WHERE id = $3 AND classification = 'human'"
                " AND settled = 0",
                reason,
                evidence,
                click_id,
            )
            changed += int(status.rsplit(" ", 1)[-1])
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
