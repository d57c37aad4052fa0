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
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support.tls_certs import CertAuthority

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
    """A throwaway CA (``ca.pem``) and a server cert/key (``cert.pem``/``key.pem``) for
    ``names``, valid for 30 days, written to ``directory`` (made by a
    :class:`~tests.support.tls_certs.CertAuthority`)."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory: Path, names: Sequence[str]) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca = CertAuthority()
        key_pem, cert_pem = ca.issue(
            names,
            not_before=now - datetime.timedelta(days=1),
            not_after=now + datetime.timedelta(days=30),
        )
        self.ca_file = ca.write_ca(directory / "ca.pem")
        self.cert_file = directory / "cert.pem"
        self.key_file = directory / "key.pem"
        self.cert_file.write_bytes(cert_pem)
        self.key_file.write_bytes(key_pem)

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context
