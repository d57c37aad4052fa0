"""The embedded click store: one SQLite file (WAL) under the data dir.

sqlite3 blocks, so every call runs on one dedicated worker thread that owns the only
connection (SQLite connections must stay on the thread that made them); the event loop
never waits on the disk. WAL lets ``clickrelay stats`` read while the redirector writes.

Failures (read-only file or directory, disk full, database locked by another process
past ``busy_timeout``, file deleted) become :class:`StoreError`. After an error that is
not a plain lock timeout the connection is dropped and reopened on the next call, so a
fixed disk or permission is picked up without a restart.

Parts: :mod:`~redirector.store.sqlite.schema` (migrations, roll-up triggers),
:mod:`~redirector.store.sqlite.clicks` (writing, stats, export, retention),
:mod:`~redirector.store.sqlite.webhooks` (delivery queue),
:mod:`~redirector.store.sqlite.dashboard` (dashboard queries),
:mod:`~redirector.store.sqlite.settle` (settled classification); this module holds
the connections, the two threads and the async interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple

from redirector.clicks import Click
from redirector.store.base import StoreError
from redirector.store.dashboard import DashboardData, DashboardQuery
from redirector.store.records import ClickFilter, EndpointStatus, StoredClick, WebhookEvent
from redirector.store.sqlite import clicks as click_table
from redirector.store.sqlite import dashboard, settle, webhooks
from redirector.store.sqlite.schema import migrate
from redirector.store.webhook_sql import finish_statements

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class SqliteStore:
    """Clicks in a SQLite file; see the module docstring.

    Writes run on one worker thread with its own connection; stats queries run on a
    second thread with a second (query-only) connection, so a long report over a big
    table never holds up the writes (WAL: readers and the writer do not block).
    """

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.name = f"sqlite:{self.path}"
        #: How long a write waits for another process's lock before failing.
        self.busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._read_executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # only on the writer thread
        self._read_conn: sqlite3.Connection | None = None  # only on the reader thread

    # -- running on the worker threads ------------------------------------------------

    def _new_connection(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (BEGIN IMMEDIATE takes
        # the write lock up front instead of failing half-way through a batch).
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        return conn

    def _connect(self) -> sqlite3.Connection:
        """The writer connection, schema migrated (writer thread)."""
        if self._conn is not None:
            return self._conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._new_connection()
        try:
            # Pages freed by retention go back to the file's free list and are returned
            # to the disk by ``incremental_vacuum``. Takes effect on a new file only (an
            # older file keeps its mode until a one-off ``VACUUM``; its free pages are
            # still reused by new rows, so it does not grow either).
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise StoreError(f"{self.name}: cannot switch to WAL mode (got {mode!r})")
            # NORMAL in WAL mode: durable against process crashes, cheaper fsyncs.
            conn.execute("PRAGMA synchronous = NORMAL")
            # A bigger page cache keeps the random-key id index in memory (16 MB).
            conn.execute("PRAGMA cache_size = -16000")
            migrate(conn, self.name)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _read_connect(self) -> sqlite3.Connection:
        """The reader connection (reader thread); the writer has created the schema."""
        if self._read_conn is None:
            conn = self._new_connection()
            conn.execute("PRAGMA query_only = ON")
            self._read_conn = conn
        return self._read_conn

    def _on_writer(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        return fn(self._connect(), *args)

    def _on_reader(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        return fn(self._read_connect(), *args)

    def _close_writer(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _close_reader(self) -> None:
        conn, self._read_conn = self._read_conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    # -- the async interface ----------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any, reader: bool = False) -> T:
        """Run ``fn`` on the writer (or reader) thread; sqlite/OS errors → StoreError."""
        if reader:
            if self._read_executor is None:
                self._read_executor = ThreadPoolExecutor(1, thread_name_prefix="clickrelay-sqlr")
            executor = self._read_executor
            reset = self._close_reader
        else:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="clickrelay-sqlw")
            executor = self._executor
            reset = self._close_writer
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, fn, *args)
        except StoreError:
            raise
        except (sqlite3.Error, OSError) as exc:
            locked = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
            if not locked:
                # Read-only, full, I/O error, file gone: start afresh next time.
                await loop.run_in_executor(executor, reset)
            retryable = not isinstance(exc, sqlite3.DataError | sqlite3.IntegrityError)
            raise StoreError(f"{self.name}: {exc}", retryable=retryable) from exc
        except (OverflowError, ValueError, TypeError) as exc:
            # Values sqlite3 cannot bind (an int past 64 bits, ...): this data can never
            # be written, whatever the state of the disk.
            raise StoreError(f"{self.name}: click refused: {exc}", retryable=False) from exc

    async def _write_call(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        """``fn(writer connection, *args)`` on the writer thread."""
        return await self._run(self._on_writer, fn, *args)

    async def _read_call(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        """``fn(reader connection, *args)`` on the reader thread, the schema made first."""
        await self._run(self._connect)
        return await self._run(self._on_reader, fn, *args, reader=True)

    async def open(self) -> None:
        await self._run(self._connect)

    async def write(self, clicks: Sequence[Click]) -> None:
        await self._write_call(click_table.write, list(clicks), self.name)

    async def stats(
        self, since: datetime | None = None, tag: str | None = None, *, settled_only: bool = False
    ) -> dict[str, Any]:
        return await self._read_call(click_table.stats, since, tag, settled_only)

    async def export_page(self, flt: ClickFilter, after: int, limit: int) -> list[StoredClick]:
        return await self._read_call(click_table.export_page, flt, after, limit)

    async def delete_before(self, cutoff: datetime, limit: int) -> int:
        return await self._write_call(click_table.delete_before, cutoff, limit)

    async def webhook_enqueue(
        self, endpoints: Sequence[tuple[str, bool, bool]], cutoff: datetime, limit: int, now: float
    ) -> int:
        return await self._write_call(webhooks.enqueue, list(endpoints), cutoff, limit, now)

    async def webhook_claim(
        self, endpoint: str, now: float, lease: float, limit: int
    ) -> list[WebhookEvent]:
        return await self._write_call(webhooks.claim, endpoint, now, lease, limit)

    async def webhook_finish(
        self, endpoint: str, click_id: str, outcome: str, next_at: float, error: str | None
    ) -> None:
        statements = finish_statements(
            "", lambda _n: "?", endpoint, click_id, outcome, next_at, error
        )
        await self._write_call(webhooks.run, statements)

    async def webhook_replay(
        self, endpoint: str, since: datetime, now: float, *, include_bots: bool
    ) -> int:
        return await self._write_call(webhooks.replay, endpoint, since, now, include_bots)

    async def webhook_status(self, endpoints: Sequence[str]) -> list[EndpointStatus]:
        return await self._read_call(webhooks.status, list(endpoints))

    async def dashboard(self, query: DashboardQuery) -> DashboardData:
        return await self._read_call(dashboard.dashboard, query)

    # Settling reads on the writer thread: they see the latest writes.

    async def unsettled(self, limit: int) -> list[Click]:
        return await self._write_call(settle.unsettled, limit)

    async def message_clicks(
        self, queue_ids: Sequence[str], start: datetime, end: datetime
    ) -> list[Click]:
        return await self._write_call(settle.message_clicks, list(queue_ids), start, end)

    async def settle(
        self, relabels: Sequence[tuple[str, str, str]], settled_ids: Sequence[str]
    ) -> int:
        return await self._write_call(settle.settle, list(relabels), list(settled_ids))

    async def click(self, click_id: str) -> Click | None:
        return await self._read_call(settle.click, click_id)

    async def settled_clicks(self, since: datetime | None, limit: int) -> list[Click]:
        return await self._read_call(settle.settled_clicks, since, limit)

    async def close(self) -> None:
        """Close both connections and stop both threads (the store can be reopened)."""
        writer, self._executor = self._executor, None
        reader, self._read_executor = self._read_executor, None
        loop = asyncio.get_running_loop()
        for executor, reset in ((writer, self._close_writer), (reader, self._close_reader)):
            if executor is None:
                continue
            try:
                await loop.run_in_executor(executor, reset)
            finally:
                executor.shutdown(wait=True)
