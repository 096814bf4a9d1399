"""Running the real `courier` commands as subprocesses, with their output kept for post-mortems."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.polling import wait_for

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def courier_command(*args: str) -> list[str]:
    """The `courier` console script of this environment."""
    return [str(Path(sys.executable).with_name("courier")), *args]


class Process:
    """A child process whose output goes to a log file under test-artifacts/."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        cwd: str | None = None,
        unset: tuple[str, ...] = (),
    ):
        ARTIFACTS.mkdir(exist_ok=True)
        self.name = name
        self.log_path = ARTIFACTS / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            args,
            env={k: v for k, v in {**os.environ, **env}.items() if k not in unset},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        """Everything the process printed so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def send(self, signum: int) -> None:
        """Send a signal to the process (not its children)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def kill_group(self, signum: int = signal.SIGKILL) -> None:
        """Send a signal to the process and every child it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signum)

    def stop(self, timeout: float = 20) -> int | None:
        """SIGTERM, then SIGKILL the whole group if it does not exit in time."""
        self.send(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            self.popen.wait(5)
        self.kill_group()
        self._log.close()
        return self.popen.returncode


def wait_http(url: str, *, timeout: float = 30, process: Process | None = None) -> None:
    """Wait until `url` answers 200 (failing early if the process died)."""

    def up() -> bool:
        if process is not None and process.popen.poll() is not None:
            raise AssertionError(f"{process.name} exited early:\n{process.output()[-3000:]}")
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=timeout, interval=0.2, what=url)
