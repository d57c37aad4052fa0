"""What the stores hand back beyond stats: stored clicks (export, webhooks), webhook
delivery state and endpoint status. Plain values, shared by both stores.

Every stored click has a ``seq``: its position in commit order (SQLite's rowid; a
sequence column in PostgreSQL, whose writers and readers of the webhook cursor take an
advisory lock so that a reader never sees seq 11 committed while 10 is still on its
way). Export pages and webhook cursors walk ``seq``: keyset pagination, constant memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redirector.clicks import CLICK_COLUMNS, metadata_from_text, utc
from redirector.store.stats import iso

#: The columns a stored click is read with, in :class:`StoredClick` order (``seq`` is
#: spelled by each store: ``rowid`` in SQLite).
READ_COLUMNS = CLICK_COLUMNS[: CLICK_COLUMNS.index("sent_at") + 1]


@dataclass(frozen=True, slots=True)
class StoredClick:
    seq: int
    id: str
    time: datetime
    queue_id: str
    link_index: int
    url: str
    recipient: str | None
    client_ip: str | None
    user_agent: str | None
    method: str
    classification: str
    reason: str | None
    tag: str | None
    metadata: Mapping[str, str] | None
    sent_at: datetime | None

    @classmethod
    def from_row(
        cls, seq: int, row: tuple[Any, ...] | Any, time: datetime, sent_at: datetime | None
    ) -> StoredClick:
        """``row`` in :data:`READ_COLUMNS` order (``time`` and ``sent_at`` converted).

        The fields after ``seq`` are READ_COLUMNS in order: four need converting."""
        values: list[Any] = list(row[: len(READ_COLUMNS)])
        values[1] = utc(time)
        values[3] = int(values[3])
        values[12] = metadata_from_text(values[12])
        values[13] = utc(sent_at) if sent_at is not None else None
        return cls(int(seq), *values)


@dataclass(frozen=True, slots=True)
class ClickFilter:
    """Which clicks an export (or ``/api/clicks``) reads; all bounds optional."""

    since: datetime | None = None
    until: datetime | None = None
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One click due for delivery to one endpoint (claimed: leased to this node)."""

    endpoint: str
    attempts: int  # including the one this claim is for
    enqueued_at: float  # unix seconds
    click: StoredClick
    settled: bool  # the click's label is final (as of this claim)


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    endpoint: str
    pending: int
    failed: int
    oldest_pending: float | None  # unix seconds of the oldest pending event's enqueueing
    last_error: str | None
    cursor: int | None  # last seq taken from the clicks (None: not started)


def click_record(click: StoredClick) -> dict[str, Any]:
    """One exported click (also the items of ``GET /api/clicks``)."""
    return {
        "click_id": click.id,
        "clicked_at": iso(click.time),
        "queue_id": click.queue_id,
        "link_index": click.link_index,
        "url": click.url,
        "recipient": click.recipient,
        "classification": click.classification,
        "reason": click.reason,
        "tag": click.tag,
        "metadata": dict(click.metadata) if click.metadata else {},
        "user_agent": click.user_agent,
        "ip": click.client_ip,
        "method": click.method,
        "sent_at": iso(click.sent_at) if click.sent_at else None,
    }
