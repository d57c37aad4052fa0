"""What do the PostgreSQL store's roll-ups cost a writer, alone and with other nodes?

Writes ``--clicks`` clicks through ``PgStore.write`` in recorder-sized batches
(``--batch``): first one node, then ``--nodes`` nodes at once on the same tables, each
also running a settler that relabels and settles clicks it did not write. A batch or a
settle that fails with a deadlock (or any other retryable error: a chain of lock waits
can outlast the command timeout) is retried at once, the recorder would back off, and
counted. The baseline, measured in the same run on the same rows, is COPY into a table
of the same columns without any trigger: the figures are clicks/s and the ratio of the
baseline's time to the store's.

    .venv/bin/python bench/pg_writers.py --pg postgresql://postgres@127.0.0.1/db
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redirector.clicks import CLICK_COLUMNS, Click, click_row, utc
from redirector.store.base import StoreError
from redirector.store.pg import PgStore

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=6)


def make_clicks(rnd: random.Random, count: int) -> list[Click]:
    """Six hours of a campaign: 40 links, 2000 messages, 20 % bots, a few tags."""
    out = []
    for _ in range(count):
        m = rnd.randrange(2000)
        bot = rnd.random() < 0.2
        out.append(
            Click(
                T0 + timedelta(seconds=rnd.randrange(6 * 3600)),
                f"Q{m:07d}",
                rnd.randrange(4),
                f"https://shop.example.com/item/{rnd.randrange(40)}",
                f"reader{m}@example.org",
                "198.51.100.0",
                "Mozilla/5.0",
                "GET",
                "bot" if bot else "human",
                rnd.choice(["head", "burst", "scanner-agent"]) if bot else None,
                tag=f"campaign-{m % 6}",
            )
        )
    return out


class Counts:
    def __init__(self) -> None:
        self.deadlocks = 0
        self.other = 0  # other retryable failures (lock waits past the command timeout)


async def retried(counts: Counts, call: Callable[..., Awaitable[object]], *args: object) -> None:
    while True:
        try:
            await call(*args)
            return
        except StoreError as exc:
            if not exc.retryable:
                raise
            if isinstance(exc.__cause__, asyncpg.exceptions.DeadlockDetectedError):
                counts.deadlocks += 1
            else:
                counts.other += 1


async def baseline(dsn: str, prefix: str, clicks: list[Click]) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"CREATE TABLE {prefix}plain (LIKE {prefix}clicks INCLUDING ALL)")
        rows = [click_row(c, utc) for c in clicks]
        started = time.perf_counter()
        await conn.copy_records_to_table(f"{prefix}plain", records=rows, columns=CLICK_COLUMNS)
        seconds = time.perf_counter() - started
        await conn.execute(f"DROP TABLE {prefix}plain")
        return seconds
    finally:
        await conn.close()


async def one_node(store: PgStore, clicks: list[Click], batch: int) -> float:
    started = time.perf_counter()
    for at in range(0, len(clicks), batch):
        await store.write(clicks[at : at + batch])
    return time.perf_counter() - started


async def many_nodes(
    nodes: list[PgStore], clicks: list[Click], batch: int, settled: list[Click], counts: Counts
) -> float:
    rnd = random.Random(2)
    shares = [clicks[n :: len(nodes)] for n in range(len(nodes))]

    async def recorder(node: PgStore, mine: list[Click]) -> None:
        for at in range(0, len(mine), batch):
            await retried(counts, node.write, mine[at : at + batch])

    async def settler(node: PgStore) -> None:
        for _ in range(len(clicks) // batch // len(nodes)):
            chosen = rnd.sample(settled, 50)
            relabels = [(c.id, "burst", "{}") for c in chosen[:10]]
            await retried(counts, node.settle, relabels, [c.id for c in chosen])

    started = time.perf_counter()
    await asyncio.gather(
        *(recorder(node, mine) for node, mine in zip(nodes, shares, strict=True)),
        *(settler(node) for node in nodes),
    )
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> None:
    rnd = random.Random(1)
    prefix = f"bench{uuid.uuid4().hex[:8]}_"
    nodes = [PgStore(args.pg, table_prefix=prefix) for _ in range(args.nodes)]
    for node in nodes:
        await node.open()
    try:
        alone = make_clicks(rnd, args.clicks)
        base = await baseline(args.pg, prefix, alone)
        seconds = await one_node(nodes[0], alone, args.batch)
        print(
            f"1 node: {len(alone) / seconds:,.0f} clicks/s in batches of {args.batch};"
            f" COPY without roll-ups {len(alone) / base:,.0f} clicks/s;"
            f" baseline / store = {base / seconds:.3f}"
        )
        unsettled = [c for c in alone if c.classification == "human"][:2000]
        together = make_clicks(rnd, args.clicks)
        base = await baseline(args.pg, prefix, together)
        counts = Counts()
        seconds = await many_nodes(nodes, together, args.batch, unsettled, counts)
        print(
            f"{args.nodes} nodes at once (recorder + settler each): {len(together) / seconds:,.0f}"
            f" clicks/s; baseline / store = {base / seconds:.3f};"
            f" retried: {counts.deadlocks} deadlocks, {counts.other} other failures"
        )
    finally:
        await nodes[0].drop_tables()
        for node in nodes:
            await node.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", required=True, help="PostgreSQL DSN (tables removed after)")
    parser.add_argument("--clicks", type=int, default=60_000)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=3)
    asyncio.run(run(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
