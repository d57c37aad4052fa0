"""The embedded click store: one SQLite file (WAL) under the data dir.

sqlite3 blocks, so every call runs on one dedicated worker thread that owns the only
connection (SQLite connections must stay on the thread that made them); the event loop
never waits on the disk. WAL lets ``clickrelay stats`` read while the redirector writes.

Failures (read-only file or directory, disk full, database locked by another process
past ``busy_timeout``, file deleted) become :class:`StoreError`. After an error that is
not a plain lock timeout the connection is dropped and reopened on the next call, so a
fixed disk or permission is picked up without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

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

T = TypeVar("T")

#: Schema migrations, in order; ``schema_version.version`` is how many have run.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE clicks (
            id TEXT PRIMARY KEY,
            time TEXT NOT NULL,          -- UTC, fixed width: sorts and compares as text
            queue_id TEXT NOT NULL,
            link_index INTEGER NOT NULL,
            url TEXT NOT NULL,
            recipient TEXT,
            client_ip TEXT,
            user_agent TEXT,
            method TEXT NOT NULL,
            classification TEXT NOT NULL,
            reason TEXT
        )""",
        "CREATE INDEX clicks_queue_id ON clicks (queue_id, link_index)",
        "CREATE INDEX clicks_time ON clicks (time)",
    ),
    # Settled classification: the walk rules' evidence and whether a label is final.
    # Clicks recorded before this migration are final as they are (settled = 1).
    (
        "ALTER TABLE clicks ADD COLUMN client_key TEXT",
        "ALTER TABLE clicks ADD COLUMN net_key TEXT",
        "ALTER TABLE clicks ADD COLUMN network TEXT",
        "ALTER TABLE clicks ADD COLUMN trap INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE clicks ADD COLUMN settled INTEGER NOT NULL DEFAULT 1",
        "ALTER TABLE clicks ADD COLUMN evidence TEXT",
        "CREATE INDEX clicks_unsettled ON clicks (time) WHERE settled = 0",
    ),
)

_ROW = f"({', '.join('?' * len(CLICK_COLUMNS))})"
#: Rows per INSERT statement. The sqlite3 module lets go of the GIL only while SQLite
#: runs a statement and takes it back after each one: with one statement per row, the
#: writer thread wrestles the event loop's thread for the GIL at every row (a context
#: switch each, and redirects stalled behind it). With 100 rows per statement it does
#: so once per 100 rows, and the B-tree work runs beside the loop, without the GIL.
#: (11 columns x 100 = 1,100 variables: far under SQLite's limit of 32,766.)
_ROWS_PER_INSERT = 100


def _insert_sql(rows: int) -> str:
    return (
        f"INSERT INTO clicks ({', '.join(CLICK_COLUMNS)})"
        f" VALUES {', '.join([_ROW] * rows)} ON CONFLICT (id) DO NOTHING"
    )


_INSERT_FULL = _insert_sql(_ROWS_PER_INSERT)
_SELECT = f"SELECT {', '.join(CLICK_COLUMNS)} FROM clicks"
#: Ids per ``IN (...)`` list (SQLite's variable limit is far above).
_IDS_PER_STATEMENT = 500


def time_text(value: datetime) -> str:
    """The stored form of a time: fixed-width UTC text, so text order is time order.

    ``2026-11-01T12:00:00.000000+00:00`` (isoformat is several times faster than strftime).
    """
    if value.tzinfo is UTC:  # what the redirector makes: no conversion needed
        return value.isoformat(timespec="microseconds")
    return utc(value).isoformat(timespec="microseconds")


