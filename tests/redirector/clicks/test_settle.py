"""The settler against real stores: relabels walks in the store, settles after the delay,
several nodes on one PostgreSQL database agree, and no click is ever lost or doubled."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redirector.clicks import Click
from redirector.clicks.settle import Settler
from redirector.store import ClickStore
from redirector.store.pg import PgStore
from redirector.store.sqlite import SqliteStore

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def click(
    n: int,
    seconds: float,
    link: int,
    *,
    client: str = "A",
    net: str = "N",
    recipient: str = "r@x",
    queue_id: str = "Q",
    classification: str = "human",
    reason: str | None = None,
    method: str = "GET",
) -> Click:
    return Click(
        time=T0 + timedelta(seconds=seconds),
        queue_id=queue_id,
        link_index=link,
        url=f"https://example.com/{link}",
        recipient=recipient,
        client_ip="192.0.2.0",
        user_agent="Mozilla/5.0",
        method=method,
        classification=classification,
        reason=reason,
        id=f"{n:032x}",
        client_key=client,
        net_key=net,
    )


def at(seconds: float) -> float:
    return (T0 + timedelta(seconds=seconds)).timestamp()


async def labels(store: ClickStore) -> dict[str, tuple[str, str | None, bool]]:
    queue_ids = ["Q", "P"]
    found = await store.message_clicks(queue_ids, T0 - timedelta(days=1), T0 + timedelta(days=1))
    return {c.id[-2:]: (c.classification, c.reason, c.settled) for c in found}


async def test_a_walk_served_as_human_is_relabelled_then_settled(click_store: ClickStore) -> None:
    await click_store.write(
        [
            click(1, 0.0, 0),  # served human: the burst had not shown yet
            click(2, 0.8, 1),
            click(3, 1.6, 2, classification="bot", reason="burst"),
            click(4, 0.5, 0, client="B", net="M", recipient="s@x"),  # a person, same second
        ]
    )
    now = [at(10)]
    settler = Settler(click_store, settle_delay=60, clock=lambda: now[0])
    assert await settler.run_once() == (2, 0)  # relabelled; not due to settle yet
    got = await labels(click_store)
    assert got["01"] == ("bot", "walk", False)
    assert got["02"] == ("bot", "walk", False)
    assert got["03"] == ("bot", "burst", False)  # a bot's reason stands
    assert got["04"] == ("human", None, False)
    doc = await click_store.stats()
    assert doc["totals"]["bot_reasons"] == {"burst": 1, "walk": 2}
    assert doc["totals"]["unsettled_clicks"] == 4
    assert (await click_store.stats(settled_only=True))["totals"]["human_clicks"] == 0

    evidence = await click_store.click(f"{1:032x}")
    assert evidence is not None and evidence.evidence is not None
    assert json.loads(evidence.evidence)["rule"] == "walk"

    now[0] = at(100)
    assert await settler.run_once() == (0, 4)
    assert all(settled for _, _, settled in (await labels(click_store)).values())
    settled_doc = await click_store.stats(settled_only=True)
    assert settled_doc["totals"]["unsettled_clicks"] == 0
    assert (settled_doc["totals"]["human_clicks"], settled_doc["totals"]["bot_clicks"]) == (1, 3)
    assert [c.id[-2:] for c in await click_store.settled_clicks(None, 10)] == [
        "01",
        "04",
        "02",
        "03",
    ]
    assert await settler.run_once() == (0, 0)


async def test_a_settled_label_never_changes(click_store: ClickStore) -> None:
    await click_store.write([click(1, 0.0, 0)])
    now = [at(100)]
    settler = Settler(click_store, settle_delay=60, clock=lambda: now[0])
    assert await settler.run_once() == (0, 1)
    # A late click (a node that was cut off) would make a walk of it: too late.
    await click_store.write([click(2, 1.0, 1)])
    assert await settler.run_once() == (1, 1)
    got = await labels(click_store)
    assert got["01"] == ("human", None, True)
    assert got["02"] == ("bot", "walk", True)


async def test_two_nodes_settling_one_store_agree(pg_dsn: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    nodes = [PgStore(pg_dsn, table_prefix=prefix) for _ in range(2)]
    for node in nodes:
        await node.open()
    try:
        # Node 0 served the first half of a walk, node 1 the second half.
        walk = [click(n, 0.7 * n, n) for n in range(1, 7)]
        await nodes[0].write(walk[:3])
        await nodes[1].write(walk[3:])
        now = at(120)
        settlers = [Settler(node, settle_delay=60, clock=lambda: now) for node in nodes]
        results = await asyncio.gather(*(s.run_once() for s in settlers))
        assert sum(r[0] for r in results) == 6  # each click relabelled exactly once
        for node in nodes:
            got = await labels(node)
            assert set(got.values()) == {("bot", "walk", True)}
            assert len(got) == 6
    finally:
        await nodes[0].drop_tables()
        for node in nodes:
            await node.close()


async def test_a_failing_store_does_not_stop_the_settler(tmp_path: Path) -> None:
    # A directory where the database file should be: every call fails.
    (tmp_path / "clicks.sqlite3").mkdir()
    store = SqliteStore(tmp_path / "clicks.sqlite3")
    settler = Settler(store, settle_delay=60, interval=0.01)
    settler.start()
    try:
        with pytest.raises(Exception, match="sqlite"):
            await settler.run_once()
    finally:
        await settler.stop()
        await store.close()


click_lists = st.lists(
    st.builds(
        lambda n, s, link, client, net, rcpt, bot: click(
            n,
            s,
            link,
            client=client,
            net=net,
            recipient=rcpt,
            classification="bot" if bot else "human",
            reason="head" if bot else None,
        ),
        st.integers(0, 10**6),
        st.floats(0, 90, allow_nan=False),
        st.integers(0, 4),
        st.sampled_from(["A", "B", "C"]),
        st.sampled_from(["N", "M"]),
        st.sampled_from(["r@x", "s@x"]),
        st.booleans(),
    ),
    max_size=25,
    unique_by=lambda c: c.id,
)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(clicks=click_lists, now_s=st.floats(0, 200, allow_nan=False))
def test_settling_never_loses_or_duplicates_a_click(
    tmp_path_factory: pytest.TempPathFactory, clicks: list[Click], now_s: float
) -> None:
    async def go() -> None:
        store = SqliteStore(tmp_path_factory.mktemp("settle") / "c.sqlite3")
        await store.open()
        try:
            await store.write(clicks)
            settler = Settler(store, settle_delay=30, clock=lambda: at(now_s))
            relabelled, _ = await settler.run_once()
            await settler.run_once()  # a second pass changes nothing more than the first
            stored = await store.message_clicks(["Q"], T0 - timedelta(1), T0 + timedelta(1))
            assert sorted(c.id for c in stored) == sorted(c.id for c in clicks)
            bots_before = sum(1 for c in clicks if c.classification == "bot")
            bots_after = sum(1 for c in stored if c.classification == "bot")
            assert bots_after == bots_before + relabelled
            doc = await store.stats()
            totals = doc["totals"]
            assert totals["human_clicks"] + totals["bot_clicks"] == len(clicks)
            assert sum(totals["bot_reasons"].values()) == totals["bot_clicks"]
            due = sum(1 for c in clicks if c.time.timestamp() <= at(now_s) - 30)
            assert totals["unsettled_clicks"] == len(clicks) - due
        finally:
            await store.close()

    asyncio.run(go())
