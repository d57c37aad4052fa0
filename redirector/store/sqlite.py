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
from redirector.store.dashboard import (
    RECENT_N,
    TOP_N,
    DashboardData,
    DashboardQuery,
    Ranked,
    RecentClick,
    drill_column,
    drill_key,
    fold_hours,
    hour_key,
    parse_hour_key,
    split_days,
)
from redirector.store.records import (
    READ_COLUMNS,
    ClickFilter,
    EndpointStatus,
    StoredClick,
    WebhookEvent,
)
from redirector.store.stats import (
    LINK_STATS_SQL,
    MESSAGE_STATS_SQL,
    REASON_STATS_SQL,
    TAG_STATS_SQL,
    UNSETTLED_SQL,
    LinkRow,
    MessageRow,
    TagRow,
    and_where,
    build_stats,
    where_clause,
)

T = TypeVar("T")

#: The columns the roll-ups are keyed or counted by: a change of any moves a click.
_ROLLUP_KEYS = ("time", "queue_id", "url", "recipient", "classification", "reason", "tag")


def _add(row: str) -> str:
    """Trigger statements counting click ``row`` (NEW or OLD) into every roll-up."""
    hour, day = f"substr({row}.time, 1, 13)", f"substr({row}.time, 1, 10)"
    human, bot = f"{row}.classification = 'human'", f"{row}.classification <> 'human'"
    both = "ON CONFLICT DO UPDATE SET human = human + excluded.human, bot = bot + excluded.bot;"
    return f"""
        INSERT INTO click_hours VALUES (
            {hour}, {row}.classification, coalesce({row}.reason, ''), 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
        INSERT INTO click_hour_urls VALUES ({hour}, {row}.url, {human}, {bot}) {both}
        INSERT INTO click_day_messages VALUES ({day}, {row}.queue_id, {human}, {bot}) {both}
        INSERT INTO click_day_recipients SELECT {day}, {row}.recipient, 1
            WHERE {human} AND {row}.recipient IS NOT NULL
        ON CONFLICT DO UPDATE SET n = n + 1;
        INSERT INTO click_day_tags SELECT {day}, {row}.tag, {human}, {bot}
            WHERE {row}.tag IS NOT NULL {both}"""


def _sub(row: str) -> str:
    """Trigger statements taking click ``row`` out of every roll-up (rows that reach
    zero go: an hour or a key without clicks is not shown)."""
    hour, day = f"substr({row}.time, 1, 13)", f"substr({row}.time, 1, 10)"
    human, bot = f"({row}.classification = 'human')", f"({row}.classification <> 'human')"
    statements = []
    for table, key, counts in (
        (
            "click_hours",
            f"hour = {hour} AND classification = {row}.classification"
            f" AND reason = coalesce({row}.reason, '')",
            "n = n - 1",
        ),
        (
            "click_hour_urls",
            f"hour = {hour} AND url = {row}.url",
            f"human = human - {human}, bot = bot - {bot}",
        ),
        (
            "click_day_messages",
            f"day = {day} AND queue_id = {row}.queue_id",
            f"human = human - {human}, bot = bot - {bot}",
        ),
        (
            "click_day_recipients",
            f"day = {day} AND recipient = {row}.recipient AND {human}",
            "n = n - 1",
        ),
        (
            "click_day_tags",
            f"day = {day} AND tag = {row}.tag",
            f"human = human - {human}, bot = bot - {bot}",
        ),
    ):
        empty = "n <= 0" if counts.startswith("n ") else "human <= 0 AND bot <= 0"
        statements.append(f"UPDATE {table} SET {counts} WHERE {key};")
        statements.append(f"DELETE FROM {table} WHERE {key} AND {empty};")
    return "\n".join(statements)


