"""The upstream side's Prometheus metrics, one set per registry."""

from __future__ import annotations

import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge


class UpstreamMetrics:
    """Connections opened and reused, failures by stage, idle connections, transactions."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.opened = Counter(
            "clickrelay_upstream_connections_opened",
            "Upstream SMTP connections opened",
            registry=registry,
        )
        self.reused = Counter(
            "clickrelay_upstream_connections_reused",
            "Transactions that reused a pooled upstream connection",
            registry=registry,
        )
        self.failures = Counter(
            "clickrelay_upstream_failures",
            "Upstream connection failures (connect, command, data, probe)",
            ["stage"],
            registry=registry,
        )
        self.idle = Gauge(
            "clickrelay_upstream_idle_connections",
            "Idle upstream connections in the pool",
            registry=registry,
        )
        self.active = Gauge(
            "clickrelay_upstream_active_transactions",
            "Upstream transactions in progress",
            registry=registry,
        )


# A reload may build a new pool on the same registry, and registering the same names
# twice would raise: the pools of one registry share one set of metric objects.
_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, UpstreamMetrics] = (
    weakref.WeakKeyDictionary()
)


def metrics_for(registry: CollectorRegistry) -> UpstreamMetrics:
    metrics = _METRICS.get(registry)
    if metrics is None:
        metrics = _METRICS[registry] = UpstreamMetrics(registry)
    return metrics
