"""ACME against Pebble (Let's Encrypt's test CA) end to end, in process: the redirector
orders a certificate per tracking host over HTTP-01 on its plain listener, installs it in
the running HTTPS listener, renews it, backs off when the CA fails it — all on loopback
with the test DNS server pointing the tracking hosts at 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry, generate_latest

from clickrelay.config import load_config_text
from redirector.config import AcmeConfig, RedirectorConfig
from redirector.service import RedirectorService
from redirector.tls.manager import Timing, TlsSettings
from redirector.tokens import Keyring
from smtp_proxy.preflight.http_probe import PinnedResolver
from smtp_proxy.preflight.tls_hosts import dns_gate
from tests.support.dns_server import DnsServer
from tests.support.netutil import free_port
from tests.support.pebble import Pebble, require_pebble
from tests.support.tls_certs import handshake

HOST_A = "links.example.test"
HOST_B = "links.shop.test"
FAST = Timing(backoff_base=1.0, backoff_max=4.0, dns_retry=0.2, poll=0.5)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer() as server:
        for host in (HOST_A, HOST_B):
            server.add(host, "A", "127.0.0.1", ttl=5)
        yield server


@pytest.fixture
def http_port() -> int:
    return free_port()


@pytest.fixture
def pebble(tmp_path: Path, dns: DnsServer, http_port: int) -> Iterator[Pebble]:
    require_pebble()
    with Pebble(tmp_path / "pebble", http_port=http_port, dns=dns) as server:
        yield server


def redirector_config(tmp_path: Path, http_port: int, **kwargs: Any) -> RedirectorConfig:
    return RedirectorConfig(
        listen=f"127.0.0.1:{http_port}",
        admin_listen="127.0.0.1:0",
        https_listen="127.0.0.1:0",
        store=kwargs.pop("store", f"sqlite:{tmp_path / 'clicks.sqlite3'}"),
        flush_interval=0.02,
        **kwargs,
    )


def acme_for(pebble: Pebble, **kwargs: Any) -> AcmeConfig:
    return AcmeConfig(enabled=True, directory=pebble.directory, ca_file=pebble.ca_file, **kwargs)


async def dns_ok(host: str) -> str | None:
    return None


@asynccontextmanager
async def running(
    config: RedirectorConfig,
    keyring: Keyring,
    acme: AcmeConfig,
    data_dir: Path,
    *,
    hosts: tuple[str, ...] = (HOST_A, HOST_B),
    gate: Callable[[str], Awaitable[str | None]] = dns_ok,
    registry: CollectorRegistry | None = None,
    timing: Timing = FAST,
) -> AsyncIterator[RedirectorService]:
    service = RedirectorService(
        config,
        keyring,
        registry=registry or CollectorRegistry(),
        tls=TlsSettings(hosts=hosts, acme=acme, data_dir=data_dir, dns_gate=gate, timing=timing),
    )
    await service.start()
    try:
        yield service
    finally:
        await service.stop(5)


async def wait_for(check: Callable[[], Any], what: str, limit: float = 60) -> Any:
    """Poll ``check`` (every 50 ms) until it returns something truthy."""
    try:
        async with asyncio.timeout(limit):
            while True:
                result = check()
                if result:
                    return result
                await asyncio.sleep(0.05)  # polling a condition with a deadline
    except TimeoutError:
        raise AssertionError(what) from None


def client_context(root_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=root_pem.decode())


async def served(port: int, host: str, root_pem: bytes) -> x509.Certificate:
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(root_pem), server_hostname=host
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der)
    finally:
        writer.close()
        await writer.wait_closed()


async def https_get(port: int, host: str, path: str, root_pem: bytes) -> tuple[int, str | None]:
    connector = aiohttp.TCPConnector(resolver=PinnedResolver(["127.0.0.1"]), force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(
            f"https://{host}:{port}{path}", allow_redirects=False, ssl=client_context(root_pem)
        ) as resp,
    ):
        await resp.read()
        return resp.status, resp.headers.get("Location")


def san(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return ext.value.get_values_for_type(x509.DNSName)


async def test_certificates_are_issued_installed_and_serve_tracked_links(
    tmp_path: Path, pebble: Pebble, http_port: int, keyring: Keyring
) -> None:
    config = redirector_config(tmp_path, http_port)
    registry = CollectorRegistry()
    async with running(
        config, keyring, acme_for(pebble), tmp_path / "data", registry=registry
    ) as service:
        certs = service.certificates
        assert certs is not None
        await wait_for(
            lambda: all(certs.served(h) for h in (HOST_A, HOST_B)),
            f"no certificates issued:\n{pebble.log()}",
        )
        root = pebble.root_pem()
        port = service.https_port
        assert port is not None
        assert san(await served(port, HOST_A, root)) == [HOST_A]
        assert san(await served(port, HOST_B, root)) == [HOST_B]
        token = keyring.seal("https://shop.example.com/p?x=1", queue_id="Q9", link_index=0)
        assert await https_get(port, HOST_A, f"/c/{token}", root) == (
            302,
            "https://shop.example.com/p?x=1",
        )
        with pytest.raises(ssl.SSLError):
            await asyncio.to_thread(handshake, port, "unknown.example.test")
        status = certs.status(HOST_A)
        assert status.managed_by == "acme"
        assert status.state == "valid"
        assert status.issuer and "Pebble" in status.issuer
        assert status.last_attempt is not None and status.last_error is None
        metrics = generate_latest(registry).decode()
        assert f'clickrelay_acme_orders_total{{host="{HOST_A}",outcome="issued"}} 1.0' in metrics
        assert f'clickrelay_tls_certificate_expiry_seconds{{host="{HOST_A}"}}' in metrics
    # The account key and certificates were kept: a restart serves them without ordering.
    data_file = tmp_path / "data" / "tls.sqlite3"
    assert data_file.stat().st_mode & 0o777 == 0o600
    registry = CollectorRegistry()
    async with running(
        config, keyring, acme_for(pebble), tmp_path / "data", registry=registry
    ) as service:
        certs = service.certificates
        assert certs is not None
        assert certs.served(HOST_A) is not None
        metrics = generate_latest(registry).decode()
        assert f'clickrelay_acme_orders_total{{host="{HOST_A}",outcome="issued"}} 0.0' in metrics


async def test_only_hosts_whose_dns_check_passed_are_ordered(
    tmp_path: Path, dns: DnsServer, pebble: Pebble, http_port: int, keyring: Keyring
) -> None:
    dns.remove(HOST_B)
    config = load_config_text(
        f'[tracking]\nbase_url = "https://{HOST_A}"\n'
        f'[tracking.sender_domains]\n"shop.test" = "https://{HOST_B}"\n'
        f'[preflight]\nnameservers = ["{dns.nameserver}"]\ntimeout = 2.0\n'
    )
    registry = CollectorRegistry()
    async with running(
        redirector_config(tmp_path, http_port),
        keyring,
        acme_for(pebble),
        tmp_path / "data",
        gate=dns_gate(config),
        registry=registry,
    ) as service:
        certs = service.certificates
        assert certs is not None
        await wait_for(lambda: certs.served(HOST_A), f"A not issued:\n{pebble.log()}")
        status = await wait_for(
            lambda: (s := certs.status(HOST_B)).detail and s, "B has no status detail"
        )
        assert status.state == "pending"
        assert status.detail.startswith("waiting for DNS before ordering: nxdomain")
        # An SNI name that is not a tracking host never leads to an order.
        with pytest.raises(ssl.SSLError):
            await asyncio.to_thread(handshake, service.https_port or 0, "random.example.test")
        metrics = generate_latest(registry).decode()
        assert f'clickrelay_acme_orders_total{{host="{HOST_B}",outcome="failed"}} 0.0' in metrics
        assert f'clickrelay_acme_orders_total{{host="{HOST_B}",outcome="issued"}} 0.0' in metrics
        assert "random.example.test" not in metrics
        assert "random.example.test" not in pebble.log()
        # The DNS record appears: the host is ordered without a restart.
        dns.add(HOST_B, "A", "127.0.0.1", ttl=5)
        await wait_for(lambda: certs.served(HOST_B), f"B not issued:\n{pebble.log()}")
