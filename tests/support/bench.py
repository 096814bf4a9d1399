"""Run the benchmark harness as a user would, in a database and vhost of the test's own."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_bench(
    results: Path, *args: str, label: str, timeout: float
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], str]:
    """`python -m bench ARGS` on `courier_bench_<label>_<random>`: what it printed, the result
    file it wrote to `results`, and the database name (the vhost is the same with dashes)."""
    database = f"courier_bench_{label}_{uuid.uuid4().hex[:10]}"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench", *args),
            *("--database", database, "--vhost", database.replace("_", "-")),
            *("--results-dir", str(results)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [result_file] = results.glob("*.json")
    return done, json.loads(result_file.read_text()), database
