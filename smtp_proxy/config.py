"""The SMTP side's settings: [proxy], [upstream], [tracking], [preflight] and [dkim].

Plain frozen dataclasses; :mod:`clickrelay.config` reads the TOML into them (every key
checked by the ``check`` metadata below) and hands the proxy a :class:`ProxySettings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from clickrelay.common.validators import (
    check,
    check_base_url,
    check_listen,
    check_nameservers,
    check_networks,
    check_non_negative,
    check_positive,
    check_sender_domains,
    one_of,
)
from redirector.config import RedirectorConfig

DEFAULT_DATA_DIR = Path("clickrelay-data")


def _check_upstream_url(value: str) -> None:
    if value.startswith("maildir:"):
        if not value[len("maildir:") :]:
            raise ValueError("expected maildir:PATH")
        return
    parts = urlsplit(value)
    if parts.scheme not in ("smtp", "smtp+starttls", "smtps") or not parts.hostname:
        raise ValueError(
            "expected smtp://host:port, smtp+starttls://host:port, smtps://host:port "
            "or maildir:PATH"
        )
    try:
        _ = parts.port
    except ValueError:
        raise ValueError("expected a valid port") from None


# --- sections --------------------------------------------------------------------------


@dataclass(frozen=True)
class ProxyConfig:
    listen: str = field(default="127.0.0.1:2525", metadata=check(check_listen))
    #: ``/metrics`` of a standalone ``clickrelay proxy``; empty = off. (``serve`` puts
    #: every metric on ``[redirector] admin_listen``.)
    admin_listen: str = field(default="127.0.0.1:8082", metadata=check(check_listen))
    #: Optional implicit-TLS (SMTPS) listener, e.g. ``0.0.0.0:465``; empty = off.
    tls_listen: str = field(default="", metadata=check(check_listen))
    #: Name in the greeting and EHLO; empty = the machine's FQDN.
    hostname: str = ""
    trusted_networks: tuple[str, ...] = field(
        default=("127.0.0.0/8", "::1/128"), metadata=check(check_networks)
    )
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: File of ``user:argon2-hash`` lines (``clickrelay adduser``); empty = no AUTH.
    users_file: Path | None = None
    #: Offer AUTH without TLS to clients on loopback (development only).
    allow_plain_auth_on_loopback: bool = False
    max_message_size: int = field(default=52_428_800, metadata=check(check_positive))
    max_recipients: int = field(default=1000, metadata=check(check_positive))
    #: One recipient per transaction: a second RCPT gets ``452 4.5.3 Too many recipients``
    #: and the client (Postfix, Exim, any RFC 5321 client) sends the other recipients in
    #: further transactions, so every copy's links carry their own recipient.
    one_recipient_per_message: bool = False
    max_connections: int = field(default=200, metadata=check(check_positive))
    #: Open connections one client address (an IPv6 /64) may hold at once.
    max_connections_per_client: int = field(default=20, metadata=check(check_positive))
    #: Commands that carry no message (NOOP, RSET, VRFY, HELP, EHLO, AUTH…) allowed
    #: between two messages; the next one gets 421 and the connection is closed.
    max_junk_commands: int = field(default=100, metadata=check(check_positive))
    command_timeout: float = field(default=300.0, metadata=check(check_positive))
    data_timeout: float = field(default=600.0, metadata=check(check_positive))
    #: Bare LF / bare CR in DATA: ``reject`` (550 5.6.0) or ``normalize`` to CRLF.
    bare_newline: str = field(default="reject", metadata=check(one_of("reject", "normalize")))
    #: Failed AUTH attempts allowed per client address per window before 421/454.
    auth_fail_limit: int = field(default=5, metadata=check(check_positive))
    auth_fail_window: float = field(default=300.0, metadata=check(check_positive))
    #: Password checks (argon2, tens of ms of CPU each) running at once, all clients.
    auth_concurrency: int = field(default=4, metadata=check(check_positive))
    #: SIGTERM: seconds in-flight transactions get to finish.
    shutdown_grace: float = field(default=30.0, metadata=check(check_non_negative))


@dataclass(frozen=True)
class UpstreamConfig:
    url: str = field(default="maildir:clickrelay-data/outbox", metadata=check(_check_upstream_url))
    pool_size: int = field(default=4, metadata=check(check_positive))
    connect_timeout: float = field(default=10.0, metadata=check(check_positive))
    timeout: float = field(default=120.0, metadata=check(check_positive))
    username: str = ""
    password: str = ""
    #: CA bundle for verifying the upstream's certificate; empty = system CAs.
    ca_file: Path | None = None
    verify_tls: bool = True
    #: EHLO name towards the upstream; empty = the proxy's hostname.
    helo: str = ""


def _check_utm_value(value: str) -> None:
    if len(value) > 200 or any(ord(c) < 0x20 for c in value):
        raise ValueError("expected at most 200 characters without control characters")


def _check_utm_domains(value: dict[str, dict[str, str]]) -> None:
    for domain, params in value.items():
        for name, text in params.items():
            if name not in _UTM_KEYS:
                raise ValueError(f"{domain}: expected keys among {', '.join(_UTM_KEYS)}")
            _check_utm_value(text)


_UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


@dataclass(frozen=True)
class UtmConfig:
    """``[tracking.utm]``: parameters added to tracked links' destinations (off while
    all are empty). ``{tag}`` in a value is the message's tag."""

    utm_source: str = field(default="", metadata=check(_check_utm_value))
    utm_medium: str = field(default="", metadata=check(_check_utm_value))
    utm_campaign: str = field(default="", metadata=check(_check_utm_value))
    utm_term: str = field(default="", metadata=check(_check_utm_value))
    utm_content: str = field(default="", metadata=check(_check_utm_value))
    #: Per sender domain (and its subdomains): these keys replace the ones above.
    sender_domains: dict[str, dict[str, str]] = field(
        default_factory=dict, metadata=check(_check_utm_domains)
    )

    def base(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in _UTM_KEYS if getattr(self, k)}

    @property
    def enabled(self) -> bool:
        return bool(self.base()) or any(any(v.values()) for v in self.sender_domains.values())


