"""Click statistics: the JSON document both stores return, its text form, ``--since`` parsing.

The stores aggregate in SQL (so stats stay cheap on a big table) and hand rows to
:func:`build_stats`, which shapes the one JSON document shared by ``clickrelay stats
--json`` and ``GET /api/stats``::

    {"messages": [{"queue_id", "human_clicks", "bot_clicks", "unique_human_recipients",
                   "first_click", "last_click",
                   "links": [{"link_index", "url", "human_clicks", "bot_clicks",
                              "unique_human_recipients", "first_click", "last_click"}]}],
     "totals": {"human_clicks", "bot_clicks", "messages", "links",
                "bot_reasons": {reason: clicks}, "unsettled_clicks", "settled_only"},
     "tags": [{"tag", "human_clicks", "bot_clicks"}]}

``tags`` totals the clicks of tagged messages per tag (untagged clicks are not listed);
``--tag T`` (``?tag=T``) counts only the clicks of messages tagged ``T``.

``unsettled_clicks`` counts the clicks (since ``since``) whose label may still change
(see :mod:`redirector.clicks.settle`); with ``settled_only`` every other figure leaves
them out, which is what anything acting on clicks should read.

Times are ISO 8601 UTC strings. Messages are ordered by first click, links by index.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redirector.clicks import utc

#: Shared by both stores: one row per (message, link, url), and one per message. Each store
#: fills in ``{table}`` and ``{where}`` (its ``time >= placeholder`` clause, or nothing); the
#: time column compares correctly in both (timestamptz in PostgreSQL, fixed-format UTC text
#: in SQLite).
LINK_STATS_SQL = """
SELECT queue_id, link_index, url,
       SUM(CASE WHEN classification = 'human' THEN 1 ELSE 0 END) AS human_clicks,
       SUM(CASE WHEN classification = 'human' THEN 0 ELSE 1 END) AS bot_clicks,
       COUNT(DISTINCT CASE WHEN classification = 'human' THEN recipient END) AS uniq,
       MIN(time) AS first_click, MAX(time) AS last_click
FROM {table} {where}
GROUP BY queue_id, link_index, url
"""
MESSAGE_STATS_SQL = """
SELECT queue_id,
       SUM(CASE WHEN classification = 'human' THEN 1 ELSE 0 END) AS human_clicks,
       SUM(CASE WHEN classification = 'human' THEN 0 ELSE 1 END) AS bot_clicks,
       COUNT(DISTINCT CASE WHEN classification = 'human' THEN recipient END) AS uniq,
       MIN(time) AS first_click, MAX(time) AS last_click
FROM {table} {where}
GROUP BY queue_id
"""
#: Bot clicks by reason; ``{and_where}`` holds the same conditions as ``{where}`` above
#: (:func:`where_clause`'s, ``WHERE`` spelled ``AND``).
REASON_STATS_SQL = """
SELECT reason, COUNT(*) FROM {table} WHERE classification = 'bot' {and_where}
GROUP BY reason
"""
#: Clicks whose label may still change; ``{and_where}`` is :func:`and_where` of the
#: since/tag conditions (never ``settled_only``'s).
UNSETTLED_SQL = "SELECT COUNT(*) FROM {table} WHERE settled = 0 {and_where}"


TAG_STATS_SQL = """
SELECT tag,
       SUM(CASE WHEN classification = 'human' THEN 1 ELSE 0 END) AS human_clicks,
       SUM(CASE WHEN classification = 'human' THEN 0 ELSE 1 END) AS bot_clicks
