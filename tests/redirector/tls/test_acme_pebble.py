"""ACME against Pebble (Let's Encrypt's test CA) end to end, in process: the redirector
orders a certificate per tracking host over HTTP-01 on its plain listener, installs it in
the running HTTPS listener and keeps it across restarts — all on loopback with the test DNS
server pointing the tracking hosts at 127.0.0.1 (renewal and faults: test_acme_renewal)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry, generate_latest

from clickrelay.config import load_config_text
from redirector.tokens import Keyring
from smtp_proxy.preflight.http_probe import PinnedResolver
from smtp_proxy.preflight.tls_hosts import dns_gate
from tests.support.acme_helpers import HOST_A, HOST_B, acme_node, wait_for
from tests.support.dns_server import DnsServer
from tests.support.pebble import Pebble
from tests.support.tls_certs import handshake

pytestmark = pytest.mark.timeout(120)


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
    registry = CollectorRegistry()
    async with acme_node(tmp_path, http_port, keyring, pebble, registry=registry) as (
        service,
        certs,
    ):
        await wait_for(
            lambda: all(certs.served(h) for h in (HOST_A, HOST_B)),
            f"no certificates issued:\n{pebble.log()}",
        )
        root = pebble.root_pem()
        port = service.https_port
        assert port is not None
        assert san(await served(port, HOST_A, root)) == [HOST_A]
        assert san(await served(port, HOST_B, root)) == [HOST_B]
        token = keyring.seal(
            "https://shop.example.com/p?x=1", host=HOST_A, queue_id="Q9", link_index=0
        )
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
    async with acme_node(tmp_path, http_port, keyring, pebble, registry=registry) as (_, certs):
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
    async with acme_node(
        tmp_path, http_port, keyring, pebble, gate=dns_gate(config), registry=registry
    ) as (service, certs):
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


async def test_hosts_ordering_at_once_register_the_account_once(
    tmp_path: Path, pebble: Pebble, http_port: int, keyring: Keyring
) -> None:
    # Each order used to register the new account key itself: two hosts, two concurrent
    # registrations of one key, which Pebble can fail ("Error saving account"), costing
    # one host a failed order and minutes of back-off.
    async with acme_node(tmp_path, http_port, keyring, pebble) as (_service, certs):
        await wait_for(
            lambda: all(certs.served(h) for h in (HOST_A, HOST_B)),
            f"no certificates issued:\n{pebble.log()}",
        )
        assert certs.status(HOST_A).last_error is None
        assert certs.status(HOST_B).last_error is None
    # Pebble logs each request; ACME's newAccount is its /sign-me-up.
    log = pebble.log_file.read_text(errors="replace")
    assert log.count("POST /sign-me-up") == 1, log[-4000:]
