"""The dashboard's queries on the SQLite store (reader thread, one snapshot per page).

The overview reads the roll-ups the triggers keep (see
:mod:`redirector.store.sqlite.schema`); a drill-down (one message, link or tag)
reads the clicks table through its ``(column, time)`` index.
"""

from __future__ import annotations

import sqlite3

from redirector.store.dashboard import (
    DashboardData,
    DashboardQuery,
    ValueForms,
    drill_column,
    drill_params,
    hour_key,
    overview_params,
    page_from_rows,
    parse_hour_key,
)
from redirector.store.records import READ_COLUMNS
from redirector.store.sqlite.access import snapshot, stored_click, time_text

#: Hours as the roll-ups' ``2026-11-01T12`` keys, days as ISO dates, times as stored.
FORMS = ValueForms(hour=hour_key, day=lambda d: d.isoformat(), time=time_text)

#: The overview's queries (``bench/dashboard.py`` prints their plans). Messages,
#: recipients and tags: whole UTC days from the daily roll-ups, the partial days at the window's
#: ends from the clicks table (through its time index).
_EDGE = "time >= ? AND time < ?"
OVERVIEW_SQL = {
    "hours": "SELECT hour, classification, reason, n FROM click_hours WHERE hour >= ? AND hour < ?",
    "top_links": "SELECT url, sum(human) AS h, sum(bot) FROM click_hour_urls"
    " WHERE hour >= ? AND hour < ? GROUP BY url ORDER BY h DESC, url LIMIT ?",
    "top_messages": "SELECT queue_id, sum(h) AS hs, sum(b) FROM ("
    " SELECT queue_id, human AS h, bot AS b FROM click_day_messages WHERE day >= ? AND day < ?"
    " UNION ALL SELECT queue_id, classification = 'human', classification <> 'human'"
    f" FROM clicks WHERE {_EDGE}"
    " UNION ALL SELECT queue_id, classification = 'human', classification <> 'human'"
    f" FROM clicks WHERE {_EDGE}"
    ") GROUP BY queue_id ORDER BY hs DESC, queue_id LIMIT ?",
    "unique": "SELECT count(DISTINCT recipient) FROM ("
    " SELECT recipient FROM click_day_recipients WHERE day >= ? AND day < ?"
    f" UNION ALL SELECT recipient FROM clicks WHERE {_EDGE} AND classification = 'human'"
    f" UNION ALL SELECT recipient FROM clicks WHERE {_EDGE} AND classification = 'human'"
    ")",
    "top_tags": "SELECT tag, sum(h) AS hs, sum(b) FROM ("
    " SELECT tag, human AS h, bot AS b FROM click_day_tags WHERE day >= ? AND day < ?"
    " UNION ALL SELECT tag, classification = 'human', classification <> 'human'"
    f" FROM clicks WHERE {_EDGE} AND tag IS NOT NULL"
    " UNION ALL SELECT tag, classification = 'human', classification <> 'human'"
    f" FROM clicks WHERE {_EDGE} AND tag IS NOT NULL"
    ") GROUP BY tag ORDER BY hs DESC, tag LIMIT ?",
}


def dashboard(conn: sqlite3.Connection, query: DashboardQuery) -> DashboardData:
    if query.drill:
        sql, params = drill_sql(query), drill_params(query, FORMS)
    else:
        sql, params = OVERVIEW_SQL, overview_params(query, FORMS)
    with snapshot(conn):  # one snapshot for every table on the page
        rows = {name: conn.execute(sql[name], p).fetchall() for name, p in params.items()}
    return page_from_rows(rows, parse_hour_key, lambda r: stored_click(r[0], r[1:]))


def drill_sql(query: DashboardQuery) -> dict[str, str]:
    """The drill-down's queries on the clicks table (by message, link or tag)."""
    column = drill_column(query)
    where = f"WHERE {column} = ? AND time >= ? AND time < ?"
    return {
        "hours": f"SELECT substr(time, 1, 13), classification, reason, count(*) FROM clicks"
        f" {where} GROUP BY 1, 2, 3",
        "unique": f"SELECT count(DISTINCT recipient) FROM clicks {where}"
        " AND classification = 'human'",
        "top_links": "SELECT url, sum(classification = 'human') AS h,"
        f" sum(classification <> 'human') FROM clicks {where}"
        " GROUP BY url ORDER BY h DESC, url LIMIT ?",
        "top_messages": "SELECT queue_id, sum(classification = 'human') AS h,"
        f" sum(classification <> 'human') FROM clicks {where}"
        " GROUP BY queue_id ORDER BY h DESC, queue_id LIMIT ?",
        "top_tags": "SELECT tag, sum(classification = 'human') AS h,"
        f" sum(classification <> 'human') FROM clicks {where} AND tag IS NOT NULL"
        " GROUP BY tag ORDER BY h DESC, tag LIMIT ?",
        "recent": f"SELECT rowid, {', '.join(READ_COLUMNS)} FROM clicks {where}"
        " ORDER BY time DESC LIMIT ?",
    }
