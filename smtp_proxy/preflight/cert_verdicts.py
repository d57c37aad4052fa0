"""Certificate verdicts of an ``https://`` tracking host (pure, no I/O).

Inputs: the certificate the host served (or why the handshake failed) and what the
redirector knows about it (:class:`~redirector.tls.status.HostStatus`: who manages it,
the last ACME order and its error). Output: a failing verdict, or None when the
certificate is fine and the HTTP probe decides.

``cert-expiring`` is the one verdict that does not always stop link tracking: while the
certificate still has :data:`EXPIRING_BLOCKS_DAYS` days or more, links keep being
tracked (and ``check`` says renewal is failing); below that no new link is minted for
the host, so no recipient gets a link that dies before it is clicked.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from redirector.tls import status as st
from redirector.tls.certs import name_matches, tls_host
from smtp_proxy.preflight.verdicts import Verdict

#: Below this many days left, a certificate that is not being renewed stops tracking.
EXPIRING_BLOCKS_DAYS = 7.0


@dataclass(frozen=True)
class ServedCert:
    """The leaf certificate a TLS handshake with the host's SNI returned."""

    names: tuple[str, ...]
    issuer: str
    not_before: datetime.datetime
    not_after: datetime.datetime


@dataclass(frozen=True)
class TlsEvidence:
    """What the certificate step saw, for ``clickrelay check`` and ``--json``."""

    host: str
    address: str | None
    served: ServedCert | None
    handshake_error: str | None
    status: st.HostStatus | None
    checked_at: datetime.datetime

    @property
    def days_left(self) -> float | None:
        if self.served is None:
            return None
        return (self.served.not_after - self.checked_at).total_seconds() / 86400

    @property
    def managed_by(self) -> str | None:
        return self.status.managed_by if self.status is not None else None

    def lines(self) -> list[str]:
        out: list[str] = []
        if self.served is not None:
            days = self.days_left or 0.0
            out.append(f"names {', '.join(self.served.names) or '(none)'}")
            out.append(f"issuer {self.served.issuer}")
            out.append(
                f"not after {self.served.not_after.isoformat(timespec='seconds')} "
                f"({days:.1f} days left)"
            )
        else:
            out.append(f"no certificate served: {self.handshake_error or 'handshake failed'}")
        status = self.status
        out.append(f"managed by {self.managed_by or 'unknown (not this redirector)'}")
        if status is not None and status.last_attempt is not None:
            result = f"failed: {status.last_error}" if status.last_error else "ok"
            out.append(
                f"last renewal attempt {status.last_attempt.isoformat(timespec='seconds')}: "
                f"{result}"
            )
        if status is not None and status.next_attempt is not None and status.failures:
            out.append(
                f"next attempt {status.next_attempt.isoformat(timespec='seconds')} "
                f"(after {status.failures} failed order(s))"
            )
        if status is not None and status.detail:
            out.append(status.detail)
        return out

    def to_json(self) -> dict[str, Any]:
        served = self.served
        status = self.status
        return {
            "host": self.host,
            "address": self.address,
            "names": list(served.names) if served else [],
            "issuer": served.issuer if served else None,
            "not_after": served.not_after.isoformat() if served else None,
            "days_left": round(self.days_left, 3) if self.days_left is not None else None,
            "managed_by": self.managed_by,
            "handshake_error": self.handshake_error,
            "last_attempt": (
                status.last_attempt.isoformat() if status and status.last_attempt else None
            ),
            "last_error": status.last_error if status else None,
            "state": status.state if status else None,
            "failures": status.failures if status else 0,
            "next_attempt": (
                status.next_attempt.isoformat() if status and status.next_attempt else None
            ),
        }


def covers(served: ServedCert, host: str) -> bool:
    wanted = tls_host(host)
    return any(name_matches(name, wanted) for name in served.names)


def cert_verdict(evidence: TlsEvidence) -> tuple[Verdict, str] | None:
    """The certificate's failing verdict with a detail line, or None (probe decides)."""
    served, status, now = evidence.served, evidence.status, evidence.checked_at
    host = evidence.host
    if served is None:
        if status is None:
            return None
        if status.state == st.FAILED:
            return Verdict.CERT_FAILED, f"certificate order failed: {status.last_error}"
        if status.state in (st.PENDING, st.NONE) and status.managed_by == "acme":
            why = status.detail or "certificate order in progress"
            return Verdict.CERT_PENDING, f"no certificate yet for {host}: {why}"
        return None
    if not covers(served, host):
        names = ", ".join(served.names) or "no DNS names"
        return Verdict.CERT_NAME_MISMATCH, f"the certificate served for {host} is for {names}"
    if now >= served.not_after:
        return (
            Verdict.CERT_EXPIRED,
            f"the certificate expired {served.not_after.isoformat(timespec='seconds')}",
        )
    days = (served.not_after - now).total_seconds() / 86400
    failing = status is not None and status.renewal_failing
    in_window = status is not None and status.renewal_due is not None and now >= status.renewal_due
    unrenewed = status is None or failing or status.managed_by == "file"
    if (failing and in_window) or (days < EXPIRING_BLOCKS_DAYS and unrenewed):
        error = f"; last renewal error: {status.last_error}" if status and status.last_error else ""
        return Verdict.CERT_EXPIRING, f"the certificate expires in {days:.1f} days{error}"
    return None


def blocks_tracking(verdict: Verdict, evidence: TlsEvidence | None) -> bool:
    """Whether a non-ok verdict stops new tracked links (see the module docstring)."""
    if verdict is Verdict.OK:
        return False
    if verdict is Verdict.CERT_EXPIRING and evidence is not None:
        days = evidence.days_left
        return days is None or days < EXPIRING_BLOCKS_DAYS
    return True
