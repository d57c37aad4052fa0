"""The DNS half of preflight: does the tracking host CNAME to ``cname_target``?

Queries go through dnspython's asyncio resolver pointed at ``[preflight] nameservers``
(or the system resolver), never through the libc resolver, so that what is checked is
what the configured servers say — and the addresses found here are the ones the HTTP
probe connects to. Nothing is cached here: every check asks the network and records
the TTLs it was given, which bound how long the verdict is trusted.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.rrset

from clickrelay.common.errors import ConfigError
from clickrelay.common.validators import parse_nameserver
from smtp_proxy.preflight.verdicts import DnsEvidence, DnsRecord, Verdict

#: Longest CNAME chain followed from the tracking host before giving up.
MAX_CHAIN = 8


@dataclass(frozen=True)
class DnsOutcome:
    """``verdict`` is None when DNS is fine (the probe decides); else the DNS failure."""

    verdict: Verdict | None
    evidence: DnsEvidence
    detail: str

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(r.value for r in self.evidence.addresses)


def host_of(base_url: str) -> str:
    """The lower-cased host of a base URL (unicode kept; brackets of IPv6 removed)."""
    host = urlsplit(base_url).hostname
    if not host:
        raise ConfigError(f"{base_url}: tracking base URL has no host")
    return host


def domain_skip_reason(host: str) -> str | None:
    """Why DNS is not asked for this host (IP literal or localhost), or None."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return f"{host} is an IP address; DNS check skipped"
    bare = host.rstrip(".").lower()
    if bare == "localhost" or bare.endswith(".localhost"):
        return f"{host} is localhost; DNS check skipped"
    return None


async def _nameserver(entry: str) -> dns.nameserver.Do53Nameserver:
    try:
        # The loader already checked this entry; settings built in code were not.
        host, port = parse_nameserver(entry)
    except ValueError as exc:
        raise ConfigError(f"[preflight] nameservers: {entry!r}: {exc}") from None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        # A name: resolve it once with the system resolver (only the server's own address).
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise ConfigError(f"[preflight] nameservers: cannot resolve {host!r}: {exc}") from None
        host = str(infos[0][4][0])
    return dns.nameserver.Do53Nameserver(host, port)


async def make_resolver(
    nameservers: Sequence[str], query_timeout: float
) -> dns.asyncresolver.Resolver:
    """A resolver for ``[preflight] nameservers`` (system resolver when empty).

    ``query_timeout`` bounds each query in total (dnspython's ``lifetime``), retries included.
    """
    if nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [await _nameserver(entry) for entry in nameservers]
    else:
        try:
            resolver = dns.asyncresolver.Resolver()
        except dns.resolver.NoResolverConfiguration as exc:
            raise ConfigError(
                f"no system resolver configuration ({exc}); set [preflight] nameservers"
            ) from None
    resolver.timeout = query_timeout
    resolver.lifetime = query_timeout
    resolver.cache = None
    return resolver


def _records(rrset: dns.rrset.RRset) -> list[DnsRecord]:
    rdtype = dns.rdatatype.to_text(rrset.rdtype)
    return [DnsRecord(rrset.name.to_text(), rrset.ttl, rdtype, rd.to_text()) for rd in rrset]


class _Failure(Exception):
    def __init__(self, verdict: Verdict, detail: str) -> None:
        super().__init__(detail)
        self.verdict = verdict
        self.detail = detail


