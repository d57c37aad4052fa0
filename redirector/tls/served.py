"""Which certificate each tracking host is served, and putting it into the running listener.

A certificate file (``[redirector] tls_certificates``) that covers the host wins;
otherwise the host's ACME certificate (:class:`~redirector.tls.host_state.HostState`).
:class:`ServedCertificates` reads the files (again on SIGHUP), refuses a set of files
that leaves a host uncovered while ACME is off, installs the best certificate of each
host into the SNI context (:mod:`redirector.tls.sni`) and says when one changed.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Sequence

from clickrelay.common.errors import ConfigError
from clickrelay.common.logfmt import log_event
from redirector.config import AcmeConfig, RedirectorConfig
from redirector.tls import status as st
from redirector.tls.certs import CertBundle, select, tls_host
from redirector.tls.files import load_certificate_files
from redirector.tls.host_state import HostState, host_status, utcnow
from redirector.tls.sni import SniCertificates

log = logging.getLogger("clickrelay.tls")


class ServedCertificates:
    """The tracking hosts (``hosts``, by normalised name), their certificates and the
    SNI context that serves them."""

    def __init__(
        self,
        hosts: Sequence[str],
        config: RedirectorConfig,
        acme: AcmeConfig,
        on_change: Callable[[str], None] | None,
    ) -> None:
        self.config = config
        self.acme = acme
        self.on_change = on_change
        self.hosts = {h: HostState(h) for h in dict.fromkeys(tls_host(x) for x in hosts)}
        self.sni = SniCertificates(self.hosts)
        self.files: list[CertBundle] = []

    async def load_files(self) -> None:
        """Read the certificate files; ConfigError for an unusable one or, ACME off, a
        host that no file covers."""
        self.files = await asyncio.to_thread(load_certificate_files, self.config.tls_certificates)
        self._check_coverage(self.files)

    async def reload_files(self, config: RedirectorConfig) -> None:
        """SIGHUP: read ``tls_certificates`` again. A bad file raises ConfigError and
        changes nothing."""
        files = await asyncio.to_thread(load_certificate_files, config.tls_certificates)
        self._check_coverage(files)
        self.config = config
        self.files = files
        for host in self.hosts.values():
            self.install_best(host)
            host.wake.set()

    def _check_coverage(self, files: Sequence[CertBundle]) -> None:
        if self.acme.enabled:
            return
        for name in self.hosts:
            if not any(b.covers(name) for b in files):
                raise ConfigError(
                    f"[redirector] tls_certificates: no certificate file covers the tracking "
                    f"host {name} (an https:// base URL): add a PEM file for it, or set "
                    "[acme] enabled = true"
                )

    def covered_by_file(self, host: HostState, now: datetime.datetime) -> bool:
        return any(b.covers(host.name) and b.valid_at(now) for b in self.files)

    def install_best(self, host: HostState) -> None:
        """Serve the best certificate for ``host`` (none: the handshake is refused); the
        one in service stays if OpenSSL refuses its successor."""
        now = utcnow()
        candidates = [*self.files, *([host.acme] if host.acme else [])]
        best = select(candidates, host.name, now)
        current = self.sni.bundle(host.name)
        if best is None:
            if current is not None:
                self.sni.remove(host.name)
                self.changed(host)
            return
        if current is not None and current.fingerprint == best.fingerprint:
            return
        try:
            self.sni.install(host.name, best)
        except Exception as exc:  # OpenSSL refused it: keep what is served
            log_event(
                log,
                logging.ERROR,
                "tls-install-failed",
                host=host.name,
                origin=best.origin,
                error=f"{type(exc).__name__}: {exc}",
            )
            return
        log_event(
            log,
            logging.INFO,
            "tls-certificate-installed",
            host=host.name,
            managed_by=best.source,
            origin=best.origin,
            issuer=best.issuer,
            not_after=best.not_after.isoformat(),
        )
        self.changed(host)

    def changed(self, host: HostState) -> None:
        """Tell ``on_change`` that what ``host`` is served (or its state) changed."""
        if self.on_change is not None:
            try:
                self.on_change(host.name)
            except Exception as exc:  # a listener's bug must not stop certificates
                log_event(log, logging.ERROR, "tls-on-change-failed", error=repr(exc))

    def renew_before(self) -> datetime.timedelta:
        return datetime.timedelta(days=self.acme.renew_before_days)

    def status(self, host: str) -> st.HostStatus:
        name = tls_host(host)
        return host_status(
            name,
            self.hosts.get(name),
            self.sni.bundle(name),
            acme_enabled=self.acme.enabled,
            renew_before=self.renew_before(),
        )
