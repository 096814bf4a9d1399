"""The bench's verdicts against the issue's targets."""

from __future__ import annotations

from bench import report


def test_the_peer_ratios_are_judged_against_five():
    assert report.verdict("peers.ratio_vs_celery", 5.02) == (">= 5", "met")
    assert report.verdict("peers.ratio_vs_procrastinate", 4.45) == (">= 5", "missed by 11%")


def test_the_drain_is_judged_against_four_tenths_of_bare_dramatiq():
    assert report.verdict("drain.ratio", 0.41) == (">= 0.4", "met")
    assert report.verdict("drain.ratio", 0.2) == (">= 0.4", "missed by 50%")


def test_a_figure_without_a_target_or_a_value_gets_no_verdict():
    assert report.verdict("peers.celery_per_s", 400.0) == ("", "")
    assert report.verdict("peers.ratio_vs_celery", None) == ("", "")