def _parse_time(value: str) -> datetime:
    return utc(datetime.fromisoformat(value))


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
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise StoreError(f"{self.name}: cannot switch to WAL mode (got {mode!r})")
            # NORMAL in WAL mode: durable against process crashes, cheaper fsyncs.
            conn.execute("PRAGMA synchronous = NORMAL")
            # A bigger page cache keeps the random-key id index in memory (16 MB).
            conn.execute("PRAGMA cache_size = -16000")
            self._migrate(conn)
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

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = int(row[0]) if row else 0
            if row is None:
                conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"{self.name}: schema version {version} is newer than this clickrelay "
                    f"knows ({len(MIGRATIONS)}); upgrade clickrelay"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    conn.execute(statement)
            conn.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS),))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _write(self, clicks: Sequence[Click]) -> None:
        conn = self._connect()
        if not clicks:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Converted here, not on the event loop (it is busy answering redirects), and
            # one INSERT's worth at a time: this thread holds the GIL while it runs Python
            # and lets go inside each INSERT, so short stretches keep redirects prompt.
            for at in range(0, len(clicks), _ROWS_PER_INSERT):
                chunk = clicks[at : at + _ROWS_PER_INSERT]
                try:
                    values = [v for click in chunk for v in click_row(click, time_text)]
                except (TypeError, ValueError, AttributeError) as exc:
                    raise StoreError(
                        f"{self.name}: malformed click: {exc}", retryable=False
                    ) from exc
                sql = _INSERT_FULL if len(chunk) == _ROWS_PER_INSERT else _insert_sql(len(chunk))
                conn.execute(sql, values)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _stats(self, since: datetime | None, settled_only: bool) -> dict[str, Any]:
        conn = self._read_connect()
        conditions = ["settled = 1"] if settled_only else []
        params: tuple[str, ...] = ()
        if since:
            conditions.append("time >= ?")
            params = (time_text(since),)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        and_where = "".join(f" AND {c}" for c in conditions)
        since_and = "AND time >= ?" if since else ""
        # One read transaction: all queries see the same snapshot.
        conn.execute("BEGIN")
        try:
            link_rows = conn.execute(
                LINK_STATS_SQL.format(table="clicks", where=where), params
            ).fetchall()
            message_rows = conn.execute(
                MESSAGE_STATS_SQL.format(table="clicks", where=where), params
            ).fetchall()
            reasons = conn.execute(
                REASON_STATS_SQL.format(table="clicks", and_where=and_where), params
            ).fetchall()
            unsettled = conn.execute(
                UNSETTLED_SQL.format(table="clicks", since_and=since_and), params
            ).fetchone()[0]
        finally:
            conn.execute("COMMIT")
        links = [
            LinkRow(q, int(i), u, int(h), int(b), int(n), _parse_time(f), _parse_time(lt))
            for q, i, u, h, b, n, f, lt in link_rows
        ]
        messages = [
            MessageRow(q, int(h), int(b), int(n), _parse_time(f), _parse_time(lt))
            for q, h, b, n, f, lt in message_rows
        ]
        return build_stats(
            links,
            messages,
            reasons={str(r): int(n) for r, n in reasons},
            unsettled=int(unsettled),
            settled_only=settled_only,
        )

    # -- settling (writer thread: the reads see the latest writes) ----------------------

    def _unsettled(self, limit: int) -> list[Click]:
        conn = self._connect()
        rows = conn.execute(
            f"{_SELECT} WHERE settled = 0 ORDER BY time LIMIT ?", (limit,)
        ).fetchall()
        return [click_from_row(row, _parse_time) for row in rows]

    def _message_clicks(
        self, queue_ids: Sequence[str], start: datetime, end: datetime
    ) -> list[Click]:
        conn = self._connect()
        out: list[Click] = []
        ids = sorted(set(queue_ids))
        for at in range(0, len(ids), _IDS_PER_STATEMENT):
            chunk = ids[at : at + _IDS_PER_STATEMENT]
            marks = ", ".join("?" * len(chunk))
            rows = conn.execute(
                f"{_SELECT} WHERE queue_id IN ({marks}) AND time >= ? AND time <= ?",
                (*chunk, time_text(start), time_text(end)),
            ).fetchall()
            out.extend(click_from_row(row, _parse_time) for row in rows)
        return out

    def _settle(self, relabels: Sequence[tuple[str, str, str]], settled_ids: Sequence[str]) -> int:
        conn = self._connect()
        changed = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for click_id, reason, evidence in relabels:
                cursor = conn.execute(
                    "UPDATE clicks SET classification = 'bot', reason = ?, evidence = ?"
                    " WHERE id = ? AND classification = 'human' AND settled = 0",
                    (reason, evidence, click_id),
                )
                changed += cursor.rowcount
            ids = list(settled_ids)
            for at in range(0, len(ids), _IDS_PER_STATEMENT):
                chunk = ids[at : at + _IDS_PER_STATEMENT]
                marks = ", ".join("?" * len(chunk))
                conn.execute(f"UPDATE clicks SET settled = 1 WHERE id IN ({marks})", chunk)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return changed

    def _click(self, click_id: str) -> Click | None:
        conn = self._read_connect()
        row = conn.execute(f"{_SELECT} WHERE id = ?", (click_id,)).fetchone()
        return None if row is None else click_from_row(row, _parse_time)

    def _settled_clicks(self, since: datetime | None, limit: int) -> list[Click]:
        conn = self._read_connect()
        start = time_text(since) if since else ""
        rows = conn.execute(
            f"{_SELECT} WHERE settled = 1 AND time >= ? ORDER BY time, id LIMIT ?",
            (start, limit),
        ).fetchall()
        return [click_from_row(row, _parse_time) for row in rows]

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

    async def open(self) -> None:
        await self._run(self._connect)

    async def write(self, clicks: Sequence[Click]) -> None:
        await self._run(self._write, list(clicks))

    async def stats(
        self, since: datetime | None = None, *, settled_only: bool = False
    ) -> dict[str, Any]:
        await self._run(self._connect)  # the schema exists before the reader looks
        return await self._run(self._stats, since, settled_only, reader=True)

    async def unsettled(self, limit: int) -> list[Click]:
        return await self._run(self._unsettled, limit)

    async def message_clicks(
        self, queue_ids: Sequence[str], start: datetime, end: datetime
    ) -> list[Click]:
        return await self._run(self._message_clicks, list(queue_ids), start, end)

    async def settle(
        self, relabels: Sequence[tuple[str, str, str]], settled_ids: Sequence[str]
    ) -> int:
        return await self._run(self._settle, list(relabels), list(settled_ids))

    async def click(self, click_id: str) -> Click | None:
        await self._run(self._connect)
        return await self._run(self._click, click_id, reader=True)

    async def settled_clicks(self, since: datetime | None, limit: int) -> list[Click]:
        await self._run(self._connect)
        return await self._run(self._settled_clicks, since, limit, reader=True)

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
