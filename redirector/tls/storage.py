"""Where ACME state lives: the account key, each host's key and certificate, pending
HTTP-01 challenge answers, and each host's status record.

* With a PostgreSQL click store, in the same database (table ``<prefix>tls_items``), so
  every redirector node behind a load balancer serves the same certificates and answers
  a challenge another node started; one node orders a given host at a time (a session
  advisory lock per host).
* Otherwise in ``tls.sqlite3`` under the data directory (created 0600: it holds private
  keys), with a lease row per host standing in for the advisory lock.

Both are one key-value table of ``(kind, name) -> bytes``; kinds are ``account``
(name ``default``), ``cert`` (host → PEM key + chain), ``challenge`` (token → key
authorization) and ``status`` (host → JSON of :class:`~redirector.tls.status.HostStatus`).
Every failure is a :class:`TlsStorageError`.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import sqlite3
import time
import zlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from clickrelay.common.errors import ClickrelayError

T = TypeVar("T")

ACCOUNT = "account"
CERT = "cert"
CHALLENGE = "challenge"
STATUS = "status"

#: How long a SQLite order lease lasts if its holder dies without releasing it.
LEASE_SECONDS = 900.0


class TlsStorageError(ClickrelayError):
    """The TLS storage could not be read or written."""


class TlsStorage(abc.ABC):
    name: str

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create the table (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def get(self, kind: str, name: str) -> bytes | None: ...

    @abc.abstractmethod
    async def put(self, kind: str, name: str, value: bytes) -> None: ...

    @abc.abstractmethod
    async def delete(self, kind: str, name: str) -> None: ...

    @abc.abstractmethod
    def order_lock(self, host: str) -> contextlib.AbstractAsyncContextManager[bool]:
        """``async with storage.order_lock(host) as mine:`` — ``mine`` is False when
        another node holds it (that node is ordering this host right now)."""


# --- SQLite -----------------------------------------------------------------------------

_SQLITE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS tls_items (
        kind TEXT NOT NULL, name TEXT NOT NULL, value BLOB NOT NULL, updated REAL NOT NULL,
        PRIMARY KEY (kind, name))""",
    "CREATE TABLE IF NOT EXISTS tls_leases (host TEXT PRIMARY KEY, until REAL NOT NULL)",
)


