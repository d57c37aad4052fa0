"""The PostgreSQL store's schema: its migrations, in order, and the roll-up trigger.

Tables are ``<p>clicks``, ``<p>schema_version`` and the roll-ups (``p`` is the store's
table prefix); ``<p>schema_version.version`` is how many migrations have run.
"""

from __future__ import annotations

import zlib

import asyncpg

from redirector.store.base import steps_to_run
from redirector.store.pg.rollups import ROLLUP_KEYS, statement_trigger_steps


def migrations(p: str) -> tuple[tuple[str, ...], ...]:
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
        # One trigger per statement that takes roll-up rows in one global order, so
        # nodes writing at once cannot deadlock (see redirector.store.pg.rollups).
        statement_trigger_steps(p),
    )


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


async def migrate(conn: asyncpg.Connection, p: str, name: str) -> None:
    """Bring the schema to the newest step (``name`` is the store's, for errors)."""
    steps = migrations(p)
    async with conn.transaction():
        # Nodes starting together: one migrates, the others wait and find it done.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", zlib.crc32(p.encode()))
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {p}schema_version (version integer NOT NULL)"
        )
        version = await conn.fetchval(f"SELECT version FROM {p}schema_version")
        if version is None:
            await conn.execute(f"INSERT INTO {p}schema_version (version) VALUES (0)")
            version = 0
        for statements in steps[steps_to_run(version, len(steps), name)]:
            for statement in statements:
                await conn.execute(statement)
        await conn.execute(f"UPDATE {p}schema_version SET version = $1", len(steps))


async def drop(conn: asyncpg.Connection, p: str) -> None:
    """Remove every table and function of the schema."""
    await conn.execute(
        f"DROP TABLE IF EXISTS {p}clicks, {p}schema_version, {p}click_hours,"
        f" {p}click_hour_urls, {p}click_day_messages, {p}click_day_recipients,"
        f" {p}click_day_tags, {p}webhook_cursors, {p}webhook_events"
    )
    await conn.execute(
        f"DROP FUNCTION IF EXISTS {p}clicks_rollup(), {p}clicks_rollup_add, {p}clicks_rollup_apply"
    )