FROM {table} {where}
GROUP BY tag
"""


def where_clause(
    since: object | None,
    tag: str | None,
    placeholder: Callable[[int], str],
    settled_only: bool = False,
) -> tuple[str, list[object]]:
    """The ``WHERE`` of a stats query: ``time >= since`` and ``tag = tag`` when given,
    ``settled = 1`` if ``settled_only``. ``placeholder(n)`` is the store's n-th parameter
    marker (``?`` or ``$n``)."""
    conditions: list[str] = ["settled = 1"] if settled_only else []
    params: list[object] = []
    if since is not None:
        params.append(since)
        conditions.append(f"time >= {placeholder(len(params))}")
    if tag is not None:
        params.append(tag)
        conditions.append(f"tag = {placeholder(len(params))}")
    return ("WHERE " + " AND ".join(conditions) if conditions else ""), params


def and_where(where: str) -> str:
    """A :func:`where_clause` ``WHERE`` to follow another condition (``AND ...``)."""
    return "AND " + where[len("WHERE ") :] if where else ""


def stats_queries(table: str, where: str, all_where: str) -> tuple[str, str, str, str, str]:
    """A stats document's queries: links, messages, tags and reasons take ``where``'s
    parameters, the last one (the unsettled count) ``all_where``'s."""
    return (
        LINK_STATS_SQL.format(table=table, where=where),
        MESSAGE_STATS_SQL.format(table=table, where=where),
        TAG_STATS_SQL.format(table=table, where=where),
        REASON_STATS_SQL.format(table=table, and_where=and_where(where)),
        UNSETTLED_SQL.format(table=table, and_where=and_where(all_where)),
    )


def stats_from_rows(
    link_rows: Iterable[Sequence[Any]],
    message_rows: Iterable[Sequence[Any]],
    tag_rows: Iterable[Sequence[Any]],
    reason_rows: Iterable[Sequence[Any]],
    unsettled: int,
    *,
    settled_only: bool,
    parse_time: Callable[[Any], datetime],
) -> dict[str, Any]:
    """The stats document from the rows of :func:`stats_queries` (either store's rows;
    ``parse_time`` reads the store's time values)."""
    links = [
        LinkRow(q, int(i), u, int(h), int(b), int(n), parse_time(f), parse_time(lt))
        for q, i, u, h, b, n, f, lt in link_rows
    ]
    messages = [
        MessageRow(q, int(h), int(b), int(n), parse_time(f), parse_time(lt))
        for q, h, b, n, f, lt in message_rows
    ]
    return build_stats(
        links,
        messages,
        [TagRow(t, int(h), int(b)) for t, h, b in tag_rows if t is not None],
        reasons={str(r): int(n) for r, n in reason_rows},
        unsettled=int(unsettled),
        settled_only=settled_only,
    )


@dataclass(frozen=True)
class TagRow:
    tag: str
    human_clicks: int
    bot_clicks: int


@dataclass(frozen=True)
class LinkRow:
    queue_id: str
    link_index: int
    url: str
    human_clicks: int
    bot_clicks: int
    unique_human_recipients: int
    first_click: datetime
    last_click: datetime


@dataclass(frozen=True)
class MessageRow:
    queue_id: str
    human_clicks: int
    bot_clicks: int
    unique_human_recipients: int
    first_click: datetime
    last_click: datetime


