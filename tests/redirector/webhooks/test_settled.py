"""Webhooks send settled labels: ``settled_only`` (the default) holds a click back until
the settler has had the last word on its label, so a scanner's walk — served as human,
relabelled bot by the settler — never reaches an endpoint that wants humans only.

The cursor tests drive a real store (SQLite and PostgreSQL) directly, with clicks that
settle out of seq order; the end-to-end tests run the redirector service with its real
settler (``classification_settle`` at its 20 s minimum, so they are few and poll)."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from redirector.clicks import Click
from redirector.config import RedirectorConfig
from redirector.service import RedirectorService
from redirector.store import ClickStore, open_store
from redirector.tokens import Keyring
from redirector.webhooks.config import WebhookConfig
from tests.support.click_helpers import reader_click
from tests.support.polling import until
from tests.support.webhook_receiver import WebhookReceiver, new_secret

HUMAN_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
_QIDS = itertools.count()

#: (endpoint, include_bots, settled_only)
SETTLED_ALL = ("settled-all", True, True)
SETTLED_HUMANS = ("settled-humans", False, True)
EARLY_HUMANS = ("early-humans", False, False)


def _click(seconds: int) -> Click:
    return reader_click(T0 + timedelta(seconds=seconds), f"Q{seconds}")


async def _claimed(store: ClickStore, endpoint: str) -> list[tuple[str, str, str | None, bool]]:
    """(click id, label, reason, settled) of every due event of ``endpoint``, in seq order."""
    events = await store.webhook_claim(endpoint, time.time() + 1, 30, 1000)
    return [(e.click.id, e.click.classification, e.click.reason, e.settled) for e in events]


async def test_cursor_waits_for_the_first_unsettled_click_and_skips_none(
    click_store: ClickStore,
) -> None:
    store = click_store
    targets = [SETTLED_ALL, SETTLED_HUMANS, EARLY_HUMANS]
    await store.webhook_enqueue(targets, datetime.now(UTC), 1000, time.time())  # cursors
    # Committed in this (seq) order; clicked in another: the settler settles by age, so
    # a later seq may settle first (several PostgreSQL nodes, batches in flight).
    a, b, c, d = (_click(s) for s in (10, 0, 5, 1))
    for click in (a, b, c, d):
        await store.write([click])
    now = datetime.now(UTC)

    async def step() -> int:
        return await store.webhook_enqueue(targets, now, 1000, time.time())

    assert await step() == 4  # only early-humans' cursor moves: 4 clicks
    early = await _claimed(store, EARLY_HUMANS[0])
    assert early == [(x.id, "human", None, False) for x in (a, b, c, d)]

    # b and d settle (d relabelled a bot) while a, the first in seq, is not settled yet.
    assert await store.settle([(d.id, "walk", "{}")], [b.id, d.id]) == 1
    assert await step() == 0  # the settled cursors wait at a: they pass over nothing
    assert await _claimed(store, SETTLED_ALL[0]) == []
    assert await _claimed(store, SETTLED_HUMANS[0]) == []

    await store.settle([], [a.id])
    assert await step() == 4  # a and b for each settled cursor; they stop at c
    assert await _claimed(store, SETTLED_ALL[0]) == [
        (a.id, "human", None, True),
        (b.id, "human", None, True),
    ]
    assert [x[0] for x in await _claimed(store, SETTLED_HUMANS[0])] == [a.id, b.id]

    assert await store.settle([(c.id, "walk", "{}")], [c.id]) == 1
    assert await step() == 4  # c and d
    assert await _claimed(store, SETTLED_ALL[0]) == [
        (c.id, "bot", "walk", True),
        (d.id, "bot", "walk", True),
    ]
    assert await _claimed(store, SETTLED_HUMANS[0]) == []  # both turned out bots
    assert await step() == 0
    for name, *_ in targets:  # every click taken once: nothing left, nothing again
        assert await _claimed(store, name) == []
    statuses = {s.endpoint: s for s in await store.webhook_status([n for n, *_ in targets])}
    assert {n: (s.pending, s.failed) for n, s in statuses.items()} == {
        SETTLED_ALL[0]: (4, 0),  # claimed, not finished: pending until their lease ends
        SETTLED_HUMANS[0]: (2, 0),
        EARLY_HUMANS[0]: (4, 0),
    }


async def test_cursor_waits_for_a_click_younger_than_deliverable_after(
    click_store: ClickStore,
) -> None:
    """The time cutoff stops the cursor as settling does: a click committed before an
    older one (seq order is not time order) is not passed over while too young."""
    store = click_store
    target = [EARLY_HUMANS]
    await store.webhook_enqueue(target, datetime.now(UTC), 1000, time.time())
    young, old = _click(60), _click(0)
    for click in (young, old):
        await store.write([click])
    assert await store.webhook_enqueue(target, T0 + timedelta(seconds=30), 1000, time.time()) == 0
    assert await _claimed(store, EARLY_HUMANS[0]) == []
    assert await store.webhook_enqueue(target, T0 + timedelta(seconds=90), 1000, time.time()) == 2
    assert [x[0] for x in await _claimed(store, EARLY_HUMANS[0])] == [young.id, old.id]


# -- end to end: the redirector, its settler, receivers --------------------------------


@pytest.fixture
async def receivers() -> AsyncIterator[dict[str, WebhookReceiver]]:
    """humans (settled_only, humans only), audit (settled_only, include_bots) and early
    (settled_only = false, humans only: today's behaviour before this key)."""
    found = {name: WebhookReceiver(new_secret()) for name in ("humans", "audit", "early")}
    for r in found.values():
        await r.start()
    yield found
    for r in found.values():
        assert r.rejected == []  # every request verified with the reference library
        await r.stop()


def _hooks(receivers: dict[str, WebhookReceiver]) -> tuple[WebhookConfig, ...]:
    def hook(name: str, **settings: bool) -> WebhookConfig:
        r = receivers[name]
        return WebhookConfig(url=r.url, secret=r.secret, name=name, **settings)

    return (
        hook("humans"),  # the defaults: settled_only = true, include_bots = false
        hook("audit", include_bots=True),
        hook("early", settled_only=False),
    )


async def _click_links(
    port: int, keyring: Keyring, session: aiohttp.ClientSession, links: Sequence[int]
) -> None:
    """Clicks ``links`` of one copy of a message sent an hour ago, one after the other
    from this address: two links (served as human: a third would be a bot at once) in
    a second are a walk to the settler."""
    queue_id = f"S{next(_QIDS)}"
    for link in links:
        token = keyring.seal(
            f"https://example.com/{link}",
            host="127.0.0.1",
            queue_id=queue_id,
            link_index=link,
            recipient="reader@example.org",
            sent_at=int(time.time()) - 3600,
        )
        url = f"http://127.0.0.1:{port}/c/{token}"
        async with session.get(url, allow_redirects=False, headers={"User-Agent": HUMAN_UA}) as r:
            assert r.status == 302


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_walk_never_reaches_a_humans_endpoint_and_humans_arrive_settled(
    kind: str,
    receivers: dict[str, WebhookReceiver],
    keyring: Keyring,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    if kind == "sqlite":
        store_url = f"sqlite:{tmp_path / 'clicks.sqlite3'}"
    else:
        store_url = f"{request.getfixturevalue('pg_dsn')}?table_prefix=t{uuid.uuid4().hex[:12]}_"
    config = RedirectorConfig(
        listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        store=store_url,
        flush_interval=0.02,
        classification_settle=20,  # the minimum: these tests wait for it
    )
    service = RedirectorService(
        config, keyring, registry=CollectorRegistry(), webhooks=_hooks(receivers)
    )
    await service.start()
    reader_store = open_store(store_url)
    await reader_store.open()
    humans, audit, early = receivers["humans"], receivers["audit"], receivers["early"]
    try:
        async with aiohttp.ClientSession() as session:
            await _click_links(service.public_port, keyring, session, [0, 1])  # a scanner
            await _click_links(service.public_port, keyring, session, [1])  # a reader
        # Without settled_only the walk goes out at once, as human clicks: the problem.
        await until(
            lambda: len(early.deliveries) == 3,
            "3 clicks at the early endpoint",
            failure=lambda: f"early got {dict(early.deliveries)}",
        )
        sent_early = {cid: p[0]["data"] for cid, p in early.deliveries.items()}
        assert {(d["classification"], d["settled"]) for d in sent_early.values()} == {
            ("human", False)
        }
        assert humans.deliveries == {} and audit.deliveries == {}  # nothing settled yet
        # Clicks waiting for their label are no backlog: no event, nothing "stuck".
        waiting = await reader_store.webhook_status(["humans", "audit"])
        assert [(s.pending, s.failed, s.oldest_pending) for s in waiting] == [(0, 0, None)] * 2

        # The settler relabels the walk and settles all three a classification_settle on.
        await until(lambda: len(audit.deliveries) == 3, "3 settled clicks at audit", 90)
        sent = {
            cid: (p[0]["data"]["queue_id"], p[0]["data"]) for cid, p in audit.deliveries.items()
        }
        by_message: dict[str, set[str]] = {}
        for cid, (queue_id, _data) in sent.items():
            by_message.setdefault(queue_id, set()).add(cid)
        (walk,) = [ids for ids in by_message.values() if len(ids) == 2]
        (reader,) = [ids for ids in by_message.values() if len(ids) == 1]
        assert {
            (sent[cid][1]["classification"], sent[cid][1]["reason"], sent[cid][1]["settled"])
            for cid in walk
        } == {("bot", "walk", True)}
        (reader_id,) = reader
        assert (sent[reader_id][1]["classification"], sent[reader_id][1]["settled"]) == (
            "human",
            True,
        )
        # The humans endpoint: the reader, settled; the walk never (its cursor is past
        # every click of the walk once it has the reader's, committed after them).
        await until(lambda: len(humans.deliveries) == 1, "the reader's click at humans", 30)
        assert set(humans.deliveries) == {reader_id}
        (payload,) = humans.deliveries[reader_id]
        assert (payload["data"]["classification"], payload["data"]["settled"]) == ("human", True)
        # Each endpoint got each click once.
        for r in (humans, audit, early):
            assert all(len(p) == 1 for p in r.deliveries.values())
    finally:
        await service.stop()
        if kind == "postgresql":
            from redirector.store.pg import PgStore

            assert isinstance(reader_store, PgStore)
            await reader_store.drop_tables()
        await reader_store.close()
