"""Fixtures of the ACME tests: the test DNS server pointing both tracking hosts at
127.0.0.1, the redirector's plain port (known before Pebble starts), and Pebble."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.acme_helpers import tracking_dns
from tests.support.dns_server import DnsServer
from tests.support.net import free_port
from tests.support.pebble import Pebble, require_pebble


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with tracking_dns() as server:
        yield server


@pytest.fixture
def http_port() -> int:
    return free_port()


@pytest.fixture
def pebble(tmp_path: Path, dns: DnsServer, http_port: int) -> Iterator[Pebble]:
    require_pebble()
    with Pebble(tmp_path / "pebble", http_port=http_port, dns=dns) as server:
        yield server
