"""The proxy is no DKIM signing oracle: a message is re-signed for a domain only when its
own signature for that domain verifies (public key from the test DNS server), its From
is in that domain, and an authenticated user is an address in that domain.

End to end over real sockets: line client → ProxyService → recording sink, the keys in
``tests.support.dns_server`` answered to the proxy's resolver (``[preflight]
nameservers``), every signature checked with dkimpy.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from pathlib import Path

import dkim
import pytest
from prometheus_client import CollectorRegistry

from smtp_proxy.smtp.users import add_user
from tests.support.dkim_keys import new_dkim_key, txt_record
from tests.support.dns_server import DnsServer
from tests.support.proxy_helpers import TOKEN_RE, LineClient, ProxyLab

DOMAIN = "example.com"


@pytest.fixture(scope="module")
def client_key() -> tuple[bytes, bytes]:
    return new_dkim_key()


@pytest.fixture(scope="module")
def proxy_key() -> tuple[bytes, bytes]:
    return new_dkim_key()


@pytest.fixture
def dns(client_key: tuple[bytes, bytes], proxy_key: tuple[bytes, bytes]) -> Iterator[DnsServer]:
    with DnsServer() as server:
        server.add(f"s1._domainkey.{DOMAIN}", "TXT", txt_record(client_key[1]))
        server.add(f"s2._domainkey.{DOMAIN}", "TXT", txt_record(proxy_key[1]))
        yield server


def message(sender: str = f"payroll@{DOMAIN}") -> bytes:
    return (
        f"From: Payroll <{sender}>\r\nTo: staff@example.org\r\nSubject: Your payslip\r\n"
        "Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        '<p>Payslip</p><a href="https://pay.example.net/slip?id=7">open</a>\r\n'
    ).encode()


def signed(data: bytes, pem: bytes, selector: bytes = b"s1") -> bytes:
    sig = dkim.sign(data, selector, DOMAIN.encode(), pem, include_headers=[b"from", b"subject"])
    return bytes(sig) + data


def wire(data: bytes) -> bytes:
    return data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


@pytest.fixture
def config_for(lab: ProxyLab, dns: DnsServer, tmp_path: Path, proxy_key: tuple[bytes, bytes]):  # type: ignore[no-untyped-def]
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(proxy_key[0])
    key_file.chmod(0o600)

    def make(upstream: str, **proxy: object):  # type: ignore[no-untyped-def]
        return lab.config(
            upstream,
            preflight={"enabled": False, "nameservers": [dns.nameserver]},
            dkim={"domains": {DOMAIN: {"selector": "s2", "key_file": str(key_file)}}},
            **proxy,
        )

    return make


def verify(data: bytes, client_key: tuple[bytes, bytes], proxy_key: tuple[bytes, bytes]) -> bool:
    """dkimpy's verdict on the first signature, with the keys the test DNS server holds."""
    records = {f"s1._domainkey.{DOMAIN}": client_key[1], f"s2._domainkey.{DOMAIN}": proxy_key[1]}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        return records.get(name.decode().rstrip("."))

    return bool(dkim.verify(data, dnsfunc=dnsfunc))


FORGED = (
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=whatever; h=from; bh=AAAA; b=AAAA\r\n"
)


@pytest.mark.parametrize(
    "forgery",
    [
        FORGED,
        # The proxy's own selector, whose key is in DNS: the signature still does not verify.
        FORGED.replace(b"s=whatever", b"s=s2"),
    ],
    ids=["made-up-selector", "real-selector-bad-signature"],
)
async def test_a_forged_signature_is_not_resigned(
    lab: ProxyLab,
    config_for,  # type: ignore[no-untyped-def]
    client_key: tuple[bytes, bytes],
    proxy_key: tuple[bytes, bytes],
    caplog: pytest.LogCaptureFixture,
    forgery: bytes,
) -> None:
    caplog.set_level(logging.INFO, logger="clickrelay.proxy")
    sink = await lab.sink()
    registry = CollectorRegistry()
    forged = forgery + message()
    async with lab.proxy(config_for(sink.url), registry=registry) as proxy:
        client = await LineClient.start(proxy.port)
        code, _ = await client.transaction(wire(forged), sender="anyone@attacker.test")
        assert code == 250
        await client.close()
    relayed = sink.messages[0].data
    # Relayed as it came: no new signature, no tracked link.
    assert relayed == forged
    assert not verify(relayed, client_key, proxy_key)
    assert any("rewrite=dkim-unverified" in r.getMessage() for r in caplog.records)
    labels = {"reason": "dkim-unverified"}
    assert registry.get_sample_value("clickrelay_proxy_rewrites_total", labels) == 1


async def test_a_genuine_signature_is_rewritten_and_resigned(
    lab: ProxyLab,
    config_for,  # type: ignore[no-untyped-def]
    client_key: tuple[bytes, bytes],
    proxy_key: tuple[bytes, bytes],
) -> None:
    sink = await lab.sink()
    original = signed(message(), client_key[0])
    async with lab.proxy(config_for(sink.url)) as proxy:
        client = await LineClient.start(proxy.port)
        assert (await client.transaction(wire(original)))[0] == 250
        await client.close()
    relayed = sink.messages[0].data
    assert TOKEN_RE.search(relayed.decode()), "the link was tracked"
    assert relayed.count(b"DKIM-Signature:") == 1 and b"s=s2" in relayed
    assert verify(relayed, client_key, proxy_key)


async def test_a_genuine_signature_for_another_from_domain_is_not_resigned(
    lab: ProxyLab,
    config_for,  # type: ignore[no-untyped-def]
    client_key: tuple[bytes, bytes],
    proxy_key: tuple[bytes, bytes],
) -> None:
    sink = await lab.sink()
    # d=example.com really signed it, but the From is someone else's domain.
    original = signed(message("ceo@bank.example"), client_key[0])
    async with lab.proxy(config_for(sink.url)) as proxy:
        client = await LineClient.start(proxy.port)
        assert (await client.transaction(wire(original)))[0] == 250
        await client.close()
    assert sink.messages[0].data == original


@pytest.mark.parametrize(
    ("user", "domains", "resigned"),
    [
        (f"app@{DOMAIN}", (), True),  # a user named like an address in the domain
        ("mailer", (DOMAIN,), True),  # the users file allows the domain
        ("mailer", ("other.example",), False),
        ("mailer", (), False),
        ("app@attacker.test", (), False),
    ],
)
async def test_an_authenticated_user_must_be_allowed_the_domain(
    lab: ProxyLab,
    config_for,  # type: ignore[no-untyped-def]
    client_key: tuple[bytes, bytes],
    proxy_key: tuple[bytes, bytes],
    tmp_path: Path,
    user: str,
    domains: tuple[str, ...],
    resigned: bool,
) -> None:
    users = tmp_path / "users"
    add_user(users, user, "pw", domains)
    sink = await lab.sink()
    original = signed(message(), client_key[0])
    config = config_for(
        sink.url,
        users_file=str(users),
        allow_plain_auth_on_loopback=True,
        trusted_networks=[],
    )
    async with lab.proxy(config) as proxy:
        client = await LineClient.start(proxy.port)
        auth = base64.b64encode(f"\0{user}\0pw".encode()).decode()
        assert (await client.cmd("AUTH PLAIN " + auth))[0] == 235
        assert (await client.transaction(wire(original)))[0] == 250
        await client.close()
    relayed = sink.messages[0].data
    assert (relayed != original) is resigned
    assert verify(relayed, client_key, proxy_key)