def iso(value: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``; microseconds only when not zero."""
    return utc(value).isoformat().replace("+00:00", "Z")


def _counts(row: LinkRow | MessageRow) -> dict[str, Any]:
    return {
        "human_clicks": row.human_clicks,
        "bot_clicks": row.bot_clicks,
        "unique_human_recipients": row.unique_human_recipients,
        "first_click": iso(row.first_click),
        "last_click": iso(row.last_click),
    }


def build_stats(
    links: Iterable[LinkRow],
    messages: Iterable[MessageRow],
    tags: Iterable[TagRow] = (),
    *,
    reasons: Mapping[str, int] | None = None,
    unsettled: int = 0,
    settled_only: bool = False,
) -> dict[str, Any]:
    """The stats JSON document from aggregated rows (see the module docstring)."""
    by_message: dict[str, list[LinkRow]] = {}
    for link in links:
        by_message.setdefault(link.queue_id, []).append(link)
    out: list[dict[str, Any]] = []
    total_links = 0
    human = bot = 0
    for msg in sorted(messages, key=lambda m: (utc(m.first_click), m.queue_id)):
        rows = sorted(by_message.get(msg.queue_id, []), key=lambda r: (r.link_index, r.url))
        total_links += len(rows)
        human += msg.human_clicks
        bot += msg.bot_clicks
        entry: dict[str, Any] = {"queue_id": msg.queue_id, **_counts(msg)}
        entry["links"] = [{"link_index": r.link_index, "url": r.url, **_counts(r)} for r in rows]
        out.append(entry)
    return {
        "messages": out,
        "totals": {
            "human_clicks": human,
            "bot_clicks": bot,
            "messages": len(out),
            "links": total_links,
            "bot_reasons": dict(sorted((reasons or {}).items())),
            "unsettled_clicks": unsettled,
            "settled_only": settled_only,
        },
        "tags": [
            {"tag": t.tag, "human_clicks": t.human_clicks, "bot_clicks": t.bot_clicks}
            for t in sorted(tags, key=lambda t: t.tag)
        ],
    }


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """``--since``: ISO 8601 (naive means UTC) or relative to now: ``90s 30m 24h 7d 2w``.

    Raises ValueError with a message fit for the user.
    """
    match = _RELATIVE.match(text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
        base = utc(now) if now is not None else datetime.now(UTC)
        try:
            return base - timedelta(seconds=seconds)
        except OverflowError:
            raise ValueError(f"--since {text!r} is too far back") from None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since expects an ISO 8601 time (2026-11-01 or 2026-11-01T12:00Z) "
            f"or a duration like 24h, 7d, 30m; got {text!r}"
        ) from None
    return utc(value)


def _short(value: str) -> str:
    """``2026-11-26T07:00:00.123456Z`` → ``2026-11-26 07:00:00``: tables read by humans."""
    return value.replace("T", " ")[:19]


def format_stats(doc: Mapping[str, Any]) -> str:
    """A readable table of the stats document: one line per message, then its links."""
    header = (
        f"{'message / link':<28} {'human':>6} {'bot':>6} {'unique':>6}  "
        f"{'first click':<19}  {'last click':<19}  url"
    )
    lines = [header, "-" * len(header)]
    for msg in doc["messages"]:
        lines.append(
            f"{msg['queue_id']:<28} {msg['human_clicks']:>6} {msg['bot_clicks']:>6} "
            f"{msg['unique_human_recipients']:>6}  {_short(msg['first_click']):<19}  "
            f"{_short(msg['last_click']):<19}"
        )
        for link in msg["links"]:
            label = f"  #{link['link_index']}"
            lines.append(
                f"{label:<28} {link['human_clicks']:>6} {link['bot_clicks']:>6} "
                f"{link['unique_human_recipients']:>6}  {_short(link['first_click']):<19}  "
                f"{_short(link['last_click']):<19}  {link['url']}"
            )
    if not doc["messages"]:
        lines.append("(no clicks)")
    totals = doc["totals"]
    lines.append("")
    lines.append(
        f"totals: {totals['messages']} messages, {totals['links']} links, "
        f"{totals['human_clicks']} human clicks, {totals['bot_clicks']} bot clicks"
    )
    for tag in doc.get("tags", ()):
        lines.append(
            f"  tag {tag['tag']}: {tag['human_clicks']} human clicks, "
            f"{tag['bot_clicks']} bot clicks"
        )
    reasons = totals.get("bot_reasons") or {}
    if reasons:
        lines.append("bot clicks by reason: " + ", ".join(f"{r} {n}" for r, n in reasons.items()))
    unsettled = totals.get("unsettled_clicks", 0)
    if unsettled:
        lines.append(f"not settled yet: {unsettled} clicks (a human label may still turn bot)")
    return "\n".join(lines)
