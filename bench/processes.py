"""Child processes of the benchmark, their logs, and their memory as /proc reports it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A long-running command in its own session, its output in `<logs>/<name>.log`."""

    def __init__(self, name: str, args: list[str], *, env: dict[str, str], logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = logs / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            args,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[1],
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 2000) -> str:
        """The end of what the process printed."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def interrupt(self, timeout: float = 60) -> None:
        """SIGINT, and wait for the process to finish on its own."""
        if self.alive():
            self.popen.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (graceful), then SIGKILL for the whole group if it lingers."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(5)
        self._log.close()


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, interval=0.1) -> None:
    """Poll `check` until it is true; RuntimeError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def wait_http(url: str, process: Process, *, timeout: float = 60) -> None:
    """Wait until `url` answers 200; fail early with the log tail if the process died."""

    def up() -> bool:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited early:\n{process.tail()}")
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout=timeout, what=url, interval=0.2)


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, grandchildren, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        ppid = parent(int(entry.name))
        if ppid is not None:
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return sorted(found)


def parent(pid: int) -> int | None:
    """The parent's pid, or None if the process is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def memory_kib(pid: int) -> dict[str, int] | None:
    """VmRSS and PSS (shared pages divided among their users) of one process, in KiB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    rss = _field(status, "VmRSS:")
    pss = _field(rollup, "Pss:")
    return None if rss is None else {"rss_kib": rss, "pss_kib": pss or 0}


def command_line(pid: int) -> str:
    """The process's command line, for labelling it."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _field(text: str, name: str) -> int | None:
    for line in text.splitlines():
        if line.startswith(name):
            return int(line.split()[1])
    return None
