"""Health-strip lines the product layer knows and the redirector cannot: the preflight
verdict of every tracking domain (the monitor runs beside the redirector only inside
``clickrelay serve``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from redirector.http.health import HealthItem, HealthProvider

if TYPE_CHECKING:
    from clickrelay.config import Config
    from smtp_proxy.preflight.monitor import PreflightMonitor


def preflight_provider(monitor: PreflightMonitor, config: Config) -> HealthProvider:
    """One line per tracking base URL: its state and, when it fails, the fix."""

    def preflight() -> list[HealthItem]:
        items = []
        for base_url in config.tracking.base_urls():
            state = monitor.state(base_url)
            report = monitor.report(base_url)
            if state in ("verified", "disabled"):
                level, fix = "ok", None
            elif state == "pending":
                level, fix = "warn", None
            else:
                level, fix = "bad", report.fix if report else None
            detail = report.detail if report is not None else "not checked yet"
            items.append(HealthItem("preflight", base_url, level, state, detail, fix))
        return items

    return preflight


def standalone_preflight_item(config: Config) -> HealthProvider:
    """``clickrelay redirector`` runs no preflight: say so, with the domains it serves."""

    def preflight() -> list[HealthItem]:
        return [
            HealthItem(
                "preflight",
                base_url,
                "info",
                "not checked here",
                "this process is a standalone redirector; the proxy's preflight decides"
                " whether links are rewritten (`clickrelay preflight` checks by hand)",
            )
            for base_url in config.tracking.base_urls()
        ]

    return preflight
