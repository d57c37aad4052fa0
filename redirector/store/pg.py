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
        (
            # What the sending application said about the message (tag, metadata JSON),
            # and the commit order webhook cursors and export pages walk (see _SEQ_LOCK).
            f"ALTER TABLE {p}clicks ADD COLUMN tag text, ADD COLUMN metadata text,"
            " ADD COLUMN sent_at timestamptz, ADD COLUMN seq bigserial",
            f"CREATE INDEX {p}clicks_tag ON {p}clicks (tag)",
            f"CREATE UNIQUE INDEX {p}clicks_seq ON {p}clicks (seq)",
            f"""CREATE TABLE {p}webhook_cursors (
                endpoint text PRIMARY KEY,
                last_seq bigint NOT NULL,
                last_error text
            )""",
            f"""CREATE TABLE {p}webhook_events (
                endpoint text NOT NULL,
                click_id text NOT NULL,
                seq bigint NOT NULL,
                state text NOT NULL,
                attempts integer NOT NULL DEFAULT 0,
                enqueued_at double precision NOT NULL,
                next_attempt_at double precision NOT NULL,
                last_error text,
                PRIMARY KEY (endpoint, click_id)
            )""",
            f"CREATE INDEX {p}webhook_events_due ON {p}webhook_events"
            " (endpoint, state, next_attempt_at)",
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
        # Roll-ups that follow every change of a click (see the SQLite store): one
        # trigger for insert, relabel and delete; recipients carry a count; daily tags.
        # Every roll-up is rebuilt, as relabels made before this step were never taken out.
        (
            f"""CREATE TABLE {p}click_day_tags (
                day date NOT NULL, tag text NOT NULL, human bigint NOT NULL,
                bot bigint NOT NULL, PRIMARY KEY (day, tag))""",
            f"ALTER TABLE {p}click_day_recipients ADD COLUMN n bigint NOT NULL DEFAULT 0",
            _rollup_add_function(p),
            f"""CREATE OR REPLACE FUNCTION {p}clicks_rollup() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'UPDATE' AND ({", ".join(f"OLD.{k}" for k in ROLLUP_KEYS)})
                    IS NOT DISTINCT FROM ({", ".join(f"NEW.{k}" for k in ROLLUP_KEYS)}) THEN
                    RETURN NULL;
                END IF;
                IF TG_OP <> 'INSERT' THEN
                    PERFORM {p}clicks_rollup_add(
                        {", ".join(f"OLD.{k}" for k in ROLLUP_KEYS)}, -1);
                END IF;
                IF TG_OP <> 'DELETE' THEN
                    PERFORM {p}clicks_rollup_add(
                        {", ".join(f"NEW.{k}" for k in ROLLUP_KEYS)}, 1);
                END IF;
                RETURN NULL;
            END $$""",
            f"DROP TRIGGER {p}clicks_rollup ON {p}clicks",
            f"""CREATE TRIGGER {p}clicks_rollup
                AFTER INSERT OR DELETE OR UPDATE OF {", ".join(ROLLUP_KEYS)} ON {p}clicks
                FOR EACH ROW EXECUTE FUNCTION {p}clicks_rollup()""",
            f"TRUNCATE {p}click_hours, {p}click_hour_urls, {p}click_day_messages,"
            f" {p}click_day_recipients",
            *_rollup_backfill(p),
            # Tag drill-downs read a time range of one tag, like message and link ones.
            f"DROP INDEX {p}clicks_tag",
            f"CREATE INDEX {p}clicks_tag_time ON {p}clicks (tag, time)",
        ),
    )


#: The columns the roll-ups are keyed or counted by: a change of any moves a click.
ROLLUP_KEYS = ("time", "queue_id", "url", "recipient", "classification", "reason", "tag")


