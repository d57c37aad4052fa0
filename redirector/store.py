"""Where clicks are kept: the :class:`ClickStore` interface and :func:`open_store`.

Two implementations share one schema: :mod:`redirector.store_sqlite` (embedded default,
one file under the data dir) and :mod:`redirector.store_pg` (PostgreSQL through asyncpg,
for several redirector nodes writing to one database).

Contract every store keeps:

* ``await store.open()`` connects and creates/migrates the schema (a version table);
  it is idempotent. If it fails with :class:`StoreError` the store may still be used:
  ``write`` retries the connection and the migration, so a redirector can start while
  its database is down.
* ``await store.write(clicks)`` inserts a batch atomically with ``ON CONFLICT (id) DO
  NOTHING`` — retrying a batch never duplicates a click. ``write([])`` only checks that
  the store is reachable. Every failure is a :class:`StoreError` (never a driver error).
* ``await store.stats(since)`` returns the JSON document of :mod:`redirector.stats`.
* ``await store.close()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from redirector.clicks import Click
from redirector.errors import ClickrelayError


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

    async def close(self) -> None: ...


def open_store(url: str) -> ClickStore:
    """A store for ``sqlite:PATH`` or ``postgresql://…`` (``postgres://`` too).

    A PostgreSQL URL may carry ``table_prefix=NAME_`` in its query (default
    ``clickrelay_``) to keep several deployments apart in one database; the other query
    parameters go to asyncpg. Nothing is connected yet: call ``await store.open()``.
    Raises StoreError for any other URL or a bad prefix.
    """
    if url.startswith("sqlite:") and len(url) > len("sqlite:"):
        from redirector.store_sqlite import SqliteStore

        return SqliteStore(url[len("sqlite:") :])
    if url.startswith(("postgresql://", "postgres://")):
        from redirector.store_pg import PgStore, split_table_prefix

        dsn, prefix = split_table_prefix(url)
        return PgStore(dsn) if prefix is None else PgStore(dsn, table_prefix=prefix)
    raise StoreError(f"unknown click store URL {url!r}: expected sqlite:PATH or postgresql://…")