#: Every roll-up filled from the clicks table (the roll-up tables empty).
ROLLUP_BACKFILL = (
    """INSERT INTO click_hours SELECT substr(time, 1, 13), classification,
        coalesce(reason, ''), count(*) FROM clicks GROUP BY 1, 2, 3""",
    """INSERT INTO click_hour_urls SELECT substr(time, 1, 13), url,
        sum(classification = 'human'), sum(classification <> 'human')
        FROM clicks GROUP BY 1, 2""",
    """INSERT INTO click_day_messages SELECT substr(time, 1, 10), queue_id,
        sum(classification = 'human'), sum(classification <> 'human')
        FROM clicks GROUP BY 1, 2""",
    """INSERT INTO click_day_recipients SELECT substr(time, 1, 10), recipient, count(*)
        FROM clicks WHERE classification = 'human' AND recipient IS NOT NULL GROUP BY 1, 2""",
    """INSERT INTO click_day_tags SELECT substr(time, 1, 10), tag,
        sum(classification = 'human'), sum(classification <> 'human')
        FROM clicks WHERE tag IS NOT NULL GROUP BY 1, 2""",
)

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
    (
        # What the sending application said about the message (tag, metadata JSON).
        "ALTER TABLE clicks ADD COLUMN tag TEXT",
        "ALTER TABLE clicks ADD COLUMN metadata TEXT",
        "ALTER TABLE clicks ADD COLUMN sent_at TEXT",  # the link's minting time
        "CREATE INDEX clicks_tag ON clicks (tag)",
        # Webhooks: how far each endpoint has taken clicks (rowid), and the events
        # taken but not delivered yet (pending) or given up on (failed).
        """CREATE TABLE webhook_cursors (
            endpoint TEXT PRIMARY KEY,
            last_seq INTEGER NOT NULL,
            last_error TEXT
        )""",
        """CREATE TABLE webhook_events (
            endpoint TEXT NOT NULL,
            click_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            state TEXT NOT NULL,            -- pending | failed
            attempts INTEGER NOT NULL DEFAULT 0,
            enqueued_at REAL NOT NULL,      -- unix seconds
            next_attempt_at REAL NOT NULL,  -- also the lease of a claimed event
            last_error TEXT,
            PRIMARY KEY (endpoint, click_id)
        )""",
        "CREATE INDEX webhook_events_due ON webhook_events (endpoint, state, next_attempt_at)",
    ),
    # Roll-ups for the dashboard's overview, kept by a trigger (so every writer, any
    # version's recorder or a script, keeps them right) and filled from the clicks
    # already stored. Hourly where the keys are few (classes and reasons, URLs); daily
    # where there can be one key per recipient (queue ids, recipients): an hourly table
    # of those would be as big as the clicks table.
    (
        """CREATE TABLE click_hours (
            hour TEXT NOT NULL, classification TEXT NOT NULL, reason TEXT NOT NULL,
            n INTEGER NOT NULL, PRIMARY KEY (hour, classification, reason)
        ) WITHOUT ROWID""",
        """CREATE TABLE click_hour_urls (
            hour TEXT NOT NULL, url TEXT NOT NULL, human INTEGER NOT NULL,
            bot INTEGER NOT NULL, PRIMARY KEY (hour, url)
        ) WITHOUT ROWID""",
        """CREATE TABLE click_day_messages (
            day TEXT NOT NULL, queue_id TEXT NOT NULL, human INTEGER NOT NULL,
            bot INTEGER NOT NULL, PRIMARY KEY (day, queue_id)
        ) WITHOUT ROWID""",
        """CREATE TABLE click_day_recipients (
            day TEXT NOT NULL, recipient TEXT NOT NULL, PRIMARY KEY (day, recipient)
        ) WITHOUT ROWID""",
        """CREATE TRIGGER clicks_rollup AFTER INSERT ON clicks BEGIN
            INSERT INTO click_hours VALUES (
                substr(NEW.time, 1, 13), NEW.classification, coalesce(NEW.reason, ''), 1)
            ON CONFLICT DO UPDATE SET n = n + 1;
            INSERT INTO click_hour_urls VALUES (
                substr(NEW.time, 1, 13), NEW.url,
                NEW.classification = 'human', NEW.classification <> 'human')
            ON CONFLICT DO UPDATE SET human = human + excluded.human, bot = bot + excluded.bot;
            INSERT INTO click_day_messages VALUES (
                substr(NEW.time, 1, 10), NEW.queue_id,
                NEW.classification = 'human', NEW.classification <> 'human')
            ON CONFLICT DO UPDATE SET human = human + excluded.human, bot = bot + excluded.bot;
            INSERT OR IGNORE INTO click_day_recipients
                SELECT substr(NEW.time, 1, 10), NEW.recipient
                WHERE NEW.classification = 'human' AND NEW.recipient IS NOT NULL;
        END""",
        """INSERT INTO click_hours SELECT substr(time, 1, 13), classification,
            coalesce(reason, ''), count(*) FROM clicks GROUP BY 1, 2, 3""",
        """INSERT INTO click_hour_urls SELECT substr(time, 1, 13), url,
            sum(classification = 'human'), sum(classification <> 'human')
            FROM clicks GROUP BY 1, 2""",
        """INSERT INTO click_day_messages SELECT substr(time, 1, 10), queue_id,
            sum(classification = 'human'), sum(classification <> 'human')
            FROM clicks GROUP BY 1, 2""",
        """INSERT INTO click_day_recipients SELECT DISTINCT substr(time, 1, 10), recipient
            FROM clicks WHERE classification = 'human' AND recipient IS NOT NULL""",
        "CREATE INDEX clicks_queue_time ON clicks (queue_id, time)",
        "CREATE INDEX clicks_url_time ON clicks (url, time)",
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
    # Roll-ups that follow every change of a click, not only its insert: the settler
    # relabels clicks and retention deletes them, and the overview must keep agreeing
    # with the clicks table. Recipients now carry a count of their human clicks (a
    # relabel or delete removes one only with its last human click of the day); the
    # daily tags roll-up feeds the top tags. Every roll-up is rebuilt from the clicks,
    # as relabels made before this step were never subtracted.
    (
        "DROP TRIGGER clicks_rollup",
        "DROP TABLE click_day_recipients",
        """CREATE TABLE click_day_recipients (
            day TEXT NOT NULL, recipient TEXT NOT NULL, n INTEGER NOT NULL,
            PRIMARY KEY (day, recipient)
        ) WITHOUT ROWID""",
        """CREATE TABLE click_day_tags (
            day TEXT NOT NULL, tag TEXT NOT NULL, human INTEGER NOT NULL,
            bot INTEGER NOT NULL, PRIMARY KEY (day, tag)
        ) WITHOUT ROWID""",
        "DELETE FROM click_hours",
        "DELETE FROM click_hour_urls",
        "DELETE FROM click_day_messages",
        *ROLLUP_BACKFILL,
        f"CREATE TRIGGER clicks_rollup_insert AFTER INSERT ON clicks BEGIN {_add('NEW')} END",
        f"CREATE TRIGGER clicks_rollup_delete AFTER DELETE ON clicks BEGIN {_sub('OLD')} END",
        f"""CREATE TRIGGER clicks_rollup_update AFTER UPDATE OF {", ".join(_ROLLUP_KEYS)}
            ON clicks WHEN {" OR ".join(f"OLD.{k} IS NOT NEW.{k}" for k in _ROLLUP_KEYS)}
            BEGIN {_sub("OLD")} {_add("NEW")} END""",
        # Tag drill-downs read a time range of one tag, like message and link ones.
        "DROP INDEX clicks_tag",
        "CREATE INDEX clicks_tag_time ON clicks (tag, time)",
    ),
)

