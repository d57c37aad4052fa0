"""Preflight DNS step against a real DNS server on loopback (tests/support/dns_server.py)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redirector.tokens import Keyring
from smtp_proxy.preflight import Verdict, check_domain
from smtp_proxy.preflight.checks import bounded_ttl
from smtp_proxy.preflight.dns_check import check_dns, domain_skip_reason, make_resolver
from tests.support.config import preflight_config
from tests.support.dns_server import DnsServer

TARGET = "track.example.net"


async def dns_only(
    server: DnsServer, host: str, target: str = TARGET, *, limit: float = 2.0
) -> tuple[Verdict | None, str, list[str]]:
    resolver = await make_resolver([server.nameserver], limit)
    outcome = await check_dns(host, target, resolver, want_addresses=True)
    return outcome.verdict, outcome.detail, [r.dig() for r in outcome.evidence.records]


async def test_correct_cname(dns_server: DnsServer) -> None:
    dns_server.add("links.example.com", "CNAME", TARGET, ttl=300)
    dns_server.add(TARGET, "A", "127.0.0.1", ttl=60)
    verdict, _, records = await dns_only(dns_server, "links.example.com")
    assert verdict is None
    assert "links.example.com. 300 IN CNAME track.example.net." in records
    assert "track.example.net. 60 IN A 127.0.0.1" in records


async def test_cname_chain_reaching_target(dns_server: DnsServer) -> None:
    dns_server.add("links.example.com", "CNAME", "hop1.example.org")
    dns_server.add("hop1.example.org", "CNAME", "hop2.example.org")
    dns_server.add("hop2.example.org", "CNAME", TARGET)
    dns_server.add(TARGET, "CNAME", "lb.cloud.example")  # the target may itself be a CNAME
    dns_server.add("lb.cloud.example", "A", "127.0.0.1")
    verdict, _, records = await dns_only(dns_server, "links.example.com")
    assert verdict is None
    assert [r for r in records if " CNAME " in r][:3] == [
        "links.example.com. 300 IN CNAME hop1.example.org.",
        "hop1.example.org. 300 IN CNAME hop2.example.org.",
        "hop2.example.org. 300 IN CNAME track.example.net.",
    ]


async def test_chain_longer_than_eight_is_wrong_target(dns_server: DnsServer) -> None:
    names = ["links.example.com"] + [f"hop{i}.example.org" for i in range(10)]
    for a, b in itertools.pairwise(names):
        dns_server.add(a, "CNAME", b)
    dns_server.add(names[-1], "CNAME", TARGET)
    verdict, detail, _ = await dns_only(dns_server, "links.example.com")
    assert verdict is Verdict.WRONG_TARGET
    assert "longer than 8" in detail


async def test_wrong_target(dns_server: DnsServer) -> None:
    dns_server.add("links.example.com", "CNAME", "old.example.org")
    dns_server.add("old.example.org", "A", "127.0.0.1")
    verdict, detail, records = await dns_only(dns_server, "links.example.com")
    assert verdict is Verdict.WRONG_TARGET
    assert "old.example.org" in detail and "track.example.net" in detail
    assert records == ["links.example.com. 300 IN CNAME old.example.org."]


async def test_dangling_chain_is_wrong_target(dns_server: DnsServer) -> None:
    dns_server.add("links.example.com", "CNAME", "gone.example.org")
    verdict, detail, _ = await dns_only(dns_server, "links.example.com")
    assert verdict is Verdict.WRONG_TARGET
    assert "gone.example.org" in detail


async def test_nxdomain(dns_server: DnsServer) -> None:
    verdict, detail, records = await dns_only(dns_server, "links.example.com")
    assert verdict is Verdict.NXDOMAIN
    assert "NXDOMAIN" in detail
    assert records == []


async def test_a_record_only_is_no_cname_and_says_what_is_there(dns_server: DnsServer) -> None:
    dns_server.add("links.example.com", "A", "127.0.0.9", ttl=120)
    verdict, detail, records = await dns_only(dns_server, "links.example.com")
    assert verdict is Verdict.NO_CNAME
    assert "A 127.0.0.9" in detail
    assert records == ["links.example.com. 120 IN A 127.0.0.9"]


async def test_servfail(dns_server: DnsServer) -> None:
    dns_server.add("links.example.com", "CNAME", TARGET)
    dns_server.set_mode("links.example.com", "servfail")
    verdict, _, _ = await dns_only(dns_server, "links.example.com")
    assert verdict is Verdict.DNS_SERVFAIL


async def test_server_that_never_answers_times_out_bounded(dns_server: DnsServer) -> None:
    dns_server.add("links.example.com", "CNAME", TARGET)
    dns_server.set_mode(None, "drop")
    async with asyncio.timeout(10):  # a bound, not a timing assertion
        verdict, detail, _ = await dns_only(dns_server, "links.example.com", limit=0.3)
    assert verdict is Verdict.DNS_TIMEOUT
    assert "0.3s" in detail
    assert dns_server.query_count("links.example.com", "CNAME") >= 1


@pytest.mark.parametrize(
    ("host", "target"),
    [
        ("LINKS.Example.COM", "track.example.net"),
        ("links.example.com.", "TRACK.EXAMPLE.NET."),
        ("Links.Example.Com.", "Track.Example.Net"),
    ],
)
async def test_case_and_trailing_dots(dns_server: DnsServer, host: str, target: str) -> None:
    dns_server.add("links.example.com", "CNAME", "Track.Example.NET")
    dns_server.add(TARGET, "A", "127.0.0.1")
    verdict, _, _ = await dns_only(dns_server, host, target)
    assert verdict is None


async def test_idn_host_and_target_compared_in_punycode(dns_server: DnsServer) -> None:
    dns_server.add("liens.exämple.com", "CNAME", "suivi.exämple.net")
    dns_server.add("suivi.exämple.net", "A", "127.0.0.1")
    verdict, _, records = await dns_only(
        dns_server, "liens.exämple.com", "suivi.xn--exmple-cua.net"
    )
    assert verdict is None
    assert "liens.xn--exmple-cua.com. 300 IN CNAME suivi.xn--exmple-cua.net." in records
    verdict, _, _ = await dns_only(dns_server, "liens.xn--exmple-cua.com", "suivi.exämple.net")
    assert verdict is None


async def test_idn_base_url_through_check_domain(dns_server: DnsServer, keyring: Keyring) -> None:
    dns_server.add("liens.exämple.com", "CNAME", "old.exämple.net")
    config = preflight_config(
        "https://liens.exämple.com",
        nameserver=dns_server.nameserver,
        cname_target="suivi.exämple.net",
        http_probe=False,
    )
    report = await check_domain(config.tracking.base_url, config, keyring)
    assert report.verdict is Verdict.WRONG_TARGET
    assert report.fix is not None
    assert "liens.xn--exmple-cua.com points to old.xn--exmple-cua.net" in report.fix
    assert "expected suivi.xn--exmple-cua.net" in report.fix


async def test_no_target_needs_an_address(dns_server: DnsServer) -> None:
    dns_server.add("links.example.com", "A", "127.0.0.1")
    verdict, _, records = await dns_only(dns_server, "links.example.com", "")
    assert verdict is None
    assert records == ["links.example.com. 300 IN A 127.0.0.1"]
    verdict, _, _ = await dns_only(dns_server, "nothing.example.com", "")
    assert verdict is Verdict.NXDOMAIN


async def test_ip_and_localhost_base_urls_skip_dns(keyring: Keyring) -> None:
    # The nameserver is never asked: a closed port would make any query time out.
    config = preflight_config(
        "http://127.0.0.1:9", nameserver="127.0.0.1:9", http_probe=False, timeout=0.2
    )
    report = await check_domain("http://127.0.0.1:9", config, keyring)
    assert report.verdict is Verdict.OK
    assert report.dns.skipped is not None and "IP address" in report.dns.skipped
    report = await check_domain("http://localhost:9", config, keyring)
    assert report.dns.skipped is not None and "localhost" in report.dns.skipped
    assert report.verdict is Verdict.OK


async def test_ttl_is_bounded_in_the_report(dns_server: DnsServer, keyring: Keyring) -> None:
    dns_server.add("links.example.com", "CNAME", TARGET, ttl=5)
    config = preflight_config(
        "http://links.example.com",
        nameserver=dns_server.nameserver,
        cname_target=TARGET,
        http_probe=False,
        interval=120,
    )
    report = await check_domain(config.tracking.base_url, config, keyring)
    assert report.verdict is Verdict.OK
    assert report.ttl == 30.0  # 5 s raised to the 30 s floor
    report = await check_domain(config.tracking.base_url, config, keyring, min_ttl=1)
    assert report.ttl == 5.0


@settings(max_examples=200, deadline=None)
@given(
    ttl=st.one_of(st.none(), st.integers(min_value=0, max_value=2**31)),
    lo=st.floats(min_value=0, max_value=1000),
    hi=st.floats(min_value=0.001, max_value=1e6),
)
def test_bounded_ttl_stays_within_bounds(ttl: int | None, lo: float, hi: float) -> None:
    value = bounded_ttl(ttl, min_ttl=lo, interval=hi)
    assert value <= hi
    if lo <= hi:
        assert value >= lo


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_skip_reason_never_crashes(host: str) -> None:
    reason = domain_skip_reason(host)
    assert reason is None or host in reason


@pytest.fixture(scope="module")
def shared_dns() -> Iterator[DnsServer]:
    """One server for every hypothesis example (a fresh one each would be slow)."""
    with DnsServer() as server:
        server.add("links.example.com", "CNAME", TARGET)
        server.add(TARGET, "A", "127.0.0.1")
        yield server


@settings(max_examples=100, deadline=None)
@given(
    host_case=st.lists(st.booleans(), min_size=17, max_size=17),
    target_case=st.lists(st.booleans(), min_size=17, max_size=17),
    host_dot=st.booleans(),
    target_dot=st.booleans(),
)
def test_any_case_and_trailing_dot_verifies(
    shared_dns: DnsServer,
    host_case: list[bool],
    target_case: list[bool],
    host_dot: bool,
    target_dot: bool,
) -> None:
    def recase(text: str, upper: list[bool]) -> str:
        return "".join(c.upper() if u else c for c, u in zip(text, upper, strict=True))

    host = recase("links.example.com", host_case) + ("." if host_dot else "")
    target = recase("track.example.net", target_case) + ("." if target_dot else "")
    verdict, _, _ = asyncio.run(dns_only(shared_dns, host, target))
    assert verdict is None
