"""Preflight verdicts, their evidence, and the fix a person has to make (pure, no I/O).

A :class:`DomainReport` is what one check of one tracking base URL found: the verdict,
the DNS records as ``dig`` prints them, the HTTP probe's result, and — for every failure
— one concrete sentence saying what to change. ``clickrelay check`` prints it, the
monitor logs it when the verdict changes, and ``--json`` serialises it with
:meth:`DomainReport.to_json`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from smtp_proxy.preflight.cert_verdicts import TlsEvidence


class Verdict(enum.Enum):
    """The outcome of one preflight check of one tracking domain."""

    OK = "ok"
    NXDOMAIN = "nxdomain"
    NO_CNAME = "no-cname"
    WRONG_TARGET = "wrong-target"
    DNS_TIMEOUT = "dns-timeout"
    DNS_SERVFAIL = "dns-servfail"
    PROBE_REFUSED = "probe-refused"
    PROBE_TIMEOUT = "probe-timeout"
    PROBE_TLS_ERROR = "probe-tls-error"
    PROBE_HTTP_STATUS = "probe-http-status"
    WRONG_RESPONDER = "wrong-responder"
    KEY_MISMATCH = "key-mismatch"
    #: No certificate yet: the ACME order is under way or waits for DNS.
    CERT_PENDING = "cert-pending"
    #: The ACME order failed; the detail is the CA's error, verbatim.
    CERT_FAILED = "cert-failed"
    #: Inside the renewal window with renewal failing, or close to expiry unrenewed.
    CERT_EXPIRING = "cert-expiring"
    CERT_EXPIRED = "cert-expired"
    CERT_NAME_MISMATCH = "cert-name-mismatch"

    @property
    def is_dns(self) -> bool:
        return self in _DNS_VERDICTS


_DNS_VERDICTS = frozenset(
    {
        Verdict.NXDOMAIN,
        Verdict.NO_CNAME,
        Verdict.WRONG_TARGET,
        Verdict.DNS_TIMEOUT,
        Verdict.DNS_SERVFAIL,
    }
)


@dataclass(frozen=True)
class DnsRecord:
    """One resource record, as ``dig`` shows it: ``name. ttl IN TYPE value``."""

    name: str
    ttl: int
    rdtype: str
    value: str

    def dig(self) -> str:
        return f"{self.name} {self.ttl} IN {self.rdtype} {self.value}"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ttl": self.ttl, "type": self.rdtype, "value": self.value}


@dataclass(frozen=True)
class DnsEvidence:
    """What the DNS step saw.

    ``chain`` is the CNAME chain from the tracking host (first link first); ``other`` is
    what the host has instead of a CNAME (``no-cname``); ``addresses`` are the A/AAAA
    addresses the HTTP probe connects to. ``skipped`` says why DNS was not asked (an IP
    or ``localhost`` base URL), ``error`` what went wrong when it failed.
    """

    qname: str
    nameservers: tuple[str, ...] = ()
    chain: tuple[DnsRecord, ...] = ()
    other: tuple[DnsRecord, ...] = ()
    addresses: tuple[DnsRecord, ...] = ()
    skipped: str | None = None
    error: str | None = None

    @property
    def records(self) -> tuple[DnsRecord, ...]:
        return self.chain + self.other + self.addresses

    @property
    def min_ttl(self) -> int | None:
        ttls = [r.ttl for r in self.records]
        return min(ttls) if ttls else None

    def to_json(self) -> dict[str, Any]:
        return {
            "qname": self.qname,
            "nameservers": list(self.nameservers) or "system",
            "records": [r.to_json() for r in self.records],
            "skipped": self.skipped,
            "error": self.error,
        }


@dataclass(frozen=True)
class ProbeResult:
    """What ``GET <base_url>/healthz`` answered (or why it did not)."""

    url: str
    verdict: Verdict
    detail: str
    address: str | None = None
    status: int | None = None
    service: str | None = None
    version: str | None = None
    key_ids: tuple[str, ...] = ()
    store_state: str | None = None
    skipped: str | None = None

    def summary(self) -> str:
        if self.skipped:
            return f"skipped ({self.skipped})"
        where = f" via {self.address}" if self.address else ""
        return f"GET {self.url}{where}: {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "verdict": self.verdict.value,
            "detail": self.detail,
            "address": self.address,
            "status": self.status,
            "service": self.service,
            "version": self.version,
            "key_ids": list(self.key_ids),
            "store_state": self.store_state,
            "skipped": self.skipped,
        }


@dataclass(frozen=True)
class DomainReport:
    """One check of one tracking base URL.

    ``ttl`` is how long (seconds) the verdict may be trusted: the shortest DNS TTL seen,
    bounded by the caller to ``[min_ttl, interval]``. ``checked_at`` is wall-clock time
    (``time.time()``) for humans and JSON; the monitor keeps its own monotonic deadlines.
    """

    base_url: str
    host: str
    verdict: Verdict
    detail: str
    dns: DnsEvidence
    probe: ProbeResult | None
    fix: str | None
    ttl: float
    checked_at: float
    expected_target: str | None = None
    notes: tuple[str, ...] = field(default=())
    #: The certificate step of an ``https://`` base URL (None for ``http://`` or when DNS
    #: failed first).
    tls: TlsEvidence | None = None
    #: A failing verdict that still lets links be tracked (``cert-expiring`` while the
    #: certificate has days left): ``check`` reports it, the proxy keeps rewriting.
    warn_only: bool = False

    @property
    def ok(self) -> bool:
        return self.verdict is Verdict.OK

    @property
    def may_track(self) -> bool:
        """Whether links may be minted for this base URL on this verdict."""
        return self.ok or self.warn_only

    @property
    def expires_at(self) -> float:
        return self.checked_at + self.ttl

    def to_json(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "host": self.host,
            "verdict": self.verdict.value,
            "ok": self.ok,
            "detail": self.detail,
            "expected_target": self.expected_target,
            "dns": self.dns.to_json(),
            "probe": self.probe.to_json() if self.probe else None,
            "fix": self.fix,
            "ttl": self.ttl,
            "checked_at": self.checked_at,
            "expires_at": self.expires_at,
            "notes": list(self.notes),
            "tls": self.tls.to_json() if self.tls is not None else None,
            "may_track": self.may_track,
        }


def _bare(name: str) -> str:
    """``links.example.com.`` → ``links.example.com`` for prose."""
    return name[:-1] if name.endswith(".") and len(name) > 1 else name


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


def fix_for(
    verdict: Verdict,
    *,
    host: str,
    expected_target: str | None,
    dns: DnsEvidence,
    probe: ProbeResult | None,
    current_key_id: str,
    tls: TlsEvidence | None = None,
) -> str | None:
    """The one concrete thing to change for ``verdict``; None for ``ok``."""
    record = f"{_absolute(host)} CNAME {_absolute(expected_target)}" if expected_target else None
    servers = ", ".join(dns.nameservers) or "the system resolver"
    url = probe.url if probe else "/healthz"
    match verdict:
        case Verdict.OK:
            return None
        case Verdict.NXDOMAIN:
            if record:
                return f"Add this DNS record: {record}"
            return (
                f"Add an A or AAAA record for {_absolute(host)} pointing at the host running "
                "the clickrelay redirector (or renew the domain if it expired)"
            )
        case Verdict.NO_CNAME:
            instead = ", ".join(f"{r.rdtype} {r.value}" for r in dns.other)
            if record is None:
                return f"Add an A or AAAA record for {_absolute(host)}"
            if instead:
                return (
                    f"Add this DNS record: {record} (and remove what the name has now: "
                    f"{instead}; a CNAME cannot sit next to other records)"
                )
            return f"Add this DNS record: {record}"
        case Verdict.WRONG_TARGET:
            found = _bare(dns.chain[-1].value) if dns.chain else "?"
            return (
                f"{_bare(host)} points to {found}, expected {_bare(expected_target or '?')}: "
                f"change the record to {record}"
            )
        case Verdict.DNS_TIMEOUT:
            return (
                f"No answer from {servers} for {_bare(host)}: check [preflight] nameservers "
                "and that those servers are reachable from this machine"
            )
        case Verdict.DNS_SERVFAIL:
            return (
                f"{servers} answered SERVFAIL for {_bare(host)}: the zone is broken (DNSSEC, "
                f"lame delegation) or the domain expired; check with `dig {_bare(host)} CNAME` "
                "and your DNS provider"
            )
        case Verdict.PROBE_REFUSED if not dns.skipped and not dns.addresses and not dns.error:
            last = _bare(dns.chain[-1].value) if dns.chain else _bare(host)
            return (
                f"{_bare(host)} resolves to no A or AAAA address: add an address record for "
                f"{last} pointing at the host that runs the clickrelay redirector"
            )
        case Verdict.PROBE_REFUSED:
            where = probe.address if probe and probe.address else _bare(host)
            return (
                f"Nothing accepted the connection for {url} at {where}: start the clickrelay "
                "redirector there, or point the DNS record at the host that runs it"
            )
        case Verdict.PROBE_TIMEOUT:
            return (
                f"{url} did not answer in time: check the firewall and that the clickrelay "
                "redirector (or the reverse proxy in front of it) is running and not overloaded"
            )
        case Verdict.PROBE_TLS_ERROR:
            return (
                f"The certificate served for {_bare(host)} failed verification: install a "
                f"certificate valid for {_bare(host)} (e.g. from Let's Encrypt), or set "
                "[preflight] ca_file to the CA that signed it"
            )
        case Verdict.PROBE_HTTP_STATUS:
            status = probe.status if probe else None
            return (
                f"{url} answered HTTP {status}, expected 200 from the clickrelay redirector: "
                "route /healthz and /c/ of this host to the redirector's listen address"
            )
        case Verdict.WRONG_RESPONDER:
            return (
                f"{url} is not answered by a clickrelay redirector: point {_bare(host)} (or the "
                "reverse proxy's upstream for it) at the redirector's listen address"
            )
        case Verdict.KEY_MISMATCH:
            held = ", ".join(probe.key_ids) if probe and probe.key_ids else "none"
            return (
                f"The redirector at {url} holds keys [{held}] but links are minted with key "
                f"{current_key_id}: copy [tracking] key_file to the redirector and reload it "
                "(SIGHUP)"
            )
        case (
            Verdict.CERT_PENDING
            | Verdict.CERT_FAILED
            | Verdict.CERT_EXPIRING
            | Verdict.CERT_EXPIRED
            | Verdict.CERT_NAME_MISMATCH
        ):
            return _cert_fix(verdict, _bare(host), tls)
    return None  # pragma: no cover - match is exhaustive


def _cert_fix(verdict: Verdict, host: str, tls: TlsEvidence | None) -> str:
    status = tls.status if tls is not None else None
    by_acme = status is not None and status.managed_by == "acme"
    match verdict:
        case Verdict.CERT_PENDING:
            detail = status.detail if status is not None and status.detail else ""
            if detail.startswith("waiting for DNS"):
                return (
                    f"Nothing to do if the DNS record for {host} was just added: the certificate "
                    "is ordered once the DNS check passes (see the dns lines above)"
                )
            return (
                f"Wait a minute: the certificate for {host} is being ordered; if this stays, "
                "check the redirector's log for acme-order lines"
            )
        case Verdict.CERT_FAILED:
            return (
                f"Make http://{host}/.well-known/acme-challenge/ reach the redirector's listen "
                "address on port 80 (firewall, DNS, load balancer) and allow the CA in any CAA "
                f"record of {host}; the redirector retries with back-off (SIGHUP or a restart "
                "retries at once)"
            )
        case Verdict.CERT_EXPIRING if by_acme:
            return (
                f"Renewal of the certificate for {host} keeps failing (error above): make the "
                f"ACME server and http://{host}/.well-known/acme-challenge/ reachable; the "
                "certificate in service keeps working until it expires"
            )
        case Verdict.CERT_EXPIRING | Verdict.CERT_EXPIRED:
            return (
                f"Put a renewed certificate for {host} in the file listed in [redirector] "
                "tls_certificates and send the redirector SIGHUP (or set [acme] enabled = true "
                "to have it renewed automatically)"
            )
        case Verdict.CERT_NAME_MISMATCH:
            return (
                f"The certificate served for {host} does not name it: put a certificate whose "
                f"subjectAltName includes {host} in [redirector] tls_certificates and send "
                "SIGHUP, or remove the wrong file so that ACME covers the host"
            )
    return ""  # pragma: no cover - only certificate verdicts come here
