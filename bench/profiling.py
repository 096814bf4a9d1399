"""Optional sampling profiles (`--profile`): py-spy on the API or the worker during a section.

py-spy is a measuring tool, not a dependency: `.venv/bin/pip install py-spy`. Profiles are
written as collapsed stacks (`<run>-logs/profile-<section>-<target>-<mode>.txt`, loadable in
speedscope) and summarised
as the share of samples spent under Courier's hot-path functions and in each library.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.processes import Process
from bench.stack import Stack

# Inclusive share of samples with these functions anywhere on the stack.
HOT_PATHS = {
    "api: authenticate (token lookup)": "authenticate (store/tokens.py",
    "api: create_job": "create_job (store/jobs.py",
    "api: publish (confirms)": "publish (delivery/outbox.py",
    "api: mark_published": "mark_published (store/transitions.py",
    "api: replay one job": "replay (store/actions.py",
    "api: forget dead letters": "forget (delivery/replays.py",
    "api: serialize": "(api/serialize.py",
    "api: body parse/validate": "(api/body.py",
    "worker: claim": "claim (store/transitions.py",
    "worker: finish": "finish (store/transitions.py",
    "worker: checkpoint": "checkpoint (middleware/current_job.py",
    "worker: upstream calls": "_send (actors/upstream.py",
    "any: session commit": "commit (sqlalchemy/orm/session.py",
    "any: pool checkout": "_checkout (sqlalchemy/pool/base.py",
    "any: pre-ping on checkout": "_do_ping_w_event (sqlalchemy/engine/default.py",
    "any: logging": "handle (logging/__init__.py",
}
# Self time by library: the innermost frame's file decides.
LIBRARIES = [
    "sqlalchemy",
    "psycopg",
    "pika",
    "dramatiq",
    "falcon",
    "gunicorn",
    "httpx",
    "httpcore",
    "pydantic",
    "structlog",
    "logging",
    "json",
    "threading",
    "socket",
    "selectors",
    "ssl",
    "uuid",
]
_FILE = re.compile(r"\(([^():]+?)\)$")
_LINE = re.compile(r":\d+\)$")


class Profiler:
    """py-spy recording one process group (with subprocesses) until stopped."""

    def __init__(self, stack: Stack, *, target: str, mode: str = "gil", section: int = 0) -> None:
        self.stack = stack
        self.target = target
        self.mode = mode
        self.output = stack.logs / f"profile-{section}-{target}-{mode}.txt"
        self.process: Process | None = None
        if target == "api":
            assert stack.api is not None
            self.attach(stack.api)

    def attach(self, process: Process) -> None:
        """Start sampling `process` and its children."""
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
        args = [spy, "record", "--pid", str(process.pid), "--subprocesses", "--nonblocking"]
        args += ["--rate", "200", "--format", "raw", "--output", str(self.output)]
        args += {"gil": ["--gil"], "wall": ["--idle"], "cpu": []}[self.mode]
        self.process = Process(f"py-spy-{self.target}", args, env={}, logs=self.stack.logs)

    def stop(self) -> dict[str, Any]:
        """Stop sampling; returns where the profile is and its summary."""
        if self.process is None:
            return {}
        self.process.interrupt()
        self.process.stop()
        self.process = None
        if not self.output.exists():
            return {"error": "py-spy wrote no profile (is it installed? may it ptrace?)"}
        return {"output": str(self.output), "mode": self.mode, **summarize(self.output)}


def summarize(path: Path, top: int = 15) -> dict[str, Any]:
    """Shares of samples (%) under hot-path functions, by library, and the top self times."""
    total = 0
    hot: Counter[str] = Counter()
    library: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        for name, needle in HOT_PATHS.items():
            if needle in stack:
                hot[name] += samples
        innermost = _LINE.sub(")", stack.rsplit(";", 1)[-1])
        leaf[innermost] += samples
        library[_library(innermost)] += samples

    def share(counter: Counter[str], n: int | None = None) -> dict[str, float]:
        return {k: round(v * 100 / total, 1) for k, v in counter.most_common(n)} if total else {}

    return {
        "samples": total,
        "hot_paths_pct": share(hot),
        "self_by_library_pct": share(library),
        "top_self_pct": share(leaf, top),
    }


def _library(frame: str) -> str:
    match = _FILE.search(frame)
    where = match.group(1) if match else frame
    for name in LIBRARIES:
        if f"{name}/" in where or where.startswith(f"{name}.") or f"/{name}.py" in where:
            return name
    for ours in ("store", "middleware", "actors", "api", "courier"):
        if where.startswith(f"{ours}/") or f"/{ours}/" in where:
            return f"courier:{ours}"
    return "other"
