"""Where the CPU went during a measured window: per component, and the machine as a whole.

Every figure of this benchmark shares two cores with PostgreSQL, RabbitMQ, the upstream,
the load generator and whatever else runs on the machine; this accounting shows the split
(CPU ms per job for each component) and how busy the machine was with other work. It also
counts the deadlocks PostgreSQL broke in the benchmark's database meanwhile: each one
stalls the transactions in it for `deadlock_timeout` (1 s), which shows in the latency tail.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg

from bench import processes

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _machine_busy_s() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / _TICK


def _matching(*needles: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            line = processes.command_line(int(entry.name))
            if all(n in line for n in needles):
                found.append(int(entry.name))
    return found


def summary(usage: dict[str, Any]) -> str:
    """One line: CPU ms per job by role, and how busy the machine was."""
    roles = ", ".join(f"{r} {ms:.1f}" for r, ms in usage["cpu_ms_per_job"].items())
    return (
        f"CPU ms/job: {roles}; machine {usage['machine_busy_pct']:.0f}% busy, "
        f"{usage['others_busy_pct']:.0f}% by other processes; "
        f"{usage.get('deadlocks', 0)} deadlocks"
    )


class Meter:
    """CPU seconds used between start() and stop() by each role's processes."""

    def __init__(
        self,
        roots: Mapping[str, int | Sequence[int] | None],
        *,
        database: str,
        connect: Callable[[], psycopg.Connection] | None = None,
    ) -> None:
        # A role is one process tree or several (workers that run side by side, unsupervised).
        self.roots = {
            role: [pids] if isinstance(pids, int) else list(pids)
            for role, pids in roots.items()
            if pids is not None
        }
        self.database = database
        self._connect = connect
        self._deadlocks = 0
        self._start: dict[int, float] = {}
        self._roles: dict[int, str] = {}
        self._machine = 0.0
        self._wall = 0.0

    def _pids(self) -> dict[int, str]:
        pids = {os.getpid(): "load generator"}
        for role, tops in self.roots.items():
            for top in tops:
                for pid in [top, *processes.descendants(top)]:
                    pids[pid] = role
        for pid in _matching("postgres:", f" {self.database} "):
            pids[pid] = "postgresql"
        for pid in _matching("beam.smp", "/var/lib/rabbitmq") or _matching("beam.smp", "rabbit"):
            pids[pid] = "rabbitmq"
        return pids

    def start(self) -> None:
        self._deadlocks = self._deadlocks_so_far()  # before the window: a connection costs
        self._roles = self._pids()
        self._start = {pid: _cpu_s(pid) or 0.0 for pid in self._roles}
        self._machine, self._wall = _machine_busy_s(), time.perf_counter()

    def stop(self, jobs: int) -> dict[str, Any]:
        """CPU ms per job by role, and how busy the machine was (%, all cores = 100)."""
        wall = time.perf_counter() - self._wall
        machine = _machine_busy_s() - self._machine
        roles = {**self._roles, **self._pids()}
        used: dict[str, float] = {}
        for pid, role in roles.items():
            now = _cpu_s(pid)  # None: it exited meanwhile, and its time is lost
            if now is not None:
                used[role] = used.get(role, 0.0) + now - self._start.get(pid, 0.0)
        ours = sum(used.values())
        cores = os.cpu_count() or 1
        return {
            "wall_s": wall,
            "cpu_ms_per_job": {r: round(s * 1000 / jobs, 3) for r, s in sorted(used.items())},
            "machine_busy_pct": round(machine * 100 / (wall * cores), 1),
            "others_busy_pct": round(max(0.0, machine - ours) * 100 / (wall * cores), 1),
            "deadlocks": self._deadlocks_so_far() - self._deadlocks,
        }

    def _deadlocks_so_far(self) -> int:
        # Backends report their counts to the statistics within about a second.
        if self._connect is None:
            return 0
        with self._connect() as conn:
            row = conn.execute(
                "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
            ).fetchone()
        return int(row[0]) if row else 0
