"""The shared click store: PostgreSQL through an asyncpg pool.

Several redirector nodes may write to one database, so the schema migration runs under
a transaction-scoped advisory lock and inserts are ``ON CONFLICT (id) DO NOTHING``.
Tables are ``<prefix>clicks`` and ``<prefix>schema_version`` (prefix ``clickrelay_``
by default, so the tables can live in an existing application database).

Every driver, network and timeout failure becomes :class:`StoreError`; asyncpg's pool
replaces broken connections on the next acquire, so the store recovers by itself when
the database comes back. ``open()`` failing is not fatal: ``write`` retries it.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg

from redirector.clicks import CLICK_COLUMNS, Click, click_row, utc
from redirector.store.base import StoreError
from redirector.store.dashboard import (
    RECENT_N,
    TOP_N,
    DashboardData,
    DashboardQuery,
    Ranked,
    RecentClick,
    fold_hours,
    split_days,
)
from redirector.store.stats import (
    LINK_STATS_SQL,
    MESSAGE_STATS_SQL,
    LinkRow,
    MessageRow,
    build_stats,
)


def naive_utc(value: datetime) -> datetime:
    """The roll-ups' ``timestamp`` form of a time: UTC without a zone."""
    return utc(value).replace(tzinfo=None)


_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def _migrations(p: str) -> tuple[tuple[str, ...], ...]:
    """Schema migrations in order; ``<p>schema_version.version`` is how many have run."""
    return (
        (
            f"""CREATE TABLE {p}clicks (
                id text PRIMARY KEY,
                time timestamptz NOT NULL,
                queue_id text NOT NULL,
                link_index integer NOT NULL,
                url text NOT NULL,
                recipient text,
                client_ip text,
                user_agent text,
                method text NOT NULL,
                classification text NOT NULL,
                reason text
            )""",
            f"CREATE INDEX {p}clicks_queue_id ON {p}clicks (queue_id, link_index)",
            f"CREATE INDEX {p}clicks_time ON {p}clicks (time)",
        ),
        # Hourly roll-ups for the dashboard's overview (see the SQLite store), kept by a
        # trigger and filled from the clicks already stored; drill-down indexes.
        (
            f"""CREATE TABLE {p}click_hours (
                hour timestamp NOT NULL, classification text NOT NULL, reason text NOT NULL,
                n bigint NOT NULL, PRIMARY KEY (hour, classification, reason))""",
            f"""CREATE TABLE {p}click_hour_urls (
                hour timestamp NOT NULL, url text NOT NULL, human bigint NOT NULL,
                bot bigint NOT NULL, PRIMARY KEY (hour, url))""",
            f"""CREATE TABLE {p}click_day_messages (
                day date NOT NULL, queue_id text NOT NULL, human bigint NOT NULL,
                bot bigint NOT NULL, PRIMARY KEY (day, queue_id))""",
            f"""CREATE TABLE {p}click_day_recipients (
                day date NOT NULL, recipient text NOT NULL, PRIMARY KEY (day, recipient))""",
            f"""CREATE FUNCTION {p}clicks_rollup() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE
                h timestamp := date_trunc('hour', NEW.time AT TIME ZONE 'UTC');
                d date := (NEW.time AT TIME ZONE 'UTC')::date;
                human int := (NEW.classification = 'human')::int;
            BEGIN
                INSERT INTO {p}click_hours VALUES
                    (h, NEW.classification, coalesce(NEW.reason, ''), 1)
                ON CONFLICT (hour, classification, reason)
                DO UPDATE SET n = {p}click_hours.n + 1;
                INSERT INTO {p}click_hour_urls VALUES (h, NEW.url, human, 1 - human)
                ON CONFLICT (hour, url) DO UPDATE SET
                    human = {p}click_hour_urls.human + excluded.human,
                    bot = {p}click_hour_urls.bot + excluded.bot;
                INSERT INTO {p}click_day_messages VALUES (d, NEW.queue_id, human, 1 - human)
                ON CONFLICT (day, queue_id) DO UPDATE SET
                    human = {p}click_day_messages.human + excluded.human,
                    bot = {p}click_day_messages.bot + excluded.bot;
                IF human = 1 AND NEW.recipient IS NOT NULL THEN
                    INSERT INTO {p}click_day_recipients VALUES (d, NEW.recipient)
                    ON CONFLICT DO NOTHING;
                END IF;
                RETURN NULL;
            END $$""",
            f"""CREATE TRIGGER {p}clicks_rollup AFTER INSERT ON {p}clicks
                FOR EACH ROW EXECUTE FUNCTION {p}clicks_rollup()""",
            f"""INSERT INTO {p}click_hours SELECT date_trunc('hour', time AT TIME ZONE 'UTC'),
                classification, coalesce(reason, ''), count(*) FROM {p}clicks GROUP BY 1, 2, 3""",
            f"""INSERT INTO {p}click_hour_urls SELECT date_trunc('hour', time AT TIME ZONE 'UTC'),
                url, count(*) FILTER (WHERE classification = 'human'),
                count(*) FILTER (WHERE classification <> 'human') FROM {p}clicks GROUP BY 1, 2""",
            f"""INSERT INTO {p}click_day_messages
                SELECT (time AT TIME ZONE 'UTC')::date, queue_id,
                count(*) FILTER (WHERE classification = 'human'),
                count(*) FILTER (WHERE classification <> 'human') FROM {p}clicks GROUP BY 1, 2""",
            f"""INSERT INTO {p}click_day_recipients
                SELECT DISTINCT (time AT TIME ZONE 'UTC')::date, recipient
                FROM {p}clicks WHERE classification = 'human' AND recipient IS NOT NULL""",
            f"CREATE INDEX {p}clicks_queue_time ON {p}clicks (queue_id, time)",
            f"CREATE INDEX {p}clicks_url_time ON {p}clicks (url, time)",
        ),
    )