class SqliteTlsStorage(TlsStorage):
    """One file; each call opens a short-lived connection on a worker thread (calls are
    rare: orders, challenges, status changes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"sqlite:{path}"
        self._locks: dict[str, asyncio.Lock] = {}

    def _connect(self) -> sqlite3.Connection:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Created 0600 before SQLite opens it: it will hold private keys.
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
        conn = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            conn = self._connect()
            try:
                return fn(conn)
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(call)
        except (sqlite3.Error, OSError) as exc:
            raise TlsStorageError(f"{self.name}: {exc}") from exc

    async def open(self) -> None:
        def create(conn: sqlite3.Connection) -> None:
            for statement in _SQLITE_SCHEMA:
                conn.execute(statement)

        await self._run(create)

    async def close(self) -> None:
        return None

    async def get(self, kind: str, name: str) -> bytes | None:
        if not self.path.exists():
            return None  # a reader (``clickrelay check``) must not create the file

        def read(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT value FROM tls_items WHERE kind = ? AND name = ?", (kind, name)
            ).fetchone()
            return bytes(row[0]) if row else None

        return await self._run(read)

    async def put(self, kind: str, name: str, value: bytes) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO tls_items (kind, name, value, updated) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (kind, name) DO UPDATE SET value = excluded.value,"
                " updated = excluded.updated",
                (kind, name, value, time.time()),
            )

        await self._run(write)

    async def delete(self, kind: str, name: str) -> None:
        await self._run(
            lambda conn: conn.execute(
                "DELETE FROM tls_items WHERE kind = ? AND name = ?", (kind, name)
            )
        )

    @contextlib.asynccontextmanager
    async def order_lock(self, host: str) -> AsyncIterator[bool]:
        lock = self._locks.setdefault(host, asyncio.Lock())
        if lock.locked():
            yield False
            return
        async with lock:

            def take(conn: sqlite3.Connection) -> bool:
                now = time.time()
                cursor = conn.execute(
                    "INSERT INTO tls_leases (host, until) VALUES (?, ?) ON CONFLICT (host)"
                    " DO UPDATE SET until = excluded.until WHERE tls_leases.until < ?",
                    (host, now + LEASE_SECONDS, now),
                )
                return cursor.rowcount == 1

            mine = await self._run(take)
            try:
                yield mine
            finally:
                if mine:
                    await self._run(
                        lambda conn: conn.execute("DELETE FROM tls_leases WHERE host = ?", (host,))
                    )


# --- PostgreSQL ---------------------------------------------------------------------------


def _lock_key(prefix: str, host: str) -> int:
    """A 63-bit advisory-lock key per (deployment, host)."""
    return zlib.crc32(f"{prefix}acme:{host}".encode()) | (0x5C1C << 32)


class PgTlsStorage(TlsStorage):
    def __init__(self, dsn: str, *, table_prefix: str = "clickrelay_") -> None:
        from redirector.store.pg import safe_dsn_name

        self._dsn = dsn
        self._prefix = table_prefix
        self._table = f"{table_prefix}tls_items"
        self.name = safe_dsn_name(dsn)
        self._pool: Any = None

    async def _ensure(self) -> Any:
        import asyncpg

        if self._pool is None:
            try:
                self._pool = await asyncpg.create_pool(
                    self._dsn, min_size=0, max_size=4, timeout=10
                )
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                raise TlsStorageError(f"{self.name}: {exc}") from exc
        return self._pool

    async def _call(self, method: str, query: str, *args: Any) -> Any:
        import asyncpg

        pool = await self._ensure()
        try:
            return await getattr(pool, method)(query, *args)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise TlsStorageError(f"{self.name}: {exc}") from exc

    async def open(self) -> None:
        await self._call(
            "execute",
            f"CREATE TABLE IF NOT EXISTS {self._table} (kind text NOT NULL, name text NOT NULL,"
            " value bytea NOT NULL, updated timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (kind, name))",
        )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def get(self, kind: str, name: str) -> bytes | None:
        value = await self._call(
            "fetchval", f"SELECT value FROM {self._table} WHERE kind = $1 AND name = $2", kind, name
        )
        return bytes(value) if value is not None else None

    async def put(self, kind: str, name: str, value: bytes) -> None:
        await self._call(
            "execute",
            f"INSERT INTO {self._table} (kind, name, value) VALUES ($1, $2, $3)"
            " ON CONFLICT (kind, name) DO UPDATE SET value = excluded.value, updated = now()",
            kind,
            name,
            value,
        )

    async def delete(self, kind: str, name: str) -> None:
        await self._call(
            "execute", f"DELETE FROM {self._table} WHERE kind = $1 AND name = $2", kind, name
        )

    @contextlib.asynccontextmanager
    async def order_lock(self, host: str) -> AsyncIterator[bool]:
        import asyncpg

        pool = await self._ensure()
        key = _lock_key(self._prefix, host)
        try:
            conn = await pool.acquire()
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise TlsStorageError(f"{self.name}: {exc}") from exc
        try:
            # A session lock on a connection held for the whole order: if this node dies,
            # the connection closes and the lock is gone with it.
            mine = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))
            try:
                yield mine
            finally:
                if mine:
                    with contextlib.suppress(Exception):
                        await conn.execute("SELECT pg_advisory_unlock($1)", key)
        finally:
            await pool.release(conn)


def open_tls_storage(store_url: str, data_dir: Path) -> TlsStorage:
    """PostgreSQL when the click store is PostgreSQL (same database), else SQLite under
    ``data_dir``. Nothing is connected yet."""
    if store_url.startswith(("postgresql://", "postgres://")):
        from redirector.store.pg import split_table_prefix

        dsn, prefix = split_table_prefix(store_url)
        return PgTlsStorage(dsn) if prefix is None else PgTlsStorage(dsn, table_prefix=prefix)
    return SqliteTlsStorage(data_dir / "tls.sqlite3")
