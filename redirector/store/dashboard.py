"""What the admin dashboard asks a click store, and the plain data it gets back.

The overview is read from roll-up tables the stores keep up to date as clicks are
inserted, relabelled or deleted (triggers in each store): hourly counts by class and
reason and by URL, daily counts by message and by tag, and the daily human recipients;
only the partial days at the ends of a window are read from the clicks table. A 30-day
overview of a million clicks so reads a few tens of thousands of rows instead of a
million. Drill-downs (one message, one link, one tag) read the clicks table itself
through indexes on ``(queue_id, time)``, ``(url, time)`` and ``(tag, time)``.

Windows are whole UTC hours: ``start`` and ``end`` are hour-aligned (the caller rounds),
``end`` exclusive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from redirector.store.records import StoredClick

#: How many rows the top-N tables and the recent-clicks table hold.
TOP_N = 10
RECENT_N = 100


def hour_floor(value: datetime) -> datetime:
    """``value`` in UTC rounded down to the hour."""
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hour_key(value: datetime) -> str:
    """The SQLite roll-up's hour column: ``2026-11-01T12`` (a prefix of the stored time)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H")


def parse_hour_key(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H").replace(tzinfo=UTC)


@dataclass(frozen=True)
class DaySplit:
    """A window as whole UTC days ``[first_day, end_day)`` plus the two partial-day
    ``edges`` (time ranges, possibly empty) before and after them."""

    first_day: date
    end_day: date
    edges: tuple[tuple[datetime, datetime], tuple[datetime, datetime]]


def split_days(start: datetime, end: datetime) -> DaySplit:
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    first = start.replace(hour=0, minute=0, second=0, microsecond=0)
    if first < start:
        first += timedelta(days=1)
    last = end.replace(hour=0, minute=0, second=0, microsecond=0)
    if last <= first:  # no whole day inside: all of it is one edge
        return DaySplit(first.date(), first.date(), ((start, end), (end, end)))
    return DaySplit(first.date(), last.date(), ((start, first), (last, end)))


@dataclass(frozen=True)
class DashboardQuery:
    """One page's question: a window, and optionally one message, one link or one tag."""

    start: datetime
    end: datetime
    queue_id: str | None = None
    url: str | None = None
    tag: str | None = None

    def __post_init__(self) -> None:
        if hour_floor(self.start) != self.start or hour_floor(self.end) != self.end:
            raise ValueError("dashboard windows are whole UTC hours")
        if self.end <= self.start:
            raise ValueError("the window ends before it starts")
        subjects = [s for s in (self.queue_id, self.url, self.tag) if s is not None]
        if len(subjects) > 1:
            raise ValueError("a drill-down is one message, one link or one tag")

    @property
    def drill(self) -> bool:
        return self.queue_id is not None or self.url is not None or self.tag is not None

    def hours(self) -> int:
        return int((self.end - self.start) / timedelta(hours=1))


@dataclass(frozen=True)
class ValueForms:
    """How a store spells the values its dashboard queries compare with."""

    hour: Callable[[datetime], object]  # an hour of the hourly roll-ups
    day: Callable[[date], object]  # a day of the daily roll-ups
    time: Callable[[datetime], object]  # a click's time


def overview_params(query: DashboardQuery, forms: ValueForms) -> dict[str, tuple[object, ...]]:
    """Each overview query's parameters: the window's hours for the hourly roll-ups; for
    the daily ones its whole days and the two partial-day edges (read from the clicks)."""
    window = (forms.hour(query.start), forms.hour(query.end))
    split = split_days(query.start, query.end)
    by_day = (
        forms.day(split.first_day),
        forms.day(split.end_day),
        *(forms.time(t) for edge in split.edges for t in edge),
    )
    return {
        "hours": window,
        "top_links": (*window, TOP_N),
        "top_messages": (*by_day, TOP_N),
        "unique": by_day,
        "top_tags": (*by_day, TOP_N),
    }


def drill_params(query: DashboardQuery, forms: ValueForms) -> dict[str, tuple[object, ...]]:
    """Each drill-down query's parameters: the subject and the window, and a limit."""
    key = next(k for k in (query.queue_id, query.url, query.tag) if k is not None)
    params = (key, forms.time(query.start), forms.time(query.end))
    return {
        "hours": params,
        "unique": params,
        "top_links": (*params, TOP_N),
        "top_messages": (*params, TOP_N),
        "top_tags": (*params, TOP_N),
        "recent": (*params, RECENT_N),
    }


def drill_column(query: DashboardQuery) -> str:
    """The clicks column a drill-down selects on."""
    if query.queue_id is not None:
        return "queue_id"
    return "url" if query.url is not None else "tag"


@dataclass(frozen=True)
class Ranked:
    """One row of a top table: a link (url), a message (queue id) or a tag."""

    key: str
    human: int
    bot: int


#: A drill-down's recent clicks are stored clicks, as an export reads them.
RecentClick = StoredClick


@dataclass
class DashboardData:
    """The answer; ``hours`` holds only hours with clicks: ``(hour, human, bot)``."""

    hours: list[tuple[datetime, int, int]] = field(default_factory=list)
    unique_human_recipients: int = 0
    bot_reasons: list[tuple[str, int]] = field(default_factory=list)
    top_links: list[Ranked] = field(default_factory=list)
    top_messages: list[Ranked] = field(default_factory=list)
    top_tags: list[Ranked] = field(default_factory=list)
    recent: list[RecentClick] = field(default_factory=list)

    @property
    def human(self) -> int:
        return sum(h for _, h, _ in self.hours)

    @property
    def bot(self) -> int:
        return sum(b for _, _, b in self.hours)


def fold_hours(
    rows: list[tuple[datetime, str, str | None, int]],
) -> tuple[list[tuple[datetime, int, int]], list[tuple[str, int]]]:
    """``(hour, classification, reason, n)`` rows → the hourly series and the bot reasons
    (biggest first)."""
    series: dict[datetime, list[int]] = {}
    reasons: dict[str, int] = {}
    for hour, classification, reason, n in rows:
        slot = series.setdefault(hour, [0, 0])
        if classification == "human":
            slot[0] += n
        else:
            slot[1] += n
            key = reason or "unknown"
            reasons[key] = reasons.get(key, 0) + n
    hours = [(hour, h, b) for hour, (h, b) in sorted(series.items())]
    return hours, sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))


def ranked(rows: Iterable[Sequence[Any]]) -> list[Ranked]:
    """A top table from ``(key, human, bot)`` rows."""
    return [Ranked(key, int(human), int(bot)) for key, human, bot in rows]


def page_from_rows(
    rows: Mapping[str, Sequence[Sequence[Any]]],
    hour_of: Callable[[Any], datetime],
    recent_of: Callable[[Sequence[Any]], RecentClick],
) -> DashboardData:
    """The answer from the rows of each query (named as in :func:`overview_params` or
    :func:`drill_params`); ``hour_of`` reads the store's hour values, ``recent_of`` a
    recent-click row."""
    hours, reasons = fold_hours(
        [(hour_of(h), c, r or None, int(n)) for h, c, r, n in rows["hours"]]
    )
    return DashboardData(
        hours=hours,
        unique_human_recipients=int(rows["unique"][0][0] or 0),
        bot_reasons=reasons,
        top_links=ranked(rows["top_links"]),
        top_messages=ranked(rows["top_messages"]),
        top_tags=ranked(rows["top_tags"]),
        recent=[recent_of(r) for r in rows.get("recent", ())],
    )
