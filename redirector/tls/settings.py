"""What the HTTPS listener's certificate handling is given: the tracking hosts, ``[acme]``,
where its storage lives, the DNS check a host must pass before it is ordered, and the
timing of ordering and renewal (plain values, built by the product layer)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from redirector.config import AcmeConfig

#: ``await dns_gate(host)``: None when the host's DNS check passed, else why not.
DnsGate = Callable[[str], Awaitable[str | None]]


@dataclass(frozen=True)
class Timing:
    """Seconds. Tests shrink them; the defaults respect public CAs' rate limits."""

    backoff_base: float = 300.0
    backoff_max: float = 6 * 3600.0
    #: Re-check a host whose DNS is not ready yet after this long.
    dns_retry: float = 60.0
    #: Look for a certificate another node stored at least this often.
    poll: float = 300.0
    #: ... and this often while this node has none for the host (a cheap read, and the
    #: host's links wait for it).
    poll_missing: float = 5.0
    #: Renewal starts up to this fraction of the certificate's lifetime later (at most
    #: an hour), so that nodes and hosts do not all renew in the same second.
    jitter: float = 0.02


@dataclass(frozen=True)
class TlsSettings:
    """What the HTTPS listener needs beyond ``[redirector]``, from the product layer:
    the tracking hosts of ``https://`` base URLs, ``[acme]``, the data directory (for the
    SQLite TLS storage) and the DNS check that must pass before a host is ordered."""

    hosts: tuple[str, ...] = ()
    acme: AcmeConfig = field(default_factory=AcmeConfig)
    data_dir: Path = Path("clickrelay-data")
    dns_gate: DnsGate | None = None
    timing: Timing = field(default_factory=Timing)
    #: Called with the host whenever the certificate served for it changes (the preflight
    #: in the same process re-checks at once instead of at its next refresh).
    on_change: Callable[[str], None] | None = None
