"""Helpers shared by the recorder and store-outage tests: numbered clicks, bounded polling."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from redirector.clicks import Click

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def make_click(n: int) -> Click:
    """Click number ``n``: 4 messages, 3 links and 5 recipients in rotation."""
    return Click(
        time=T0 + timedelta(seconds=n),
        queue_id=f"Q{n % 4}",
        link_index=n % 3,
        url=f"https://example.com/{n % 3}",
        recipient=f"r{n % 5}@example.org",
        client_ip="192.0.2.0",
        user_agent="Mozilla/5.0",
        method="GET",
        classification="human",
        reason=None,
    )


async def until(cond: Callable[[], bool], what: str, within: float = 30.0) -> None:
    """Poll ``cond`` until true; fail after ``within`` seconds (a deadline, not a sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        await asyncio.sleep(0.01)
