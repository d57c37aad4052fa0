"""The PostgreSQL roll-up trigger, per statement and in one global lock order.

Several nodes write one database: recorders insert batches, settlers relabel, retention
deletes, and each of those changes roll-up rows. A trigger per click row took a click's
rows table by table (hour, link, message, recipient, tag) and then the next click's, so
one batch held a link row while waiting for an hour row another batch held while waiting
for that link row: a deadlock, whatever order the clicks were sorted in, as every click
takes rows in five tables by turns.

Instead one trigger per statement sums the statement's changes per roll-up row (from the
transition tables: +1 for a new row, -1 for an old one) and applies them table by table,
in the same table order every time and in key order within a table (``ORDER BY`` under
the ``INSERT``: rows are upserted, so locked, in the order the select yields them). So
every transaction takes roll-up rows in one global order — clicks first (inserts by id,
settle locks its clicks by id beforehand, retention skips locked ones), then hours,
links, messages, recipients, tags, each ascending — and waits can form no cycle. Rows a
statement leaves unchanged (net zero, e.g. an UPDATE of ``settled``) are not touched at
all. Rows that reach zero go, as before; they are rows the statement has just locked.

A statement trigger with transition tables may have one event only, hence three triggers
on one function.

A deadlock or serialisation failure that still happens is not retried here: the store's
own transactions cannot form a cycle any more and run at READ COMMITTED (the one
REPEATABLE READ transaction only reads), so one comes from a writer outside the store,
which may well still hold its locks on an immediate retry; the recorder and the settler
retry with back-off and say so in a WARNING, which is the trace such a writer should
leave. SQLite needs none of this: it has one writer at a time.
"""

from __future__ import annotations

#: The columns the roll-ups are keyed or counted by: a change of any moves a click.
ROLLUP_KEYS = ("time", "queue_id", "url", "recipient", "classification", "reason", "tag")


def _delta(where: str = "") -> str:
    """The statement's changes, one row per click and sign, with the roll-up keys."""
    return f"""(SELECT date_trunc('hour', x.t AT TIME ZONE 'UTC') AS h,
            (x.t AT TIME ZONE 'UTC')::date AS d, x.q, x.u, x.r, x.c,
            coalesce(x.why, '') AS why, x.tg, x.s,
            (x.c = 'human')::int * x.s AS hu, (x.c <> 'human')::int * x.s AS bo
        FROM unnest(a_t, a_q, a_u, a_r, a_c, a_why, a_tg, a_s)
            AS x(t, q, u, r, c, why, tg, s) {where}) k"""


def _counted(
    p: str,
    table: str,
    keys: tuple[tuple[str, str], ...],
    counts: tuple[tuple[str, str], ...],
    where: str = "",
) -> str:
    """Upsert the summed changes of ``table`` in key order, then drop the rows that went
    to zero. ``keys`` and ``counts`` pair a column with its expression over the delta."""
    columns = ", ".join(c for c, _ in keys + counts)
    key_exprs = ", ".join(e for _, e in keys)
    sums = ", ".join(f"sum({e})" for _, e in counts)
    changed = " OR ".join(f"sum({e}) <> 0" for _, e in counts)
    lowered = " OR ".join(f"sum({e}) < 0" for _, e in counts)
    updates = ", ".join(f"{c} = o.{c} + excluded.{c}" for c, _ in counts)
    match = " AND ".join(f"o.{c} = z.k{n}" for n, (c, _) in enumerate(keys))
    gone = " AND ".join(f"o.{c} <= 0" for c, _ in counts)
    aliased = ", ".join(f"{e} AS k{n}" for n, (_, e) in enumerate(keys))
    return f"""
        INSERT INTO {p}{table} AS o ({columns})
        SELECT {key_exprs}, {sums} FROM {_delta(where)}
        GROUP BY {key_exprs} HAVING {changed} ORDER BY {key_exprs}
        ON CONFLICT ({", ".join(c for c, _ in keys)}) DO UPDATE SET {updates};
        DELETE FROM {p}{table} AS o USING (SELECT {aliased} FROM {_delta(where)}
            GROUP BY {key_exprs} HAVING {lowered}) z
        WHERE {match} AND {gone};"""


_HUMAN_RECIPIENT = "WHERE x.c = 'human' AND x.r IS NOT NULL"


def apply_function(p: str) -> str:
    """``clicks_rollup_apply(<ROLLUP_KEYS as arrays>, signs)``: a statement's changes
    into every roll-up, in the global order (see the module docstring)."""
    hu_bo = (("human", "k.hu"), ("bot", "k.bo"))
    n = (("n", "k.s"),)
    hour, day = ("hour", "k.h"), ("day", "k.d")
    tables = (  # the global order
        _counted(p, "click_hours", (hour, ("classification", "k.c"), ("reason", "k.why")), n),
        _counted(p, "click_hour_urls", (hour, ("url", "k.u")), hu_bo),
        _counted(p, "click_day_messages", (day, ("queue_id", "k.q")), hu_bo),
        _counted(p, "click_day_recipients", (day, ("recipient", "k.r")), n, _HUMAN_RECIPIENT),
        _counted(p, "click_day_tags", (day, ("tag", "k.tg")), hu_bo, "WHERE x.tg IS NOT NULL"),
    )
    return f"""CREATE FUNCTION {p}clicks_rollup_apply(a_t timestamptz[], a_q text[],
        a_u text[], a_r text[], a_c text[], a_why text[], a_tg text[], a_s int[])
    RETURNS void LANGUAGE sql AS $$ {"".join(tables)}
    $$"""


def _collect(p: str, source: str) -> str:
    arrays = ", ".join(f"array_agg(k.{key})" for key in ROLLUP_KEYS)
    return f"PERFORM {p}clicks_rollup_apply({arrays}, array_agg(k.s)) FROM ({source}) k;"


def trigger_function(p: str) -> str:
    """The statement trigger: the transition tables as signed changes."""
    keys = ", ".join(ROLLUP_KEYS)
    added = f"SELECT {keys}, 1 AS s FROM new_rows"
    removed = f"SELECT {keys}, -1 AS s FROM old_rows"
    return f"""CREATE OR REPLACE FUNCTION {p}clicks_rollup() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            {_collect(p, added)}
        ELSIF TG_OP = 'DELETE' THEN
            {_collect(p, removed)}
        ELSE
            {_collect(p, f"{removed} UNION ALL {added}")}
        END IF;
        RETURN NULL;
    END $$"""


def statement_trigger_steps(p: str) -> tuple[str, ...]:
    """The migration from the row trigger to the statement triggers (counts unchanged)."""
    on = f"ON {p}clicks"
    run = f"FOR EACH STATEMENT EXECUTE FUNCTION {p}clicks_rollup()"
    return (
        f"DROP TRIGGER {p}clicks_rollup {on}",
        f"DROP FUNCTION {p}clicks_rollup_add",
        apply_function(p),
        trigger_function(p),
        f"CREATE TRIGGER {p}clicks_rollup_insert AFTER INSERT {on}"
        f" REFERENCING NEW TABLE AS new_rows {run}",
        f"CREATE TRIGGER {p}clicks_rollup_update AFTER UPDATE {on}"
        f" REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows {run}",
        f"CREATE TRIGGER {p}clicks_rollup_delete AFTER DELETE {on}"
        f" REFERENCING OLD TABLE AS old_rows {run}",
    )
