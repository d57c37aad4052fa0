"""One recorded click, as the redirector hands it to the recorder and the store keeps it.

A click is immutable and carries its own random ``id``: a batch that is retried after a
store outage (the first attempt may have committed before the connection broke) is
inserted with ``ON CONFLICT (id) DO NOTHING``, so every click lands exactly once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

#: The two classifications; a bot click also carries a ``reason``.
HUMAN = "human"
BOT = "bot"


def new_click_id() -> str:
    """A fresh 32-hex-digit click id (uuid4)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Click:
    """One GET or HEAD of ``/c/<token>`` that decoded to a link we minted.

    ``time`` is timezone-aware UTC. ``client_ip`` is already truncated (or None) by the
    HTTP layer; the store keeps what it is given.
    """

    time: datetime
    queue_id: str
    link_index: int
    url: str
    recipient: str | None
    client_ip: str | None
    user_agent: str | None
    method: str
    classification: str  # HUMAN or BOT
    reason: str | None
    id: str = field(default_factory=new_click_id)


def utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def clean_text(value: str | None) -> str | None:
    """Text any store accepts: no NUL (PostgreSQL refuses it), no lone surrogates.

    User agents come from the network; one hostile header must not make a batch
    unwritable (a batch that can never be written would block every click behind it).
    """
    if value is None:
        return None
    if value.isascii():  # the common case, O(1) in CPython: only NUL can be wrong
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value
