"""Prometheus metrics of the SMTP proxy (served on ``/metrics`` of the admin listener).

One :class:`ProxyMetrics` per registry; the proxy never uses the global default
registry, so several proxies (tests, ``clickrelay serve``) can live in one process.
The upstream pool keeps its own metrics (pool size, connects) in the same registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Message outcomes (``clickrelay_proxy_messages_total{outcome=…}``):
#: ``accepted`` (upstream 2xx), ``refused`` (upstream 4xx/5xx passed through),
#: ``tempfail`` (upstream unreachable/cut: 451 to the client), ``rejected`` (refused by
#: the proxy itself, e.g. bare newlines).
OUTCOMES = ("accepted", "refused", "tempfail", "rejected")


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.messages = Counter(
            "clickrelay_proxy_messages",
            "Messages that reached the end of DATA, by outcome",
            ["outcome"],
            registry=registry,
        )
        self.links = Counter(
            "clickrelay_proxy_links",
            "Links seen in relayed messages, by action (tracked/skipped) and reason",
            ["action", "reason"],
            registry=registry,
        )
        self.rewrites = Counter(
            "clickrelay_proxy_rewrites",
            "Messages by rewriting decision (rewritten, no-links, preflight-…, error, …)",
            ["reason"],
            registry=registry,
        )
        self.rewrite_errors = Counter(
            "clickrelay_proxy_rewrite_errors",
            "Rewrites that failed and relayed the original bytes (fail-open)",
            registry=registry,
        )
        self.upstream_errors = Counter(
            "clickrelay_proxy_upstream_errors",
            "Upstream failures seen by the proxy, by SMTP stage",
            ["stage"],
            registry=registry,
        )
        self.connections = Gauge(
            "clickrelay_proxy_connections",
            "Open client connections",
            registry=registry,
        )
        self.connections_refused = Counter(
            "clickrelay_proxy_connections_refused",
            "Client connections refused or closed with 421, by reason (total: "
            "max_connections; per-client: max_connections_per_client; junk-commands: "
            "max_junk_commands)",
            ["reason"],
            registry=registry,
        )
        self.relay_denied = Counter(
            "clickrelay_proxy_relay_denied",
            "MAIL/RCPT refused because the client is neither trusted nor authenticated",
            registry=registry,
        )
        self.auth = Counter(
            "clickrelay_proxy_auth",
            "AUTH attempts by result (ok, failed, blocked)",
            ["result"],
            registry=registry,
        )
        self.auth_verifications = Counter(
            "clickrelay_proxy_auth_verifications",
            "Passwords checked against the users file (each costs an argon2 hash)",
            registry=registry,
        )
        self.duration = Histogram(
            "clickrelay_proxy_message_seconds",
            "Time from MAIL to the reply to DATA",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        for outcome in OUTCOMES:
            self.messages.labels(outcome=outcome)
