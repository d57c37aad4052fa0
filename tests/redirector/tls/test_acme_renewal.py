"""Renewal and faults against Pebble: short-lived certificates are renewed in the
background while clicks keep flowing over HTTPS; with Pebble gone the old certificate
keeps serving, back-off shows in the metrics and preflight says ``cert-expiring``; a
challenge the CA cannot reach is ``cert-failed`` with the CA's words and links stay
untracked."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from clickrelay.config import load_config_text
from redirector.tls.manager import CertManager
from redirector.tls.status import HostStatus
from redirector.tokens import Keyring
from smtp_proxy.preflight import PreflightMonitor, Verdict, check_domain
from smtp_proxy.preflight.http_probe import PinnedResolver
from smtp_proxy.preflight.tls_check import TlsStatusSource
from tests.support.acme_helpers import HOST_A, acme_node, wait_for
from tests.support.dns_server import DnsServer
from tests.support.net import free_port, refusing_port
from tests.support.pebble import Pebble, require_pebble
from tests.support.tls_certs import handshake

pytestmark = pytest.mark.timeout(180)


def preflight_for(dns: DnsServer, https_port: int, root: Path) -> tuple[str, object]:
    base_url = f"https://{HOST_A}:{https_port}"
    config = load_config_text(
        f'[tracking]\nbase_url = "{base_url}"\n'
        f'[preflight]\nnameservers = ["{dns.nameserver}"]\ntimeout = 3.0\nca_file = "{root}"\n'
    )
    return base_url, config


def status_of(certs: CertManager) -> TlsStatusSource:
    async def source(host: str) -> HostStatus:
        return certs.status(host)

    return source


async def click_load(
    port: int, url_path: str, root: bytes, stop: asyncio.Event
) -> tuple[int, int, int]:
    """HTTPS clicks, a new connection (and handshake) each, until ``stop``:
    (302s, failed handshakes, other answers)."""
    context = ssl.create_default_context(cadata=root.decode())
    ok = failed_handshakes = other = 0
    while not stop.is_set():
        connector = aiohttp.TCPConnector(resolver=PinnedResolver(["127.0.0.1"]), force_close=True)
        try:
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.get(
                    f"https://{HOST_A}:{port}{url_path}", allow_redirects=False, ssl=context
                ) as resp,
            ):
                if resp.status == 302:
                    ok += 1
                else:
                    other += 1
        except (aiohttp.ClientSSLError, aiohttp.ClientConnectorError, ssl.SSLError):
            failed_handshakes += 1
    return ok, failed_handshakes, other


async def test_short_lived_certificates_are_renewed_while_clicks_flow(
    tmp_path: Path, dns: DnsServer, http_port: int, keyring: Keyring
) -> None:
    require_pebble()
    with Pebble(tmp_path / "pebble", http_port=http_port, dns=dns, validity=12) as pebble:
        registry = CollectorRegistry()
        async with acme_node(
            tmp_path, http_port, keyring, pebble, hosts=(HOST_A,), registry=registry
        ) as (service, certs):
            first = await wait_for(lambda: certs.served(HOST_A), f"not issued:\n{pebble.log()}")
            root = pebble.root_pem()
            token = keyring.seal(
                "https://shop.example.com/x", host=HOST_A, queue_id="Q1", link_index=0
            )
            stop = asyncio.Event()
            load = asyncio.create_task(
                click_load(service.https_port or 0, f"/c/{token}", root, stop)
            )
            try:
                second = await wait_for(
                    lambda: (
                        (b := certs.served(HOST_A)) and b.fingerprint != first.fingerprint and b
                    ),
                    f"not renewed:\n{pebble.log()}",
                )
                await wait_for(
                    lambda: (b := certs.served(HOST_A)) and b.fingerprint != second.fingerprint,
                    f"not renewed twice:\n{pebble.log()}",
                )
            finally:
                stop.set()
                ok, failed_handshakes, other = await load
            assert ok > 0
            assert (failed_handshakes, other) == (0, 0)
            metrics = generate_latest(registry).decode()
            issued = f'clickrelay_acme_orders_total{{host="{HOST_A}",outcome="issued"}}'
            assert float(metrics.split(issued)[1].split()[0]) >= 3


async def test_ca_down_keeps_the_old_certificate_and_says_cert_expiring(
    tmp_path: Path, dns: DnsServer, http_port: int, keyring: Keyring
) -> None:
    require_pebble()
    pebble = Pebble(tmp_path / "pebble", http_port=http_port, dns=dns, validity=30)
    pebble.start()
    registry = CollectorRegistry()
    try:
        async with acme_node(
            tmp_path, http_port, keyring, pebble, hosts=(HOST_A,), registry=registry
        ) as (service, certs):
            issued = await wait_for(lambda: certs.served(HOST_A), f"not issued:\n{pebble.log()}")
            root_file = tmp_path / "root.pem"
            root_file.write_bytes(pebble.root_pem())
            pebble.stop()
            # Renewal starts in the certificate's last third and fails: back-off.
            status = await wait_for(
                lambda: (s := certs.status(HOST_A)).failures >= 2 and s, "no failed renewals"
            )
            assert "cannot reach the ACME server" in (status.last_error or "")
            assert status.next_attempt is not None
            metrics = generate_latest(registry).decode()
            assert f'clickrelay_acme_orders_total{{host="{HOST_A}",outcome="failed"}}' in metrics
            backoff = metrics.split(f'clickrelay_acme_backoff_seconds{{host="{HOST_A}"}} ')[1]
            assert float(backoff.split()[0]) > 0
            # The old certificate is still the one served.
            served = await asyncio.to_thread(handshake, service.https_port or 0, HOST_A)
            assert hashlib.sha256(served).hexdigest() == issued.fingerprint
            base_url, config = preflight_for(dns, service.https_port or 0, root_file)
            report = await check_domain(
                base_url,
                config,  # type: ignore[arg-type]
                keyring,
                tls_status=status_of(certs),
            )
            assert report.verdict is Verdict.CERT_EXPIRING, report.detail
            assert "cannot reach the ACME server" in report.detail
            assert not report.may_track  # a 30-second certificate is inside the last week
    finally:
        pebble.stop()


async def test_unreachable_challenge_is_cert_failed_with_the_cas_words(
    tmp_path: Path, dns: DnsServer, keyring: Keyring
) -> None:
    require_pebble()
    http_port = free_port()
    with (
        refusing_port() as elsewhere,
        Pebble(tmp_path / "pebble", http_port=elsewhere, dns=dns) as pebble,
    ):
        async with acme_node(tmp_path, http_port, keyring, pebble, hosts=(HOST_A,)) as (
            service,
            certs,
        ):
            status = await wait_for(
                lambda: (s := certs.status(HOST_A)).state == "failed" and s,
                f"order did not fail:\n{pebble.log()}",
            )
            assert status.last_error is not None
            assert status.last_error.startswith("urn:ietf:params:acme:error:connection: ")
            assert str(elsewhere) in status.last_error
            root_file = tmp_path / "root.pem"
            root_file.write_bytes(pebble.root_pem())
            base_url, config = preflight_for(dns, service.https_port or 0, root_file)

            monitor = PreflightMonitor(config, keyring, tls_status=status_of(certs))  # type: ignore[arg-type]
            (report,) = await monitor.refresh()
            assert report.verdict is Verdict.CERT_FAILED
            assert status.last_error in report.detail
            assert report.fix is not None and "acme-challenge" in report.fix
            assert not monitor.may_rewrite(base_url)  # links stay untracked
            assert monitor.state(base_url) == "cert-failed"
