"""Child processes for tests: started with their output kept for post-mortems, and the process
tree below them read from /proc."""

from __future__ import annotations

import contextlib
import glob
import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import httpx

from tests.support.polling import wait_for

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


# Below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768 and up by default):
# a port from that range can be taken as the source port of any outgoing connection while a
# test has its server down, and the restarted server then fails to listen on it.
_TEST_PORTS = range(20000, 32768)


def free_port() -> int:
    """A TCP port nobody listens on right now, outside the ephemeral range."""
    for port in random.sample(_TEST_PORTS, 200):
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port
    raise OSError(f"no free port in {_TEST_PORTS}")


def courier_command(*args: str) -> list[str]:
    """The `courier` console script of this environment."""
    return [str(Path(sys.executable).with_name("courier")), *args]


class Process:
    """A child process in a session of its own, its output going to test-artifacts/NAME.log.

    `append` keeps what earlier processes of the same name wrote (a server restarted by a test);
    `user` runs it as another user (PostgreSQL refuses to run as root).
    """

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        cwd: str | None = None,
        unset: tuple[str, ...] = (),
        *,
        user: str | None = None,
        append: bool = False,
    ):
        ARTIFACTS.mkdir(exist_ok=True)
        self.name = name
        self.log_path = ARTIFACTS / f"{name}.log"
        self._log = self.log_path.open("ab" if append else "wb")
        self._start = self._log.tell()
        self.popen = subprocess.Popen(
            args,
            env={k: v for k, v in {**os.environ, **env}.items() if k not in unset},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            user=user,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """Everything this process printed so far."""
        with self.log_path.open("rb") as f:
            f.seek(self._start)
            return f.read().decode(errors="replace")

    def lines(self, needle: str) -> list[str]:
        """The lines of its output that contain `needle`."""
        return [line for line in self.output().splitlines() if needle in line]

    def exited_early(self) -> AssertionError:
        """The error to fail with when it exited while it should be running."""
        return AssertionError(
            f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-3000:]}"
        )

    def send(self, signum: int) -> None:
        """Send a signal to the process (not its children)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def kill_group(self, signum: int = signal.SIGKILL) -> None:
        """Send a signal to the process and every child it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def wait(self, timeout: float) -> int:
        """Wait until it exits (`subprocess.TimeoutExpired` if it does not); its exit code."""
        code = self.popen.wait(timeout)
        self._log.close()
        return code

    def stop(self, timeout: float = 20, signum: int = signal.SIGTERM) -> int | None:
        """Send `signum`, then SIGKILL the whole group if it does not exit in time."""
        self.send(signum)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            self.popen.wait(5)
        self.kill_group()
        return self.wait(0)


def wait_http(url: str, *, timeout: float = 30, process: Process | None = None) -> None:
    """Wait until `url` answers 200 (failing early if the process died)."""

    def up() -> bool:
        if process is not None and not process.running:
            raise process.exited_early()
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=timeout, interval=0.2, what=url)


def children(pid: int) -> list[int]:
    """The direct children of a process (empty if it is gone)."""
    found = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        with contextlib.suppress(OSError), open(task) as f:
            found += [int(p) for p in f.read().split()]
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, parents before children."""
    found, todo = [], [pid]
    while todo:
        for child in children(todo.pop(0)):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether `pid` is a running (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    """A process's command line (empty if it is gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def signal_all(pids: Iterable[int], signum: int) -> None:
    """Send a signal to each process that is still there."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
