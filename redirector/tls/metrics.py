"""The HTTPS listener's certificate metrics, read from the served certificates when
Prometheus scrapes: expiry per host, ACME orders by outcome, back-off, refused
handshakes."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from redirector.tls.host_state import utcnow
from redirector.tls.served import ServedCertificates


class TlsMetrics(Collector):
    """``clickrelay_tls_certificate_expiry_seconds{host}``, ``clickrelay_acme_orders_total
    {host,outcome}``, ``clickrelay_acme_backoff_seconds{host}`` and
    ``clickrelay_tls_handshakes_refused_total{reason}``."""

    def __init__(self, served: ServedCertificates) -> None:
        self.served = served

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        expiry = GaugeMetricFamily(
            "clickrelay_tls_certificate_expiry_seconds",
            "Seconds until the certificate served for the tracking host expires",
            labels=["host"],
        )
        orders = CounterMetricFamily(
            "clickrelay_acme_orders",
            "ACME orders per tracking host by outcome (issued, failed)",
            labels=["host", "outcome"],
        )
        backoff = GaugeMetricFamily(
            "clickrelay_acme_backoff_seconds",
            "Seconds until the next ACME order may start after failures (0: none pending)",
            labels=["host"],
        )
        refused = CounterMetricFamily(
            "clickrelay_tls_handshakes_refused",
            "TLS handshakes refused for the name asked (unknown-name, no-sni, no-certificate)",
            labels=["reason"],
        )
        sni = self.served.sni
        for name, host in self.served.hosts.items():
            bundle = sni.bundle(name)
            if bundle is not None:
                expiry.add_metric([name], bundle.seconds_left(now))
            for outcome in ("issued", "failed"):
                orders.add_metric([name, outcome], host.orders.get(outcome, 0))
            wait = (host.next_attempt - now).total_seconds() if host.next_attempt else 0.0
            backoff.add_metric([name], max(wait, 0.0))
        for reason, count in sorted(sni.refused.items()):
            refused.add_metric([reason], count)
        yield expiry
        yield orders
        yield backoff
        yield refused

    def describe(self) -> list[Metric]:
        return []
