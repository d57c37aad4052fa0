"""Keeps a fresh preflight verdict for every tracking domain, in the background.

The SMTP proxy asks :meth:`PreflightMonitor.may_rewrite` for every message: a dict
lookup and a clock read, never I/O, so no SMTP transaction ever waits on DNS. Each
domain has its own refresh task that re-checks it before its verdict expires (the
shortest DNS TTL seen, bounded to ``[min_ttl, interval]``); a verdict that expired
without a refresh counts as not verified. Until a domain's first verdict it is
"pending" and its mail goes out unrewritten — startup never blocks mail.

Usage (e.g. in the proxy or a test)::

    monitor = PreflightMonitor(config, keyring, registry=registry)
    await monitor.start()          # returns at once
    await monitor.wait_ready()     # optional: until every domain has a first verdict
    monitor.may_rewrite(base_url)  # True only while verified
    await monitor.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import dns.asyncresolver
from prometheus_client import CollectorRegistry, Gauge

from clickrelay.common.aiotasks import cancel_and_wait
from clickrelay.common.logfmt import log_event
from redirector.tokens import Keyring
from smtp_proxy.config import ProxySettings
from smtp_proxy.preflight.checks import MIN_TTL, check_domain
from smtp_proxy.preflight.dns_check import domain_skip_reason, host_of, make_resolver
from smtp_proxy.preflight.verdicts import DomainReport, Verdict

logger = logging.getLogger("clickrelay.preflight")


def normalize_base_url(base_url: str) -> str:
    """The key a base URL is known by: without trailing slashes."""
    return base_url.rstrip("/")


@dataclass
class _Domain:
    base_url: str
    label: str
    wake: asyncio.Event
    report: DomainReport | None = None
    #: Monotonic deadline (``clock()``) after which the verdict is no longer trusted.
    expires: float = 0.0
    #: Set when the keys changed: the verdict must be re-earned before rewriting again.
    stale: bool = False
    checks: int = 0


class PreflightMonitor:
    """Background preflight of every ``config.tracking.base_urls()`` entry.

    ``min_ttl`` (default 30 s) is the lower bound of a verdict's lifetime and ``clock``
    (default :func:`time.monotonic`) the clock deadlines are kept in; tests shrink the
    one and replace the other instead of sleeping. Metrics go to ``registry`` (a private
    one when None, never the global default).
    """

    def __init__(
        self,
        config: ProxySettings,
        keyring: Keyring,
        *,
        registry: CollectorRegistry | None = None,
        min_ttl: float = MIN_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._keyring = keyring
        self._min_ttl = min_ttl
        self._clock = clock
        self._enabled = config.preflight.enabled
        self.registry = registry if registry is not None else CollectorRegistry()
        self._gauge = Gauge(
            "clickrelay_tracking_domain_verified",
            "1 while the tracking domain's CNAME and HTTP probe check out, else 0",
            ["domain"],
            registry=self.registry,
        )
        self._domains: dict[str, _Domain] = {}
        for url in config.tracking.base_urls():
            key = normalize_base_url(url)
            if key not in self._domains:
                self._domains[key] = _Domain(url, host_of(url), asyncio.Event())
                self._gauge.labels(domain=host_of(url)).set(0)
        self._tasks: list[asyncio.Task[None]] = []
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._ready = asyncio.Event()
        if not self._enabled or not self._domains:
            self._ready.set()

    # --- what the proxy asks (sync, no I/O) ------------------------------------------------

    def may_rewrite(self, base_url: str) -> bool:
        """True only while this base URL's latest verdict is ``ok`` and not expired."""
        if not self._enabled:
            return True
        domain = self._domains.get(normalize_base_url(base_url))
        if domain is None or domain.report is None or domain.stale:
            return False
        return domain.report.verdict is Verdict.OK and self._clock() < domain.expires

    def state(self, base_url: str) -> str:
        """``verified``, ``pending``, ``disabled`` or the failing verdict's value."""
        if not self._enabled:
            return "disabled"
        domain = self._domains.get(normalize_base_url(base_url))
        if domain is None or domain.report is None or domain.stale:
            return "pending"
        if domain.report.verdict is not Verdict.OK:
            return str(domain.report.verdict.value)
        return "verified" if self._clock() < domain.expires else "pending"

    def report(self, base_url: str) -> DomainReport | None:
        """The latest report for a base URL (None before its first check)."""
        domain = self._domains.get(normalize_base_url(base_url))
        return domain.report if domain else None

    def reports(self) -> list[DomainReport]:
        return [d.report for d in self._domains.values() if d.report is not None]

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start one refresh task per domain and return at once."""
        if not self._enabled or self._tasks:
            return
        for key, domain in self._domains.items():
            task = asyncio.create_task(self._run(domain), name=f"preflight {key}")
            self._tasks.append(task)

    async def stop(self) -> None:
        # cancel_and_wait, not a bare cancel: dnspython's wait_for can drop the cancel.
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(*tasks)

    async def wait_ready(self) -> None:
        """Wait until every domain has its first verdict (wrap in ``asyncio.timeout``)."""
        await self._ready.wait()

    def update_keyring(self, keyring: Keyring) -> None:
        """New keys (SIGHUP). If the minting key changed, every domain must prove again
        that its redirector holds it before links are rewritten; checks run at once."""
        changed = keyring.current_key_id != self._keyring.current_key_id
        self._keyring = keyring
        for domain in self._domains.values():
            if changed and self._config.preflight.http_probe:
                domain.stale = True
                self._gauge.labels(domain=domain.label).set(0)
            domain.wake.set()

    def refresh_soon(self) -> None:
        """Re-check every domain now, in the background."""
        for domain in self._domains.values():
            domain.wake.set()

    async def refresh(self) -> list[DomainReport]:
        """Check every domain now and record the verdicts (for tests and reloads)."""
        return list(await asyncio.gather(*(self._check(d) for d in self._domains.values())))

    # --- the refresh loop --------------------------------------------------------------------

    async def _get_resolver(self) -> dns.asyncresolver.Resolver | None:
        if self._resolver is None:
            needs_dns = any(domain_skip_reason(d.label) is None for d in self._domains.values())
            if needs_dns:
                pre = self._config.preflight
                self._resolver = await make_resolver(pre.nameservers, pre.timeout)
        return self._resolver

    async def _check(self, domain: _Domain) -> DomainReport:
        keyring = self._keyring
        report = await check_domain(
            domain.base_url,
            self._config,
            keyring,
            resolver=await self._get_resolver(),
            min_ttl=self._min_ttl,
        )
        self._record(domain, report, stale=keyring is not self._keyring)
        return report

    def _refresh_delay(self, ttl: float) -> float:
        # Re-check early enough that a slow check still lands before the verdict expires.
        margin = 3 * self._config.preflight.timeout
        return max(ttl / 2, ttl - margin)

    async def _run(self, domain: _Domain) -> None:
        while True:
            domain.wake.clear()
            try:
                report = await self._check(domain)
                delay = self._refresh_delay(report.ttl)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not kill the loop: fail closed, retry
                log_event(
                    logger,
                    logging.ERROR,
                    "preflight-error",
                    domain=domain.label,
                    base_url=domain.base_url,
                    error=f"{type(exc).__name__}: {exc}",
                )
                self._gauge.labels(domain=domain.label).set(0)
                domain.expires = 0.0
                delay = self._min_ttl
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await domain.wake.wait()

    def _record(self, domain: _Domain, report: DomainReport, *, stale: bool) -> None:
        previous = domain.report.verdict if domain.report is not None else None
        domain.report = report
        domain.expires = self._clock() + report.ttl
        domain.stale = stale
        domain.checks += 1
        ok = report.verdict is Verdict.OK and not stale
        self._gauge.labels(domain=domain.label).set(1 if ok else 0)
        if report.verdict is not previous:
            log_event(
                logger,
                logging.INFO if report.verdict is Verdict.OK else logging.WARNING,
                "preflight-verdict",
                domain=domain.label,
                base_url=domain.base_url,
                verdict=report.verdict.value,
                previous=previous.value if previous else "pending",
                detail=report.detail,
                fix=report.fix,
            )
        if all(d.report is not None for d in self._domains.values()):
            self._ready.set()
