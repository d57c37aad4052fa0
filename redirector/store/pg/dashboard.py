"""The dashboard's queries on the PostgreSQL store (one repeatable-read snapshot a page).

The overview reads the roll-ups the trigger keeps (see :mod:`redirector.store.pg.schema`);
a drill-down (one message, link or tag) reads the clicks table through its
``(column, time)`` index. ``p`` is the store's table prefix.
"""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from redirector.clicks import utc
from redirector.store.dashboard import (
    DashboardData,
    DashboardQuery,
    ValueForms,
    drill_column,
    drill_params,
    overview_params,
    page_from_rows,
)
from redirector.store.pg.clicks import stored_click
from redirector.store.records import READ_COLUMNS


def naive_utc(value: datetime) -> datetime:
    """The roll-ups' ``timestamp`` form of a time: UTC without a zone."""
    return utc(value).replace(tzinfo=None)


def overview_sql(p: str) -> dict[str, str]:
    """The overview's queries on the roll-ups (``bench/dashboard.py`` explains them)."""
    human = "(classification = 'human')::int"
    return {
        "hours": f"SELECT hour, classification, reason, n FROM {p}click_hours"
        " WHERE hour >= $1 AND hour < $2",
        "top_links": f"SELECT url, sum(human) AS h, sum(bot) FROM {p}click_hour_urls"
        " WHERE hour >= $1 AND hour < $2 GROUP BY url ORDER BY h DESC, url LIMIT $3",
        # Whole days ($1, $2) from the daily roll-ups, partial days ($3-$6) from clicks.
        "top_messages": "SELECT queue_id, sum(h) AS hs, sum(b) FROM ("
        f" SELECT queue_id, human AS h, bot AS b FROM {p}click_day_messages"
        " WHERE day >= $1 AND day < $2"
        f" UNION ALL SELECT queue_id, {human}, 1 - {human} FROM {p}clicks"
        " WHERE time >= $3 AND time < $4"
        f" UNION ALL SELECT queue_id, {human}, 1 - {human} FROM {p}clicks"
        " WHERE time >= $5 AND time < $6"
        ") s GROUP BY queue_id ORDER BY hs DESC, queue_id LIMIT $7",
        "unique": "SELECT count(DISTINCT recipient) FROM ("
        f" SELECT recipient FROM {p}click_day_recipients WHERE day >= $1 AND day < $2"
        f" UNION ALL SELECT recipient FROM {p}clicks"
        " WHERE time >= $3 AND time < $4 AND classification = 'human'"
        f" UNION ALL SELECT recipient FROM {p}clicks"
        " WHERE time >= $5 AND time < $6 AND classification = 'human'"
        ") s",
        "top_tags": "SELECT tag, sum(h) AS hs, sum(b) FROM ("
        f" SELECT tag, human AS h, bot AS b FROM {p}click_day_tags"
        " WHERE day >= $1 AND day < $2"
        f" UNION ALL SELECT tag, {human}, 1 - {human} FROM {p}clicks"
        " WHERE time >= $3 AND time < $4 AND tag IS NOT NULL"
        f" UNION ALL SELECT tag, {human}, 1 - {human} FROM {p}clicks"
        " WHERE time >= $5 AND time < $6 AND tag IS NOT NULL"
        ") s GROUP BY tag ORDER BY hs DESC, tag LIMIT $7",
    }


def drill_sql(p: str, query: DashboardQuery) -> dict[str, str]:
    """The drill-down's queries on the clicks table (by message, link or tag)."""
    column = drill_column(query)
    where = f"FROM {p}clicks WHERE {column} = $1 AND time >= $2 AND time < $3"
    human = "count(*) FILTER (WHERE classification = 'human')"
    bot = "count(*) FILTER (WHERE classification <> 'human')"
    return {
        "hours": "SELECT date_trunc('hour', time AT TIME ZONE 'UTC'), classification,"
        f" reason, count(*) {where} GROUP BY 1, 2, 3",
        "unique": f"SELECT count(DISTINCT recipient) {where} AND classification = 'human'",
        "top_links": f"SELECT url, {human} AS h, {bot} {where}"
        " GROUP BY url ORDER BY h DESC, url LIMIT $4",
        "top_messages": f"SELECT queue_id, {human} AS h, {bot} {where}"
        " GROUP BY queue_id ORDER BY h DESC, queue_id LIMIT $4",
        "top_tags": f"SELECT tag, {human} AS h, {bot} {where} AND tag IS NOT NULL"
        " GROUP BY tag ORDER BY h DESC, tag LIMIT $4",
        "recent": f"SELECT seq, {', '.join(READ_COLUMNS)} {where} ORDER BY time DESC LIMIT $4",
    }


#: Hours and days as the roll-ups' ``timestamp`` (UTC, no zone) and ``date``.
FORMS = ValueForms(hour=naive_utc, day=lambda d: d, time=utc)


async def dashboard(conn: asyncpg.Connection, p: str, query: DashboardQuery) -> DashboardData:
    if query.drill:
        sql, params = drill_sql(p, query), drill_params(query, FORMS)
    else:
        sql, params = overview_sql(p), overview_params(query, FORMS)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        rows = {name: await conn.fetch(sql[name], *args) for name, args in params.items()}
    return page_from_rows(rows, lambda h: h.replace(tzinfo=UTC), stored_click)
