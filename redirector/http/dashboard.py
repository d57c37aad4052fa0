"""The click dashboard on the admin listener: overview, drill-downs, CSV, health strip.

Server-rendered (Jinja2 through aiohttp-jinja2, templates and CSS inside the package),
charts drawn as inline SVG (:mod:`redirector.http.charts`): no script, no cookie, no
request to anywhere but this listener, under a Content-Security-Policy that allows only
this listener's stylesheet. Every value from the network (user agents, URLs, recipients,
queue ids) reaches the page only through Jinja's autoescaping, inside ``<bdi>`` so that
a right-to-left override in one cannot reorder the text around it.

Routes: ``GET /`` (overview), ``GET /message?queue_id=``, ``GET /link?url=``,
``GET /tag?tag=``; each takes
``window=24h|7d|30d|custom`` (``from=``/``to=`` for custom, dates or times in the chosen
zone), ``tz=`` (an IANA zone, UTC by default) and ``format=csv``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

from clickrelay.common.errors import ClickrelayError
from clickrelay.common.logfmt import log_event
from redirector.http.charts import bucket_hours, buckets, line_chart
from redirector.http.health import HealthItem, HealthProvider, collect
from redirector.store.base import ClickStore
from redirector.store.dashboard import DashboardData, DashboardQuery, hour_floor

log = logging.getLogger("clickrelay.redirector")

#: Preset windows in hours.
PRESETS = {"24h": 24, "7d": 7 * 24, "30d": 30 * 24}
#: The longest custom window (hourly roll-up rows read: one per hour and class).
MAX_WINDOW = timedelta(days=400)
_ZONE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}$")

#: On every admin answer: nothing but this listener's stylesheet and icon may load.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


@dataclass
class DashboardSources:
    """Where the dashboard reads from: the recorder's store and state, health providers."""

    store: ClickStore | None
    store_state: HealthProvider | None = None
    providers: list[HealthProvider] = field(default_factory=list)

    async def health(self) -> list[HealthItem]:
        sources = ([self.store_state] if self.store_state else []) + self.providers
        return await collect(sources)


SOURCES_KEY = web.AppKey("dashboard_sources", DashboardSources)


@dataclass(frozen=True)
class View:
    """The window, zone and bucket size one page is drawn for."""

    window: str
    start: datetime
    end: datetime
    tz: ZoneInfo
    bucket_hours: int
    custom_from: str = ""
    custom_to: str = ""

    def args(self, **extra: str) -> str:
        """The query string that keeps this window and zone (plus ``extra``)."""
        params = {"window": self.window}
        if self.window == "custom":
            params.update({"from": self.custom_from, "to": self.custom_to})
        if self.tz.key != "UTC":
            params["tz"] = self.tz.key
        params.update(extra)
        return urlencode(params)

    def when(self, value: datetime) -> str:
        return value.astimezone(self.tz).strftime("%Y-%m-%d %H:%M")

    def when_seconds(self, value: datetime) -> str:
        return value.astimezone(self.tz).strftime("%Y-%m-%d %H:%M:%S")

    def label(self, value: datetime) -> str:
        local = value.astimezone(self.tz)
        if self.bucket_hours == 1:
            return local.strftime("%H:%M")
        return local.strftime("%b %d %H:%M" if self.bucket_hours < 24 else "%b %d")


def parse_zone(text: str) -> ZoneInfo:
    if not text:
        return ZoneInfo("UTC")
    if len(text) > 64 or not _ZONE_RE.match(text):
        raise ValueError("tz: expected an IANA time zone name such as Europe/Berlin")
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"tz: unknown time zone {text!r}") from None


