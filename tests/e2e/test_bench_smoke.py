"""The benchmark harness runs end to end (`python -m bench --quick`) and reports every section."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {"single", "batch", "drain", "reads", "replay", "memory"}


def test_quick_run_writes_every_section(
    tmp_path: Path, postgres_template: None, rabbitmq_available: None
) -> None:
    name = uuid.uuid4().hex[:10]
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench", "--quick"),
            *(
                "--database",
                f"courier_bench_smoke_{name}",
                "--vhost",
                f"courier-bench-smoke-{name}",
            ),
            *("--results-dir", str(tmp_path)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [result_file] = tmp_path.glob("*.json")
    result = json.loads(result_file.read_text())
    assert set(result["sections"]) == SECTIONS
    assert {"cpu", "cores", "postgresql", "rabbitmq", "python"} <= set(result["machine"])
    # Every section measured something (values are not judged: this is a smoke run).
    prefixes = {key.split(".")[0] for key in result["figures"]}
    assert prefixes == {"single", "batch", "drain", "reads", "replay", "memory"}
    assert result["sections"]["single"]["succeeded"] == result["sections"]["single"]["jobs"]
    assert result["sections"]["replay"]["replayed"] == result["sections"]["replay"]["dead"]
    assert "POST /v1/jobs: completed/s" in done.stdout
