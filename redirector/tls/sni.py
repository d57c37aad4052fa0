"""The HTTPS listener's ``SSLContext``: the certificate is chosen by SNI, per tracking host.

Only configured tracking hosts have a certificate. A handshake naming any other host —
or none — is refused with a TLS alert before a certificate is sent, so the listener never
answers for a name it does not own and never tries to get a certificate on demand.
Certificates are swapped in while the listener runs (:meth:`SniCertificates.install`):
a handshake in progress keeps the context it started with, the next one gets the new one.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Iterable

from redirector.tls.certs import CertBundle, tls_host


def server_context() -> ssl.SSLContext:
    """Server-side TLS settings shared by the listener and every per-host context."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


def context_for(bundle: CertBundle) -> ssl.SSLContext:
    """A server context holding ``bundle``'s key and chain.

    ``load_cert_chain`` only reads files, so the PEM goes through a private temporary
    file (mode 0600, removed at once) — certificates from ACME exist only in the store.
    """
    context = server_context()
    fd, path = tempfile.mkstemp(prefix="clickrelay-cert-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(bundle.key_pem + b"\n" + bundle.chain_pem)
        context.load_cert_chain(path)
    finally:
        os.unlink(path)
    return context


class SniCertificates:
    """The per-host certificates of one HTTPS listener; ``context`` is what it binds with.

    ``hosts`` are the only names that will ever be served. ``refused`` counts handshakes
    refused because of the name (unknown, missing, or no certificate yet), by reason.
    """

    def __init__(self, hosts: Iterable[str]) -> None:
        self.hosts = frozenset(tls_host(h) for h in hosts)
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._bundles: dict[str, CertBundle] = {}
        self.refused: dict[str, int] = {}
        self.context = server_context()
        self.context.sni_callback = self._on_sni

    def install(self, host: str, bundle: CertBundle) -> None:
        """Serve ``bundle`` for ``host`` from the next handshake on.

        Raises ``ValueError`` for a host that is not a tracking host and ``ssl.SSLError``
        if OpenSSL refuses the key or chain (the previous certificate stays).
        """
        name = tls_host(host)
        if name not in self.hosts:
            raise ValueError(f"{host} is not a tracking host of this listener")
        context = context_for(bundle)
        self._contexts[name] = context
        self._bundles[name] = bundle

    def remove(self, host: str) -> None:
        name = tls_host(host)
        self._contexts.pop(name, None)
        self._bundles.pop(name, None)

    def bundle(self, host: str) -> CertBundle | None:
        """The certificate served for ``host`` now, if any."""
        return self._bundles.get(tls_host(host))

    def _refuse(self, reason: str) -> int:
        self.refused[reason] = self.refused.get(reason, 0) + 1
        return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME

    def _on_sni(
        self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        if not server_name:
            return self._refuse("no-sni")
        name = server_name.rstrip(".").lower()
        context = self._contexts.get(name)
        if context is None:
            return self._refuse("no-certificate" if name in self.hosts else "unknown-name")
        sslobj.context = context
        return None
