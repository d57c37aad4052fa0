"""Clicks for tests: numbered ones in rotation, and one reader's click at a given time."""

from __future__ import annotations

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


def reader_click(
    at: datetime,
    queue_id: str,
    classification: str = "human",
    reason: str | None = None,
) -> Click:
    """One reader's GET (a HEAD for reason ``head``) of one link of message ``queue_id``."""
    return Click(
        time=at,
        queue_id=queue_id,
        link_index=0,
        url="https://example.com/x",
        recipient="reader@example.org",
        client_ip="192.0.2.0",
        user_agent="Mozilla/5.0",
        method="HEAD" if reason == "head" else "GET",
        classification=classification,
        reason=reason,
    )