@dataclass(frozen=True)
class TrackingConfig:
    #: Tracked links become ``<base_url>/c/<token>``.
    base_url: str = field(default="http://127.0.0.1:8080", metadata=check(check_base_url))
    #: What every tracking host must CNAME to; empty = skip the CNAME step.
    cname_target: str = ""
    key_file: Path = DEFAULT_DATA_DIR / "keys"
    #: Also track http(s) URLs in text/plain parts.
    text_links: bool = True
    #: Also track an ``<a>`` whose visible text is a URL or host name (the display would
    #: then name another host than the link's: phishing checks flag that).
    track_url_text: bool = False
    max_link_length: int = field(default=2048, metadata=check(check_positive))
    #: A destination URL longer than this many bytes stays untracked (reason
    #: ``too-long``): a token compresses the URL, and every click stores it.
    max_url_length: int = field(default=8192, metadata=check(check_positive))
    #: Messages with more MIME parts are relayed unchanged (reason ``too-many-parts``):
    #: each part costs the rewriter work, on the event loop for small messages.
    max_parts: int = field(default=1000, metadata=check(check_positive))
    #: Links to these domains (and their subdomains) are never tracked.
    skip_domains: tuple[str, ...] = ()
    #: Add one invisible trap link to each rewritten HTML part: a scanner that fetches it
    #: marks itself (and its walk through the message) as a bot. Adds ~300 bytes per part.
    bot_trap: bool = False
    #: Per-sender-domain tracking base URLs: ``"example.com" = "https://links.example.com"``.
    sender_domains: dict[str, str] = field(
        default_factory=dict, metadata=check(check_sender_domains)
    )
    #: UTM parameters for tracked links (opt-in).
    utm: UtmConfig = field(default_factory=UtmConfig)

    def base_urls(self) -> tuple[str, ...]:
        """Every tracking base URL, default first, without duplicates."""
        seen = dict.fromkeys([self.base_url, *self.sender_domains.values()])
        return tuple(seen)


@dataclass(frozen=True)
class PreflightConfig:
    enabled: bool = True
    #: ``host`` or ``host:port``; empty = the system resolver.
    nameservers: tuple[str, ...] = field(default=(), metadata=check(check_nameservers))
    #: Upper bound (seconds) of a cached verdict; lower bound is 30 s.
    interval: float = field(default=300.0, metadata=check(check_positive))
    http_probe: bool = True
    timeout: float = field(default=5.0, metadata=check(check_positive))
    #: CA bundle for the https probe; empty = system CAs.
    ca_file: Path | None = None


@dataclass(frozen=True)
class DkimDomainConfig:
    selector: str
    key_file: Path
    canonicalization: str = field(
        default="relaxed/relaxed",
        metadata=check(
            one_of("relaxed/relaxed", "relaxed/simple", "simple/simple", "simple/relaxed")
        ),
    )
    headers: tuple[str, ...] = (
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "reply-to",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "list-unsubscribe",
        "list-unsubscribe-post",
    )


@dataclass(frozen=True)
class DkimConfig:
    #: Re-signing keys by signing domain (``d=``): ``[dkim.domains."example.com"]``.
    domains: dict[str, DkimDomainConfig] = field(default_factory=dict)


class ProxySettings(Protocol):
    """The sections the SMTP side reads; the product layer's ``Config`` is one."""

    @property
    def proxy(self) -> ProxyConfig: ...

    @property
    def upstream(self) -> UpstreamConfig: ...

    @property
    def tracking(self) -> TrackingConfig: ...

    @property
    def preflight(self) -> PreflightConfig: ...

    @property
    def dkim(self) -> DkimConfig: ...

    @property
    def redirector(self) -> RedirectorConfig: ...
