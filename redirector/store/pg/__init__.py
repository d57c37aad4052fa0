"""The shared click store: PostgreSQL through an asyncpg pool.

Several redirector nodes may write to one database, so the schema migration runs under
a transaction-scoped advisory lock and inserts are ``ON CONFLICT (id) DO NOTHING``.
Tables are ``<prefix>clicks`` and ``<prefix>schema_version`` (prefix ``clickrelay_``
by default, so the tables can live in an existing application database).

Every driver, network and timeout failure becomes :class:`StoreError`; asyncpg's pool
replaces broken connections on the next acquire, so the store recovers by itself when
the database comes back. ``open()`` failing is not fatal: ``write`` retries it.

Parts: :mod:`~redirector.store.pg.schema` (migrations, roll-up trigger),
:mod:`~redirector.store.pg.clicks` (writing, stats, export, retention),
:mod:`~redirector.store.pg.webhooks` (delivery queue),
:mod:`~redirector.store.pg.dashboard` (dashboard queries),
:mod:`~redirector.store.pg.settle` (settled classification); this module holds the
pool, the error mapping and the async interface.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar, TypeVarTuple
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg

from redirector.clicks import Click, click_row, utc
from redirector.store.base import StoreError
from redirector.store.dashboard import DashboardData, DashboardQuery
from redirector.store.pg import clicks as click_table
from redirector.store.pg import dashboard, schema, settle, webhooks
from redirector.store.records import ClickFilter, EndpointStatus, StoredClick, WebhookEvent
from redirector.store.webhook_sql import finish_statements

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_PREFIX_RE = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


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
        #: Writers hold it shared for their insert transaction; the webhook cursor takes
        #: it exclusively while it reads, so every seq it sees below the newest is
        #: committed (a sequence hands out numbers at insert, not at commit).
        self._seq_lock = zlib.crc32(f"{table_prefix}clicks.seq".encode())
        self._pool: asyncpg.Pool | None = None
        self._migrated = False
        self._lock = asyncio.Lock()  # one open/migrate at a time

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
                await self._pool_migrate(self._pool)
                self._migrated = True
        return self._pool

    async def _pool_migrate(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire(timeout=self.connect_timeout) as conn:
            await schema.migrate(conn, self.prefix, self.name)

    async def _guarded(self, coro_fn: Any, *args: Any) -> Any:
        # One overall bound: a half-open connection must not hold the recorder forever.
        try:
            async with asyncio.timeout(self.connect_timeout + self.command_timeout):
                return await coro_fn(*args)
        except StoreError:
            raise
        except Exception as exc:  # driver, network, protocol, timeout
            raise self._error(exc) from exc

    async def _on_conn(
        self, fn: Callable[[asyncpg.Connection, str, *Ts], Awaitable[T]], *args: *Ts
    ) -> T:
        pool = await self._ensure()
        async with pool.acquire(timeout=self.connect_timeout) as conn:
            return await fn(conn, self.prefix, *args)

    async def _call(
        self, fn: Callable[[asyncpg.Connection, str, *Ts], Awaitable[T]], *args: *Ts
    ) -> T:
        """``fn(connection, table prefix, *args)`` on a pooled connection, guarded."""
        result: T = await self._guarded(self._on_conn, fn, *args)
        return result

    async def open(self) -> None:
        await self._guarded(self._ensure)

    async def write(self, clicks: Sequence[Click]) -> None:
        try:
            rows = [click_row(click, utc) for click in clicks]
        except (TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"{self.name}: malformed click: {exc}", retryable=False) from exc
        await self._call(click_table.write, self._seq_lock, rows)

    async def stats(
        self, since: datetime | None = None, tag: str | None = None, *, settled_only: bool = False
    ) -> dict[str, Any]:
        return await self._call(click_table.stats, since, tag, settled_only)

    async def export_page(self, flt: ClickFilter, after: int, limit: int) -> list[StoredClick]:
        return await self._call(click_table.export_page, flt, after, limit)

    async def delete_before(self, cutoff: datetime, limit: int) -> int:
        return await self._call(click_table.delete_before, cutoff, limit)

    async def webhook_enqueue(
        self, endpoints: Sequence[tuple[str, bool, bool]], cutoff: datetime, limit: int, now: float
    ) -> int:
        return await self._call(
            webhooks.enqueue, self._seq_lock, list(endpoints), cutoff, limit, now
        )

    async def webhook_claim(
        self, endpoint: str, now: float, lease: float, limit: int
    ) -> list[WebhookEvent]:
        return await self._call(webhooks.claim, endpoint, now, lease, limit)

    async def webhook_finish(
        self, endpoint: str, click_id: str, outcome: str, next_at: float, error: str | None
    ) -> None:
        statements = finish_statements(
            self.prefix, lambda n: f"${n}", endpoint, click_id, outcome, next_at, error
        )
        await self._call(webhooks.run, statements)

    async def webhook_replay(
        self, endpoint: str, since: datetime, now: float, *, include_bots: bool
    ) -> int:
        return await self._call(webhooks.replay, endpoint, since, now, include_bots)

    async def webhook_status(self, endpoints: Sequence[str]) -> list[EndpointStatus]:
        return await self._call(webhooks.status, list(endpoints))

    async def dashboard(self, query: DashboardQuery) -> DashboardData:
        return await self._call(dashboard.dashboard, query)

    async def unsettled(self, limit: int) -> list[Click]:
        return await self._call(settle.unsettled, limit)

    async def message_clicks(
        self, queue_ids: Sequence[str], start: datetime, end: datetime
    ) -> list[Click]:
        return await self._call(settle.message_clicks, list(queue_ids), start, end)

    async def settle(
        self, relabels: Sequence[tuple[str, str, str]], settled_ids: Sequence[str]
    ) -> int:
        return await self._call(settle.settle, list(relabels), list(settled_ids))

    async def click(self, click_id: str) -> Click | None:
        return await self._call(settle.click, click_id)

    async def settled_clicks(self, since: datetime | None, limit: int) -> list[Click]:
        return await self._call(settle.settled_clicks, since, limit)

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
        await self._call(schema.drop)
        self._migrated = False