async def _query(
    resolver: dns.asyncresolver.Resolver, name: dns.name.Name, rdtype: str
) -> dns.resolver.Answer:
    """One query; DNS failures become :class:`_Failure` (NXDOMAIN is left to the caller)."""
    try:
        return await resolver.resolve(name, rdtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        raise
    except dns.exception.Timeout:
        raise _Failure(
            Verdict.DNS_TIMEOUT, f"no answer for {name} {rdtype} within {resolver.lifetime:g}s"
        ) from None
    except dns.resolver.NoNameservers as exc:
        raise _Failure(Verdict.DNS_SERVFAIL, f"{name} {rdtype}: {exc}") from None
    except dns.exception.DNSException as exc:
        raise _Failure(Verdict.DNS_SERVFAIL, f"{name} {rdtype}: {exc}") from None


async def _addresses(
    resolver: dns.asyncresolver.Resolver, name: dns.name.Name
) -> tuple[list[DnsRecord], list[DnsRecord]]:
    """(CNAME chain records, A/AAAA records) of a name, as the recursive answer gives them."""
    answers = await asyncio.gather(_query(resolver, name, "A"), _query(resolver, name, "AAAA"))
    chain: list[DnsRecord] = []
    addresses: list[DnsRecord] = []
    for answer in answers:
        for rrset in answer.response.answer:
            if rrset.rdtype == dns.rdatatype.CNAME:
                for record in _records(rrset):
                    if record not in chain:
                        chain.append(record)
            elif rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                addresses.extend(_records(rrset))
    return chain, addresses


async def _follow_chain(
    resolver: dns.asyncresolver.Resolver, qname: dns.name.Name, target: dns.name.Name
) -> tuple[list[DnsRecord], Verdict | None, str]:
    """Walk CNAMEs from ``qname`` until ``target`` (at most :data:`MAX_CHAIN` links)."""
    chain: list[DnsRecord] = []
    name = qname
    for _ in range(MAX_CHAIN):
        try:
            answer = await _query(resolver, name, "CNAME")
        except dns.resolver.NXDOMAIN:
            if name == qname:
                return chain, Verdict.NXDOMAIN, f"{qname} does not exist (NXDOMAIN)"
            return (
                chain,
                Verdict.WRONG_TARGET,
                (f"CNAME chain ends at {name}, which does not exist; expected {target}"),
            )
        rrset = answer.rrset
        if rrset is None or len(rrset) == 0:
            if name == qname:
                return chain, Verdict.NO_CNAME, f"{qname} has no CNAME record"
            return chain, Verdict.WRONG_TARGET, f"{qname} points to {name}, expected {target}"
        chain.extend(_records(rrset))
        next_name = next(iter(rrset)).target
        assert isinstance(next_name, dns.name.Name)
        if next_name == target:  # dns.name.Name compares case-insensitively
            return chain, None, f"{qname} is a CNAME of {target}"
        name = next_name
    return (
        chain,
        Verdict.WRONG_TARGET,
        (f"CNAME chain from {qname} is longer than {MAX_CHAIN} links without reaching {target}"),
    )


async def check_dns(
    host: str,
    cname_target: str,
    resolver: dns.asyncresolver.Resolver,
    *,
    want_addresses: bool,
    nameservers: Sequence[str] = (),
) -> DnsOutcome:
    """Check one tracking host: the CNAME chain (if a target is set), then its addresses.

    ``host`` and ``cname_target`` may be upper/lower case, with or without the trailing
    dot, unicode (IDN, compared in punycode) or ASCII.
    """
    servers = tuple(nameservers)
    qname = dns.name.from_text(host)
    evidence = DnsEvidence(qname=qname.to_text(), nameservers=servers)
    chain: list[DnsRecord] = []
    try:
        if cname_target:
            target = dns.name.from_text(cname_target)
            chain, verdict, detail = await _follow_chain(resolver, qname, target)
            if verdict is Verdict.NO_CNAME:
                _, other = await _addresses(resolver, qname)
                if other:
                    detail += " (it has " + ", ".join(f"{r.rdtype} {r.value}" for r in other) + ")"
                return DnsOutcome(
                    verdict, DnsEvidence(qname.to_text(), servers, (), tuple(other)), detail
                )
            if verdict is not None:
                return DnsOutcome(
                    verdict, DnsEvidence(qname.to_text(), servers, tuple(chain)), detail
                )
        else:
            detail = "no cname_target set; CNAME step skipped"
        if not want_addresses:
            return DnsOutcome(None, DnsEvidence(qname.to_text(), servers, tuple(chain)), detail)
        try:
            seen_chain, addresses = await _addresses(resolver, qname)
        except dns.resolver.NXDOMAIN:
            return DnsOutcome(
                Verdict.NXDOMAIN,
                DnsEvidence(qname.to_text(), servers, tuple(chain)),
                f"{qname} does not exist (NXDOMAIN)",
            )
        if not chain:
            chain = seen_chain
        evidence = DnsEvidence(qname.to_text(), servers, tuple(chain), (), tuple(addresses))
        if not addresses:
            return DnsOutcome(
                Verdict.PROBE_REFUSED, evidence, f"{qname} has no A or AAAA address to connect to"
            )
        return DnsOutcome(None, evidence, detail)
    except _Failure as failure:
        failed = DnsEvidence(qname.to_text(), servers, tuple(chain), error=failure.detail)
        return DnsOutcome(failure.verdict, failed, failure.detail)
    except dns.resolver.NXDOMAIN:  # pragma: no cover - every query site handles it
        return DnsOutcome(Verdict.NXDOMAIN, evidence, f"{qname} does not exist (NXDOMAIN)")
