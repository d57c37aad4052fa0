"""Several redirector nodes on one PostgreSQL database (real PostgreSQL, real Pebble):
node A orders, Pebble validates the HTTP-01 challenge against node B (which finds A's
answer in the database), and afterwards both nodes serve the same certificate. The order
lock lets one node at a time order a host; the SQLite storage is created 0600."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from redirector.tls.storage import CHALLENGE, PgTlsStorage, SqliteTlsStorage
from redirector.tokens import Keyring
from tests.support.acme_helpers import HOST_A, acme_node, wait_for
from tests.support.dns_server import DnsServer
from tests.support.net import free_port
from tests.support.pebble import Pebble
from tests.support.tls_certs import handshake

pytestmark = pytest.mark.timeout(120)


@asynccontextmanager
async def pg_prefix(pg_dsn: str) -> AsyncIterator[str]:
    """A table prefix of its own for this test; its tables are dropped afterwards."""
    prefix = f"t{uuid.uuid4().hex[:12]}_"
    try:
        yield prefix
    finally:
        conn = await asyncpg.connect(pg_dsn)
        try:
            for table in ("tls_items", "clicks", "schema_version"):
                await conn.execute(f"DROP TABLE IF EXISTS {prefix}{table}")
        finally:
            await conn.close()


async def never_ready(host: str) -> str | None:
    return "this node is told to wait (the test makes node A order)"


async def test_node_b_answers_the_challenge_node_a_started_and_both_serve_it(
    tmp_path: Path, pg_dsn: str, dns: DnsServer, keyring: Keyring
) -> None:
    port_a, port_b = free_port(), free_port()
    async with pg_prefix(pg_dsn) as prefix:
        store = f"{pg_dsn}?table_prefix={prefix}"
        # Pebble validates on node B's port only.
        with Pebble(tmp_path / "pebble", http_port=port_b, dns=dns) as pebble:
            async with AsyncExitStack() as stack:
                node_b, certs_b = await stack.enter_async_context(
                    acme_node(
                        tmp_path / "b",
                        port_b,
                        keyring,
                        pebble,
                        data_dir=tmp_path / "b",
                        store=store,
                        hosts=(HOST_A,),
                        gate=never_ready,
                    )
                )
                node_a, certs_a = await stack.enter_async_context(
                    acme_node(
                        tmp_path / "a",
                        port_a,
                        keyring,
                        pebble,
                        data_dir=tmp_path / "a",
                        store=store,
                        hosts=(HOST_A,),
                    )
                )
                issued = await wait_for(
                    lambda: certs_a.served(HOST_A), f"A got no certificate:\n{pebble.log()}"
                )
                # B never ordered (its gate said no) yet serves the same certificate.
                await wait_for(
                    lambda: (b := certs_b.served(HOST_A)) and b.fingerprint == issued.fingerprint,
                    "node B did not pick up node A's certificate",
                )
                assert certs_b.status(HOST_A).last_attempt is None
                assert certs_a.status(HOST_A).last_attempt is not None
                for node in (node_a, node_b):
                    der = await asyncio.to_thread(handshake, node.https_port or 0, HOST_A)
                    assert hashlib.sha256(der).hexdigest() == issued.fingerprint
                # The challenge was answered by B's listener (A's port is not Pebble's).
                assert f":{port_b}/.well-known/acme-challenge/" in pebble.log()
                # Challenge answers are removed once the order is done.
                conn = await asyncpg.connect(pg_dsn)
                try:
                    left = await conn.fetchval(
                        f"SELECT count(*) FROM {prefix}tls_items WHERE kind = $1", CHALLENGE
                    )
                finally:
                    await conn.close()
                assert left == 0


async def test_pg_order_lock_lets_one_node_order_a_host_at_a_time(pg_dsn: str) -> None:
    async with pg_prefix(pg_dsn) as prefix:
        one = PgTlsStorage(pg_dsn, table_prefix=prefix)
        two = PgTlsStorage(pg_dsn, table_prefix=prefix)
        try:
            await one.open()
            async with one.order_lock(HOST_A) as mine:
                assert mine
                async with two.order_lock(HOST_A) as theirs:
                    assert not theirs
                async with two.order_lock("links.other.test") as other_host:
                    assert other_host
            async with two.order_lock(HOST_A) as after:
                assert after
        finally:
            await one.close()
            await two.close()


async def test_sqlite_storage_is_private_and_leases_one_order_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "data" / "tls.sqlite3"
    one, two = SqliteTlsStorage(path), SqliteTlsStorage(path)
    await one.open()
    assert path.stat().st_mode & 0o777 == 0o600
    await one.put(CHALLENGE, "tok", b"answer")
    assert await two.get(CHALLENGE, "tok") == b"answer"
    async with one.order_lock(HOST_A) as mine:
        assert mine
        async with two.order_lock(HOST_A) as theirs:
            assert not theirs
    async with two.order_lock(HOST_A) as after:
        assert after
