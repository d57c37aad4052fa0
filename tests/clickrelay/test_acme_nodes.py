"""Two ``clickrelay redirector`` processes sharing one PostgreSQL database, with Pebble.

Node B's DNS view (its own test DNS server) does not know the tracking host yet, so only
node A orders; Pebble validates the HTTP-01 challenge on node B's port, and B answers it
from the database. Afterwards both processes serve the same certificate.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import asyncpg
import pytest

from tests.support.dns_server import DnsServer
from tests.support.net import free_ports
from tests.support.pebble import Pebble, require_pebble
from tests.support.polling import poll
from tests.support.processes import ClickrelayProcess
from tests.support.tls_certs import handshake

HOST = "links.example.test"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def prefix(pg_dsn: str) -> Iterator[str]:
    name = f"t{uuid.uuid4().hex[:12]}_"
    yield name

    async def drop() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            for table in ("tls_items", "clicks", "schema_version"):
                await conn.execute(f"DROP TABLE IF EXISTS {name}{table}")
        finally:
            await conn.close()

    asyncio.run(drop())


def node_config(
    path: Path, ports: Sequence[int], *, dns: DnsServer, store: str, pebble: Pebble
) -> Path:
    """The config of one node: ``ports`` are its plain, HTTPS and admin ports."""
    http, https, admin = ports
    path.mkdir(parents=True, exist_ok=True)
    config = path / "clickrelay.toml"
    config.write_text(
        f'[tracking]\nbase_url = "https://{HOST}:{https}"\nkey_file = "{path / "keys"}"\n'
        f'[preflight]\nnameservers = ["{dns.nameserver}"]\ntimeout = 2.0\n'
        f'[redirector]\nlisten = "127.0.0.1:{http}"\nhttps_listen = "127.0.0.1:{https}"\n'
        f'admin_listen = "127.0.0.1:{admin}"\nstore = "{store}"\n'
        f'[acme]\nenabled = true\ndirectory = "{pebble.directory}"\n'
        f'ca_file = "{pebble.ca_file}"\n',
        encoding="utf-8",
    )
    return config


def fingerprint(port: int) -> str:
    return hashlib.sha256(handshake(port, HOST)).hexdigest()


def test_node_b_answers_node_as_challenge_and_both_serve_the_certificate(
    tmp_path: Path, pg_dsn: str, prefix: str
) -> None:
    require_pebble()
    ports = free_ports(6)
    store = f"{pg_dsn}?table_prefix={prefix}"
    with DnsServer() as dns_a, DnsServer() as dns_b:
        dns_a.add(HOST, "A", "127.0.0.1")
        # Pebble resolves with A's view and validates on node B's plain port.
        with Pebble(tmp_path / "pebble", http_port=ports[3], dns=dns_a) as pebble:
            config_a = node_config(
                tmp_path / "a", ports[0:3], dns=dns_a, store=store, pebble=pebble
            )
            config_b = node_config(
                tmp_path / "b", ports[3:6], dns=dns_b, store=store, pebble=pebble
            )
            # B listens before A orders (Pebble will knock on B's door).
            with ClickrelayProcess(["redirector", "-c", str(config_b)], cwd=tmp_path / "b") as b:
                b.wait_ready()
                a = ClickrelayProcess(["redirector", "-c", str(config_a)], cwd=tmp_path / "a")
                try:
                    a.wait_ready()
                    a.wait_for_log(f"event=acme-order-issued host={HOST}", timeout=60)
                    b.wait_for_log(f"event=tls-certificate-installed host={HOST}", timeout=60)
                    issued = fingerprint(ports[1])
                    assert poll(
                        lambda: fingerprint(ports[4]) == issued or None,
                        timeout=30,
                        interval=0.2,
                        failure=lambda: "node B serves another certificate",
                    )
                    assert "event=acme-order-start" not in b.stderr()  # B never ordered
                    assert f":{ports[3]}/.well-known/acme-challenge/" in pebble.log()
                    assert a.stop() == 0
                finally:
                    a.close()
                assert b.stop() == 0
