"""Attacks on the proxy's connection slots and AUTH, reproduced over real sockets.

* connections to the SMTPS listener closed before (or instead of) a TLS handshake must
  not keep a slot: asyncio never reports them to the protocol, so a proxy that counted
  them anyway locked every client out until restart;
* one client address gets ``max_connections_per_client`` connections, not all of them;
* a client sending NOOPs (or RSET, HELP…) and no mail is closed after
  ``max_junk_commands``;
* a message of many MIME parts is relayed unchanged (``too-many-parts``), not rewritten
  part by part;
* many concurrent AUTH attempts from one address get no more than ``auth_fail_limit``
  passwords checked, and a right password among them does not get in.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from smtp_proxy.smtp.users import add_user
from tests.support.polling import until
from tests.support.proxy_helpers import LineClient, ProxyLab
from tests.support.smtp_sink import make_test_ca

UNTRUSTED = "127.0.0.2"
USER, PASSWORD = "mailer", "correct horse battery staple"


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_tls_connections_without_a_handshake_do_not_keep_slots(lab: ProxyLab) -> None:
    sink = await lab.sink()
    ca = make_test_ca(lab.tmp_path / "ca")
    config = lab.tls_config(
        sink.url,
        ca,
        tls_listen="127.0.0.1:0",
        max_connections=20,
        max_connections_per_client=1000,
    )
    registry = CollectorRegistry()
    async with lab.proxy(config, registry=registry) as proxy:
        assert proxy.tls_port
        # 60 connections (3x the limit) that never shake hands: half close at once,
        # half send a plaintext EHLO first.
        for n in range(60):
            _, writer = await asyncio.open_connection("127.0.0.1", proxy.tls_port)
            if n % 2:
                writer.write(b"EHLO attacker\r\n")
                await writer.drain()
            writer.close()
            await writer.wait_closed()
        # Each handshake has failed once the server has closed its side; then no slot
        # may be held (the gauge counts connections that really are open).
        assert sample(registry, "clickrelay_proxy_connections") == 0
        client = await LineClient.start(proxy.port)
        assert (await client.cmd("MAIL FROM:<a@example.com>"))[0] == 250
        assert (await client.cmd("RCPT TO:<b@example.org>"))[0] == 250
        await client.close()


async def test_one_client_address_cannot_take_every_slot(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(
        sink.url, max_connections=50, max_connections_per_client=3, trusted_networks=[]
    )
    registry = CollectorRegistry()
    async with lab.proxy(config, registry=registry) as proxy:
        held = [await LineClient.start(proxy.port, source=UNTRUSTED) for _ in range(3)]
        fourth = await LineClient.connect(proxy.port, source=UNTRUSTED)
        code, text = await fourth.reply()
        assert code == 421 and "too many connections" in text
        assert await fourth.closed_by_server()
        await fourth.close()
        assert (
            sample(registry, "clickrelay_proxy_connections_refused_total", reason="per-client") == 1
        )
        # Another address is not affected.
        other = await LineClient.start(proxy.port, source="127.0.0.3")
        await other.close()
        # A slot given back can be taken again.
        await held.pop().close()
        await until(lambda: sample(registry, "clickrelay_proxy_connections") == 2, "slot back")
        again = await LineClient.start(proxy.port, source=UNTRUSTED)
        held.append(again)
        assert sample(registry, "clickrelay_proxy_connections") == 3
        for client in held:
            await client.close()


async def test_commands_without_mail_are_bounded(lab: ProxyLab) -> None:
    sink = await lab.sink()
    config = lab.config(sink.url, max_junk_commands=20)
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port)  # EHLO: the first junk command
        for _ in range(10):
            assert (await client.cmd("NOOP"))[0] == 250
        # A message sets the count back to zero: a client that sends mail may idle a bit.
        wire = b"Subject: t\r\n\r\nbody\r\n.\r\n"
        assert (await client.transaction(wire))[0] == 250
        for n in range(20):
            command = ("NOOP", "RSET", "HELP", "VRFY <x@example.org>")[n % 4]
            assert (await client.cmd(command))[0] < 400, command
        code, text = await client.cmd("NOOP")
        assert code == 421 and "too many commands" in text
        assert await client.closed_by_server()
        await client.close()
    assert len(sink.messages) == 1


async def test_a_message_of_too_many_parts_is_relayed_unchanged(
    lab: ProxyLab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clickrelay.proxy")
    part = b'--mp\r\nContent-Type: text/html\r\n\r\n<a href="https://example.com/%d">x</a>\r\n'
    body = b"".join(part % i for i in range(1_501)) + b"--mp--\r\n"
    original = (
        b"From: a@example.com\r\nTo: b@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="mp"\r\n\r\n' + body
    )
    sink = await lab.sink()
    registry = CollectorRegistry()
    config = lab.config(sink.url, tracking={"max_parts": 1_500})
    async with lab.proxy(config, registry=registry) as proxy:
        client = await LineClient.start(proxy.port)
        assert (await client.transaction(original + b".\r\n"))[0] == 250
        await client.close()
    assert sink.messages[0].data == original
    assert any("rewrite=too-many-parts" in r.getMessage() for r in caplog.records)
    assert sample(registry, "clickrelay_proxy_rewrites_total", reason="too-many-parts") == 1


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users"
    add_user(path, USER, PASSWORD)
    return path


async def test_concurrent_auth_checks_no_more_than_the_limit(
    lab: ProxyLab, users_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clickrelay.proxy")

    def logged(event: str) -> int:
        return sum(f"event={event} " in r.getMessage() for r in caplog.records)

    limit, wrong = 5, 59
    sink = await lab.sink()
    config = lab.config(
        sink.url,
        users_file=str(users_file),
        allow_plain_auth_on_loopback=True,
        auth_fail_limit=limit,
        auth_fail_window=3600,
        max_connections_per_client=100,
        trusted_networks=[],
    )
    registry = CollectorRegistry()
    async with lab.proxy(config, registry=registry) as proxy:
        clients = [await LineClient.start(proxy.port, source=UNTRUSTED) for _ in range(wrong + 1)]

        async def attempt(client: LineClient, password: str) -> int:
            try:
                return (await client.cmd("AUTH PLAIN " + plain(USER, password), timeout=120))[0]
            except ConnectionError:
                return 0  # hung up on (after its 421)

        guesses = [asyncio.create_task(attempt(c, f"guess{n}")) for n, c in enumerate(clients[:-1])]
        # The right password arrives while the guesses are being checked.
        await until(lambda: logged("auth-failed") >= 1, "a first check", within=60)
        right = await attempt(clients[-1], PASSWORD)
        codes = await asyncio.gather(*guesses)
        # Every password checked ends in one auth-ok or auth-failed line.
        checked = logged("auth-failed") + logged("auth-ok")
        assert checked <= limit, f"{checked} passwords checked, limit {limit}"
        assert sample(registry, "clickrelay_proxy_auth_verifications_total") == checked
        assert right != 235
        assert codes.count(535) == limit - 1
        assert sorted(set(codes) - {535}) == [421]
        for client in clients:
            await client.close()
        # Blocked for the window, from a new connection too.
        late = await LineClient.start(proxy.port, source=UNTRUSTED)
        assert (await late.cmd("AUTH PLAIN " + plain(USER, PASSWORD)))[0] == 421
        await late.close()
