"""``GET /api/clicks`` on the admin listener: the stored clicks, page by page.

Query: ``since``/``until`` (ISO 8601 or a duration back from now, like ``clickrelay
export``), ``tag``, ``limit`` (1-5000, default 1000) and ``cursor`` (the ``next_cursor``
of the previous page). Answer: ``{"clicks": [...], "next_cursor": "…" | null}`` — items
as ``clickrelay export --format jsonl`` writes them, in commit order; ``next_cursor`` is
null on the last page. Keyset pagination: a page costs the same however deep it is.
"""

from __future__ import annotations

import logging

from aiohttp import web

from clickrelay.common.errors import ClickrelayError
from clickrelay.common.logfmt import log_event
from redirector.store import ClickStore
from redirector.store.records import ClickFilter, click_record
from redirector.store.stats import parse_since

log = logging.getLogger("clickrelay.redirector")

MAX_LIMIT = 5000
STORE_KEY: web.AppKey[ClickStore | None] = web.AppKey("api_clicks_store")


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def api_clicks(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    if store is None:
        return web.json_response({"error": "no click store configured"}, status=503)
    query = request.query
    try:
        since = parse_since(query["since"]) if query.get("since") else None
        until = parse_since(query["until"]) if query.get("until") else None
    except ValueError as exc:
        return _bad(str(exc))
    try:
        limit = int(query.get("limit", "1000"))
        after = int(query.get("cursor", "0"))
    except ValueError:
        return _bad("limit and cursor must be integers")
    if not 1 <= limit <= MAX_LIMIT or after < 0:
        return _bad(f"limit must be 1-{MAX_LIMIT} and cursor >= 0")
    flt = ClickFilter(since=since, until=until, tag=query.get("tag") or None)
    try:
        page = await store.export_page(flt, after, limit)
    except ClickrelayError as exc:
        log_event(log, logging.WARNING, "api-clicks-failed", error=str(exc))
        return web.json_response({"error": f"click store unavailable: {exc}"}, status=503)
    next_cursor = str(page[-1].seq) if len(page) == limit else None
    return web.json_response(
        {"clicks": [click_record(c) for c in page], "next_cursor": next_cursor}
    )
