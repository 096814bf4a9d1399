"""`python -m bench.login_body`: what a huge login form costs the API process.

Starts `courier api` (one gunicorn worker, one thread, so one process takes every
request) on a fresh database and vhost, POSTs a form of `--mib` MiB to /ui/login with a
Content-Length, and prints the gunicorn worker's VmRSS before and after, and its peak
(VmHWM), from /proc/<pid>/status.
"""

from __future__ import annotations

import argparse
import http.client
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench import processes
from bench.stack import Shape, Stack

CHUNK = 1024 * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=100, help="form size in MiB (100)")
    args = parser.parse_args()
    stack = Stack(
        database=f"courier_bench_login_{os.getpid()}",
        vhost=f"courier-bench-login-{os.getpid()}",
        shape=Shape(api_workers=1, api_threads=1),
        logs=Path(tempfile.mkdtemp(prefix="courier-bench-login-")),
    )
    try:
        stack.start()
        assert stack.api is not None
        (worker,) = processes.descendants(stack.api.popen.pid)
        before = _status(worker)
        status = _post_form(stack.api_port, args.mib)
        after = _status(worker)
    finally:
        stack.close()
    print(f"POST /ui/login, {args.mib} MiB form: HTTP {status}")
    print(f"gunicorn worker VmRSS before {before['VmRSS'] // 1024} MiB")
    print(f"gunicorn worker VmRSS after  {after['VmRSS'] // 1024} MiB")
    print(f"gunicorn worker VmHWM (peak) {after['VmHWM'] // 1024} MiB")
    print(f"growth of the peak over RSS before {(after['VmHWM'] - before['VmRSS']) // 1024} MiB")


def _post_form(port: int, mib: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.putrequest("POST", "/ui/login")
    connection.putheader("Content-Type", "application/x-www-form-urlencoded")
    connection.putheader("Content-Length", str(mib * CHUNK + len("token=")))
    connection.endheaders()
    try:
        for chunk in _form(mib):
            connection.send(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered before reading it all
    status = connection.getresponse().status
    connection.close()
    return status


def _form(mib: int) -> Iterator[bytes]:
    yield b"token="
    block = b"x" * CHUNK
    for _ in range(mib):
        yield block


def _status(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


if __name__ == "__main__":
    main()