def safe_dsn_name(dsn: str) -> str:
    """The DSN without user info (no password in logs, errors or /healthz)."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "postgresql://?"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def split_table_prefix(url: str) -> tuple[str, str | None]:
    """``postgresql://h/db?table_prefix=x_&sslmode=require`` → (URL without it, ``x_``)."""
    parts = urlsplit(url)
    if "table_prefix=" not in parts.query:
        return url, None
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefixes = [v for k, v in query if k == "table_prefix"]
    rest = [(k, v) for k, v in query if k != "table_prefix"]
    return parts._replace(query=urlencode(rest)).geturl(), prefixes[-1]


class PgStore:
    """Clicks in PostgreSQL; see the module docstring."""

    def __init__(
        self,
        dsn: str,
        *,
        table_prefix: str = "clickrelay_",
        max_connections: int = 4,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
    ) -> None:
        if not _PREFIX_RE.match(table_prefix):
            raise StoreError(f"bad table prefix {table_prefix!r}: use [a-z_][a-z0-9_]*")
        self.dsn = dsn
        self.name = safe_dsn_name(dsn)
        self.prefix = table_prefix
        self.table = f"{table_prefix}clicks"
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._migrated = False
        self._lock = asyncio.Lock()  # one open/migrate at a time
        placeholders = ", ".join(f"${n}" for n in range(1, len(CLICK_COLUMNS) + 1))
        self._insert = (
            f"INSERT INTO {self.table} ({', '.join(CLICK_COLUMNS)})"
            f" VALUES ({placeholders}) ON CONFLICT (id) DO NOTHING"
        )

    def _error(self, exc: BaseException) -> StoreError:
        # Only errors about the data itself are final (a retry would fail the same way);
        # anything else — including configuration errors — may be fixed while we wait.
        retryable = not isinstance(exc, asyncpg.DataError | UnicodeError | OverflowError)
        text = str(exc) or type(exc).__name__
        return StoreError(f"{self.name}: {text}", retryable=retryable)

    async def _ensure(self) -> asyncpg.Pool:
        """The pool, with the schema migrated; connects if an earlier attempt failed."""
        if self._pool is not None and self._migrated:
            return self._pool
        async with self._lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=0,  # connect lazily: no reconnect storm while the db is down
                    max_size=self.max_connections,
                    command_timeout=self.command_timeout,
                    timeout=self.connect_timeout,
                )
            if not self._migrated:
                await self._migrate(self._pool)
                self._migrated = True
        return self._pool

    async def _migrate(self, pool: asyncpg.Pool) -> None:
        p = self.prefix
        migrations = _migrations(p)
        async with pool.acquire(timeout=self.connect_timeout) as conn, conn.transaction():
            # Nodes starting together: one migrates, the others wait and find it done.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", zlib.crc32(p.encode()))
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {p}schema_version (version integer NOT NULL)"
            )
            version = await conn.fetchval(f"SELECT version FROM {p}schema_version")
            if version is None:
                await conn.execute(f"INSERT INTO {p}schema_version (version) VALUES (0)")
                version = 0
            if version > len(migrations):
                raise StoreError(
                    f"{self.name}: schema version {version} is newer than this clickrelay "
                    f"knows ({len(migrations)}); upgrade clickrelay"
                )
            for statements in migrations[version:]:
                for statement in statements:
                    await conn.execute(statement)
            await conn.execute(f"UPDATE {p}schema_version SET version = $1", len(migrations))

    async def _guarded(self, coro_fn: Any, *args: Any) -> Any:
        # One overall bound: a half-open connection must not hold the recorder forever.
        try:
            async with asyncio.timeout(self.connect_timeout + self.command_timeout):
                return await coro_fn(*args)
        except StoreError:
            raise
        except Exception as exc:  # driver, network, protocol, timeout
            raise self._error(exc) from exc

    async def open(self) -> None:
        await self._guarded(self._ensure)

    async def _write(self, rows: list[tuple[Any, ...]]) -> None:
        pool = await self._ensure()
        async with pool.acquire(timeout=self.connect_timeout) as conn:
            if not rows:
                await conn.fetchval("SELECT 1")
                return
            async with conn.transaction():
                await conn.executemany(self._insert, rows)

    async def write(self, clicks: Sequence[Click]) -> None:
        try:
            rows = [click_row(click, utc) for click in clicks]
        except (TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"{self.name}: malformed click: {exc}", retryable=False) from exc
        await self._guarded(self._write, rows)

    async def _stats(self, since: datetime | None) -> dict[str, Any]:
        pool = await self._ensure()
        where, params = ("WHERE time >= $1", [utc(since)]) if since else ("", [])
        async with pool.acquire(timeout=self.connect_timeout) as conn:
            link_rows = await conn.fetch(
                LINK_STATS_SQL.format(table=self.table, where=where), *params
            )
            message_rows = await conn.fetch(
                MESSAGE_STATS_SQL.format(table=self.table, where=where), *params
            )
        links = [
            LinkRow(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), int(r[5]), r[6], r[7])
            for r in link_rows
        ]
        messages = [
            MessageRow(r[0], int(r[1]), int(r[2]), int(r[3]), r[4], r[5]) for r in message_rows
        ]
        return build_stats(links, messages)

    async def stats(self, since: datetime | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._guarded(self._stats, since)
        return result

    def overview_sql(self) -> dict[str, str]:
        """The overview's queries on the roll-ups (``bench/dashboard.py`` explains them)."""
        p = self.prefix
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
            f" UNION ALL SELECT queue_id, {human}, 1 - {human} FROM {self.table}"
            " WHERE time >= $3 AND time < $4"
            f" UNION ALL SELECT queue_id, {human}, 1 - {human} FROM {self.table}"
            " WHERE time >= $5 AND time < $6"
            ") s GROUP BY queue_id ORDER BY hs DESC, queue_id LIMIT $7",
            "unique": "SELECT count(DISTINCT recipient) FROM ("
            f" SELECT recipient FROM {p}click_day_recipients WHERE day >= $1 AND day < $2"
            f" UNION ALL SELECT recipient FROM {self.table}"
            " WHERE time >= $3 AND time < $4 AND classification = 'human'"
            f" UNION ALL SELECT recipient FROM {self.table}"
            " WHERE time >= $5 AND time < $6 AND classification = 'human'"
            ") s",
        }

    def drill_sql(self, query: DashboardQuery) -> dict[str, str]:
        column = "queue_id" if query.queue_id is not None else "url"
        where = f"FROM {self.table} WHERE {column} = $1 AND time >= $2 AND time < $3"
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
            "recent": "SELECT time, queue_id, link_index, url, recipient, client_ip,"
            f" user_agent, classification, reason {where} ORDER BY time DESC LIMIT $4",
        }

    async def _dashboard(self, query: DashboardQuery) -> DashboardData:
        pool = await self._ensure()
        async with (
            pool.acquire(timeout=self.connect_timeout) as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            if not query.drill:
                sql = self.overview_sql()
                window = (naive_utc(query.start), naive_utc(query.end))
                rows = await conn.fetch(sql["hours"], *window)
                hours, reasons = fold_hours(
                    [(r[0].replace(tzinfo=UTC), r[1], r[2] or None, int(r[3])) for r in rows]
                )
                links = await conn.fetch(sql["top_links"], *window, TOP_N)
                split = split_days(query.start, query.end)
                days = (split.first_day, split.end_day)
                edges = tuple(utc(t) for edge in split.edges for t in edge)
                messages = await conn.fetch(sql["top_messages"], *days, *edges, TOP_N)
                unique = await conn.fetchval(sql["unique"], *days, *edges)
                recent: list[RecentClick] = []
            else:
                sql = self.drill_sql(query)
                key = query.queue_id if query.queue_id is not None else query.url
                params = (key, utc(query.start), utc(query.end))
                rows = await conn.fetch(sql["hours"], *params)
                hours, reasons = fold_hours(
                    [(r[0].replace(tzinfo=UTC), r[1], r[2], int(r[3])) for r in rows]
                )
                unique = await conn.fetchval(sql["unique"], *params)
                links = await conn.fetch(sql["top_links"], *params, TOP_N)
                messages = await conn.fetch(sql["top_messages"], *params, TOP_N)
                recent = [
                    RecentClick(utc(r[0]), r[1], int(r[2]), *r[3:])
                    for r in await conn.fetch(sql["recent"], *params, RECENT_N)
                ]
        return DashboardData(
            hours=hours,
            unique_human_recipients=int(unique or 0),
            bot_reasons=reasons,
            top_links=[Ranked(r[0], int(r[1]), int(r[2])) for r in links],
            top_messages=[Ranked(r[0], int(r[1]), int(r[2])) for r in messages],
            recent=recent,
        )

    async def dashboard(self, query: DashboardQuery) -> DashboardData:
        result: DashboardData = await self._guarded(self._dashboard, query)
        return result

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        self._migrated = False
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=self.command_timeout)
        except Exception:
            pool.terminate()  # the database is gone: don't wait for a polite goodbye

    async def drop_tables(self) -> None:
        """Remove this store's tables (tests and uninstall); the store must be open."""

        async def drop() -> None:
            pool = await self._ensure()
            async with pool.acquire(timeout=self.connect_timeout) as conn:
                p = self.prefix
                await conn.execute(
                    f"DROP TABLE IF EXISTS {p}clicks, {p}schema_version, {p}click_hours,"
                    f" {p}click_hour_urls, {p}click_day_messages, {p}click_day_recipients"
                )
                await conn.execute(f"DROP FUNCTION IF EXISTS {p}clicks_rollup()")
            self._migrated = False

        await self._guarded(drop)
