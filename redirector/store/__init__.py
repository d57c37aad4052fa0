"""Where clicks are kept: the :class:`ClickStore` interface and :func:`open_store`.

Two implementations share one schema: :mod:`redirector.store.sqlite` (embedded default,
one file under the data dir) and :mod:`redirector.store.pg` (PostgreSQL through asyncpg,
for several redirector nodes writing to one database).

Contract every store keeps:

* ``await store.open()`` connects and creates/migrates the schema (a version table);
  it is idempotent. If it fails with :class:`StoreError` the store may still be used:
  ``write`` retries the connection and the migration, so a redirector can start while
  its database is down.
* ``await store.write(clicks)`` inserts a batch atomically with ``ON CONFLICT (id) DO
  NOTHING`` — retrying a batch never duplicates a click. ``write([])`` only checks that
  the store is reachable. Every failure is a :class:`StoreError` (never a driver error).
* ``await store.stats(since)`` returns the JSON document of :mod:`redirector.store.stats`.
* ``await store.close()``.
"""

from __future__ import annotations

from typing import Literal

from redirector.store.base import ClickStore, StoreError

__all__ = ["ClickStore", "StoreError", "open_store", "store_kind"]


def store_kind(url: str) -> Literal["sqlite", "postgresql"] | None:
    """``"sqlite"`` for ``sqlite:PATH``, ``"postgresql"`` for ``postgresql://…`` (or
    ``postgres://…``), None for anything else. The config check and :func:`open_store`
    both ask this, so they accept the same URLs."""
    if url.startswith("sqlite:") and len(url) > len("sqlite:"):
        return "sqlite"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql"
    return None


def open_store(url: str) -> ClickStore:
    """A store for ``sqlite:PATH`` or ``postgresql://…`` (``postgres://`` too).

    A PostgreSQL URL may carry ``table_prefix=NAME_`` in its query (default
    ``clickrelay_``) to keep several deployments apart in one database; the other query
    parameters go to asyncpg. Nothing is connected yet: call ``await store.open()``.
    Raises StoreError for any other URL or a bad prefix.
    """
    kind = store_kind(url)
    if kind == "sqlite":
        from redirector.store.sqlite import SqliteStore

        return SqliteStore(url[len("sqlite:") :])
    if kind == "postgresql":
        from redirector.store.pg import PgStore, split_table_prefix

        dsn, prefix = split_table_prefix(url)
        return PgStore(dsn) if prefix is None else PgStore(dsn, table_prefix=prefix)
    raise StoreError(f"unknown click store URL {url!r}: expected sqlite:PATH or postgresql://…")
