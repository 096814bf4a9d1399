"""The shipped alert rules and dashboard: valid for Prometheus and Grafana, every rule tested
firing and quiet, and every metric they watch one that Courier serves (or another part of
the contract names)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy/prometheus"
RULES = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
TESTS = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
DASHBOARD = json.loads((ROOT / "deploy/grafana/courier.json").read_text())

ALERTS = [rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule]
SEVERITIES = {"info", "warning", "critical"}

#: Courier's metric families (docs/http-api.md lists them), and Prometheus's own `up`.
SERVED = {
    "courier_jobs",
    "courier_dead_letters",
    "courier_attempt_duration_seconds",
    "courier_queue_messages",
    "courier_queue_oldest_seconds",
    "courier_dead_letter_oldest_seconds",
    "courier_running_oldest_seconds",
    "courier_attempts_total",
    "courier_schedule_lag_seconds",
    "courier_upstream_circuit",
    "up",
}
METRIC = re.compile(r"\b(courier_[a-z_]+|up)\b(?=\s*[{\[)]|\s*(?:==|>|<|$))")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run promtool in deploy/prometheus, or skip (fail in CI) without it."""
    if shutil.which("promtool") is None:
        reason = "promtool is not installed (apt-get install prometheus; make services does)"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return subprocess.run(
        ["promtool", *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


def test_promtool_passes_every_rule_unit_test():
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_accepts_the_rules_and_the_prometheus_config():
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr
    assert f"{len(ALERTS)} rules found" in config.stdout


def test_the_contract_s_alerts_are_all_there():
    names = {rule["alert"] for rule in ALERTS}
    assert names >= {
        "CourierJobsStuckRunning",
        "CourierFailureRateHigh",
        "CourierBacklogHigh",
        "CourierQueueAgeHigh",
        "CourierDeadLetters",
        "CourierScheduleLate",
        "CourierUpstreamCircuitOpen",
    }


@pytest.mark.parametrize("rule", ALERTS, ids=lambda rule: rule["alert"])
def test_every_rule_waits_and_says_how_bad_and_what_happened(rule: dict[str, Any]):
    assert "for" in rule, f"{rule['alert']} has no `for:`"
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"].strip()
    assert rule["annotations"]["description"].strip()


@pytest.mark.parametrize("rule", ALERTS, ids=lambda rule: rule["alert"])
def test_every_rule_is_tested_firing_and_quiet(rule: dict[str, Any]):
    cases = [
        case
        for test in TESTS["tests"]
        for case in test["alert_rule_test"]
        if case["alertname"] == rule["alert"]
    ]
    assert any(case["exp_alerts"] for case in cases), f"{rule['alert']} is never seen firing"
    assert any(not case["exp_alerts"] for case in cases), f"{rule['alert']} is never seen quiet"


@pytest.mark.parametrize("rule", ALERTS, ids=lambda rule: rule["alert"])
def test_every_rule_watches_metrics_that_exist(rule: dict[str, Any]):
    watched = set(METRIC.findall(rule["expr"]))
    assert watched, f"no metric found in {rule['expr']!r}"
    assert watched <= SERVED, f"{rule['alert']} watches unknown {watched - SERVED}"


def test_the_dashboard_reads_every_panel_from_the_chosen_prometheus():
    (datasource,) = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource"]
    assert datasource["query"] == "prometheus"
    chosen = {"type": "prometheus", "uid": f"${{{datasource['name']}}}"}
    assert DASHBOARD["uid"] and DASHBOARD["title"]
    for panel in DASHBOARD["panels"]:
        assert panel["datasource"] == chosen, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            assert target["datasource"] == chosen, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_the_dashboard_s_panels_have_unique_ids_and_do_not_overlap():
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    taken: set[tuple[int, int]] = set()
    for panel in DASHBOARD["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_the_dashboard_shows_what_operators_and_the_alerts_watch():
    exprs = " ".join(t["expr"] for p in DASHBOARD["panels"] for t in p["targets"])
    shown = set(METRIC.findall(exprs)) | set(re.findall(r"\bcourier_[a-z_]+", exprs))
    for metric in (
        "courier_jobs",
        "courier_attempts_total",
        "courier_queue_messages",
        "courier_queue_oldest_seconds",
        "courier_dead_letters",
        "courier_dead_letter_oldest_seconds",
        "courier_schedule_lag_seconds",
        "courier_running_oldest_seconds",
    ):
        assert metric in shown, f"no panel shows {metric}"
    unknown = {m.removesuffix("_bucket") for m in shown} - SERVED
    assert not unknown, f"panels query unknown metrics {unknown}"
