"""Test peers for preflight: a stand-in redirector ``/healthz``, loopback servers, a test CA.

* :func:`healthz_app` — an aiohttp app implementing exactly the agreed ``/healthz``
  contract (or a deliberately wrong variant) for probe tests.
* :func:`serve_app` — runs an app on ``127.0.0.1`` port 0 (optionally with TLS) and
  yields the port.
* :class:`TestCA` — a CA and a server certificate for given names, made with
  ``cryptography``, written as PEM files.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: The ``Host`` header of every ``/healthz`` request a :func:`healthz_app` received.
HOSTS_SEEN = web.AppKey("hosts_seen", list[str])


def healthz_app(
    key_ids: Sequence[str],
    *,
    service: str = "clickrelay-redirector",
    status: int = 200,
    body: str | None = None,
) -> web.Application:
    """``GET /healthz`` as the redirector answers it (``body`` overrides the JSON)."""
    hosts: list[str] = []

    async def healthz(request: web.Request) -> web.Response:
        hosts.append(request.headers.get("Host", ""))
        if body is not None:
            return web.Response(status=status, text=body)
        doc: dict[str, Any] = {
            "service": service,
            "version": "test",
            "key_ids": list(key_ids),
            "store": {"state": "ok"},
        }
        return web.json_response(doc, status=status)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app[HOSTS_SEEN] = hosts
    return app


@asynccontextmanager
async def serve_app(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[int]:
    """Serve ``app`` on 127.0.0.1, port 0; yields the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    try:
        port = runner.addresses[0][1]
        yield int(port)
    finally:
        await runner.cleanup()


class TestCA:
    """A throwaway CA (``ca.pem``) and a server cert/key (``cert.pem``/``key.pem``)."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, names: Sequence[str]) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clickrelay test CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.cert_file = directory / "cert.pem"
        self.key_file = directory / "key.pem"
        self.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context
