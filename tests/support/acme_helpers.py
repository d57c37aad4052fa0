"""Shared pieces of the ACME tests (tests/redirector/tls, against Pebble): the tracking
hosts and their DNS, fast timings, a redirector config and service with ACME, and a polling
helper."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from redirector.config import AcmeConfig, RedirectorConfig
from redirector.service import RedirectorService
from redirector.tls.manager import CertManager
from redirector.tls.settings import Timing, TlsSettings
from redirector.tokens import Keyring
from tests.support.dns_server import DnsServer
from tests.support.pebble import Pebble

HOST_A = "links.example.test"
HOST_B = "links.shop.test"
FAST = Timing(backoff_base=1.0, backoff_max=4.0, dns_retry=0.2, poll=0.5, poll_missing=0.5)


@contextmanager
def tracking_dns() -> Iterator[DnsServer]:
    """The test DNS server, with both tracking hosts at 127.0.0.1."""
    with DnsServer() as server:
        for host in (HOST_A, HOST_B):
            server.add(host, "A", "127.0.0.1", ttl=5)
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


@asynccontextmanager
async def acme_node(
    tmp_path: Path,
    http_port: int,
    keyring: Keyring,
    pebble: Pebble,
    *,
    data_dir: Path | None = None,
    store: str | None = None,
    hosts: tuple[str, ...] = (HOST_A, HOST_B),
    gate: Callable[[str], Awaitable[str | None]] = dns_ok,
    registry: CollectorRegistry | None = None,
) -> AsyncIterator[tuple[RedirectorService, CertManager]]:
    """A running redirector (plain HTTP on ``http_port``) whose certificates come from
    ``pebble``: the service and its certificate manager. ``data_dir`` defaults to
    ``tmp_path / "data"``; ``store`` to SQLite under ``tmp_path``."""
    config = redirector_config(tmp_path, http_port, **({"store": store} if store else {}))
    async with running(
        config,
        keyring,
        acme_for(pebble),
        data_dir or tmp_path / "data",
        hosts=hosts,
        gate=gate,
        registry=registry,
    ) as service:
        certs = service.certificates
        assert certs is not None
        yield service, certs


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
