"""Section 6: memory of the API and worker processes after the other sections ran.

`Stack` samples a worker group just before stopping it (so after its work); the API is
sampled now. Each figure is VmRSS from /proc/<pid>/status, children included; PSS (from
smaps_rollup) is kept beside it because forked children share pages that RSS counts twice.
"""

from __future__ import annotations

import time
from typing import Any

from bench.stack import Stack


def memory(stack: Stack) -> dict[str, Any]:
    """RSS per process and per group for the API, Courier's workers and the bare baseline."""
    assert stack.api is not None
    stack.sample_memory("api", stack.api)
    idle_worker = "worker" not in stack.memory
    if idle_worker:  # no section ran a worker: measure one that has booted and idles
        stack.start_worker()
        time.sleep(2)
        stack.stop_worker()
    groups = {role: _group(rows) for role, rows in stack.memory.items()}
    return {"idle_worker": idle_worker, "groups": groups}


def _group(rows: list[dict[str, Any]]) -> dict[str, Any]:
    # rows[0] is the process started (gunicorn master / worker supervisor); the busiest
    # processes are the leaves: gunicorn's workers, Dramatiq's worker processes.
    pids = {r["pid"] for r in rows}
    leaves = [r for r in rows[1:] if not _has_child(r, rows)] or rows
    mib = 1024
    return {
        "processes": len(pids),
        "total_rss_mib": sum(r["rss_kib"] for r in rows) / mib,
        "total_pss_mib": sum(r["pss_kib"] for r in rows) / mib,
        "per_worker_rss_mib": sum(r["rss_kib"] for r in leaves) / len(leaves) / mib,
        "per_worker_pss_mib": sum(r["pss_kib"] for r in leaves) / len(leaves) / mib,
        "workers": len(leaves),
        "detail": rows,
    }


def _has_child(row: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
    return any(r.get("ppid") == row["pid"] for r in rows)
