"""The benchmark's peers section (`python -m bench --only 3,7`): Celery and Procrastinate drain
the no-op job, their figures are compared with Courier's drain, and nothing of theirs is left.

The first run installs both peers into bench/.peers (a minute or two); later runs reuse them.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support.bench import run_bench

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def test_the_peers_drain_every_job_beside_courier_and_leave_nothing_behind(
    tmp_path: Path, postgres_template: None, rabbitmq_available: None
) -> None:
    done, result, database = run_bench(
        tmp_path, "--quick", "--only", "3,7", label="peers", timeout=840
    )
    assert set(result["sections"]) == {"drain", "peers"}
    peers = result["sections"]["peers"]
    jobs = peers["jobs"]
    assert jobs == result["sections"]["drain"]["jobs"] == 200
    assert peers["celery"]["statuses"] == {"SUCCESS": jobs}
    assert peers["procrastinate"]["statuses"] == {"succeeded": jobs}
    assert peers["procrastinate"]["workers"] == result["shape"]["processes"]
    courier = result["sections"]["drain"]["courier"]["per_s"]
    for peer in ("celery", "procrastinate"):
        assert peers[peer]["per_s"] > 0
        assert peers[peer]["cpu"]["cpu_ms_per_job"]["worker"] > 0
        assert result["figures"][f"peers.ratio_vs_{peer}"] == pytest.approx(
            courier / peers[peer]["per_s"]
        )
    assert "peers: ratio Courier / Celery" in done.stdout
    assert "peers: ratio Courier / Procrastinate" in done.stdout

    with psycopg.connect(ADMIN) as conn:
        left = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{database}%",)
        ).fetchall()
    assert left == []
    vhosts = httpx.get("http://127.0.0.1:15672/api/vhosts", auth=("guest", "guest")).json()
    vhost = database.replace("_", "-")
    assert [v["name"] for v in vhosts if v["name"].startswith(vhost)] == []
    assert _processes_of(database) == []


def _processes_of(database: str) -> list[int]:
    """Processes still running with one of this run's databases in their environment."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes() if entry.name.isdigit() else b""
        except OSError:
            continue
        if f"/{database}".encode() in environ:
            found.append(int(entry.name))
    return found
