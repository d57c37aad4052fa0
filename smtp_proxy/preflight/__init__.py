"""Preflight: prove each tracking domain's CNAME and HTTP path before links are rewritten.

* :func:`check_domain` / :func:`check_all` — one check, with evidence and a fix
  (``clickrelay check`` prints them).
* :class:`PreflightMonitor` — keeps verdicts fresh in the background and answers the
  proxy's ``may_rewrite(base_url)`` without I/O.
"""

from smtp_proxy.preflight.checks import MIN_TTL, check_all, check_domain
from smtp_proxy.preflight.monitor import PreflightMonitor
from smtp_proxy.preflight.verdicts import (
    DnsEvidence,
    DnsRecord,
    DomainReport,
    ProbeResult,
    Verdict,
)

__all__ = [
    "MIN_TTL",
    "DnsEvidence",
    "DnsRecord",
    "DomainReport",
    "PreflightMonitor",
    "ProbeResult",
    "Verdict",
    "check_all",
    "check_domain",
]
