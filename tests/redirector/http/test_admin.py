"""The one admin app factory, in the two shapes its listeners use (real loopback sockets).

The redirector's admin listener: ``/metrics`` and ``/api/stats``. A standalone proxy's:
``/metrics`` and ``/healthz``, no click statistics. (Metrics counted by the public app
and ``/api/stats`` from a real store are covered in test_app.py.)
"""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter

from redirector.http.admin import create_admin_app


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("clickrelay_admin_test", "a counter only this test bumps", registry=registry).inc(3)
    return registry


async def test_redirector_shape_serves_metrics_and_stats_only() -> None:
    app = create_admin_app(None, registry=_registry())
    async with TestClient[Any, Any](TestServer(app)) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert "clickrelay_admin_test_total 3.0" in await resp.text()
        resp = await client.get("/api/stats")
        assert resp.status == 503  # the route is there; no store was given
        assert (await client.get("/healthz")).status == 404


async def test_proxy_shape_serves_metrics_and_healthz_only() -> None:
    app = create_admin_app(
        None, registry=_registry(), stats=False, health_service="clickrelay-proxy"
    )
    async with TestClient[Any, Any](TestServer(app)) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        assert "clickrelay_admin_test_total 3.0" in await resp.text()
        resp = await client.get("/healthz")
        assert resp.status == 200
        assert await resp.json() == {"service": "clickrelay-proxy", "status": "ok"}
        assert (await client.get("/api/stats")).status == 404
