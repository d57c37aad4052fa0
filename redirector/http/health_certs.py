"""Health-strip lines of the HTTPS listener: days left on each tracking host's certificate.

One line per host of an ``https://`` base URL, from what the certificate manager serves
and knows (its :class:`~redirector.tls.status.HostStatus`): red when a person must act —
the ACME order failed, no certificate can be served, the certificate does not name the
host, has expired or is not valid yet, or expires within :data:`EXPIRING_DAYS` with
nothing renewing it (a file, or ACME renewal failing) or inside its renewal window with
renewal failing. The same rules as the proxy's preflight certificate verdicts, judged
from memory here instead of a handshake, so the page costs no connection.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

from redirector.http.health import HealthItem, HealthProvider
from redirector.tls import status as st
from redirector.tls.certs import ACME, CertBundle

if TYPE_CHECKING:
    from redirector.tls.manager import CertManager

GROUP = "certificate"
#: Below this many days left, a certificate nothing is renewing is red.
EXPIRING_DAYS = 7.0


def days_text(days: float) -> str:
    """``63 days``, ``6.5 days``, ``1 day``: whole days once they are many."""
    if days >= 10:
        whole = int(days)
        return f"{whole:,} days"
    return "1 day" if f"{days:.1f}" == "1.0" else f"{days:.1f} days"


def _renew_fix(host: str, status: st.HostStatus) -> str:
    if status.managed_by == ACME:
        return (
            f"renewal of the certificate for {host} keeps failing: make the ACME server and "
            f"http://{host}/.well-known/acme-challenge/ reachable (firewall, DNS, port 80); "
            "the certificate in service works until it expires"
        )
    return (
        f"put a renewed certificate for {host} in the file listed in [redirector] "
        "tls_certificates and send the redirector SIGHUP (or set [acme] enabled = true to "
        "have it renewed automatically)"
    )


def _without_certificate(status: st.HostStatus) -> HealthItem:
    host = status.host
    if status.state == st.FAILED:
        retry = (
            f"; next attempt {status.next_attempt:%Y-%m-%d %H:%M} UTC"
            if status.next_attempt is not None
            else ""
        )
        return HealthItem(
            GROUP,
            host,
            "bad",
            "order failed",
            f"{status.last_error or 'the CA gave no reason'}{retry}",
            f"make http://{host}/.well-known/acme-challenge/ reach this redirector on port 80"
            f" (firewall, DNS, load balancer) and allow the CA in any CAA record of {host};"
            " orders are retried with back-off (SIGHUP retries at once)",
        )
    if status.managed_by == ACME:
        return HealthItem(
            GROUP,
            host,
            "warn",
            "pending",
            status.detail or "certificate order in progress",
            f"nothing if the DNS record for {host} was just added: the certificate is ordered"
            " once the DNS check passes; if this stays, look for acme-order lines in the log",
        )
    return HealthItem(
        GROUP,
        host,
        "bad",
        "no certificate",
        "HTTPS clicks on this host fail the handshake",
        f"put a certificate whose subjectAltName includes {host} in [redirector]"
        " tls_certificates and send SIGHUP, or set [acme] enabled = true",
    )


def certificate_item(
    status: st.HostStatus, bundle: CertBundle | None, now: datetime.datetime
) -> HealthItem:
    """The line for one host: ``bundle`` is the certificate served for it (None: none)."""
    if bundle is None:
        return _without_certificate(status)
    host = status.host
    days = bundle.days_left(now)
    until = f"until {bundle.not_after:%Y-%m-%d %H:%M} UTC"
    source = f"{bundle.source} ({bundle.origin})" if bundle.source != ACME else "acme"
    detail = f"{source}, issued by {bundle.issuer}, {until}"
    if not bundle.covers(host):
        names = ", ".join(bundle.names) or "no DNS names"
        return HealthItem(
            GROUP,
            host,
            "bad",
            "name mismatch",
            f"the certificate served is for {names}; {detail}",
            f"put a certificate whose subjectAltName includes {host} in [redirector]"
            " tls_certificates and send SIGHUP, or remove the wrong file so that ACME covers"
            " the host",
        )
    if days <= 0:
        return HealthItem(
            GROUP,
            host,
            "bad",
            f"expired {days_text(-days)} ago",
            detail,
            _renew_fix(host, status),
        )
    if now < bundle.not_before:
        return HealthItem(
            GROUP,
            host,
            "bad",
            "not valid yet",
            f"valid from {bundle.not_before:%Y-%m-%d %H:%M} UTC; {detail}",
            f"check this host's clock, or put a certificate for {host} that is valid now in"
            " [redirector] tls_certificates and send SIGHUP",
        )
    left = f"{days_text(days)} left"
    failing = status.renewal_failing
    in_window = status.renewal_due is not None and now >= status.renewal_due
    unrenewed = status.managed_by != ACME or failing
    if (failing and in_window) or (days < EXPIRING_DAYS and unrenewed):
        error = f"; last renewal error: {status.last_error}" if status.last_error else ""
        return HealthItem(
            GROUP, host, "bad", f"expiring: {left}", detail + error, _renew_fix(host, status)
        )
    if in_window:
        return HealthItem(GROUP, host, "ok", left, f"renewal under way; {detail}")
    return HealthItem(GROUP, host, "ok", left, detail)


def certificates_provider(certs: CertManager) -> HealthProvider:
    """One line per HTTPS tracking host (answered from memory: no handshake, no I/O)."""

    def certificates() -> list[HealthItem]:
        now = datetime.datetime.now(datetime.UTC)
        return [certificate_item(s, certs.served(s.host), now) for s in certs.statuses()]

    return certificates
