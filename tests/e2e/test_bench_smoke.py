"""The benchmark harness runs end to end (`python -m bench --quick`) and reports every section."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.bench import run_bench

pytestmark = pytest.mark.e2e

SECTIONS = {"single", "batch", "drain", "reads", "replay", "memory"}


def test_quick_run_writes_every_section(
    tmp_path: Path, postgres_template: None, rabbitmq_available: None
) -> None:
    done, result, _ = run_bench(tmp_path, "--quick", label="smoke", timeout=240)
    assert set(result["sections"]) == SECTIONS
    assert {"cpu", "cores", "postgresql", "rabbitmq", "python"} <= set(result["machine"])
    # Every section measured something (values are not judged: this is a smoke run).
    prefixes = {key.split(".")[0] for key in result["figures"]}
    assert prefixes == {"single", "batch", "drain", "reads", "replay", "memory"}
    assert result["sections"]["single"]["succeeded"] == result["sections"]["single"]["jobs"]
    assert result["sections"]["replay"]["replayed"] == result["sections"]["replay"]["dead"]
    assert "POST /v1/jobs: completed/s" in done.stdout