_ROW = f"({', '.join('?' * len(CLICK_COLUMNS))})"
#: Rows per INSERT statement. The sqlite3 module lets go of the GIL only while SQLite
#: runs a statement and takes it back after each one: with one statement per row, the
#: writer thread wrestles the event loop's thread for the GIL at every row (a context
#: switch each, and redirects stalled behind it). With 100 rows per statement it does
#: so once per 100 rows, and the B-tree work runs beside the loop, without the GIL.
#: (20 columns x 100 = 2,000 variables: far under SQLite's limit of 32,766.)
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


def _stored(seq: int, row: Sequence[Any]) -> StoredClick:
    """A stored click from ``rowid`` and a row in READ_COLUMNS order."""
    sent_at = row[-1]
    return StoredClick.from_row(
        seq, row, _parse_time(row[1]), _parse_time(sent_at) if sent_at else None
    )


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

    def _stats(self, since: datetime | None, tag: str | None, settled_only: bool) -> dict[str, Any]:
        conn = self._read_connect()
        since_value = time_text(since) if since else None
        where, params = where_clause(since_value, tag, lambda _n: "?", settled_only)
        # The unsettled count ignores settled_only (it counts exactly what that leaves out).
        all_where, all_params = where_clause(since_value, tag, lambda _n: "?")
        # One read transaction: every query sees the same snapshot.
        conn.execute("BEGIN")
        try:
            link_rows = conn.execute(
                LINK_STATS_SQL.format(table="clicks", where=where), params
            ).fetchall()
            message_rows = conn.execute(
                MESSAGE_STATS_SQL.format(table="clicks", where=where), params
            ).fetchall()
            tag_rows = conn.execute(
                TAG_STATS_SQL.format(table="clicks", where=where), params
            ).fetchall()
            reasons = conn.execute(
                REASON_STATS_SQL.format(table="clicks", and_where=and_where(where)), params
            ).fetchall()
            unsettled = conn.execute(
                UNSETTLED_SQL.format(table="clicks", and_where=and_where(all_where)), all_params
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
        tags = [TagRow(t, int(h), int(b)) for t, h, b in tag_rows if t is not None]
        return build_stats(
            links,
            messages,
            tags,
            reasons={str(r): int(n) for r, n in reasons},
            unsettled=int(unsettled),
            settled_only=settled_only,
        )

    # -- export and retention ---------------------------------------------------------

    def _export_page(self, flt: ClickFilter, after: int, limit: int) -> list[StoredClick]:
        conn = self._read_connect()
        conditions = ["rowid > ?"]
        params: list[object] = [after]
        if flt.since is not None:
            conditions.append("time >= ?")
            params.append(time_text(flt.since))
        if flt.until is not None:
            conditions.append("time < ?")
            params.append(time_text(flt.until))
        if flt.tag is not None:
            conditions.append("tag = ?")
            params.append(flt.tag)
        rows = conn.execute(
            f"SELECT rowid, {', '.join(READ_COLUMNS)} FROM clicks"
            f" WHERE {' AND '.join(conditions)} ORDER BY rowid LIMIT ?",
            (*params, limit),
        ).fetchall()
        return [_stored(r[0], r[1:]) for r in rows]

    def _delete_before(self, cutoff: datetime, limit: int) -> int:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            # The newest row is never deleted: SQLite hands out max(rowid)+1, and a
            # rowid used again would be behind every webhook cursor.
            rows = conn.execute(
                "SELECT rowid, id FROM clicks WHERE time < ?"
                " AND rowid < (SELECT MAX(rowid) FROM clicks) LIMIT ?",
                (time_text(cutoff), limit),
            ).fetchall()
            if rows:
                conn.executemany(
                    "DELETE FROM webhook_events WHERE click_id = ?", [(r[1],) for r in rows]
                )
                conn.executemany("DELETE FROM clicks WHERE rowid = ?", [(r[0],) for r in rows])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if rows:
            conn.execute(f"PRAGMA incremental_vacuum({max(len(rows) // 8, 16)})").fetchall()
        return len(rows)

    # -- webhook delivery state (writer thread) ---------------------------------------

    def _wh_enqueue(
        self, endpoints: Sequence[tuple[str, bool]], cutoff: datetime, limit: int, now: float
    ) -> int:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        taken = 0
        try:
            for endpoint, include_bots in endpoints:
                conn.execute(
                    "INSERT OR IGNORE INTO webhook_cursors (endpoint, last_seq)"
                    " VALUES (?, (SELECT COALESCE(MAX(rowid), 0) FROM clicks))",
                    (endpoint,),
                )
                (last,) = conn.execute(
                    "SELECT last_seq FROM webhook_cursors WHERE endpoint = ?", (endpoint,)
                ).fetchone()
                rows = conn.execute(
                    "SELECT rowid, id, classification FROM clicks"
                    " WHERE rowid > ? AND time <= ? ORDER BY rowid LIMIT ?",
                    (last, time_text(cutoff), limit),
                ).fetchall()
                if not rows:
                    continue
                conn.executemany(
                    "INSERT OR IGNORE INTO webhook_events (endpoint, click_id, seq, state,"
                    " enqueued_at, next_attempt_at) VALUES (?, ?, ?, 'pending', ?, ?)",
                    [
                        (endpoint, r[1], r[0], now, now)
                        for r in rows
                        if include_bots or r[2] == "human"
                    ],
                )
                conn.execute(
                    "UPDATE webhook_cursors SET last_seq = ? WHERE endpoint = ?",
                    (rows[-1][0], endpoint),
                )
                taken += len(rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return taken

    def _wh_claim(self, endpoint: str, now: float, lease: float, limit: int) -> list[WebhookEvent]:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(
                f"SELECT e.attempts, e.enqueued_at, c.rowid,"
                f" {', '.join('c.' + col for col in READ_COLUMNS)}"
                " FROM webhook_events e JOIN clicks c ON c.id = e.click_id"
                " WHERE e.endpoint = ? AND e.state = 'pending' AND e.next_attempt_at <= ?"
                " ORDER BY e.seq LIMIT ?",
                (endpoint, now, limit),
            ).fetchall()
            conn.executemany(
                "UPDATE webhook_events SET attempts = attempts + 1, next_attempt_at = ?"
                " WHERE endpoint = ? AND click_id = ?",
                [(now + lease, endpoint, r[3]) for r in rows],
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return [
            WebhookEvent(
                endpoint,
                int(r[0]) + 1,
                float(r[1]),
                _stored(r[2], r[3:]),
            )
            for r in rows
        ]

    def _wh_finish(
        self, endpoint: str, click_id: str, outcome: str, next_at: float, error: str | None
    ) -> None:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if outcome == "delivered":
                conn.execute(
                    "DELETE FROM webhook_events WHERE endpoint = ? AND click_id = ?",
                    (endpoint, click_id),
                )
            else:  # "retry" (pending again at next_at) or "failed"
                state = "failed" if outcome == "failed" else "pending"
                conn.execute(
                    "UPDATE webhook_events SET state = ?, next_attempt_at = ?, last_error = ?"
                    " WHERE endpoint = ? AND click_id = ?",
                    (state, next_at, error, endpoint, click_id),
                )
                conn.execute(
                    "UPDATE webhook_cursors SET last_error = ? WHERE endpoint = ?",
                    (error, endpoint),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _wh_replay(self, endpoint: str, since: datetime, now: float) -> int:
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(
                "INSERT INTO webhook_events (endpoint, click_id, seq, state, enqueued_at,"
                " next_attempt_at) SELECT ?, id, rowid, 'pending', ?, ? FROM clicks"
                " WHERE time >= ? AND rowid <= COALESCE("
                "   (SELECT last_seq FROM webhook_cursors WHERE endpoint = ?), 0)"
                " ON CONFLICT (endpoint, click_id) DO UPDATE SET state = 'pending',"
                " attempts = 0, enqueued_at = excluded.enqueued_at,"
                " next_attempt_at = excluded.next_attempt_at, last_error = NULL",
                (endpoint, now, now, time_text(since), endpoint),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return int(cur.rowcount)

    def _wh_status(self, endpoints: Sequence[str]) -> list[EndpointStatus]:
        conn = self._read_connect()
        out: list[EndpointStatus] = []
        for endpoint in endpoints:
            pending, failed, oldest = conn.execute(
                "SELECT SUM(state = 'pending'), SUM(state = 'failed'),"
                " MIN(CASE WHEN state = 'pending' THEN enqueued_at END)"
                " FROM webhook_events WHERE endpoint = ?",
                (endpoint,),
            ).fetchone()
            cursor = conn.execute(
                "SELECT last_seq, last_error FROM webhook_cursors WHERE endpoint = ?",
                (endpoint,),
            ).fetchone()
            out.append(
                EndpointStatus(
                    endpoint,
                    int(pending or 0),
                    int(failed or 0),
                    float(oldest) if oldest is not None else None,
                    cursor[1] if cursor else None,
                    int(cursor[0]) if cursor else None,
                )
            )
        return out

    def _dashboard(self, query: DashboardQuery) -> DashboardData:
        conn = self._read_connect()
        conn.execute("BEGIN")  # one snapshot for every table on the page
        try:
            if query.drill:
                return _drill(conn, query)
            return _overview(conn, query)
        finally:
            conn.execute("COMMIT")

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
        self, since: datetime | None = None, tag: str | None = None, *, settled_only: bool = False
    ) -> dict[str, Any]:
        await self._run(self._connect)  # the schema exists before the reader looks
        return await self._run(self._stats, since, tag, settled_only, reader=True)

    async def export_page(self, flt: ClickFilter, after: int, limit: int) -> list[StoredClick]:
        await self._run(self._connect)
        return await self._run(self._export_page, flt, after, limit, reader=True)

    async def delete_before(self, cutoff: datetime, limit: int) -> int:
        return await self._run(self._delete_before, cutoff, limit)

    async def webhook_enqueue(
        self, endpoints: Sequence[tuple[str, bool]], cutoff: datetime, limit: int, now: float
    ) -> int:
        return await self._run(self._wh_enqueue, list(endpoints), cutoff, limit, now)

    async def webhook_claim(
        self, endpoint: str, now: float, lease: float, limit: int
    ) -> list[WebhookEvent]:
        return await self._run(self._wh_claim, endpoint, now, lease, limit)

    async def webhook_finish(
        self, endpoint: str, click_id: str, outcome: str, next_at: float, error: str | None
    ) -> None:
        await self._run(self._wh_finish, endpoint, click_id, outcome, next_at, error)

    async def webhook_replay(self, endpoint: str, since: datetime, now: float) -> int:
        return await self._run(self._wh_replay, endpoint, since, now)

    async def webhook_status(self, endpoints: Sequence[str]) -> list[EndpointStatus]:
        await self._run(self._connect)
        return await self._run(self._wh_status, list(endpoints), reader=True)

    async def dashboard(self, query: DashboardQuery) -> DashboardData:
        await self._run(self._connect)
        return await self._run(self._dashboard, query, reader=True)

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


#: The overview's queries (``bench/dashboard.py`` prints their plans). Messages and
#: recipients: whole UTC days from the daily roll-ups, the partial days at the window's
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
#: The overview's queries that read whole days from a daily roll-up and the partial days
#: from the clicks table (the others read the hourly roll-ups).
BY_DAY = ("top_messages", "unique", "top_tags")


def _overview(conn: sqlite3.Connection, query: DashboardQuery) -> DashboardData:
    window = (hour_key(query.start), hour_key(query.end))
    rows = conn.execute(OVERVIEW_SQL["hours"], window).fetchall()
    hours, reasons = fold_hours([(parse_hour_key(h), c, r or None, int(n)) for h, c, r, n in rows])
    links = conn.execute(OVERVIEW_SQL["top_links"], (*window, TOP_N)).fetchall()
    split = split_days(query.start, query.end)
    days = (split.first_day.isoformat(), split.end_day.isoformat())
    edges = tuple(time_text(t) for edge in split.edges for t in edge)
    messages = conn.execute(OVERVIEW_SQL["top_messages"], (*days, *edges, TOP_N)).fetchall()
    (unique,) = conn.execute(OVERVIEW_SQL["unique"], (*days, *edges)).fetchone()
    tags = conn.execute(OVERVIEW_SQL["top_tags"], (*days, *edges, TOP_N)).fetchall()
    return DashboardData(
        hours=hours,
        unique_human_recipients=int(unique),
        bot_reasons=reasons,
        top_links=[Ranked(u, int(h), int(b)) for u, h, b in links],
        top_messages=[Ranked(q, int(h), int(b)) for q, h, b in messages],
        top_tags=[Ranked(t, int(h), int(b)) for t, h, b in tags],
    )


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
        "recent": "SELECT time, queue_id, link_index, url, recipient, client_ip, user_agent,"
        f" classification, reason FROM clicks {where} ORDER BY time DESC LIMIT ?",
    }


def _drill(conn: sqlite3.Connection, query: DashboardQuery) -> DashboardData:
    sql = drill_sql(query)
    params = (drill_key(query), time_text(query.start), time_text(query.end))
    rows = conn.execute(sql["hours"], params).fetchall()
    hours, reasons = fold_hours([(parse_hour_key(h), c, r, int(n)) for h, c, r, n in rows])
    (unique,) = conn.execute(sql["unique"], params).fetchone()
    links = conn.execute(sql["top_links"], (*params, TOP_N)).fetchall()
    messages = conn.execute(sql["top_messages"], (*params, TOP_N)).fetchall()
    tags = conn.execute(sql["top_tags"], (*params, TOP_N)).fetchall()
    recent = conn.execute(sql["recent"], (*params, RECENT_N)).fetchall()
    return DashboardData(
        hours=hours,
        unique_human_recipients=int(unique),
        bot_reasons=reasons,
        top_links=[Ranked(u, int(h), int(b)) for u, h, b in links],
        top_messages=[Ranked(q, int(h), int(b)) for q, h, b in messages],
        top_tags=[Ranked(t, int(h), int(b)) for t, h, b in tags],
        recent=[
            RecentClick(_parse_time(t), q, int(i), u, r, ip, ua, c, reason)
            for t, q, i, u, r, ip, ua, c, reason in recent
        ],
    )
