"""``clickrelay webhooks replay`` sends again what an endpoint was sent, never more: an
endpoint without ``include_bots`` must not receive bot clicks because it was replayed.
Real stores (SQLite and PostgreSQL); the command itself runs against a real config."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from redirector.store import ClickStore
from tests.support.click_helpers import reader_click

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
ALL = ("all", True, False)
HUMANS = ("humans", False, False)


async def _deliver_all(store: ClickStore, endpoint: str) -> list[str]:
    """Claim every due event of ``endpoint`` and mark it delivered; the click ids."""
    events = await store.webhook_claim(endpoint, time.time() + 1, 30, 1000)
    for event in events:
        await store.webhook_finish(endpoint, event.click.id, "delivered", 0.0, None)
    return sorted(e.click.id for e in events)


async def test_replay_sends_bots_only_to_endpoints_that_take_them(
    click_store: ClickStore,
) -> None:
    store = click_store
    await store.webhook_enqueue([ALL, HUMANS], datetime.now(UTC), 1000, time.time())
    human, bot = reader_click(T0, "QH"), reader_click(T0, "QB", "bot", "head")
    await store.write([human, bot])
    assert await store.webhook_enqueue([ALL, HUMANS], datetime.now(UTC), 1000, time.time()) == 4
    assert await _deliver_all(store, "all") == sorted([human.id, bot.id])
    assert await _deliver_all(store, "humans") == [human.id]

    since = T0 - timedelta(hours=1)
    assert await store.webhook_replay("humans", since, time.time(), include_bots=False) == 1
    assert await store.webhook_replay("all", since, time.time(), include_bots=True) == 2
    assert await _deliver_all(store, "humans") == [human.id]
    assert await _deliver_all(store, "all") == sorted([human.id, bot.id])