def _rollup_add_function(p: str) -> str:
    """``clicks_rollup_add(<ROLLUP_KEYS>, s)``: count a click in (s = 1) or out (s = -1)
    of every roll-up; rows that reach zero go (an hour or key without clicks is not
    shown)."""
    return f"""CREATE FUNCTION {p}clicks_rollup_add(
        t timestamptz, q text, u text, r text, c text, why text, tg text, s int)
    RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        h timestamp := date_trunc('hour', t AT TIME ZONE 'UTC');
        d date := (t AT TIME ZONE 'UTC')::date;
        hu int := (c = 'human')::int * s;
        bo int := (c <> 'human')::int * s;
    BEGIN
        INSERT INTO {p}click_hours VALUES (h, c, coalesce(why, ''), s)
        ON CONFLICT (hour, classification, reason)
        DO UPDATE SET n = {p}click_hours.n + s;
        INSERT INTO {p}click_hour_urls VALUES (h, u, hu, bo)
        ON CONFLICT (hour, url) DO UPDATE SET
            human = {p}click_hour_urls.human + excluded.human,
            bot = {p}click_hour_urls.bot + excluded.bot;
        INSERT INTO {p}click_day_messages VALUES (d, q, hu, bo)
        ON CONFLICT (day, queue_id) DO UPDATE SET
            human = {p}click_day_messages.human + excluded.human,
            bot = {p}click_day_messages.bot + excluded.bot;
        IF c = 'human' AND r IS NOT NULL THEN
            INSERT INTO {p}click_day_recipients VALUES (d, r, s)
            ON CONFLICT (day, recipient) DO UPDATE SET n = {p}click_day_recipients.n + s;
        END IF;
        IF tg IS NOT NULL THEN
            INSERT INTO {p}click_day_tags VALUES (d, tg, hu, bo)
            ON CONFLICT (day, tag) DO UPDATE SET
                human = {p}click_day_tags.human + excluded.human,
                bot = {p}click_day_tags.bot + excluded.bot;
        END IF;
        IF s < 0 THEN
            DELETE FROM {p}click_hours WHERE hour = h AND classification = c
                AND reason = coalesce(why, '') AND n <= 0;
            DELETE FROM {p}click_hour_urls WHERE hour = h AND url = u
                AND human <= 0 AND bot <= 0;
            DELETE FROM {p}click_day_messages WHERE day = d AND queue_id = q
                AND human <= 0 AND bot <= 0;
            DELETE FROM {p}click_day_recipients WHERE day = d AND recipient = r AND n <= 0;
            DELETE FROM {p}click_day_tags WHERE day = d AND tag = tg
                AND human <= 0 AND bot <= 0;
        END IF;
    END $$"""


