"""The admin aiohttp application: ``/metrics`` and, for the redirector, ``/api/stats``
and ``/api/health``, and the click dashboard (:mod:`redirector.http.dashboard`);
``/api/clicks`` is :mod:`redirector.http.api_clicks`.

One factory for both listeners that serve it: the redirector's ``[redirector]
admin_listen`` (metrics and click statistics) and a standalone proxy's ``[proxy]
admin_listen`` (metrics and a ``/healthz`` naming the proxy). Keep it off the internet:
it tells anyone who asks how much mail and how many clicks went through. With
``[redirector] admin_token`` set, every route requires it
(:mod:`redirector.http.admin_auth`); without, the listener must be on loopback.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from clickrelay.common.errors import ClickrelayError
from clickrelay.common.logfmt import log_event
from redirector.http import api_clicks
from redirector.http.admin_auth import install_admin_auth
from redirector.http.dashboard import DashboardSources, add_dashboard, security_headers
from redirector.store.stats import parse_since

if TYPE_CHECKING:
    from redirector.clicks.recorder import ClickRecorder

log = logging.getLogger("clickrelay.redirector")

RECORDER_KEY: web.AppKey[ClickRecorder | None] = web.AppKey("redirector_recorder")
REGISTRY_KEY = web.AppKey("redirector_registry", CollectorRegistry)
HEALTH_SERVICE_KEY = web.AppKey("admin_health_service", str)


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: the Prometheus text format of the app's ``REGISTRY_KEY`` registry."""
    registry = request.app[REGISTRY_KEY]
    return web.Response(
        body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


async def _api_stats(request: web.Request) -> web.Response:
    recorder = request.app[RECORDER_KEY]
    if recorder is None:
        return web.json_response({"error": "no click store configured"}, status=503)
    since = None
    raw = request.query.get("since")
    if raw:
        try:
            since = parse_since(raw)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
    settled_only = request.query.get("settled", "") in ("1", "true", "yes")
    try:
        doc = await recorder.store.stats(
            since, request.query.get("tag") or None, settled_only=settled_only
        )
    except ClickrelayError as exc:
        log_event(log, logging.WARNING, "stats-failed", error=str(exc))
        return web.json_response({"error": f"click store unavailable: {exc}"}, status=503)
    return web.json_response(doc)


def store_health(recorder: ClickRecorder | None) -> dict[str, Any]:
    """The ``store`` object of ``/api/health``: state and queue counts (kept off the
    public ``/healthz``: they tell an outsider how busy we are)."""
    if recorder is None:
        return {"state": "disabled", "queued": 0, "dropped": 0}
    return {"state": recorder.state, "queued": recorder.queued, "dropped": recorder.dropped}


async def _api_health(request: web.Request) -> web.Response:
    return web.json_response(
        {"service": "clickrelay-redirector", "store": store_health(request.app[RECORDER_KEY])}
    )


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"service": request.app[HEALTH_SERVICE_KEY], "status": "ok"})


def create_admin_app(
    recorder: ClickRecorder | None,
    *,
    registry: CollectorRegistry,
    stats: bool = True,
    health_service: str | None = None,
    token: str = "",
    dashboard: DashboardSources | None = None,
) -> web.Application:
    """``GET /metrics`` (Prometheus text format of ``registry``), plus:

    * ``stats``: ``GET /api/stats?since=&tag=&settled=1`` from ``recorder``'s store (503
      without one; ``settled=1``: only clicks whose label is final), ``GET /api/clicks``
      (pages of stored clicks) and ``GET /api/health`` (store state, queued and dropped
      clicks);
    * ``health_service``: ``GET /healthz`` answering ``{"service": …, "status": "ok"}``.

    * ``dashboard``: the click dashboard (``/``, ``/message``, ``/link``, ``/static/``);
    * ``token``: every route answers 401 without it (:mod:`redirector.http.admin_auth`).

    The redirector passes its recorder; a standalone proxy passes ``None, stats=False,
    health_service="clickrelay-proxy"``. ``token``: required on every route when set.
    """
    # The security headers wrap everything, the 401s of the token check included.
    app = web.Application(middlewares=[security_headers])
    install_admin_auth(app, token)
    app[REGISTRY_KEY] = registry
    app[RECORDER_KEY] = recorder
    app.router.add_get("/metrics", metrics_handler)
    if stats:
        app.router.add_get("/api/stats", _api_stats)
        app[api_clicks.STORE_KEY] = recorder.store if recorder is not None else None
        app.router.add_get("/api/clicks", api_clicks.api_clicks)
        app.router.add_get("/api/health", _api_health)
    if health_service is not None:
        app[HEALTH_SERVICE_KEY] = health_service
        app.router.add_get("/healthz", _healthz)
    if dashboard is not None:
        add_dashboard(app, dashboard)
    return app
