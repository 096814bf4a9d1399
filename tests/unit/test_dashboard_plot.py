"""The overview's plot geometry and its durations, computed without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api.ui import plot
from api.ui.overview_view import duration

START = datetime(2026, 1, 1, 11, 5, tzinfo=UTC)
MINUTES = [START + timedelta(minutes=i) for i in range(60)]


def test_each_nonzero_minute_is_a_point_on_one_scale_for_every_series():
    succeeded = [0] * 60
    succeeded[0], succeeded[59] = 7, 3
    failed = [0] * 60
    failed[30] = 1
    chart = plot.per_minute(MINUTES, {"succeeded": succeeded, "failed": failed})
    by_name = {s.name: s for s in chart.series}
    first, last = by_name["succeeded"].markers
    assert (first.count, first.minute, first.x) == (7, "11:05", plot.LEFT)
    assert (last.count, last.minute, last.x) == (3, "12:04", plot.WIDTH - plot.RIGHT)
    # The scale tops at 10 (a round number above 7): 7 is 70 % of the way up.
    assert first.y == round(chart.bottom - 0.7 * (chart.bottom - chart.top), 1)
    assert [t.label for t in chart.y_ticks] == ["0", "5", "10"]
    assert [m.count for m in by_name["failed"].markers] == [1]
    assert len(by_name["failed"].points.split()) == 60  # the line runs through the zeros
    assert (by_name["succeeded"].total, by_name["failed"].total) == (10, 1)


def test_the_time_axis_is_labelled_every_ten_minutes():
    chart = plot.per_minute(MINUTES, {"succeeded": [0] * 60})
    assert [t.label for t in chart.x_ticks] == [
        "11:10",
        "11:20",
        "11:30",
        "11:40",
        "11:50",
        "12:00",
    ]


def test_an_idle_hour_is_a_flat_line_on_a_scale_of_one():
    chart = plot.per_minute(MINUTES, {"dead": [0] * 60})
    [series] = chart.series
    assert series.markers == []
    assert {float(p.split(",")[1]) for p in series.points.split()} == {chart.bottom}
    assert [t.label for t in chart.y_ticks] == ["0", "1"]


def test_durations_read_in_the_largest_units_that_fit():
    assert [duration(s) for s in (0, 59.9, 61, 3599, 3600 * 2 + 600, 86400 * 3 + 3600 * 4)] == [
        "0 s",
        "59 s",
        "1 min 1 s",
        "59 min 59 s",
        "2 h 10 min",
        "3 d 4 h",
    ]
