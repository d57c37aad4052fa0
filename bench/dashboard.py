"""How fast does the click dashboard render on a big store? (30-day overview, 1M clicks)

Fills a click store with ``--clicks`` clicks spread over 30 days (through the store's own
``write``, so the roll-up trigger runs as it does in production), then times
``GET /?window=30d`` on a running redirector's admin listener (HTTP, template and all),
and a message drill-down. The baseline, measured in the same run on the same data, is
what the overview would cost without roll-ups: the same numbers aggregated from the
clicks table. The top tags get their own figure: the overview's query (daily tags
roll-up plus the partial days from the clicks table) against the same ranking from the
clicks table; and a 30-day tag drill-down (clicks table, ``(tag, time)`` index) is
timed through the store. Prints the query plans (EXPLAIN) the overview relies on.

Data shape: ``--messages`` queue ids (one per recipient, as a proxy sees a campaign),
clicks falling off over the days after each send, 20 % bots with mixed reasons, 40 URLs,
one of 60 tags on 90 % of the messages.

    .venv/bin/python bench/dashboard.py [--clicks 1000000] [--runs 5] [--pg DSN]

``--screenshot docs/dashboard.png`` instead saves the README's picture: the 30-day
overview of a small store of this shape, taken with headless Chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redirector.clicks import Click
from redirector.config import RedirectorConfig
from redirector.http.dashboard import parse_view
from redirector.service import RedirectorService
from redirector.store import open_store
from redirector.store.dashboard import DashboardQuery, overview_params
from redirector.store.pg import PgStore
from redirector.store.pg.dashboard import FORMS as PG_FORMS
from redirector.store.pg.dashboard import overview_sql
from redirector.store.sqlite import SqliteStore
from redirector.store.sqlite.access import time_text
from redirector.store.sqlite.dashboard import FORMS as SQLITE_FORMS
from redirector.store.sqlite.dashboard import OVERVIEW_SQL, drill_sql
from redirector.tokens import new_key_line, parse_keys

REASONS = ["head", "scanner-agent", "too-soon", "burst", "no-user-agent"]
AGENT = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"

#: The overview's numbers straight from the clicks table: what roll-ups save.
BASELINE_SQL = [
    "SELECT substr(time, 1, 13), classification, reason, count(*) FROM clicks"
    " WHERE time >= ? GROUP BY 1, 2, 3",
    "SELECT url, sum(classification = 'human') AS h FROM clicks WHERE time >= ?"
    " GROUP BY url ORDER BY h DESC LIMIT 10",
    "SELECT queue_id, sum(classification = 'human') AS h FROM clicks WHERE time >= ?"
    " GROUP BY queue_id ORDER BY h DESC LIMIT 10",
    "SELECT count(DISTINCT recipient) FROM clicks WHERE time >= ? AND classification = 'human'",
    TOP_TAGS_BASELINE_SQL := "SELECT tag, sum(classification = 'human') AS h,"
    " sum(classification <> 'human') FROM clicks WHERE time >= ? AND tag IS NOT NULL"
    " GROUP BY tag ORDER BY h DESC, tag LIMIT 10",
]
#: The tag the tag drill-down is timed on (one of the biggest).
DRILL_TAG = "campaign-07"


def make_clicks(count: int, messages: int, now: datetime, seed: int = 1) -> list[Click]:
    rnd = random.Random(seed)
    start = now - timedelta(days=30)
    sends = [start + timedelta(seconds=rnd.randrange(29 * 86400)) for _ in range(messages)]
    tags = [f"campaign-{rnd.randrange(60):02d}" if rnd.random() < 0.9 else None for _ in sends]
    out = []
    for _ in range(count):
        m = rnd.randrange(messages)
        when = min(sends[m] + timedelta(seconds=rnd.expovariate(1 / 86400)), now)
        bot = rnd.random() < 0.2
        out.append(
            Click(
                when,
                f"Q{m:07d}",
                rnd.randrange(4),
                f"https://shop.example.com/item/{rnd.randrange(40)}?utm_source=mail",
                f"reader{m}@example.org",
                "198.51.100.0",
                AGENT,
                "GET",
                "bot" if bot else "human",
                rnd.choice(REASONS) if bot else None,
                tag=tags[m],
            )
        )
    out.sort(key=lambda c: c.time)  # the order they would arrive in
    return out


async def fill(url: str, clicks: list[Click]) -> float:
    store = open_store(url)
    await store.open()
    started = time.perf_counter()
    for at in range(0, len(clicks), 5000):
        await store.write(clicks[at : at + 5000])
    await store.close()
    return time.perf_counter() - started


async def timed_gets(url: str, runs: int) -> list[float]:
    times = []
    async with aiohttp.ClientSession() as session:
        for _ in range(runs + 1):  # the first one warms the caches: not counted
            started = time.perf_counter()
            async with session.get(url) as resp:
                assert resp.status == 200, (resp.status, await resp.text())
                await resp.read()
            times.append(time.perf_counter() - started)
    return times[1:]


def overview_30d(now: datetime) -> DashboardQuery:
    view = parse_view({"window": "30d"}, now)
    return DashboardQuery(view.start, view.end)


def sqlite_plans(path: Path, now: datetime) -> None:
    view = parse_view({"window": "30d"}, now)
    params = overview_params(overview_30d(now), SQLITE_FORMS)
    with sqlite3.connect(path) as conn:
        for name, sql in OVERVIEW_SQL.items():
            plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}", params[name]).fetchall()
            print(f"  plan {name}: " + "; ".join(str(row[3]) for row in plan))
        query = DashboardQuery(view.start, view.end, queue_id="Q0000001")
        plan = conn.execute(
            f"EXPLAIN QUERY PLAN {drill_sql(query)['recent']}", ("Q0000001", "", "", 100)
        ).fetchall()
        print("  plan drill-down recent: " + "; ".join(str(row[3]) for row in plan))
        query = DashboardQuery(view.start, view.end, tag=DRILL_TAG)
        plan = conn.execute(
            f"EXPLAIN QUERY PLAN {drill_sql(query)['hours']}", (DRILL_TAG, "", "")
        ).fetchall()
        print("  plan tag drill-down hours: " + "; ".join(str(row[3]) for row in plan))
        rows = {
            t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
            for t in (
                "click_hours",
                "click_hour_urls",
                "click_day_messages",
                "click_day_recipients",
                "click_day_tags",
            )
        }
        print(f"  roll-up rows: {rows}")


def median_of(runs: int, fn: Callable[[], object]) -> float:
    """Median seconds of ``runs`` calls of ``fn`` after one warm-up call."""
    times = []
    for _ in range(runs + 1):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def sqlite_top_tags(path: Path, now: datetime, runs: int) -> tuple[float, float]:
    """Median seconds of the overview's top-tags query and of its clicks-table baseline."""
    query = overview_30d(now)
    by_day = overview_params(query, SQLITE_FORMS)["top_tags"]
    since = time_text(query.start)
    with sqlite3.connect(path) as conn:
        rollup = conn.execute(OVERVIEW_SQL["top_tags"], by_day).fetchall()
        direct = conn.execute(TOP_TAGS_BASELINE_SQL, (since,)).fetchall()
        assert [r[0] for r in rollup] == [r[0] for r in direct], (rollup, direct)
        fast = median_of(runs, lambda: conn.execute(OVERVIEW_SQL["top_tags"], by_day).fetchall())
        slow = median_of(runs, lambda: conn.execute(TOP_TAGS_BASELINE_SQL, (since,)).fetchall())
    conn.close()
    return fast, slow


