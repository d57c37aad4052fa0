"""``clickrelay check`` on an ``https://`` tracking host served by a real redirector's
HTTPS listener (certificate files from a throwaway CA): per host it shows the names,
issuer, not-after, days left and who manages the certificate, and fails with the
certificate verdict and its fix when the certificate is expired or about to expire."""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry

from redirector.config import RedirectorConfig
from redirector.service import RedirectorService
from redirector.tls.settings import TlsSettings
from redirector.tokens import load_keyring
from tests.support.dns_server import DnsServer
from tests.support.tls_certs import CertAuthority

CLICKRELAY = Path(sys.executable).parent / "clickrelay"
HOST = "links.example.com"
NOW = datetime.datetime.now(datetime.UTC)


@asynccontextmanager
async def redirector(tmp_path: Path, key_file: Path, cert: Path) -> AsyncIterator[int]:
    config = RedirectorConfig(
        listen="127.0.0.1:0",
        admin_listen="127.0.0.1:0",
        https_listen="127.0.0.1:0",
        store=f"sqlite:{tmp_path / 'clicks.sqlite3'}",
        tls_certificates=(cert,),
    )
    service = RedirectorService(
        config, load_keyring(key_file), registry=CollectorRegistry(), tls=TlsSettings(hosts=(HOST,))
    )
    await service.start()
    try:
        assert service.https_port is not None
        yield service.https_port
    finally:
        await service.stop(5)


def write_config(
    tmp_path: Path, key_file: Path, port: int, dns: DnsServer, ca: Path, cert: Path
) -> Path:
    path = tmp_path / "cfg.toml"
    path.write_text(
        f'[tracking]\nbase_url = "https://{HOST}:{port}"\nkey_file = "{key_file}"\n'
        f'[preflight]\nnameservers = ["{dns.nameserver}"]\ntimeout = 3.0\nca_file = "{ca}"\n'
        f'[redirector]\ntls_certificates = ["{cert}"]\n',
        encoding="utf-8",
    )
    return path


def run_check(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLICKRELAY), "check", "-c", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def check_with_cert(
    tmp_path: Path, key_file: Path, dns: DnsServer, days_left: float, *extra: str
) -> subprocess.CompletedProcess[str]:
    dns.add(HOST, "A", "127.0.0.1")
    ca = CertAuthority()
    cert = tmp_path / "links.pem"
    end = NOW + datetime.timedelta(days=days_left)
    cert.write_bytes(ca.bundle([HOST], not_before=end - datetime.timedelta(days=90), not_after=end))
    ca_file = ca.write_ca(tmp_path / "ca.pem")
    async with redirector(tmp_path, key_file, cert) as port:
        config = write_config(tmp_path, key_file, port, dns, ca_file, cert)
        return await asyncio.to_thread(run_check, config, *extra)


async def test_a_good_certificate_is_described_per_host(
    tmp_path: Path, key_file: Path, dns_server: DnsServer
) -> None:
    result = await check_with_cert(tmp_path, key_file, dns_server, 60)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert f"  tls    names {HOST}\n" in out
    assert "         issuer clickrelay test CA\n" in out
    assert "days left)" in out and "not after " in out
    assert "         managed by file\n" in out


async def test_json_carries_the_same(tmp_path: Path, key_file: Path, dns_server: DnsServer) -> None:
    result = await check_with_cert(tmp_path, key_file, dns_server, 60, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout.splitlines()[0])
    tls = doc["tls"]
    assert tls["names"] == [HOST]
    assert tls["issuer"] == "clickrelay test CA"
    assert tls["managed_by"] == "file"
    assert 59 < tls["days_left"] <= 60
    assert datetime.datetime.fromisoformat(tls["not_after"]) > NOW
    assert "last_attempt" in tls and "last_error" in tls
    assert doc["verdict"] == "ok" and doc["may_track"] is True


async def test_a_certificate_about_to_expire_fails_with_its_fix(
    tmp_path: Path, key_file: Path, dns_server: DnsServer
) -> None:
    result = await check_with_cert(tmp_path, key_file, dns_server, 3)
    assert result.returncode == 1
    assert "FAIL cert-expiring — the certificate expires in 3.0 days" in result.stdout
    assert "fix    Put a renewed certificate for links.example.com" in result.stdout


async def test_an_expired_certificate_fails(
    tmp_path: Path, key_file: Path, dns_server: DnsServer
) -> None:
    result = await check_with_cert(tmp_path, key_file, dns_server, -2, "--json")
    assert result.returncode == 1
    doc = json.loads(result.stdout.splitlines()[0])
    assert doc["verdict"] == "cert-expired"
    assert doc["may_track"] is False
    assert "renewed certificate" in doc["fix"]
