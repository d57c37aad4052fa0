"""The certificate half of preflight for ``https://`` base URLs: which certificate does
the host serve for its own name, and what does the redirector know about it?

The handshake goes to the addresses preflight's DNS step found, with the tracking host as
SNI and *no* verification, so that an expired or wrong certificate is seen and named
(the HTTP probe afterwards verifies as a browser does).
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from cryptography import x509

from redirector.tls.certs import dns_names, issuer_text
from redirector.tls.status import HostStatus
from smtp_proxy.preflight.cert_verdicts import ServedCert, TlsEvidence

#: ``await source(host)``: what the redirector knows about the host's certificate.
TlsStatusSource = Callable[[str], Awaitable[HostStatus | None]]


def _no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def served_cert(der: bytes) -> ServedCert:
    cert = x509.load_der_x509_certificate(der)
    return ServedCert(
        names=dns_names(cert),
        issuer=issuer_text(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


async def fetch_served(
    host: str, port: int, address: str, time_limit: float
) -> tuple[ServedCert | None, str | None]:
    """(the leaf served for SNI ``host`` at ``address:port``, None) or (None, why not)."""
    try:
        async with asyncio.timeout(time_limit):
            _reader, writer = await asyncio.open_connection(
                address, port, ssl=_no_verify(), server_hostname=host
            )
    except TimeoutError:
        return None, f"no TLS handshake within {time_limit:g}s"
    except ssl.SSLError as exc:
        return None, f"handshake refused: {exc.reason or exc}"
    except OSError as exc:
        return None, f"cannot connect: {exc.strerror or exc or type(exc).__name__}"
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
        try:
            async with asyncio.timeout(time_limit):
                await writer.wait_closed()
        except (OSError, TimeoutError, ssl.SSLError):
            pass
    if not der:
        return None, "no certificate in the handshake"
    try:
        return served_cert(der), None
    except ValueError as exc:
        return None, f"unreadable certificate: {exc}"


async def look_at_certificate(
    base_url: str,
    host: str,
    addresses: Sequence[str] | None,
    *,
    time_limit: float,
    status_source: TlsStatusSource | None,
) -> TlsEvidence:
    port = urlsplit(base_url).port or 443
    address = addresses[0] if addresses else host
    served, error = await fetch_served(host, port, address, time_limit)
    status: HostStatus | None = None
    if status_source is not None:
        try:
            status = await status_source(host)
        except Exception:  # what the redirector knows is a bonus: never fail the check on it
            status = None
    return TlsEvidence(
        host=host,
        address=address,
        served=served,
        handshake_error=error,
        status=status,
        checked_at=datetime.datetime.now(datetime.UTC),
    )