async def store_tag_drill(url: str, now: datetime, runs: int) -> float:
    """Median seconds of a 30-day tag drill-down through the store."""
    view = parse_view({"window": "30d"}, now)
    query = DashboardQuery(view.start, view.end, tag=DRILL_TAG)
    store = open_store(url)
    await store.open()
    try:
        times = []
        for _ in range(runs + 1):
            started = time.perf_counter()
            data = await store.dashboard(query)
            times.append(time.perf_counter() - started)
        assert data.top_tags and data.top_tags[0].key == DRILL_TAG
    finally:
        await store.close()
    return statistics.median(times[1:])


def sqlite_baseline(path: Path, now: datetime, runs: int) -> list[float]:
    since = time_text(parse_view({"window": "30d"}, now).start)
    times = []
    with sqlite3.connect(path) as conn:
        for _ in range(runs + 1):
            started = time.perf_counter()
            for sql in BASELINE_SQL:
                conn.execute(sql, (since,)).fetchall()
            times.append(time.perf_counter() - started)
    return times[1:]


async def pg_plans(store_url: str, prefix: str, now: datetime, runs: int) -> None:
    import asyncpg

    store = PgStore(store_url.split("?")[0], table_prefix=prefix)
    conn = await asyncpg.connect(store.dsn)
    try:
        view = parse_view({"window": "30d"}, now)
        params = overview_params(overview_30d(now), PG_FORMS)
        for name, sql in overview_sql(store.prefix).items():
            rows = await conn.fetch(f"EXPLAIN {sql}", *params[name])
            scans = [r[0].strip().split("  (cost")[0] for r in rows if "Scan" in r[0]]
            print(f"  plan {name}: " + " | ".join(scans))
        # The top tags: the overview's query against the same ranking from the clicks table.
        sql = overview_sql(store.prefix)["top_tags"]
        direct_sql = (
            f"SELECT tag, count(*) FILTER (WHERE classification = 'human') AS h,"
            f" count(*) FILTER (WHERE classification <> 'human') FROM {store.table}"
            " WHERE time >= $1 AND tag IS NOT NULL GROUP BY tag ORDER BY h DESC, tag LIMIT 10"
        )
        tag_args = params["top_tags"]
        rollup = await conn.fetch(sql, *tag_args)
        direct = await conn.fetch(direct_sql, view.start)
        assert [r[0] for r in rollup] == [r[0] for r in direct], (rollup, direct)
        fast, slow = [], []
        for _ in range(runs + 1):
            started = time.perf_counter()
            await conn.fetch(sql, *tag_args)
            fast.append(time.perf_counter() - started)
            started = time.perf_counter()
            await conn.fetch(direct_sql, view.start)
            slow.append(time.perf_counter() - started)
        report_top_tags(statistics.median(fast[1:]), statistics.median(slow[1:]))
    finally:
        await conn.close()


