"""One recorded click, as the redirector hands it to the recorder and the store keeps it.

A click is immutable and carries its own random ``id``: a batch that is retried after a
store outage (the first attempt may have committed before the connection broke) is
inserted with ``ON CONFLICT (id) DO NOTHING``, so every click lands exactly once.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

#: The two classifications; a bot click also carries a ``reason``.
HUMAN = "human"
BOT = "bot"


_COUNTER_LIMIT = 1 << 48


class _ClickIds:
    """32-hex-digit ids: a random per-process prefix (80 bits) + a counter (48 bits).

    Unique across nodes and restarts like a uuid4 (a new prefix per process, and per
    child after fork), but ~8x cheaper to make on the redirect path, and ids of one
    process ascend, so the stores' primary-key indexes are appended to, not written at
    random pages (SQLite inserts ~1.5-2x cheaper in a batch of 500).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state = (os.urandom(10).hex(), itertools.count())

    def reseed(self) -> None:
        """A new prefix and counter (one assignment: threads see old or new, never a mix)."""
        self._state = (os.urandom(10).hex(), itertools.count())

    def new(self) -> str:
        prefix, counter = self._state
        n = next(counter)  # atomic under the GIL: one C call
        if n < _COUNTER_LIMIT:
            return f"{prefix}{n:012x}"
        with self._lock:  # 2**48 ids in one process: take a fresh prefix, never wrap
            if self._state[1] is counter:
                self.reseed()
        return self.new()


_IDS = _ClickIds()
os.register_at_fork(after_in_child=_IDS.reseed)


def new_click_id() -> str:
    """A fresh, globally unique 32-hex-digit click id (see :class:`_ClickIds`)."""
    return _IDS.new()


#: Longest client-supplied or token-carried text a stored click keeps (characters); the
#: rest is cut. The user agent is sent by the client (up to aiohttp's 8 KB header limit);
#: URL and recipient come from the token, whose compression lets a short link carry a
#: long URL. Cutting them bounds what one click can cost the store.
MAX_STORED_USER_AGENT = 512
MAX_STORED_URL = 8192
MAX_STORED_RECIPIENT = 512


def bounded(value: str | None, limit: int) -> str | None:
    """``value`` cut to ``limit`` characters (None stays None)."""
    return value if value is None or len(value) <= limit else value[:limit]


def click_weight(click: Click) -> int:
    """Roughly the bytes one queued click holds in memory (for the queue's byte bound)."""
    return (
        256
        + len(click.url)
        + len(click.recipient or "")
        + len(click.user_agent or "")
        + len(click.queue_id)
    )


class _ClickFields(NamedTuple):
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
    id: str
    tag: str | None
    metadata: Mapping[str, str] | None
    sent_at: datetime | None
    client_key: str | None
    net_key: str | None
    network: str | None
    trap: bool
    settled: bool
    evidence: str | None


class Click(_ClickFields):
    """One GET or HEAD of ``/c/<token>`` that decoded to a link we minted.

    ``time`` is timezone-aware UTC. ``client_ip`` is already truncated (or None) by the
    HTTP layer; the store keeps what it is given. ``id`` is a fresh
    :func:`new_click_id` unless given (``_replace`` keeps it). ``tag`` and ``metadata``
    are what the sending application sealed into the link (or None); ``sent_at`` is the
    link's minting time (when the message went through the proxy).

    The walk rules' evidence: ``client_key`` and ``net_key`` are keyed hashes of the full
    client address and of its /24 (/48), never the address itself; ``network`` the named
    scanner network the address is in; ``trap`` whether the token was the trap link.
    ``settled`` is False until the settler has had the last word on the label;
    ``evidence`` is a JSON text of what decided a bot label.

    Immutable, as a named tuple rather than a frozen dataclass: one is made per redirect,
    and a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) costs
    about 3x as much.
    """

    __slots__ = ()

    def __new__(
        cls,
        time: datetime,
        queue_id: str,
        link_index: int,
        url: str,
        recipient: str | None,
        client_ip: str | None,
        user_agent: str | None,
        method: str,
        classification: str,
        reason: str | None,
        id: str | None = None,
        tag: str | None = None,
        metadata: Mapping[str, str] | None = None,
        sent_at: datetime | None = None,
        client_key: str | None = None,
        net_key: str | None = None,
        network: str | None = None,
        trap: bool = False,
        settled: bool = False,
        evidence: str | None = None,
    ) -> Click:
        return tuple.__new__(
            cls,
            (
                time,
                queue_id,
                link_index,
                url,
                recipient,
                client_ip,
                user_agent,
                method,
                classification,
                reason,
                new_click_id() if id is None else id,
                tag,
                metadata or None,
                sent_at,
                client_key,
                net_key,
                network,
                trap,
                settled,
                evidence,
            ),
        )


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


#: The stores' column order: :func:`click_row` fills it, both stores' INSERTs name it.
CLICK_COLUMNS = (
    "id",
    "time",
    "queue_id",
    "link_index",
    "url",
    "recipient",
    "client_ip",
    "user_agent",
    "method",
    "classification",
    "reason",
    "tag",
    "metadata",
    "sent_at",
    "client_key",
    "net_key",
    "network",
    "trap",
    "settled",
    "evidence",
)


def metadata_text(metadata: Mapping[str, str] | None) -> str | None:
    """The stored form of metadata: compact JSON (None when there is none)."""
    if not metadata:
        return None
    return json.dumps(dict(metadata), ensure_ascii=False, separators=(",", ":"))


def metadata_from_text(text: str | None) -> dict[str, str] | None:
    """Metadata back from its stored form; anything unreadable is None."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else None


def click_row(click: Click, time_value: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """One INSERT row in :data:`CLICK_COLUMNS` order; ``time_value`` is the store's time form."""
    return (
        click.id,
        time_value(click.time),
        clean_text(click.queue_id),
        int(click.link_index),
        clean_text(click.url),
        clean_text(click.recipient),
        clean_text(click.client_ip),
        clean_text(click.user_agent),
        clean_text(click.method),
        clean_text(click.classification),
        clean_text(click.reason),
        clean_text(click.tag),
        clean_text(metadata_text(click.metadata)),
        None if click.sent_at is None else time_value(click.sent_at),
        click.client_key,
        click.net_key,
        clean_text(click.network),
        1 if click.trap else 0,
        1 if click.settled else 0,
        clean_text(click.evidence),
    )


def click_from_row(row: Any, parse_time: Callable[[Any], datetime]) -> Click:
    """A :class:`Click` from a stored row in :data:`CLICK_COLUMNS` order."""
    return Click(
        time=parse_time(row[1]),
        queue_id=row[2],
        link_index=int(row[3]),
        url=row[4],
        recipient=row[5],
        client_ip=row[6],
        user_agent=row[7],
        method=row[8],
        classification=row[9],
        reason=row[10],
        id=row[0],
        tag=row[11],
        metadata=metadata_from_text(row[12]),
        sent_at=None if row[13] is None else parse_time(row[13]),
        client_key=row[14],
        net_key=row[15],
        network=row[16],
        trap=bool(row[17]),
        settled=bool(row[18]),
        evidence=row[19],
    )
