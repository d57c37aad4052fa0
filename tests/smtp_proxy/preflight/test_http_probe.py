"""Preflight HTTP probe against real aiohttp servers on loopback, found through test DNS."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from redirector.tokens import Keyring, new_key_line, parse_keys
from smtp_proxy.preflight import DomainReport, Verdict, check_domain
from smtp_proxy.preflight.http_probe import _judge
from tests.support.config import preflight_config
from tests.support.dns_server import DnsServer
from tests.support.preflight_fixtures import (
    HOSTS_SEEN,
    TestCA,
    healthz_app,
    serve_app,
)

HOST = "links.example.com"
TARGET = "track.example.net"


@pytest.fixture
def dns(dns_server: DnsServer) -> DnsServer:
    """links.example.com → CNAME track.example.net → A 127.0.0.1."""
    dns_server.add(HOST, "CNAME", TARGET)
    dns_server.add(TARGET, "A", "127.0.0.1")
    return dns_server


async def check(
    dns: DnsServer,
    keyring: Keyring,
    port: int,
    *,
    scheme: str = "http",
    ca_file: Path | None = None,
    limit: float = 2.0,
) -> DomainReport:
    base_url = f"{scheme}://{HOST}:{port}"
    config = preflight_config(
        base_url, nameserver=dns.nameserver, cname_target=TARGET, ca_file=ca_file, timeout=limit
    )
    return await check_domain(base_url, config, keyring)


async def test_redirector_healthz_is_ok_with_right_host_header(
    dns: DnsServer, keyring: Keyring
) -> None:
    app = healthz_app([keyring.current_key_id])
    async with serve_app(app) as port:
        report = await check(dns, keyring, port)
    assert report.verdict is Verdict.OK, report.detail
    assert report.fix is None
    assert report.probe is not None and report.probe.address == "127.0.0.1"
    assert report.probe.key_ids == (keyring.current_key_id,)
    assert app[HOSTS_SEEN] == [f"{HOST}:{port}"]


async def test_rotated_keys_any_position_is_ok(dns: DnsServer) -> None:
    keyring = parse_keys(new_key_line() + "\n" + new_key_line())
    async with serve_app(healthz_app(list(reversed(keyring.key_ids)))) as port:
        report = await check(dns, keyring, port)
    assert report.verdict is Verdict.OK


async def test_other_service_is_wrong_responder(dns: DnsServer, keyring: Keyring) -> None:
    async with serve_app(healthz_app([keyring.current_key_id], service="nginx")) as port:
        report = await check(dns, keyring, port)
    assert report.verdict is Verdict.WRONG_RESPONDER
    assert report.fix is not None and "not answered by a clickrelay redirector" in report.fix


async def test_200_with_html_is_wrong_responder(dns: DnsServer, keyring: Keyring) -> None:
    async with serve_app(healthz_app([], body="<html>Welcome to nginx!</html>")) as port:
        report = await check(dns, keyring, port)
    assert report.verdict is Verdict.WRONG_RESPONDER
    assert "not JSON" in report.detail


async def test_other_keys_is_key_mismatch(dns: DnsServer, keyring: Keyring) -> None:
    other = parse_keys(new_key_line())
    async with serve_app(healthz_app(list(other.key_ids))) as port:
        report = await check(dns, keyring, port)
    assert report.verdict is Verdict.KEY_MISMATCH
    assert report.fix is not None
    assert keyring.current_key_id in report.fix and other.current_key_id in report.fix


async def test_non_200_is_http_status(dns: DnsServer, keyring: Keyring) -> None:
    async with serve_app(healthz_app([keyring.current_key_id], status=503)) as port:
        report = await check(dns, keyring, port)
    assert report.verdict is Verdict.PROBE_HTTP_STATUS
    assert report.probe is not None and report.probe.status == 503
    assert report.fix is not None and "HTTP 503" in report.fix


async def test_missing_healthz_is_http_status(dns: DnsServer, keyring: Keyring) -> None:
    async with serve_app(web.Application()) as port:
        report = await check(dns, keyring, port)
    assert report.verdict is Verdict.PROBE_HTTP_STATUS
    assert report.probe is not None and report.probe.status == 404


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_refused_connection(dns: DnsServer, keyring: Keyring) -> None:
    report = await check(dns, keyring, free_port())
    assert report.verdict is Verdict.PROBE_REFUSED
    assert report.fix is not None and "127.0.0.1" in report.fix


async def test_probe_connects_where_the_configured_dns_says(
    dns: DnsServer, keyring: Keyring
) -> None:
    # Same port, but DNS now says 127.0.0.2 where nothing listens: the probe must follow DNS.
    async with serve_app(healthz_app([keyring.current_key_id])) as port:
        dns.replace(TARGET, "A", "127.0.0.2")
        report = await check(dns, keyring, port)
    assert report.verdict is Verdict.PROBE_REFUSED
    assert report.probe is not None and report.probe.address == "127.0.0.2"


@pytest.fixture
async def hanging_port() -> AsyncIterator[int]:
    """A server that accepts and reads but never answers."""

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def test_hanging_server_is_timeout(
    dns: DnsServer, keyring: Keyring, hanging_port: int
) -> None:
    async with asyncio.timeout(10):  # a bound, not a timing assertion
        report = await check(dns, keyring, hanging_port, limit=0.3)
    assert report.verdict is Verdict.PROBE_TIMEOUT
    assert report.fix is not None and "did not answer in time" in report.fix


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"), [HOST])


async def test_https_untrusted_certificate_is_tls_error(
    dns: DnsServer, keyring: Keyring, test_ca: TestCA
) -> None:
    app = healthz_app([keyring.current_key_id])
    async with serve_app(app, test_ca.server_context()) as port:
        report = await check(dns, keyring, port, scheme="https")
    assert report.verdict is Verdict.PROBE_TLS_ERROR
    assert report.fix is not None and "ca_file" in report.fix
    assert app[HOSTS_SEEN] == []


async def test_https_with_trusted_test_ca_is_ok(
    dns: DnsServer, keyring: Keyring, test_ca: TestCA
) -> None:
    app = healthz_app([keyring.current_key_id])
    async with serve_app(app, test_ca.server_context()) as port:
        report = await check(dns, keyring, port, scheme="https", ca_file=test_ca.ca_file)
    assert report.verdict is Verdict.OK, report.detail
    assert app[HOSTS_SEEN] == [f"{HOST}:{port}"]


async def test_https_certificate_for_another_name_is_tls_error(
    dns: DnsServer, keyring: Keyring, tmp_path: Path
) -> None:
    other = TestCA(tmp_path, ["other.example.org"])
    async with serve_app(healthz_app([keyring.current_key_id]), other.server_context()) as port:
        report = await check(dns, keyring, port, scheme="https", ca_file=other.ca_file)
    assert report.verdict is Verdict.PROBE_TLS_ERROR


async def test_ip_base_url_probes_without_dns(keyring: Keyring) -> None:
    async with serve_app(healthz_app([keyring.current_key_id])) as port:
        base_url = f"http://127.0.0.1:{port}"
        # An unreachable nameserver proves DNS is not asked.
        config = preflight_config(base_url, nameserver="127.0.0.1:9", cname_target=TARGET)
        report = await check_domain(base_url, config, keyring)
    assert report.verdict is Verdict.OK, report.detail
    assert report.dns.skipped is not None


async def test_dns_failure_skips_the_probe(dns_server: DnsServer, keyring: Keyring) -> None:
    report = await check(dns_server, keyring, free_port())
    assert report.verdict is Verdict.NXDOMAIN
    assert report.probe is not None and report.probe.skipped == "DNS check failed"


@settings(max_examples=200, deadline=None)
@given(status=st.integers(min_value=100, max_value=599), body=st.binary(max_size=200))
def test_judge_any_answer_is_a_verdict(status: int, body: bytes) -> None:
    result = _judge("http://x/healthz", None, status, body, "0011aabb")
    assert isinstance(result.verdict, Verdict)
    assert result.verdict is not Verdict.OK  # random bytes never pass as our redirector


@settings(max_examples=200, deadline=None)
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=10,
    )
)
def test_judge_odd_json_never_crashes(doc: object) -> None:
    import json

    body = json.dumps({"service": "clickrelay-redirector", "key_ids": doc, "store": doc}).encode()
    result = _judge("http://x/healthz", None, 200, body, "0011aabb")
    assert result.verdict in (Verdict.KEY_MISMATCH, Verdict.OK)


async def test_every_address_dns_returns_is_tried(dns: DnsServer, keyring: Keyring) -> None:
    dns.replace(TARGET, "A", "127.0.0.2")  # nothing listens there
    dns.add(TARGET, "A", "127.0.0.1")
    async with serve_app(healthz_app([keyring.current_key_id])) as port:
        report = await check(dns, keyring, port)
    assert report.verdict is Verdict.OK, report.detail
    assert report.probe is not None and report.probe.address == "127.0.0.1"


async def test_target_without_address_says_so(dns_server: DnsServer, keyring: Keyring) -> None:
    dns_server.add(HOST, "CNAME", TARGET)
    dns_server.add(TARGET, "TXT", '"no address here"')
    report = await check(dns_server, keyring, free_port())
    assert report.verdict is Verdict.PROBE_REFUSED
    assert report.probe is not None and report.probe.skipped == "no address to connect to"
    assert report.fix is not None
    assert "no A or AAAA address" in report.fix and "track.example.net" in report.fix
