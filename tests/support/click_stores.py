"""Click stores for tests: ``click_store``, an opened, empty store of each kind.

A test that asks for ``click_store`` runs twice: on SQLite in its ``tmp_path``, and on the
PostgreSQL of ``$CLICKRELAY_TEST_PG`` (the ``pg_dsn`` fixture) under a table prefix of its
own, dropped afterwards, so tests running side by side never see each other's clicks.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from redirector.store import ClickStore
from redirector.store.pg import PgStore
from redirector.store.sqlite import SqliteStore


@asynccontextmanager
async def open_test_store(
    kind: str, tmp_path: Path, dsn: str | None = None
) -> AsyncIterator[ClickStore]:
    """An opened store: ``sqlite`` in ``tmp_path``, or ``postgresql`` at ``dsn`` under a
    fresh table prefix (its tables dropped on the way out)."""
    if kind == "sqlite":
        sqlite = SqliteStore(tmp_path / "clicks.sqlite3")
        await sqlite.open()
        try:
            yield sqlite
        finally:
            await sqlite.close()
        return
    assert kind == "postgresql" and dsn is not None, kind
    pg = PgStore(dsn, table_prefix=f"t{uuid.uuid4().hex[:12]}_")
    await pg.open()
    try:
        yield pg
    finally:
        await pg.drop_tables()
        await pg.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def click_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ClickStore]:
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgresql" else None
    async with open_test_store(request.param, tmp_path, dsn) as store:
        yield store