def _local_time(text: str, tz: ZoneInfo, name: str) -> tuple[datetime, bool]:
    """A ``from``/``to`` value in the page's zone; True when it was a bare date."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{name}: expected a date (2026-11-01) or time (2026-11-01T12:00)"
        ) from None
    date_only = len(text.strip()) == 10
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(UTC), date_only


def parse_view(query: Mapping[str, str], now: datetime) -> View:
    """The page's window from its query string; ValueError with a message for people."""
    tz = parse_zone(query.get("tz", ""))
    window = query.get("window", "24h") or "24h"
    end = hour_floor(now) + timedelta(hours=1)
    if window in PRESETS:
        hours = PRESETS[window]
        if hours <= 24:
            return View(window, end - timedelta(hours=hours), end, tz, bucket_hours(hours))
        # Whole UTC days (today's so far included): the buckets start at midnight and the
        # store reads its daily roll-ups for all but today.
        today = end.replace(hour=0) if end.hour else end - timedelta(days=1)
        start = today - timedelta(days=hours // 24 - 1)
        return View(window, start, end, tz, bucket_hours(hours))
    if window != "custom":
        raise ValueError("window: expected 24h, 7d, 30d or custom")
    raw_from, raw_to = query.get("from", ""), query.get("to", "")
    if not raw_from:
        raise ValueError("from: a custom window needs a start date")
    start_at, _ = _local_time(raw_from, tz, "from")
    if raw_to:
        end_at, date_only = _local_time(raw_to, tz, "to")
        if date_only:  # a date as the end means "through that day"
            end_at += timedelta(days=1)
    else:
        end_at = now
    start = hour_floor(start_at)
    end = hour_floor(end_at)
    if end < end_at:
        end += timedelta(hours=1)
    if end <= start:
        raise ValueError("to: the window ends before it starts")
    if end - start > MAX_WINDOW:
        raise ValueError(f"window: at most {MAX_WINDOW.days} days")
    hours = int((end - start) / timedelta(hours=1))
    return View("custom", start, end, tz, bucket_hours(hours), raw_from, raw_to)


def number(value: int) -> str:
    return f"{value:,}"


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "–"


def csv_cell(value: object) -> str:
    """A CSV cell a spreadsheet will not run: formulas get a leading apostrophe."""
    text = "" if value is None else str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + text
    return text


def _csv(rows: list[list[object]], filename: str) -> web.Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in rows:
        writer.writerow([csv_cell(v) for v in row])
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    sources = request.app[SOURCES_KEY]
    context = {"error": message, "health": await sources.health(), "view": None}
    response = aiohttp_jinja2.render_template("error.html", request, context, status=status)
    return response


#: Drill-down kinds: the query parameter naming the subject, and what a person is asked
#: when it is missing.
SUBJECTS = {
    "message": ("queue_id", "queue_id: which message?"),
    "link": ("url", "url: which link?"),
    "tag": ("tag", "tag: which tag?"),
}


async def _page(request: web.Request, kind: str) -> web.StreamResponse:
    sources = request.app[SOURCES_KEY]
    try:
        view = parse_view(request.query, datetime.now(UTC))
    except ValueError as exc:
        return await _error_page(request, 400, str(exc))
    subject: dict[str, str] = {}
    if kind in SUBJECTS:
        param, missing = SUBJECTS[kind]
        value = request.query.get(param, "")
        if not value:
            return await _error_page(request, 400, missing)
        subject[param] = value
    if sources.store is None:
        return await _error_page(request, 503, "no click store is configured")
    query = DashboardQuery(view.start, view.end, **subject)
    try:
        data = await sources.store.dashboard(query)
    except ClickrelayError as exc:
        log_event(log, logging.WARNING, "dashboard-failed", error=str(exc))
        return await _error_page(request, 503, f"click store unavailable: {exc}")
    series = buckets(data.hours, view.start, view.end, view.bucket_hours)
    if request.query.get("format") == "csv":
        return _csv_answer(kind, view, data, series, next(iter(subject.values()), ""))
    total = data.human + data.bot
    context = {
        "kind": kind,
        "view": view,
        "data": data,
        "queue_id": subject.get("queue_id"),
        "url": subject.get("url"),
        "tag": subject.get("tag"),
        "chart": line_chart(series, view.label),
        "buckets": series,
        "total": total,
        "presets": list(PRESETS),
        "health": await sources.health(),
        "number": number,
        "percent": percent,
        "csv_args": view.args(format="csv", **subject),
    }
    return aiohttp_jinja2.render_template(f"{kind}.html", request, context)


def _csv_answer(
    kind: str, view: View, data: DashboardData, series: list[Any], key: str
) -> web.Response:
    stamp = view.start.strftime("%Y%m%dT%H")
    if kind == "overview":
        rows: list[list[object]] = [[f"bucket start ({view.tz.key})", "human", "bot"]]
        rows += [[view.when(b.start), b.human, b.bot] for b in series]
        return _csv(rows, f"clicks-overview-{stamp}.csv")
    rows = [
        [
            f"time ({view.tz.key})",
            "class",
            "reason",
            "client_ip",
            "user_agent",
            "recipient",
            "queue_id",
            "link_index",
            "url",
        ]
    ]
    rows += [
        [
            view.when_seconds(c.time),
            c.classification,
            c.reason,
            c.client_ip,
            c.user_agent,
            c.recipient,
            c.queue_id,
            c.link_index,
            c.url,
        ]
        for c in data.recent
    ]
    safe = re.sub(r"[^A-Za-z0-9]+", "-", key)[:40].strip("-") or "x"
    return _csv(rows, f"clicks-{kind}-{safe}-{stamp}.csv")


async def overview(request: web.Request) -> web.StreamResponse:
    return await _page(request, "overview")


async def message(request: web.Request) -> web.StreamResponse:
    return await _page(request, "message")


async def link(request: web.Request) -> web.StreamResponse:
    return await _page(request, "link")


async def tag(request: web.Request) -> web.StreamResponse:
    return await _page(request, "tag")


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The CSP and friends on every admin answer, errors included."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


def add_dashboard(app: web.Application, sources: DashboardSources) -> None:
    """Mount the dashboard's routes, templates and static files on the admin ``app``."""
    app[SOURCES_KEY] = sources
    package = files("redirector.http")
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("redirector.http", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    app.router.add_get("/", overview)
    app.router.add_get("/message", message)
    app.router.add_get("/link", link)
    app.router.add_get("/tag", tag)
    app.router.add_static("/static/", str(package / "static"), show_index=False)
