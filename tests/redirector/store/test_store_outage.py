"""Store outages: the recorder keeps clicks while the store is unreachable, then writes
each exactly once. PostgreSQL is cut off through a real TCP relay; SQLite is locked by
another connection or its data dir is unusable (both are real failures, even as root).

Also tests the relay itself (tests/support/tcp_relay.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from redirector.clicks.recorder import ClickRecorder
from redirector.store.pg import PgStore
from redirector.store.sqlite import SqliteStore
from tests.support.click_helpers import make_click
from tests.support.polling import until
from tests.support.tcp_relay import TcpRelay


def fast_recorder(store: SqliteStore | PgStore) -> ClickRecorder:
    return ClickRecorder(
        store,
        queue_size=10_000,
        batch_size=7,
        flush_interval=0.02,
        registry=CollectorRegistry(),
        backoff_base=0.02,
        backoff_cap=0.2,
    )


# -- the relay -------------------------------------------------------------------------


@pytest.fixture
async def echo_server() -> AsyncIterator[tuple[asyncio.Server, list[int]]]:
    """A loopback echo server; the list counts connections it accepted."""
    accepted: list[int] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server, accepted
    server.close()
    await server.wait_closed()


async def _closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """True when the peer closed (EOF) or reset the connection; False if data came."""
    try:
        return await reader.read(100) == b""
    except ConnectionError:
        return True


async def _roundtrip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await reader.readexactly(len(payload))
    finally:
        writer.close()
        await writer.wait_closed()


async def test_relay_forwards_cuts_and_restores(
    echo_server: tuple[asyncio.Server, list[int]],
) -> None:
    server, accepted = echo_server
    target = server.sockets[0].getsockname()[:2]
    async with TcpRelay(target) as relay:
        assert await _roundtrip(relay.port, b"hello" * 1000) == b"hello" * 1000

        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
        assert relay.active == 1
        await relay.cut()
        # The open connection is torn down: EOF or a reset, never more data.
        assert await _closed_by_peer(reader)
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
        assert relay.active == 0

        # New connections while cut are closed without reaching the target.
        before = len(accepted)
        r2, w2 = await asyncio.open_connection("127.0.0.1", relay.port)
        assert await r2.read(100) == b""
        w2.close()
        await w2.wait_closed()
        assert len(accepted) == before

        relay.restore()
        assert await _roundtrip(relay.port, b"back") == b"back"
        assert len(accepted) == before + 1


async def test_relay_hold_mode_stalls_new_connections_until_restore(
    echo_server: tuple[asyncio.Server, list[int]],
) -> None:
    server, accepted = echo_server
    target = server.sockets[0].getsockname()[:2]
    async with TcpRelay(target) as relay:
        await relay.cut(hold=True)
        before = len(accepted)
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"anyone?")
        await writer.drain()
        await until(lambda: relay.accepted == 1, "relay accepted the held connection")
        assert len(accepted) == before  # held at the relay, never forwarded
        relay.restore()
        assert await _closed_by_peer(reader)  # the held connection is let go
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
        assert await _roundtrip(relay.port, b"ok") == b"ok"


async def test_relay_to_a_dead_target_closes_the_client(unused_tcp_port: int) -> None:
    async with TcpRelay(("127.0.0.1", unused_tcp_port)) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        assert await reader.read(100) == b""
        writer.close()
        await writer.wait_closed()


# -- PostgreSQL through the relay ------------------------------------------------------


def _via_relay(dsn: str, port: int) -> str:
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return parts._replace(netloc=netloc).geturl()


def _pg_address(dsn: str) -> tuple[str, int]:
    parts = urlsplit(dsn)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def _relayed_pg_store(dsn: str, relay: TcpRelay) -> PgStore:
    """A store of fresh tables reaching PostgreSQL through ``relay``, with short timeouts."""
    return PgStore(
        _via_relay(dsn, relay.port),
        table_prefix=f"t{uuid.uuid4().hex[:12]}_",
        connect_timeout=0.5,
        command_timeout=2.0,
    )


async def _pg_ids(dsn: str, table: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r[0] for r in await conn.fetch(f"SELECT id FROM {table}")]
    finally:
        await conn.close()


@pytest.mark.parametrize("hold", [False, True], ids=["refused", "black-holed"])
async def test_pg_outage_through_relay_loses_and_duplicates_nothing(
    pg_dsn: str, hold: bool
) -> None:
    async with TcpRelay(_pg_address(pg_dsn)) as relay:
        store = _relayed_pg_store(pg_dsn, relay)
        await store.open()
        recorder = fast_recorder(store)
        await recorder.start()
        try:
            first = [make_click(i) for i in range(20)]
            for click in first:
                recorder.record(click)
            await until(lambda: recorder.queued == 0 and recorder.state == "ok", "first flush")
            assert relay.accepted >= 1

            await relay.cut(hold=hold)
            second = [make_click(100 + i) for i in range(30)]
            for click in second:
                recorder.record(click)  # synchronous: returns at once, nothing awaited
            assert recorder.queued == len(second)
            await until(lambda: recorder.state == "down", "store marked down")
            assert recorder.queued == len(second)  # nothing can have been written

            relay.restore()
            await until(lambda: recorder.queued == 0, "queue drained after restore")
            assert recorder.state == "ok"
            assert recorder.dropped == 0

            ids = await _pg_ids(pg_dsn, store.table)
            expected = [c.id for c in first + second]
            assert sorted(ids) == sorted(expected)  # each exactly once
        finally:
            await recorder.stop(timeout=5)
            await store.drop_tables()
            await store.close()


async def test_pg_outage_at_startup_recovers_without_a_restart(pg_dsn: str) -> None:
    async with TcpRelay(_pg_address(pg_dsn)) as relay:
        await relay.cut()
        store = _relayed_pg_store(pg_dsn, relay)
        recorder = fast_recorder(store)
        await recorder.start()  # store never opened: the writer's first contact fails
        try:
            await until(lambda: recorder.state == "down", "down at start")
            clicks = [make_click(i) for i in range(10)]
            for click in clicks:
                recorder.record(click)
            relay.restore()
            await until(lambda: recorder.queued == 0, "queue drained")
            assert sorted(await _pg_ids(pg_dsn, store.table)) == sorted(c.id for c in clicks)
        finally:
            await recorder.stop(timeout=5)
            await store.drop_tables()
            await store.close()


# -- SQLite ------------------------------------------------------------------------------


def _sqlite_ids(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM clicks")]


async def test_sqlite_locked_by_another_process_then_released(tmp_path: Path) -> None:
    path = tmp_path / "data" / "clicks.sqlite3"
    store = SqliteStore(path, busy_timeout=0.05)
    await store.open()
    recorder = fast_recorder(store)
    await recorder.start()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        first = [make_click(i) for i in range(10)]
        for click in first:
            recorder.record(click)
        await until(lambda: recorder.queued == 0 and recorder.state == "ok", "first flush")

        other.execute("BEGIN IMMEDIATE")  # e.g. a backup or a long report holding the lock
        second = [make_click(100 + i) for i in range(25)]
        for click in second:
            recorder.record(click)
        await until(lambda: recorder.state == "down", "store marked down")
        assert recorder.queued == len(second)

        other.execute("ROLLBACK")
        await until(lambda: recorder.queued == 0, "queue drained after unlock")
        assert recorder.state == "ok"
        assert sorted(_sqlite_ids(path)) == sorted(c.id for c in first + second)
    finally:
        other.close()
        await recorder.stop(timeout=5)
        await store.close()


async def test_sqlite_unusable_data_dir_then_fixed(tmp_path: Path) -> None:
    # The data dir's place is taken by a file (a real failure even for root, who
    # ignores chmod): nothing can be written until it is fixed.
    data = tmp_path / "data"
    data.write_text("oops")
    store = SqliteStore(data / "clicks.sqlite3")
    recorder = fast_recorder(store)
    await recorder.start()
    try:
        clicks = [make_click(i) for i in range(15)]
        for click in clicks:
            recorder.record(click)
        await until(lambda: recorder.state == "down", "store marked down")
        assert recorder.queued == len(clicks)
        data.unlink()
        await until(lambda: recorder.queued == 0, "queue drained after fix")
        assert recorder.state == "ok"
        assert sorted(_sqlite_ids(data / "clicks.sqlite3")) == sorted(c.id for c in clicks)
    finally:
        await recorder.stop(timeout=5)
        await store.close()


async def test_idle_recorder_notices_pg_going_down_and_coming_back(pg_dsn: str) -> None:
    async with TcpRelay(_pg_address(pg_dsn)) as relay:
        store = _relayed_pg_store(pg_dsn, relay)
        await store.open()
        recorder = ClickRecorder(
            store,
            registry=CollectorRegistry(),
            backoff_base=0.02,
            backoff_cap=0.2,
            probe_interval=0.05,
        )
        await recorder.start()
        try:
            await until(lambda: recorder.state == "ok", "ok at start")
            await relay.cut()
            # No clicks at all: only the idle reachability check can notice.
            await until(lambda: recorder.state == "down", "down while idle")
            relay.restore()
            await until(lambda: recorder.state == "ok", "ok again while idle")
            assert recorder.queued == 0 and recorder.dropped == 0
        finally:
            await recorder.stop(timeout=5)
            await store.drop_tables()
            await store.close()
