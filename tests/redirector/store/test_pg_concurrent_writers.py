"""Several nodes on one PostgreSQL database: recorders' insert batches, settlers'
relabels and retention's deletes run at once, each touching the same roll-up rows
(hours, links, messages, recipients, tags) in its own order. None of them may deadlock,
and the overview stays equal to a count of the clicks table."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from redirector.clicks import Click
from redirector.store.base import StoreError
from redirector.store.dashboard import DashboardQuery
from redirector.store.pg import PgStore
from tests.redirector.store.test_dashboard_rollups import (
    EVERYTHING,
    assert_pages_match_the_clicks_table,
    table_clicks,
)
from tests.redirector.store.test_store import unique_prefix

T0 = datetime(2026, 11, 2, 23, 0, tzinfo=UTC)  # two hours over two days
QUERIES = [
    DashboardQuery(T0, T0 + timedelta(hours=1)),
    DashboardQuery(T0, T0 + timedelta(hours=2), queue_id="Q1"),
    DashboardQuery(T0, T0 + timedelta(hours=2), url="https://example.com/2"),
    DashboardQuery(T0, T0 + timedelta(hours=2), tag="news"),
]


def crowded_click(rnd: random.Random, *, human: bool | None = None) -> Click:
    """A click from a deliberately small key space, so that batches share roll-up rows."""
    if human is None:
        human = rnd.random() < 0.6
    return Click(
        time=T0 + timedelta(seconds=rnd.randrange(2 * 3600)),
        queue_id=f"Q{rnd.randrange(4)}",
        link_index=rnd.randrange(3),
        url=f"https://example.com/{rnd.randrange(4)}",
        recipient=rnd.choice([None, "a@x.org", "b@x.org"]),
        client_ip="192.0.2.0",
        user_agent="Mozilla/5.0",
        method="GET",
        classification="human" if human else "bot",
        reason=None if human else rnd.choice(["head", "burst"]),
        tag=rnd.choice([None, "spring", "news"]),
    )


class Outcomes:
    """What the concurrent transactions ended with, deadlocks counted apart."""

    def __init__(self) -> None:
        self.done = 0
        self.deadlocks = 0
        self.other: list[StoreError] = []

    async def run(self, call: Awaitable[object]) -> None:
        try:
            await call
        except StoreError as exc:
            if isinstance(exc.__cause__, asyncpg.exceptions.DeadlockDetectedError):
                self.deadlocks += 1
            else:
                self.other.append(exc)
        else:
            self.done += 1


async def test_nodes_writing_and_settling_at_once_never_deadlock(pg_dsn: str) -> None:
    rnd = random.Random(20261104)
    prefix = unique_prefix()
    nodes = [PgStore(pg_dsn, table_prefix=prefix, max_connections=4) for _ in range(3)]
    for node in nodes:
        await node.open()
    try:
        # Unsettled human clicks the settlers will relabel, written before the race.
        pending = [crowded_click(rnd, human=True) for _ in range(240)]
        await nodes[0].write(pending)
        outcomes = Outcomes()
        # Like each node's recorder and settler: one transaction after the other each.
        writes: list[list[list[Click]]] = [[] for _ in nodes]
        settles: list[list[tuple[list[tuple[str, str, str]], list[str]]]] = [[] for _ in nodes]
        for n in range(90):
            batch = [crowded_click(rnd) for _ in range(rnd.randrange(10, 40))]
            writes[n % len(nodes)].append(batch)
        for n in range(30):
            # Overlapping sets in any order: two settlers may take up the same click.
            chosen = rnd.sample(pending, 30)
            relabels = [(c.id, rnd.choice(["head", "burst"]), "{}") for c in chosen[:20]]
            settles[n % len(nodes)].append((relabels, [c.id for c in chosen]))

        async def recorder(node: PgStore, batches: list[list[Click]]) -> None:
            for batch in batches:
                await outcomes.run(node.write(batch))

        async def settler(node: PgStore, jobs: list[tuple[list[Any], list[str]]]) -> None:
            for relabels, settled in jobs:
                await outcomes.run(node.settle(relabels, settled))

        async def retention(node: PgStore) -> None:
            for _ in range(4):
                await outcomes.run(node.delete_before(T0 + timedelta(minutes=20), 15))

        await asyncio.gather(
            *(recorder(node, writes[n]) for n, node in enumerate(nodes)),
            *(settler(node, settles[n]) for n, node in enumerate(nodes)),
            *(retention(node) for node in nodes),
        )
        calls = sum(map(len, writes)) + sum(map(len, settles)) + 4 * len(nodes)
        failures = f"{outcomes.deadlocks} deadlocks, {outcomes.other} in {calls} transactions"
        assert (outcomes.deadlocks, outcomes.other) == (0, []), failures
        assert outcomes.done == calls
        assert len(await table_clicks(nodes[0])) > len(pending)
        await assert_pages_match_the_clicks_table(nodes[1], [EVERYTHING, *QUERIES])
    finally:
        await nodes[0].drop_tables()
        for node in nodes:
            await node.close()
