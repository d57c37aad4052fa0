"""One preflight check of a tracking base URL: DNS first, then the HTTP probe.

:func:`check_domain` never raises for DNS or network trouble — every failure is a
:class:`~smtp_proxy.preflight.verdicts.Verdict` with evidence and a fix. Only a broken
configuration (e.g. an unparsable nameserver) raises :class:`ConfigError`.
"""

from __future__ import annotations

import asyncio
import time

import dns.asyncresolver
import dns.name

from redirector.tokens import Keyring
from smtp_proxy.config import ProxySettings
from smtp_proxy.preflight.dns_check import check_dns, domain_skip_reason, host_of, make_resolver
from smtp_proxy.preflight.http_probe import healthz_url, probe
from smtp_proxy.preflight.verdicts import DnsEvidence, DomainReport, ProbeResult, Verdict, fix_for

#: Lower bound (seconds) of how long a verdict is trusted before it is checked again.
MIN_TTL = 30.0


def bounded_ttl(ttl: float | None, *, min_ttl: float, interval: float) -> float:
    """A DNS TTL clamped to ``[min_ttl, interval]`` (``interval`` wins if they cross)."""
    if ttl is None:
        return interval
    return min(max(float(ttl), min_ttl), interval)


def _display_target(cname_target: str) -> str | None:
    if not cname_target:
        return None
    return dns.name.from_text(cname_target).to_text()


async def check_domain(
    base_url: str,
    config: ProxySettings,
    keyring: Keyring,
    *,
    resolver: dns.asyncresolver.Resolver | None = None,
    min_ttl: float = MIN_TTL,
) -> DomainReport:
    """Check one tracking base URL once (pass ``resolver`` to share one across checks)."""
    pre = config.preflight
    host = host_of(base_url)
    cname_target = config.tracking.cname_target
    expected = _display_target(cname_target)
    checked_at = time.time()
    notes: list[str] = []
    reason = domain_skip_reason(host)
    addresses: tuple[str, ...] | None = None
    if reason is not None:
        notes.append(reason)
        evidence = DnsEvidence(qname=host, nameservers=tuple(pre.nameservers), skipped=reason)
        dns_verdict: Verdict | None = None
        detail = reason
    else:
        if resolver is None:
            resolver = await make_resolver(pre.nameservers, pre.timeout)
        outcome = await check_dns(
            host,
            cname_target,
            resolver,
            want_addresses=pre.http_probe,
            nameservers=pre.nameservers,
        )
        evidence, dns_verdict, detail = outcome.evidence, outcome.verdict, outcome.detail
        addresses = outcome.addresses or None
    ascii_host = evidence.qname if reason is None else host
    result: ProbeResult | None
    if dns_verdict is not None:
        verdict = dns_verdict
        why = "DNS check failed" if verdict.is_dns else "no address to connect to"
        result = ProbeResult(healthz_url(base_url), verdict, "not run", skipped=why)
    elif not pre.http_probe:
        verdict = Verdict.OK
        result = None
        notes.append("[preflight] http_probe = false; HTTP probe skipped")
    else:
        result = await probe(
            base_url,
            key_id=keyring.current_key_id,
            addresses=addresses,
            time_limit=pre.timeout,
            ca_file=pre.ca_file,
        )
        verdict = result.verdict
        detail = result.detail if verdict is not Verdict.OK else f"{detail}; {result.detail}"
    if verdict is Verdict.OK:
        ttl = bounded_ttl(evidence.min_ttl, min_ttl=min_ttl, interval=pre.interval)
    else:
        # A failing domain is re-checked soon so that a fix is noticed quickly.
        ttl = bounded_ttl(min_ttl, min_ttl=min_ttl, interval=pre.interval)
    fix = fix_for(
        verdict,
        host=ascii_host,
        expected_target=expected,
        dns=evidence,
        probe=result,
        current_key_id=keyring.current_key_id,
    )
    return DomainReport(
        base_url=base_url,
        host=host,
        verdict=verdict,
        detail=detail,
        dns=evidence,
        probe=result,
        fix=fix,
        ttl=ttl,
        checked_at=checked_at,
        expected_target=expected,
        notes=tuple(notes),
    )


async def check_all(
    config: ProxySettings, keyring: Keyring, *, min_ttl: float = MIN_TTL
) -> list[DomainReport]:
    """Check every base URL of ``config.tracking.base_urls()`` concurrently, in that order."""
    pre = config.preflight
    urls = config.tracking.base_urls()
    resolver = None
    if any(domain_skip_reason(host_of(url)) is None for url in urls):
        resolver = await make_resolver(pre.nameservers, pre.timeout)
    return list(
        await asyncio.gather(
            *(
                check_domain(url, config, keyring, resolver=resolver, min_ttl=min_ttl)
                for url in urls
            )
        )
    )
