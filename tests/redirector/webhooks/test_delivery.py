"""Webhook delivery with real peers: the redirector service, a real store (SQLite, or
PostgreSQL for two nodes), real redirects over HTTP, and a receiver on loopback that
verifies every request with the ``standardwebhooks`` reference library."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from redirector.config import RedirectorConfig
from redirector.service import RedirectorService
from redirector.store import ClickStore, open_store
from redirector.store.records import ClickFilter
from redirector.tokens import Keyring
from redirector.webhooks.config import WebhookConfig
from tests.support.closing import AsyncRunning
from tests.support.polling import until
from tests.support.webhook_receiver import WebhookReceiver, new_secret

HUMAN_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
_QIDS = itertools.count()


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    r = WebhookReceiver(new_secret())
    await r.start()
    yield r
    assert r.rejected == []  # every request verified with the reference library
    await r.stop()


def hook(receiver: WebhookReceiver, **settings: Any) -> WebhookConfig:
    """An endpoint posting to ``receiver`` with its secret. The tests here are about
    delivery itself, so they say ``settled_only=False``: a click is sent once committed,
    not a ``classification_settle`` later (tests/redirector/webhooks/test_settled.py)."""
    return WebhookConfig(url=receiver.url, secret=receiver.secret, **settings)


class Node(AsyncRunning):
    """One redirector (public + admin listener, recorder, webhook delivery); ``async
    with`` starts and stops it."""

    def __init__(self, store_url: str, keyring: Keyring, hooks: Sequence[WebhookConfig]) -> None:
        config = RedirectorConfig(
            listen="127.0.0.1:0",
            admin_listen="127.0.0.1:0",
            store=store_url,
            flush_interval=0.02,
        )
        self.registry = CollectorRegistry()
        self.service = RedirectorService(
            config, keyring, registry=self.registry, webhooks=tuple(hooks)
        )
        self.keyring = keyring

    async def click(
        self, session: aiohttp.ClientSession, *, human: bool = True, tag: str | None = None
    ) -> None:
        from redirector.tokens import encode_extras

        now = int(time.time())
        token = self.keyring.seal(
            "https://example.com/landing",
            host="127.0.0.1",  # the Host the test client sends
            queue_id=f"Q{next(_QIDS)}",
            link_index=0,
            recipient="reader@example.org",
            # An hour old: a person. Just sent: a scanner ("too-soon").
            sent_at=now - 3600 if human else now,
            extras=encode_extras(tag, {"user_id": "42"} if tag else None),
        )
        url = f"http://127.0.0.1:{self.service.public_port}/c/{token}"
        async with session.get(
            url, allow_redirects=False, headers={"User-Agent": HUMAN_UA}
        ) as resp:
            assert resp.status == 302
            assert resp.headers["Location"] == "https://example.com/landing"

    async def start(self) -> None:
        await self.service.start()

    async def close(self) -> None:
        await self.service.stop()

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


async def stored(store: ClickStore, count: int) -> dict[str, str]:
    """click id -> classification of the ``count`` committed clicks (polled until the
    recorder has written them all)."""
    deadline = time.monotonic() + 30
    while True:
        page = await store.export_page(ClickFilter(), 0, 100_000)
        if len(page) >= count:
            return {c.id: c.classification for c in page}
        assert time.monotonic() < deadline, f"{len(page)} of {count} clicks stored"
        await asyncio.sleep(0.01)


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[tuple[str, ClickStore]]:
    url = f"sqlite:{tmp_path / 'clicks.sqlite3'}"
    reader = open_store(url)
    await reader.open()
    yield url, reader
    await reader.close()


async def test_receiver_down_then_back_gets_every_human_click(
    receiver: WebhookReceiver, keyring: Keyring, sqlite_store: tuple[str, ClickStore]
) -> None:
    url, reader = sqlite_store
    receiver.status = 503
    async with Node(
        url, keyring, [hook(receiver, settled_only=False, retry_delay=0.05, timeout=5.0)]
    ) as node:
        async with aiohttp.ClientSession() as session:
            for i in range(12):
                await node.click(session, human=i % 4 != 3, tag="spring")
        await until(lambda: receiver.requests >= 9, "attempts while the receiver is down")
        assert receiver.deliveries == {}
        receiver.status = 200
        clicks = await stored(reader, 12)
        humans = {cid for cid, label in clicks.items() if label == "human"}
        assert len(clicks) == 12 and len(humans) == 9
        await receiver.wait_for(humans)
        assert set(receiver.deliveries) == humans  # bots not sent (include_bots = false)
        for cid, payloads in receiver.deliveries.items():
            assert {p["data"]["click_id"] for p in payloads} == {cid}
            data = payloads[0]["data"]
            assert (data["tag"], data["metadata"]) == ("spring", {"user_id": "42"})
            assert data["classification"] == "human" and data["recipient"] == "reader@example.org"
        assert (
            node.metric(
                "clickrelay_webhook_events_total", endpoint=node_key(receiver), outcome="retry"
            )
            >= 9
        )
        await until(
            lambda: (
                node.metric(
                    "clickrelay_webhook_events_total",
                    endpoint=node_key(receiver),
                    outcome="delivered",
                )
                == 9
            ),
            "delivered counted",
        )


def node_key(receiver: WebhookReceiver) -> str:
    return f"127.0.0.1:{receiver.port}/hook"


async def test_bots_are_sent_flagged_with_include_bots(
    receiver: WebhookReceiver, keyring: Keyring, sqlite_store: tuple[str, ClickStore]
) -> None:
    url, _reader = sqlite_store
    async with Node(url, keyring, [hook(receiver, settled_only=False, include_bots=True)]) as node:
        async with aiohttp.ClientSession() as session:
            await node.click(session, human=False)
            await node.click(session, human=True)
        await until(lambda: len(receiver.deliveries) == 2, "both clicks")
        labels = sorted(
            (p[0]["data"]["classification"], p[0]["data"]["reason"], p[0]["data"]["settled"])
            for p in receiver.deliveries.values()
        )
        # settled_only = false: sent as served, classification_settle (60 s) before the
        # settler's last word, and the payload says the label is not final yet.
        assert labels == [("bot", "too-soon", False), ("human", None, False)]


async def test_slow_receiver_never_holds_up_redirects(
    receiver: WebhookReceiver, keyring: Keyring, sqlite_store: tuple[str, ClickStore]
) -> None:
    url, reader = sqlite_store
    receiver.delay = 2.0
    async with Node(
        url, keyring, [hook(receiver, settled_only=False, concurrency=2, timeout=10.0)]
    ) as node:
        async with aiohttp.ClientSession() as session:
            for _ in range(5):
                await node.click(session)
            await until(lambda: receiver.in_flight > 0, "a delivery in flight")
            # Deliveries are stuck at the receiver: redirects are answered all the same
            # (node.click asserts the 302 and its Location).
            for _ in range(30):
                await node.click(session)
            assert receiver.in_flight > 0 or len(receiver.deliveries) < 35
        receiver.delay = 0.0
        clicks = await stored(reader, 35)
        assert len(clicks) == 35
        await receiver.wait_for(set(clicks))


async def test_410_disables_the_endpoint_until_reload(
    receiver: WebhookReceiver, keyring: Keyring, sqlite_store: tuple[str, ClickStore]
) -> None:
    url, reader = sqlite_store
    receiver.status = 410
    cfg = hook(receiver, settled_only=False, retry_delay=0.05)
    async with Node(url, keyring, [cfg]) as node:
        async with aiohttp.ClientSession() as session:
            await node.click(session)
            dispatcher = node.service.dispatcher
            assert dispatcher is not None
            await until(lambda: dispatcher.disabled(cfg.key), "endpoint disabled")
            receiver.status = 200
            await node.click(session)
            await node.click(session)

            async def pending() -> int:
                return (await reader.webhook_status([cfg.key]))[0].pending

            deadline = time.monotonic() + 30
            while await pending() < 3:
                assert time.monotonic() < deadline, "events not taken by the cursor"
                await until(lambda: True, "tick")
            assert receiver.requests == 1  # nothing sent while disabled
            await until(
                lambda: node.metric("clickrelay_webhook_backlog", endpoint=cfg.key) == 3,
                "backlog gauge at 3",
            )
            node.service.update_webhooks((cfg,))
            clicks = await stored(reader, 3)
            await receiver.wait_for(set(clicks))


async def test_failed_after_budget_then_replayed(
    receiver: WebhookReceiver,
    keyring: Keyring,
    sqlite_store: tuple[str, ClickStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="clickrelay.webhooks")
    url, reader = sqlite_store
    receiver.status = 500
    cfg = hook(receiver, settled_only=False, retry_delay=0.05, max_attempts=2)
    async with Node(url, keyring, [cfg]) as node:
        async with aiohttp.ClientSession() as session:
            await node.click(session)
        status: list[Any] = []

        async def failed() -> int:
            status[:] = await reader.webhook_status([cfg.key])
            return status[0].failed

        deadline = time.monotonic() + 30
        while await failed() < 1:
            assert time.monotonic() < deadline
            await until(lambda: True, "tick")
        assert receiver.requests == 2
        (line,) = [r.getMessage() for r in caplog.records if "webhook-failed" in r.getMessage()]
        assert "count=1" in line and "attempts=2" in line
        assert status[0].last_error == "HTTP 500: ok"
        assert (
            node.metric("clickrelay_webhook_events_total", endpoint=cfg.key, outcome="failed") == 1
        )
        receiver.status = 200
        from datetime import UTC, datetime, timedelta

        assert (
            await reader.webhook_replay(
                cfg.key,
                datetime.now(UTC) - timedelta(hours=1),
                time.time(),
                include_bots=cfg.include_bots,
            )
            == 1
        )
        clicks = await stored(reader, 1)
        await receiver.wait_for(set(clicks))


async def test_two_nodes_on_postgresql_deliver_each_event_once(
    receiver: WebhookReceiver, keyring: Keyring, pg_dsn: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    url = f"{pg_dsn}?table_prefix={prefix}"
    cfg = hook(receiver, settled_only=False, concurrency=8)
    nodes = [Node(url, keyring, [cfg]) for _ in range(2)]
    reader = open_store(url)
    await reader.open()
    for node in nodes:
        await node.service.start()
    try:
        async with aiohttp.ClientSession() as session:
            for i in range(60):
                await nodes[i % 2].click(session)
        await until(lambda: len(receiver.deliveries) >= 60, "60 clicks delivered", 60)
        clicks = await stored(reader, 60)
        assert len(clicks) == 60
        await receiver.wait_for(set(clicks))
        assert {cid: len(p) for cid, p in receiver.deliveries.items()} == dict.fromkeys(clicks, 1)
        sent = [
            n.metric("clickrelay_webhook_events_total", endpoint=cfg.key, outcome="delivered")
            for n in nodes
        ]
        assert sum(sent) == 60
    finally:
        for node in nodes:
            await node.service.stop()
        from redirector.store.pg import PgStore

        assert isinstance(reader, PgStore)
        await reader.drop_tables()
        await reader.close()
