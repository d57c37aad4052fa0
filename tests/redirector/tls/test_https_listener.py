"""The HTTPS listener with certificate files: real TLS handshakes against a real
RedirectorService on 127.0.0.1, certificates from a throwaway CA.

Each tracking host gets its own certificate by SNI; a name that is not a tracking host
(or no name) gets no certificate at all; files are re-read on reload; start-up errors
name the key.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry, generate_latest

from clickrelay.common.errors import ConfigError
from clickrelay.config import load_config_text
from redirector.config import RedirectorConfig
from redirector.service import RedirectorService
from redirector.tls.settings import TlsSettings
from redirector.tokens import Keyring
from smtp_proxy.preflight.http_probe import PinnedResolver
from tests.support.tls_certs import CertAuthority, handshake

HOST_A = "links.example.test"
HOST_B = "links.shop.test"


def config_for(tmp_path: Path, **kwargs: object) -> RedirectorConfig:
    values: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "admin_listen": "127.0.0.1:0",
        "https_listen": "127.0.0.1:0",
        "store": f"sqlite:{tmp_path / 'clicks.sqlite3'}",
        "tls_certificates": (tmp_path / "certs" / "*.pem",),
        "flush_interval": 0.02,
    }
    values.update(kwargs)
    return RedirectorConfig(**values)  # type: ignore[arg-type]


@asynccontextmanager
async def running(
    config: RedirectorConfig, keyring: Keyring, hosts: tuple[str, ...] = (HOST_A, HOST_B)
) -> AsyncIterator[RedirectorService]:
    service = RedirectorService(
        config, keyring, registry=CollectorRegistry(), tls=TlsSettings(hosts=hosts)
    )
    await service.start()
    try:
        yield service
    finally:
        await service.stop(5)


async def peer_certificate(
    port: int, server_name: str | None, ca: CertAuthority
) -> x509.Certificate:
    """Handshake with SNI ``server_name`` (verifying against ``ca``); the served leaf."""
    context = ca.client_context()
    if server_name is None:
        context.check_hostname = False
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=server_name or ""
    )
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der)
    finally:
        writer.close()
        await writer.wait_closed()


def san_names(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return ext.value.get_values_for_type(x509.DNSName)


async def https_get(
    port: int, host: str, path: str, ca: CertAuthority
) -> tuple[int, dict[str, str]]:
    connector = aiohttp.TCPConnector(resolver=PinnedResolver(["127.0.0.1"]), force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(
            f"https://{host}:{port}{path}", allow_redirects=False, ssl=ca.client_context()
        ) as resp,
    ):
        await resp.read()
        return resp.status, dict(resp.headers)


@pytest.fixture
def ca() -> CertAuthority:
    return CertAuthority()


@pytest.fixture
def certs_dir(tmp_path: Path, ca: CertAuthority) -> Path:
    directory = tmp_path / "certs"
    directory.mkdir()
    (directory / "a.pem").write_bytes(ca.bundle([HOST_A]))
    (directory / "b.pem").write_bytes(ca.bundle([HOST_B]))
    return directory


async def test_each_tracking_host_gets_its_own_certificate_by_sni(
    tmp_path: Path, certs_dir: Path, ca: CertAuthority, keyring: Keyring
) -> None:
    async with running(config_for(tmp_path), keyring) as service:
        port = service.https_port
        assert port is not None
        assert san_names(await peer_certificate(port, HOST_A, ca)) == [HOST_A]
        assert san_names(await peer_certificate(port, HOST_B, ca)) == [HOST_B]
        # Case and a trailing dot do not change the answer.
        assert san_names(await peer_certificate(port, "LINKS.Example.TEST", ca)) == [HOST_A]


async def test_https_serves_exactly_what_listen_serves(
    tmp_path: Path, certs_dir: Path, ca: CertAuthority, keyring: Keyring
) -> None:
    token = keyring.seal(
        "https://shop.example.com/item?id=7", host=HOST_A, queue_id="Q1", link_index=0
    )
    async with running(config_for(tmp_path), keyring) as service:
        port = service.https_port
        assert port is not None
        status, headers = await https_get(port, HOST_A, f"/c/{token}", ca)
        assert status == 302
        assert headers["Location"] == "https://shop.example.com/item?id=7"
        status, _ = await https_get(port, HOST_B, "/healthz", ca)
        assert status == 200
        status, _ = await https_get(port, HOST_A, "/c/forged-token", ca)
        assert status == 404
        # The plain listener still answers the same token.
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{service.public_port}/c/{token}",
                allow_redirects=False,
                headers={"Host": HOST_A},
            ) as resp,
        ):
            assert resp.status == 302


@pytest.mark.parametrize("name", ["evil.example.net", "other.example.test", None])
async def test_a_name_that_is_not_a_tracking_host_gets_no_certificate(
    tmp_path: Path, certs_dir: Path, ca: CertAuthority, keyring: Keyring, name: str | None
) -> None:
    # A certificate file that covers the name is not enough: only tracking hosts are served.
    (certs_dir / "evil.pem").write_bytes(ca.bundle(["evil.example.net", "other.example.test"]))
    registry = CollectorRegistry()
    service = RedirectorService(
        config_for(tmp_path), keyring, registry=registry, tls=TlsSettings(hosts=(HOST_A, HOST_B))
    )
    await service.start()
    try:
        port = service.https_port
        assert port is not None
        # No verification at all on the client: the refusal must come from the server.
        # (asyncio's server closes without flushing the alert: the client sees an EOF.)
        with pytest.raises(ssl.SSLError):
            await asyncio.to_thread(handshake, port, name)
        reason = "no-sni" if name is None else "unknown-name"
        text = generate_latest(registry).decode()
        assert f'clickrelay_tls_handshakes_refused_total{{reason="{reason}"}} 1.0' in text
    finally:
        await service.stop(5)


async def test_a_tracking_host_without_a_certificate_is_a_startup_error(
    tmp_path: Path, ca: CertAuthority, keyring: Keyring
) -> None:
    directory = tmp_path / "certs"
    directory.mkdir()
    (directory / "a.pem").write_bytes(ca.bundle([HOST_A]))
    service = RedirectorService(
        config_for(tmp_path), keyring, tls=TlsSettings(hosts=(HOST_A, HOST_B))
    )
    with pytest.raises(
        ConfigError, match=r"\[redirector\] tls_certificates: .*links\.shop\.test.*\[acme\] enabled"
    ):
        await service.start()


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (None, "cannot read certificate file: No such file or directory"),
        (b"not a certificate\n", "no certificate"),
    ],
)
async def test_an_unusable_certificate_file_is_a_startup_error_naming_the_key(
    tmp_path: Path, ca: CertAuthority, keyring: Keyring, write: bytes | None, message: str
) -> None:
    path = tmp_path / "broken.pem"
    if write is not None:
        path.write_bytes(write)
    config = config_for(tmp_path, tls_certificates=(path,))
    service = RedirectorService(config, keyring, tls=TlsSettings(hosts=(HOST_A,)))
    with pytest.raises(ConfigError) as info:
        await service.start()
    assert str(info.value).startswith(f"[redirector] tls_certificates: {path}: ")
    assert message in str(info.value)


async def test_a_key_that_does_not_belong_to_the_certificate_is_refused(
    tmp_path: Path, ca: CertAuthority, keyring: Keyring
) -> None:
    one, other = ca.bundle([HOST_A]), ca.bundle([HOST_A])
    key = one[: one.index(b"-----END PRIVATE KEY-----") + 26]
    chain = other[other.index(b"-----BEGIN CERTIFICATE-----") :]
    path = tmp_path / "mixed.pem"
    path.write_bytes(key + chain)
    service = RedirectorService(
        config_for(tmp_path, tls_certificates=(path,)), keyring, tls=TlsSettings(hosts=(HOST_A,))
    )
    with pytest.raises(ConfigError, match="does not belong"):
        await service.start()


def test_acme_without_https_listen_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"acme\.enabled: .*https_listen"):
        load_config_text("[acme]\nenabled = true\n")
    config = load_config_text(
        '[acme]\nenabled = true\n[redirector]\nhttps_listen = "0.0.0.0:443"\n'
    )
    assert config.acme.enabled


async def test_reload_reads_the_files_again_and_a_bad_file_keeps_the_old_ones(
    tmp_path: Path, certs_dir: Path, ca: CertAuthority, keyring: Keyring
) -> None:
    config = config_for(tmp_path)
    async with running(config, keyring) as service:
        port = service.https_port
        assert port is not None
        first = await peer_certificate(port, HOST_A, ca)
        (certs_dir / "a.pem").write_bytes(ca.bundle([HOST_A]))
        await service.reload_certificates(config)
        second = await peer_certificate(port, HOST_A, ca)
        assert second.serial_number != first.serial_number
        (certs_dir / "a.pem").write_bytes(b"garbage")
        with pytest.raises(ConfigError, match=r"a\.pem"):
            await service.reload_certificates(config)
        kept = await peer_certificate(port, HOST_A, ca)
        assert kept.serial_number == second.serial_number


async def test_a_file_certificate_past_its_end_is_still_served_and_reported(
    tmp_path: Path, ca: CertAuthority, keyring: Keyring
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    directory = tmp_path / "certs"
    directory.mkdir()
    (directory / "old.pem").write_bytes(
        ca.bundle(
            [HOST_A],
            not_before=now - datetime.timedelta(days=100),
            not_after=now - datetime.timedelta(days=1),
        )
    )
    async with running(config_for(tmp_path), keyring, hosts=(HOST_A,)) as service:
        certs = service.certificates
        assert certs is not None
        status = certs.status(HOST_A)
        assert status.managed_by == "file"
        assert status.not_after is not None and status.not_after < now
        with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
            await peer_certificate(service.https_port or 0, HOST_A, ca)


async def test_https_listen_off_binds_no_tls_port(tmp_path: Path, keyring: Keyring) -> None:
    config = dataclasses.replace(config_for(tmp_path), https_listen="")
    async with running(config, keyring) as service:
        assert service.https_port is None
        assert service.certificates is None


async def test_with_acme_off_no_challenge_token_has_an_answer(
    tmp_path: Path, certs_dir: Path, keyring: Keyring
) -> None:
    """Certificate files only: nothing answers an HTTP-01 challenge, whatever the token."""
    async with running(config_for(tmp_path), keyring) as service:
        certs = service.certificates
        assert certs is not None
        assert await certs.challenge_answer("any-token") is None
