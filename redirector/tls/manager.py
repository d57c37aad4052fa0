"""Certificates of the HTTPS listener: which one each tracking host gets, and getting new
ones from ACME in the background.

Per tracking host of an ``https://`` base URL:

* A certificate file (``[redirector] tls_certificates``) that covers the host wins.
* Otherwise, with ``[acme] enabled``: the certificate stored from an earlier order is
  served at once; a host with none (or one inside its renewal window) is ordered — only
  after its DNS check passed (``dns_gate``), only while this node holds the host's order
  lock, never for a name that is not a tracking host. A failed order is retried with
  exponential back-off (``Timing.backoff_base`` doubling up to ``backoff_max``) plus
  jitter, so a host never sees more than a few failed orders an hour. The certificate
  in service keeps serving until its successor is installed.
* Nodes sharing the storage pick up a certificate another node ordered at their next
  look (``Timing.poll``).

Everything observable is in :meth:`CertManager.status` (also written to the storage for
``clickrelay check`` and the proxy's preflight in other processes) and in the metrics
``clickrelay_tls_certificate_expiry_seconds{host}``, ``clickrelay_acme_orders_total
{host,outcome}`` and ``clickrelay_acme_backoff_seconds{host}``.

:class:`CertManager` puts together the parts that do this: what is served
(:mod:`redirector.tls.served`), ordering and renewal (:mod:`redirector.tls.renewal`) and
the metrics (:mod:`redirector.tls.metrics`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry

from clickrelay.common.logfmt import log_event
from redirector.config import AcmeConfig, RedirectorConfig
from redirector.tls import status as st
from redirector.tls.certs import CertBundle
from redirector.tls.metrics import TlsMetrics
from redirector.tls.renewal import AcmeRenewal
from redirector.tls.served import ServedCertificates
from redirector.tls.settings import DnsGate, Timing
from redirector.tls.sni import SniCertificates
from redirector.tls.storage import TlsStorage, TlsStorageError

log = logging.getLogger("clickrelay.tls")


class CertManager:
    """See the module docstring. ``hosts``: the tracking hosts served over HTTPS."""

    def __init__(
        self,
        hosts: Sequence[str],
        config: RedirectorConfig,
        acme: AcmeConfig,
        *,
        storage: TlsStorage | None,
        registry: CollectorRegistry,
        dns_gate: DnsGate | None = None,
        timing: Timing | None = None,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        if acme.enabled and storage is None:
            raise ValueError("ACME needs a TLS storage")
        self.storage = storage
        self._served = ServedCertificates(hosts, config, acme, on_change)
        self._renewal = (
            AcmeRenewal(self._served, acme, storage, dns_gate=dns_gate, timing=timing or Timing())
            if acme.enabled and storage is not None
            else None
        )
        self._metrics = TlsMetrics(self._served)
        self._registry = registry
        registry.register(self._metrics)

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self._served.hosts)

    @property
    def sni(self) -> SniCertificates:
        """The listener's ``SSLContext`` and the certificate installed per host."""
        return self._served.sni

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Load the certificate files and stored certificates and install what covers each
        host. Raises ConfigError for an unusable file or a host nothing can ever cover (no
        file, ACME off). Ordering starts with :meth:`start_ordering`."""
        await self._served.load_files()
        if self._renewal is not None:
            try:
                await self._renewal.open()
            except TlsStorageError as exc:
                # The ordering loops retry; hosts covered by files serve meanwhile.
                log_event(log, logging.WARNING, "tls-storage-unavailable", error=str(exc))
        for host in self._served.hosts.values():
            self._served.install_best(host)

    def start_ordering(self) -> None:
        """Start the background ordering and renewal (ACME on) — once the plain listener
        answers, since the CA may come for the HTTP-01 challenge right away."""
        if self._renewal is not None:
            self._renewal.start()

    async def stop(self) -> None:
        if self._renewal is not None:
            await self._renewal.stop()
        with contextlib.suppress(KeyError):  # a second stop()
            self._registry.unregister(self._metrics)
        if self.storage is not None:
            with contextlib.suppress(TlsStorageError):
                await self.storage.close()

    async def reload_files(self, config: RedirectorConfig) -> None:
        """SIGHUP: read ``tls_certificates`` again. A bad file raises ConfigError and
        changes nothing."""
        await self._served.reload_files(config)

    # --- what is served ------------------------------------------------------------------

    def served(self, host: str) -> CertBundle | None:
        return self._served.sni.bundle(host)

    def status(self, host: str) -> st.HostStatus:
        return self._served.status(host)

    def statuses(self) -> list[st.HostStatus]:
        return [self.status(h) for h in self._served.hosts]

    async def challenge_answer(self, token: str) -> str | None:
        """The HTTP-01 key authorization for ``token`` if any node placed it, else None."""
        if self._renewal is None:
            return None
        return await self._renewal.challenge_answer(token)