def report_top_tags(fast: float, slow: float) -> None:
    print(
        f"  top tags (30 d): roll-up query median {fast * 1000:.1f} ms, from the clicks table"
        f" {slow * 1000:.1f} ms; roll-up / clicks table = {fast / slow:.3f}"
    )


async def run(args: argparse.Namespace) -> None:
    now = datetime.now(UTC)
    needed = args.pg or not args.sqlite_file
    clicks = make_clicks(args.clicks, args.messages, now) if needed else []
    stores: list[tuple[str, str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="crdash"))
    if args.sqlite_file:  # an existing store (its clicks written by this script before)
        tmp = args.sqlite_file.parent
        started = time.perf_counter()
        store = SqliteStore(args.sqlite_file)
        await store.open()  # runs any pending migration (roll-up backfill)
        await store.close()
        print(
            f"sqlite: existing {args.sqlite_file} opened in {time.perf_counter() - started:.1f} s"
        )
    stores.append(("sqlite", f"sqlite:{tmp / 'clicks.sqlite3'}"))
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    if args.pg:
        stores.append(("postgresql", f"{args.pg}?table_prefix={prefix}"))
    keyring = parse_keys(new_key_line())
    for kind, url in stores:
        if not (kind == "sqlite" and args.sqlite_file):
            seconds = await fill(url, clicks)
            print(f"{kind}: {len(clicks):,} clicks written in {seconds:.1f} s (roll-up trigger on)")
        config = RedirectorConfig(listen="127.0.0.1:0", admin_listen="127.0.0.1:0", store=url)
        service = RedirectorService(config, keyring)
        await service.start()
        try:
            base = f"http://127.0.0.1:{service.admin_port}"
            overview = await timed_gets(f"{base}/?window=30d", args.runs)
            drill = await timed_gets(f"{base}/message?queue_id=Q0000001&window=30d", args.runs)
        finally:
            await service.stop()
        page = statistics.median(overview)
        print(
            f"  GET /?window=30d: median {page * 1000:.0f} ms, max {max(overview) * 1000:.0f} ms"
            f" ({args.runs} runs)"
        )
        print(f"  GET /message (drill-down): median {statistics.median(drill) * 1000:.0f} ms")
        tag_drill = await store_tag_drill(url, now, args.runs)
        print(f"  tag drill-down ({DRILL_TAG}, 30 d, store only): median {tag_drill * 1000:.0f} ms")
        if kind == "sqlite":
            path = tmp / "clicks.sqlite3"
            base_times = sqlite_baseline(path, now, args.runs)
            baseline = statistics.median(base_times)
            print(
                f"  baseline (same numbers from the clicks table, queries only): median"
                f" {baseline * 1000:.0f} ms; whole page with roll-ups / baseline ="
                f" {page / baseline:.3f}"
            )
            report_top_tags(*sqlite_top_tags(path, now, args.runs))
            sqlite_plans(path, now)
        else:
            await pg_plans(url, prefix, now, args.runs)
            store = PgStore(args.pg, table_prefix=prefix)
            await store.open()
            await store.drop_tables()
            await store.close()


async def screenshot(path: Path) -> None:
    from tests.support.browser import chromium

    now = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="crshot"))
    url = f"sqlite:{tmp / 'clicks.sqlite3'}"
    await fill(url, make_clicks(40_000, 3_000, now))
    config = RedirectorConfig(listen="127.0.0.1:0", admin_listen="127.0.0.1:0", store=url)
    service = RedirectorService(config, parse_keys(new_key_line()))
    await service.start()
    try:
        page = f"http://127.0.0.1:{service.admin_port}/?window=30d"

        def shoot() -> None:
            with chromium(width=1200, height=1000) as driver:
                driver.get(page)
                driver.save_screenshot(str(path))

        await asyncio.to_thread(shoot)
    finally:
        await service.stop()
    print(f"saved {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--clicks", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pg", help="also PostgreSQL at this DSN (tables removed after)")
    parser.add_argument(
        "--sqlite-file",
        type=Path,
        help="time an existing clicks.sqlite3 from an earlier run (named clicks.sqlite3)",
    )
    parser.add_argument("--screenshot", type=Path, help="save the README picture here")
    args = parser.parse_args()
    asyncio.run(screenshot(args.screenshot) if args.screenshot else run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
