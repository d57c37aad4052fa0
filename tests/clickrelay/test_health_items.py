"""The product layer's health-strip lines: preflight verdicts from a real monitor asking
the test DNS server."""

from __future__ import annotations

from clickrelay.health_items import preflight_provider, standalone_preflight_item
from redirector.tokens import Keyring
from smtp_proxy.preflight import PreflightMonitor
from tests.support.config import preflight_config
from tests.support.dns_server import DnsServer
from tests.support.polling import until

HOST = "links.example.com"
TARGET = "track.example.net"
BASE = f"http://{HOST}"


async def test_preflight_lines_pending_then_red_with_the_fix_then_green(
    dns_server: DnsServer, keyring: Keyring
) -> None:
    config = preflight_config(
        BASE, nameserver=dns_server.nameserver, cname_target=TARGET, http_probe=False
    )
    monitor = PreflightMonitor(config, keyring, min_ttl=0.2)
    provider = preflight_provider(monitor, config)
    (item,) = provider()
    assert (item.name, item.level, item.state) == (BASE, "warn", "pending")
    await monitor.start()
    try:
        await until(lambda: provider()[0].state != "pending", within=10)
        (item,) = provider()
        assert item.level == "bad" and item.needs_action
        assert item.fix and TARGET in item.fix  # the CNAME to add
        dns_server.add(HOST, "CNAME", TARGET, ttl=1)
        monitor.refresh_soon()
        await until(lambda: provider()[0].state == "verified", within=10)
        assert provider()[0].level == "ok"
    finally:
        await monitor.stop()


def test_standalone_redirector_says_it_does_not_check(
    dns_server: DnsServer, keyring: Keyring
) -> None:
    config = preflight_config(BASE, nameserver=dns_server.nameserver)
    (item,) = standalone_preflight_item(config)()
    assert item.level == "info" and not item.needs_action and item.name == BASE
