"""The click store interface every backend implements, and its one error type."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from clickrelay.common.errors import ClickrelayError
from redirector.clicks import Click
from redirector.store.dashboard import DashboardData, DashboardQuery


class StoreError(ClickrelayError):
    """The click store cannot do what was asked (down, read-only, full, locked, ...).

    ``retryable`` is False when the same batch can never succeed (the data itself was
    refused); the recorder then writes those clicks one by one and drops the bad ones.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ClickStore(Protocol):
    """A place clicks are written to in batches and counted from."""

    #: Short description for logs and errors, e.g. ``sqlite:/var/lib/…`` (no passwords).
    name: str

    async def open(self) -> None: ...

    async def write(self, clicks: Sequence[Click]) -> None: ...

    async def stats(self, since: datetime | None = None) -> dict[str, Any]: ...

    async def dashboard(self, query: DashboardQuery) -> DashboardData: ...

    async def close(self) -> None: ...
