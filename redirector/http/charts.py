"""Server-side SVG line charts for the dashboard (pure: numbers in, coordinates out).

No JavaScript and no chart library: the page draws an inline ``<svg>`` from the
:class:`LineChart` built here, so it works on an air-gapped host and under a CSP that
allows no script at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

WIDTH = 760
HEIGHT = 220
LEFT = 56  # room for the y labels
RIGHT = 12
TOP = 12
BOTTOM = 28  # room for the x labels


@dataclass(frozen=True)
class Bucket:
    start: datetime
    human: int
    bot: int


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    value: int
    start: datetime


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[Point, ...]

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class LineChart:
    series: tuple[Series, ...]
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right_edge: int = WIDTH - RIGHT
    baseline: int = HEIGHT - BOTTOM


def bucket_hours(window_hours: int) -> int:
    """Bucket size for a window: about 24-60 points, whole hours."""
    if window_hours <= 48:
        return 1
    if window_hours <= 24 * 14:
        return 6
    if window_hours <= 24 * 120:
        return 24
    return 24 * 7


def buckets(
    hours: list[tuple[datetime, int, int]], start: datetime, end: datetime, size_hours: int
) -> list[Bucket]:
    """Hourly ``(hour, human, bot)`` counts summed into buckets of ``size_hours`` from
    ``start``; every bucket of the window is present, empty ones as zeros."""
    size = timedelta(hours=size_hours)
    count = max(1, math.ceil((end - start) / size))
    human = [0] * count
    bot = [0] * count
    for hour, h, b in hours:
        index = int((hour - start) // size)
        if 0 <= index < count:
            human[index] += h
            bot[index] += b
    return [Bucket(start + i * size, human[i], bot[i]) for i in range(count)]


def nice_max(value: int) -> int:
    """The y axis's top: 1, 2 or 5 times a power of ten, at least ``value``."""
    if value <= 4:
        return 4
    magnitude: int = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def line_chart(data: list[Bucket], label: Callable[[datetime], str]) -> LineChart:
    """Two series (human, bot), one point per bucket; ``label`` names a bucket's start
    on the x axis (in the reader's time zone)."""
    top = nice_max(max([b.human for b in data] + [b.bot for b in data] + [0]))
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(data) - 1, 1)

    def point(i: int, value: int, start: datetime) -> Point:
        return Point(LEFT + i * step, TOP + plot_h * (1 - value / top), value, start)

    series = (
        Series("human", tuple(point(i, b.human, b.start) for i, b in enumerate(data))),
        Series("bot", tuple(point(i, b.bot, b.start) for i, b in enumerate(data))),
    )
    y_ticks = tuple(Tick(TOP + plot_h * (1 - k / 4), f"{top * k // 4:,}") for k in range(5))
    every = max(1, math.ceil(len(data) / 6))
    x_ticks = tuple(
        Tick(LEFT + i * step, label(b.start)) for i, b in enumerate(data) if i % every == 0
    )
    return LineChart(series, y_ticks, x_ticks)
