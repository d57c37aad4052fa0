"""The SQLite store's schema: its migrations, in order, and the roll-up triggers.

``schema_version.version`` is how many migrations have run; :func:`migrate` runs the
missing ones in one write transaction.
"""

from __future__ import annotations

import sqlite3

from redirector.store.base import steps_to_run

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


def migrate(conn: sqlite3.Connection, name: str) -> None:
    """Bring the file's schema to the newest step (``name`` is the store's, for errors)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = int(row[0]) if row else 0
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        for statements in MIGRATIONS[steps_to_run(version, len(MIGRATIONS), name)]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