def _rollup_backfill(p: str) -> tuple[str, ...]:
    """Every roll-up filled from the clicks table (the roll-up tables empty)."""
    hour, day = "date_trunc('hour', time AT TIME ZONE 'UTC')", "(time AT TIME ZONE 'UTC')::date"
    counts = (
        "count(*) FILTER (WHERE classification = 'human'),"
        " count(*) FILTER (WHERE classification <> 'human')"
    )
    return (
        f"INSERT INTO {p}click_hours SELECT {hour}, classification, coalesce(reason, ''),"
        f" count(*) FROM {p}clicks GROUP BY 1, 2, 3",
        f"INSERT INTO {p}click_hour_urls SELECT {hour}, url, {counts} FROM {p}clicks GROUP BY 1, 2",
        f"INSERT INTO {p}click_day_messages SELECT {day}, queue_id, {counts} FROM {p}clicks"
        " GROUP BY 1, 2",
        f"INSERT INTO {p}click_day_recipients SELECT {day}, recipient, count(*) FROM {p}clicks"
        " WHERE classification = 'human' AND recipient IS NOT NULL GROUP BY 1, 2",
        f"INSERT INTO {p}click_day_tags SELECT {day}, tag, {counts} FROM {p}clicks"
        " WHERE tag IS NOT NULL GROUP BY 1, 2",
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
        #: Writers hold it shared for their insert transaction; the webhook cursor takes
        #: it exclusively while it reads, so every seq it sees below the newest is
        #: committed (a sequence hands out numbers at insert, not at commit).
        self._seq_lock = zlib.crc32(f"{table_prefix}clicks.seq".encode())
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
                await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", self._seq_lock)
                await conn.executemany(self._insert, rows)

    async def write(self, clicks: Sequence[Click]) -> None:
        try:
            rows = [click_row(click, utc) for click in clicks]
        except (TypeError, ValueError, AttributeError) as exc:
            raise StoreError(f"{self.name}: malformed click: {exc}", retryable=False) from exc
        await self._guarded(self._write, rows)

    async def _stats(
        self, since: datetime | None, tag: str | None, settled_only: bool
    ) -> dict[str, Any]:
        pool = await self._ensure()
        since_value = utc(since) if since else None
        where, params = where_clause(since_value, tag, lambda n: f"${n}", settled_only)
        # The unsettled count ignores settled_only (it counts exactly what that leaves out).
        all_where, all_params = where_clause(since_value, tag, lambda n: f"${n}")
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
            tag_rows = await conn.fetch(
                TAG_STATS_SQL.format(table=self.table, where=where), *params
            )
            reasons = await conn.fetch(
                REASON_STATS_SQL.format(table=self.table, and_where=and_where(where)), *params
            )
            unsettled = await conn.fetchval(
                UNSETTLED_SQL.format(table=self.table, and_where=and_where(all_where)),
                *all_params,
            )
        links = [
            LinkRow(r[0], int(r[1]), r[2], int(r[3]), int(r[4]), int(r[5]), r[6], r[7])
            for r in link_rows
        ]
        messages = [
            MessageRow(r[0], int(r[1]), int(r[2]), int(r[3]), r[4], r[5]) for r in message_rows
        ]
        tags = [TagRow(r[0], int(r[1]), int(r[2])) for r in tag_rows if r[0] is not None]
        return build_stats(
            links,
            messages,
            tags,
            reasons={str(r[0]): int(r[1]) for r in reasons},
            unsettled=int(unsettled),
            settled_only=settled_only,
        )

    async def stats(
        self, since: datetime | None = None, tag: str | None = None, *, settled_only: bool = False
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self._guarded(self._stats, since, tag, settled_only)
        return result

    # -- export and retention ---------------------------------------------------------

    async def _export_page(self, flt: ClickFilter, after: int, limit: int) -> list[StoredClick]:
        pool = await self._ensure()
        conditions = ["seq > $1"]
        params: list[object] = [after]
        for column, op, value in (
            ("time", ">=", utc(flt.since) if flt.since else None),
            ("time", "<", utc(flt.until) if flt.until else None),
            ("tag", "=", flt.tag),
        ):
            if value is not None:
                params.append(value)
                conditions.append(f"{column} {op} ${len(params)}")
        params.append(limit)
        async with pool.acquire(timeout=self.connect_timeout) as conn:
            rows = await conn.fetch(
                f"SELECT seq, {', '.join(READ_COLUMNS)} FROM {self.table}"
                f" WHERE {' AND '.join(conditions)} ORDER BY seq LIMIT ${len(params)}",
                *params,
            )
        return [StoredClick.from_row(r[0], tuple(r)[1:], r[2], r[-1]) for r in rows]

    async def export_page(self, flt: ClickFilter, after: int, limit: int) -> list[StoredClick]:
        result: list[StoredClick] = await self._guarded(self._export_page, flt, after, limit)
        return result

    async def _delete_before(self, cutoff: datetime, limit: int) -> int:
        pool = await self._ensure()
        p = self.prefix
        async with pool.acquire(timeout=self.connect_timeout) as conn, conn.transaction():
            ids = await conn.fetch(
                f"DELETE FROM {p}clicks WHERE id IN (SELECT id FROM {p}clicks"
                " WHERE time < $1 LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id",
                utc(cutoff),
                limit,
            )
            if ids:
                await conn.execute(
                    f"DELETE FROM {p}webhook_events WHERE click_id = ANY($1::text[])",
                    [r[0] for r in ids],
                )
        return len(ids)

    async def delete_before(self, cutoff: datetime, limit: int) -> int:
        result: int = await self._guarded(self._delete_before, cutoff, limit)
        return result

    # -- webhook delivery state -------------------------------------------------------

    async def _wh_enqueue(
        self, endpoints: Sequence[tuple[str, bool]], cutoff: datetime, limit: int, now: float
    ) -> int:
        pool = await self._ensure()
        p = self.prefix
        taken = 0
        async with pool.acquire(timeout=self.connect_timeout) as conn, conn.transaction():
            # Waits for insert transactions in flight; new ones wait for this one.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", self._seq_lock)
            for endpoint, include_bots in endpoints:
                await conn.execute(
                    f"INSERT INTO {p}webhook_cursors (endpoint, last_seq) VALUES"
                    f" ($1, (SELECT COALESCE(MAX(seq), 0) FROM {p}clicks))"
                    " ON CONFLICT (endpoint) DO NOTHING",
                    endpoint,
                )
                last = await conn.fetchval(
                    f"SELECT last_seq FROM {p}webhook_cursors WHERE endpoint = $1 FOR UPDATE",
                    endpoint,
                )
                rows = await conn.fetch(
                    f"SELECT seq, id, classification FROM {p}clicks"
                    " WHERE seq > $1 AND time <= $2 ORDER BY seq LIMIT $3",
                    last,
                    utc(cutoff),
                    limit,
                )
                if not rows:
                    continue
                events = [
                    (endpoint, r[1], r[0], now) for r in rows if include_bots or r[2] == "human"
                ]
                if events:
                    await conn.executemany(
                        f"INSERT INTO {p}webhook_events (endpoint, click_id, seq, state,"
                        " enqueued_at, next_attempt_at) VALUES ($1, $2, $3, 'pending', $4, $4)"
                        " ON CONFLICT (endpoint, click_id) DO NOTHING",
                        events,
                    )
                await conn.execute(
                    f"UPDATE {p}webhook_cursors SET last_seq = $1 WHERE endpoint = $2",
                    rows[-1][0],
                    endpoint,
                )
                taken += len(rows)
        return taken

    async def webhook_enqueue(
        self, endpoints: Sequence[tuple[str, bool]], cutoff: datetime, limit: int, now: float
    ) -> int:
        result: int = await self._guarded(self._wh_enqueue, list(endpoints), cutoff, limit, now)
        return result

    async def _wh_claim(
        self, endpoint: str, now: float, lease: float, limit: int
    ) -> list[WebhookEvent]:
        pool = await self._ensure()
        p = self.prefix
        cols = ", ".join("c." + col for col in READ_COLUMNS)
        async with pool.acquire(timeout=self.connect_timeout) as conn, conn.transaction():
            # SKIP LOCKED: nodes claiming at once take different events.
            rows = await conn.fetch(
                f"WITH due AS (SELECT endpoint, click_id FROM {p}webhook_events"
                " WHERE endpoint = $1 AND state = 'pending' AND next_attempt_at <= $2"
                " ORDER BY seq LIMIT $4 FOR UPDATE SKIP LOCKED),"
                f" claimed AS (UPDATE {p}webhook_events e SET attempts = e.attempts + 1,"
                " next_attempt_at = $2 + $3 FROM due"
                " WHERE e.endpoint = due.endpoint AND e.click_id = due.click_id"
                " RETURNING e.click_id, e.attempts, e.enqueued_at, e.seq)"
                f" SELECT claimed.attempts, claimed.enqueued_at, c.seq, {cols}"
                f" FROM claimed JOIN {p}clicks c ON c.id = claimed.click_id"
                " ORDER BY claimed.seq",
                endpoint,
                now,
                lease,
                limit,
            )
        return [
            WebhookEvent(
                endpoint,
                int(r[0]),
                float(r[1]),
                StoredClick.from_row(r[2], tuple(r)[3:], r[4], r[-1]),
            )
            for r in rows
        ]

    async def webhook_claim(
        self, endpoint: str, now: float, lease: float, limit: int
    ) -> list[WebhookEvent]:
        result: list[WebhookEvent] = await self._guarded(
            self._wh_claim, endpoint, now, lease, limit
        )
        return result

    async def _wh_finish(
        self, endpoint: str, click_id: str, outcome: str, next_at: float, error: str | None
    ) -> None:
        pool = await self._ensure()
        p = self.prefix
        async with pool.acquire(timeout=self.connect_timeout) as conn, conn.transaction():
            if outcome == "delivered":
                await conn.execute(
                    f"DELETE FROM {p}webhook_events WHERE endpoint = $1 AND click_id = $2",
                    endpoint,
                    click_id,
                )
                return
            await conn.execute(
                f"UPDATE {p}webhook_events SET state = $1, next_attempt_at = $2,"
                " last_error = $3 WHERE endpoint = $4 AND click_id = $5",
                "failed" if outcome == "failed" else "pending",
                next_at,
                error,
                endpoint,
                click_id,
            )
            await conn.execute(
                f"UPDATE {p}webhook_cursors SET last_error = $1 WHERE endpoint = $2",
                error,
                endpoint,
            )

    async def webhook_finish(
        self, endpoint: str, click_id: str, outcome: str, next_at: float, error: str | None
    ) -> None:
        await self._guarded(self._wh_finish, endpoint, click_id, outcome, next_at, error)

    async def _wh_replay(self, endpoint: str, since: datetime, now: float) -> int:
        pool = await self._ensure()
        p = self.prefix
        async with pool.acquire(timeout=self.connect_timeout) as conn:
            status = await conn.execute(
                f"INSERT INTO {p}webhook_events (endpoint, click_id, seq, state, enqueued_at,"
                f" next_attempt_at) SELECT $1, id, seq, 'pending', $2, $2 FROM {p}clicks"
                " WHERE time >= $3 AND seq <= COALESCE("
                f"   (SELECT last_seq FROM {p}webhook_cursors WHERE endpoint = $1), 0)"
                " ON CONFLICT (endpoint, click_id) DO UPDATE SET state = 'pending',"
                " attempts = 0, enqueued_at = excluded.enqueued_at,"
                " next_attempt_at = excluded.next_attempt_at, last_error = NULL",
                endpoint,
                now,
                utc(since),
            )
        return int(str(status).rsplit(" ", 1)[-1])

    async def webhook_replay(self, endpoint: str, since: datetime, now: float) -> int:
        result: int = await self._guarded(self._wh_replay, endpoint, since, now)
        return result

    async def _wh_status(self, endpoints: Sequence[str]) -> list[EndpointStatus]:
        pool = await self._ensure()
        p = self.prefix
        out: list[EndpointStatus] = []
        async with pool.acquire(timeout=self.connect_timeout) as conn:
            for endpoint in endpoints:
                counts = await conn.fetchrow(
                    "SELECT COUNT(*) FILTER (WHERE state = 'pending'),"
                    " COUNT(*) FILTER (WHERE state = 'failed'),"
                    " MIN(enqueued_at) FILTER (WHERE state = 'pending')"
                    f" FROM {p}webhook_events WHERE endpoint = $1",
                    endpoint,
                )
                cursor = await conn.fetchrow(
                    f"SELECT last_seq, last_error FROM {p}webhook_cursors WHERE endpoint = $1",
                    endpoint,
                )
                out.append(
                    EndpointStatus(
                        endpoint,
                        int(counts[0]),
                        int(counts[1]),
                        float(counts[2]) if counts[2] is not None else None,
                        cursor[1] if cursor else None,
                        int(cursor[0]) if cursor else None,
                    )
                )
        return out

    async def webhook_status(self, endpoints: Sequence[str]) -> list[EndpointStatus]:
        result: list[EndpointStatus] = await self._guarded(self._wh_status, list(endpoints))
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
            "top_tags": "SELECT tag, sum(h) AS hs, sum(b) FROM ("
            f" SELECT tag, human AS h, bot AS b FROM {p}click_day_tags"
            " WHERE day >= $1 AND day < $2"
            f" UNION ALL SELECT tag, {human}, 1 - {human} FROM {self.table}"
            " WHERE time >= $3 AND time < $4 AND tag IS NOT NULL"
            f" UNION ALL SELECT tag, {human}, 1 - {human} FROM {self.table}"
            " WHERE time >= $5 AND time < $6 AND tag IS NOT NULL"
            ") s GROUP BY tag ORDER BY hs DESC, tag LIMIT $7",
        }

    def drill_sql(self, query: DashboardQuery) -> dict[str, str]:
        column = drill_column(query)
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
            "top_tags": f"SELECT tag, {human} AS h, {bot} {where} AND tag IS NOT NULL"
            " GROUP BY tag ORDER BY h DESC, tag LIMIT $4",
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
                tags = await conn.fetch(sql["top_tags"], *days, *edges, TOP_N)
                recent: list[RecentClick] = []
            else:
                sql = self.drill_sql(query)
                params = (drill_key(query), utc(query.start), utc(query.end))
                rows = await conn.fetch(sql["hours"], *params)
                hours, reasons = fold_hours(
                    [(r[0].replace(tzinfo=UTC), r[1], r[2], int(r[3])) for r in rows]
                )
                unique = await conn.fetchval(sql["unique"], *params)
                links = await conn.fetch(sql["top_links"], *params, TOP_N)
                messages = await conn.fetch(sql["top_messages"], *params, TOP_N)
                tags = await conn.fetch(sql["top_tags"], *params, TOP_N)
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
            top_tags=[Ranked(r[0], int(r[1]), int(r[2])) for r in tags],
            recent=recent,
        )

    async def dashboard(self, query: DashboardQuery) -> DashboardData:
        result: DashboardData = await self._guarded(self._dashboard, query)
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
                p = self.prefix
                await conn.execute(
                    f"DROP TABLE IF EXISTS {p}clicks, {p}schema_version, {p}click_hours,"
                    f" {p}click_hour_urls, {p}click_day_messages, {p}click_day_recipients,"
                    f" {p}click_day_tags, {p}webhook_cursors, {p}webhook_events"
                )
                await conn.execute(
                    f"DROP FUNCTION IF EXISTS {p}clicks_rollup(), {p}clicks_rollup_add"
                )
            self._migrated = False

        await self._guarded(drop)
