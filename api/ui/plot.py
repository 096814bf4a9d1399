"""The geometry of a line chart of counts per minute, drawn by a template as inline SVG.

Computed here rather than in the template so that the numbers are tested and the template
only places what it is given; no script runs in the browser.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 10, 26
#: A label on the time axis every so many minutes.
LABEL_EVERY = 10


@dataclass(frozen=True)
class Marker:
    """One plotted point: a minute's count of one series (zero counts get none)."""

    x: float
    y: float
    count: int
    minute: str


@dataclass(frozen=True)
class Series:
    """One outcome's line and its points."""

    name: str
    points: str
    markers: list[Marker]
    total: int


@dataclass(frozen=True)
class Tick:
    """A labelled position on an axis."""

    at: float
    label: str


@dataclass(frozen=True)
class Chart:
    """What the template draws: the frame, the axes' ticks and one line per series."""

    width: int
    height: int
    left: int
    right: float
    top: int
    bottom: float
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    series: list[Series]


def per_minute(minutes: Sequence[datetime], counts: Mapping[str, Sequence[int]]) -> Chart:
    """The chart of `counts[name][i]` at `minutes[i]`, one line per name, on one scale."""
    top_count = _ceiling(max((max(c, default=0) for c in counts.values()), default=0))
    right, bottom = WIDTH - RIGHT, HEIGHT - BOTTOM
    step = (right - LEFT) / max(len(minutes) - 1, 1)

    def x(i: int) -> float:
        return round(LEFT + i * step, 1)

    def y(count: int) -> float:
        return round(bottom - (bottom - TOP) * count / top_count, 1)

    labels = [m.strftime("%H:%M") for m in minutes]
    series = [
        Series(
            name=name,
            points=" ".join(f"{x(i)},{y(n)}" for i, n in enumerate(values)),
            markers=[Marker(x(i), y(n), n, labels[i]) for i, n in enumerate(values) if n],
            total=sum(values),
        )
        for name, values in counts.items()
    ]
    y_ticks = [Tick(y(v), str(v)) for v in sorted({0, top_count // 2, top_count})]
    x_ticks = [Tick(x(i), labels[i]) for i, m in enumerate(minutes) if m.minute % LABEL_EVERY == 0]
    return Chart(WIDTH, HEIGHT, LEFT, right, TOP, bottom, y_ticks, x_ticks, series)


def _ceiling(count: int) -> int:
    # A round top for the scale (1, 2, 5 times a power of ten), so the ticks read well.
    if count <= 1:
        return 1
    power = 10 ** math.floor(math.log10(count))
    for factor in (1, 2, 5, 10):
        if count <= factor * power:
            return factor * power
    return 10 * power
