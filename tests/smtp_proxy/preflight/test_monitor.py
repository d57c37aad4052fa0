"""PreflightMonitor: background refresh, TTL, verdict changes, gauge, keys, disabled mode."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from clickrelay.config import Config
from redirector.tokens import Keyring, new_key_line, parse_keys
from smtp_proxy.preflight import PreflightMonitor
from tests.support.config import preflight_config
from tests.support.dns_server import DnsServer
from tests.support.preflight_fixtures import healthz_app, serve_app

HOST = "links.example.com"
TARGET = "track.example.net"
BASE = f"http://{HOST}"


async def eventually(condition: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``condition`` until true; fail after ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


def gauge(registry: CollectorRegistry, domain: str = HOST) -> float | None:
    return registry.get_sample_value("clickrelay_tracking_domain_verified", {"domain": domain})


def dns_config(dns: DnsServer, **kwargs: object) -> Config:
    return preflight_config(
        BASE,
        nameserver=dns.nameserver,
        cname_target=TARGET,
        http_probe=False,
        **kwargs,  # type: ignore[arg-type]
    )


async def test_pending_until_first_verdict_and_start_does_not_block(
    dns_server: DnsServer, keyring: Keyring
) -> None:
    dns_server.add(HOST, "CNAME", TARGET)
    dns_server.set_mode(None, "drop")  # the first check cannot finish for a while
    monitor = PreflightMonitor(dns_config(dns_server, timeout=30.0), keyring)
    await monitor.start()
    try:
        assert monitor.may_rewrite(BASE) is False
        assert monitor.state(BASE) == "pending"
        assert gauge(monitor.registry) == 0
        await eventually(lambda: dns_server.query_count(HOST, "CNAME") >= 1)
        assert monitor.state(BASE) == "pending"
    finally:
        await monitor.stop()


async def test_verified_then_short_ttl_change_seen_after_refresh(
    dns_server: DnsServer, keyring: Keyring, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clickrelay.preflight")
    dns_server.add(HOST, "CNAME", TARGET, ttl=1)
    registry = CollectorRegistry()
    monitor = PreflightMonitor(dns_config(dns_server), keyring, registry=registry, min_ttl=0.2)
    await monitor.start()
    try:
        async with asyncio.timeout(10):
            await monitor.wait_ready()
        assert monitor.state(BASE) == "verified"
        assert monitor.may_rewrite(BASE + "/")  # trailing slash is the same base URL
        assert gauge(registry) == 1
        report = monitor.report(BASE)
        assert report is not None and report.ttl == 1.0  # the record's TTL, within bounds

        dns_server.replace(HOST, "CNAME", "old.example.org", ttl=1)
        await eventually(lambda: monitor.state(BASE) == "wrong-target")
        assert monitor.may_rewrite(BASE) is False
        assert gauge(registry) == 0

        # Further refreshes with the same verdict do not log again.
        before = dns_server.query_count(HOST, "CNAME")
        await eventually(lambda: dns_server.query_count(HOST, "CNAME") >= before + 2)
    finally:
        await monitor.stop()
    changes = [r.getMessage() for r in caplog.records if "preflight-verdict" in r.getMessage()]
    assert len(changes) == 2, changes
    assert "verdict=ok previous=pending" in changes[0]
    assert "verdict=wrong-target previous=ok" in changes[1]
    assert "fix=" in changes[1] and "old.example.org" in changes[1]


async def test_dns_outage_flips_to_not_verified_and_back(
    dns_server: DnsServer, keyring: Keyring
) -> None:
    dns_server.add(HOST, "CNAME", TARGET, ttl=1)
    monitor = PreflightMonitor(dns_config(dns_server), keyring, min_ttl=0.2)
    await monitor.start()
    try:
        await eventually(lambda: monitor.may_rewrite(BASE))
        dns_server.set_mode(HOST, "servfail")
        await eventually(lambda: monitor.state(BASE) == "dns-servfail")
        assert not monitor.may_rewrite(BASE)
        dns_server.set_mode(HOST, None)
        await eventually(lambda: monitor.may_rewrite(BASE))
    finally:
        await monitor.stop()


async def test_expired_verdict_is_not_trusted(dns_server: DnsServer, keyring: Keyring) -> None:
    now = [1000.0]
    dns_server.add(HOST, "CNAME", TARGET, ttl=3600)
    monitor = PreflightMonitor(
        dns_config(dns_server, interval=300.0), keyring, clock=lambda: now[0]
    )
    report = (await monitor.refresh())[0]
    assert report.ttl == 300.0  # bounded by interval
    assert monitor.may_rewrite(BASE)
    now[0] += 299.0
    assert monitor.may_rewrite(BASE)
    now[0] += 2.0  # past the deadline, no refresh ran (not started)
    assert not monitor.may_rewrite(BASE)
    assert monitor.state(BASE) == "pending"


async def test_unknown_base_url_is_never_rewritten(dns_server: DnsServer, keyring: Keyring) -> None:
    dns_server.add(HOST, "CNAME", TARGET)
    monitor = PreflightMonitor(dns_config(dns_server), keyring)
    await monitor.refresh()
    assert monitor.may_rewrite(BASE)
    assert not monitor.may_rewrite("http://elsewhere.example.org")
    assert monitor.state("http://elsewhere.example.org") == "pending"


async def test_disabled_always_rewrites(dns_server: DnsServer, keyring: Keyring) -> None:
    monitor = PreflightMonitor(dns_config(dns_server, enabled=False), keyring)
    await monitor.start()
    await monitor.wait_ready()
    assert monitor.may_rewrite(BASE)
    assert monitor.state(BASE) == "disabled"
    await monitor.stop()
    assert dns_server.queries.total() == 0


async def test_every_sender_domain_is_monitored(dns_server: DnsServer, keyring: Keyring) -> None:
    dns_server.add(HOST, "CNAME", TARGET)
    dns_server.add("links.other.example", "CNAME", "wrong.example.org")
    config = preflight_config(
        BASE,
        nameserver=dns_server.nameserver,
        cname_target=TARGET,
        http_probe=False,
        sender_domains={"other.example": "http://links.other.example/"},
    )
    registry = CollectorRegistry()
    monitor = PreflightMonitor(config, keyring, registry=registry)
    await monitor.start()
    try:
        async with asyncio.timeout(10):
            await monitor.wait_ready()
    finally:
        await monitor.stop()
    assert monitor.may_rewrite(BASE)
    assert not monitor.may_rewrite("http://links.other.example")
    assert monitor.state("http://links.other.example/") == "wrong-target"
    assert gauge(registry, "links.other.example") == 0
    assert gauge(registry, HOST) == 1


async def test_new_minting_key_must_be_proven_again(dns_server: DnsServer) -> None:
    line = new_key_line()
    keyring = parse_keys(line)
    dns_server.add(HOST, "CNAME", TARGET)
    dns_server.add(TARGET, "A", "127.0.0.1")
    async with serve_app(healthz_app([keyring.current_key_id])) as port:
        base = f"http://{HOST}:{port}"
        config = preflight_config(base, nameserver=dns_server.nameserver, cname_target=TARGET)
        monitor = PreflightMonitor(config, keyring)
        await monitor.start()
        try:
            await eventually(lambda: monitor.may_rewrite(base))
            # Same minting key (e.g. a decode-only key added): stays verified.
            monitor.update_keyring(parse_keys(f"{line}\n{new_key_line()}"))
            assert monitor.may_rewrite(base)
            # A new minting key the redirector does not hold: stop at once, then key-mismatch.
            monitor.update_keyring(parse_keys(new_key_line()))
            assert not monitor.may_rewrite(base)
            await eventually(lambda: monitor.state(base) == "key-mismatch")
        finally:
            await monitor.stop()


async def test_a_failing_check_keeps_the_loop_alive_and_fails_closed(
    keyring: Keyring, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="clickrelay.preflight")
    # The loader refuses this nameserver; settings built in code reach the monitor as is.
    config = preflight_config(BASE, nameserver="127.0.0.1", cname_target=TARGET, http_probe=False)
    broken = dataclasses.replace(config.preflight, nameservers=("[::1",))
    config = dataclasses.replace(config, preflight=broken)
    monitor = PreflightMonitor(config, keyring, min_ttl=0.05)
    await monitor.start()
    try:
        await eventually(
            lambda: sum("preflight-error" in r.getMessage() for r in caplog.records) >= 2
        )
        assert not monitor.may_rewrite(BASE)
        assert monitor.state(BASE) == "pending"
    finally:
        await monitor.stop()
    assert "nameservers" in caplog.records[0].getMessage()


async def test_stop_returns_when_a_cancellation_is_swallowed(
    dns_server: DnsServer, keyring: Keyring
) -> None:
    """dnspython waits with asyncio.wait_for, which on Python 3.11 drops a cancel that
    arrives together with the reply; stop() must still end the refresh loop (CI once
    hung here for 300 s)."""
    dns_server.add(HOST, "CNAME", TARGET, ttl=1)
    loop = asyncio.get_running_loop()
    entered = asyncio.Event()
    replies: list[asyncio.Future[None]] = []

    class ReplyRacesCancel(PreflightMonitor):
        async def _check(self, domain):  # type: ignore[no-untyped-def]
            reply: asyncio.Future[None] = loop.create_future()
            replies.append(reply)
            entered.set()
            await asyncio.wait_for(reply, 30)  # the way dnspython waits for a datagram
            return await super()._check(domain)

    monitor = ReplyRacesCancel(dns_config(dns_server), keyring, min_ttl=0.2)
    await monitor.start()
    await entered.wait()
    loops = list(monitor._tasks)
    replies[0].set_result(None)  # the reply lands, and in the same turn stop() cancels
    async with asyncio.timeout(10):
        await monitor.stop()
    assert loops and all(task.done() for task in loops)
