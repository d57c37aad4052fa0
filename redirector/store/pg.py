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
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg

from redirector.clicks import CLICK_COLUMNS, Click, click_from_row, click_row, utc
from redirector.store.base import StoreError
from redirector.store.stats import (
    LINK_STATS_SQL,
    MESSAGE_STATS_SQL,
    REASON_STATS_SQL,
    UNSETTLED_SQL,
    LinkRow,
    MessageRow,
    build_stats,
)

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
        # Settled classification: the walk rules' evidence and whether a label is final.
        # Clicks recorded before this migration are final as they are (settled = 1).
        (
            f"ALTER TABLE {p}clicks ADD COLUMN client_key text",
            f"ALTER TABLE {p}clicks ADD COLUMN net_key text",
            f"ALTER TABLE {p}clicks ADD COLUMN network text",
            f"ALTER TABLE {p}clicks ADD COLUMN trap smallint NOT NULL DEFAULT 0",
            f"ALTER TABLE {p}clicks ADD COLUMN settled smallint NOT NULL DEFAULT 1",
            f"ALTER TABLE {p}clicks ADD COLUMN evidence text",
            f"CREATE INDEX {p}clicks_unsettled ON {p}clicks (time) WHERE settled = 0",
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
        self._select = f"SELECT {', '.join(CLICK_COLUMNS)} FROM {self.table}"

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

    async def _stats(self, since: datetime | None, settled_only: bool) -> dict[str, Any]:
        pool = await self._ensure()
        conditions = ["settled = 1"] if settled_only else []
        params: list[Any] = []
        if since:
            conditions.append("time >= $1")
            params = [utc(since)]
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        and_where = "".join(f" AND {c}" for c in conditions)
        since_and = "AND time >= $1" if since else ""
        async with (
            pool.acquire(timeout=self.connect_timeout) as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            link_rows = await conn.fetch(
                LINK_STATS_SQL.format(table=self.table, where=where), *params
            )
            message_rows = await conn.fetch(
                MESSAGE_STATS_SQL.format(table=self.table, where=where), *params
            )
            reasons = await conn.fetch(
                REASON_STATS_SQL.format(table=self.table, and_where=and_where), *params
            )
            unsettled = await conn.fetchval(
                UNSETTLED_SQL.format(table=self.table, since_and=since_and), *params
            )
        links = [
            LinkRow(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), int(r[5]), r[6], r[7])
            for r in link_rows
        ]
        messages = [
            MessageRow(r[0], int(r[1]), int(r[2]), int(r[3]), r[4], r[5]) for r in message_rows
        ]
        return build_stats(
            links,
            messages,
            reasons={str(r[0]): int(r[1]) for r in reasons},
            unsettled=int(unsettled),
            settled_only=settled_only,
        )

    async def stats(
        self, since: datetime | None = None, *, settled_only: bool = False
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._guarded(self._stats, since, settled_only)
        return result

    # -- settling ---------------------------------------------------------------------

    async def _fetch_clicks(self, sql: str, *args: Any) -> list[Click]:
        pool = await self._ensure()
        async with pool.acquire(timeout=self.connect_timeout) as conn:
            rows = await conn.fetch(sql, *args)
        return [click_from_row(row, utc) for row in rows]

    async def unsettled(self, limit: int) -> list[Click]:
        sql = f"{self._select} WHERE settled = 0 ORDER BY time LIMIT $1"
        result: list[Click] = await self._guarded(self._fetch_clicks, sql, limit)
        return result

    async def message_clicks(
        self, queue_ids: Sequence[str], start: datetime, end: datetime
    ) -> list[Click]:
        sql = f"{self._select} WHERE queue_id = ANY($1) AND time >= $2 AND time <= $3"
        result: list[Click] = await self._guarded(
            self._fetch_clicks, sql, sorted(set(queue_ids)), utc(start), utc(end)
        )
        return result

    async def _settle(
        self, relabels: Sequence[tuple[str, str, str]], settled_ids: Sequence[str]
    ) -> int:
        pool = await self._ensure()
        changed = 0
        async with pool.acquire(timeout=self.connect_timeout) as conn, conn.transaction():
            for click_id, reason, evidence in relabels:
                status = await conn.execute(
                    f"UPDATE {self.table} SET classification = 'bot', reason = $1,"
                    " evidence = $2 WHERE id = $3 AND classification = 'human'"
                    " AND settled = 0",
                    reason,
                    evidence,
                    click_id,
                )
                changed += int(status.rsplit(" ", 1)[-1])
            if settled_ids:
                await conn.execute(
                    f"UPDATE {self.table} SET settled = 1 WHERE id = ANY($1)", list(settled_ids)
                )
        return changed

    async def settle(
        self, relabels: Sequence[tuple[str, str, str]], settled_ids: Sequence[str]
    ) -> int:
        result: int = await self._guarded(self._settle, list(relabels), list(settled_ids))
        return result

    async def click(self, click_id: str) -> Click | None:
        found: list[Click] = await self._guarded(
            self._fetch_clicks, f"{self._select} WHERE id = $1", click_id
        )
        return found[0] if found else None

    async def settled_clicks(self, since: datetime | None, limit: int) -> list[Click]:
        if since is None:
            sql = f"{self._select} WHERE settled = 1 ORDER BY time, id LIMIT $1"
            result: list[Click] = await self._guarded(self._fetch_clicks, sql, limit)
        else:
            sql = f"{self._select} WHERE settled = 1 AND time >= $1 ORDER BY time, id LIMIT $2"
            result = await self._guarded(self._fetch_clicks, sql, utc(since), limit)
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
                await conn.execute(
                    f"DROP TABLE IF EXISTS {self.prefix}clicks, {self.prefix}schema_version"
                )
            self._migrated = False

        await self._guarded(drop)
