"""The click store interface every backend implements, and its one error type."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from clickrelay.common.errors import ClickrelayError
from redirector.clicks import Click
from redirector.store.dashboard import DashboardData, DashboardQuery
from redirector.store.records import ClickFilter, EndpointStatus, StoredClick, WebhookEvent


class StoreError(ClickrelayError):
    """The click store cannot do what was asked (down, read-only, full, locked, ...).

    ``retryable`` is False when the same batch can never succeed (the data itself was
    refused); the recorder then writes those clicks one by one and drops the bad ones.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def steps_to_run(version: int, known: int, name: str) -> slice:
    """The migrations a schema at step ``version`` still needs, of ``known`` steps; a
    schema newer than this release knows is an error (``name``: the store's)."""
    if version > known:
        raise StoreError(
            f"{name}: schema version {version} is newer than this clickrelay "
            f"knows ({known}); upgrade clickrelay"
        )
    return slice(version, known)


class ClickStore(Protocol):
    """A place clicks are written to in batches and counted from."""

    #: Short description for logs and errors, e.g. ``sqlite:/var/lib/…`` (no passwords).
    name: str

    async def open(self) -> None: ...

    async def write(self, clicks: Sequence[Click]) -> None: ...

    async def stats(
        self, since: datetime | None = None, tag: str | None = None, *, settled_only: bool = False
    ) -> dict[str, Any]:
        """The stats document (:mod:`redirector.store.stats`), of one tag's clicks if given;
        of settled clicks only if ``settled_only``."""
        ...

    async def export_page(self, flt: ClickFilter, after: int, limit: int) -> list[StoredClick]:
        """Up to ``limit`` clicks with ``seq > after`` matching ``flt``, in ``seq`` order."""
        ...

    async def delete_before(self, cutoff: datetime, limit: int) -> int:
        """Delete up to ``limit`` clicks older than ``cutoff`` (retention); how many went."""
        ...

    async def webhook_enqueue(
        self, endpoints: Sequence[tuple[str, bool, bool]], cutoff: datetime, limit: int, now: float
    ) -> int:
        """Move each ``(endpoint, include_bots, settled_only)``'s cursor over up to
        ``limit`` committed clicks recorded at or before ``cutoff`` (and settled, with
        ``settled_only``), making a pending event of each (human ones only unless
        ``include_bots``); how many it moved over. A cursor stops at the first click not
        deliverable yet. A new endpoint starts at the newest click."""
        ...

    async def webhook_claim(
        self, endpoint: str, now: float, lease: float, limit: int
    ) -> list[WebhookEvent]:
        """Up to ``limit`` due pending events, leased for ``lease`` seconds: no other node
        claims them meanwhile, and they are due again if this one never finishes them."""
        ...

    async def webhook_finish(
        self, endpoint: str, click_id: str, outcome: str, next_at: float, error: str | None
    ) -> None:
        """``delivered`` (forgotten), ``retry`` (due again at ``next_at``) or ``failed``."""
        ...

    async def webhook_replay(
        self, endpoint: str, since: datetime, now: float, *, include_bots: bool
    ) -> int:
        """Make every click since ``since`` already taken by the cursor pending again (bot
        clicks only for an endpoint that takes them)."""
        ...

    async def webhook_status(self, endpoints: Sequence[str]) -> list[EndpointStatus]: ...

    async def dashboard(self, query: DashboardQuery) -> DashboardData: ...

    # Settled classification (see redirector.clicks.settle).

    async def unsettled(self, limit: int) -> list[Click]:
        """The oldest clicks whose label is not final yet, oldest first."""
        ...

    async def message_clicks(
        self, queue_ids: Sequence[str], start: datetime, end: datetime
    ) -> list[Click]:
        """Every click of these messages between ``start`` and ``end`` (inclusive)."""
        ...

    async def settle(
        self, relabels: Sequence[tuple[str, str, str]], settled_ids: Sequence[str]
    ) -> int:
        """In one transaction: ``(id, reason, evidence JSON)`` human→bot for unsettled
        clicks (others untouched: a label only ever turns to bot, and a settled one never
        changes), then mark ``settled_ids`` settled. Returns how many were relabelled."""
        ...

    async def click(self, click_id: str) -> Click | None: ...

    async def settled_clicks(self, since: datetime | None, limit: int) -> list[Click]:
        """Settled clicks from ``since`` on, by (time, id): what consumers act on."""
        ...

    async def close(self) -> None: ...
