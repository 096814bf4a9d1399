"""What the worker's outcome log line costs to format and write: CPU per line, in this process.

`.venv/bin/python -m bench.log_line [--lines 5000]` prints the median and the spread of 7
runs, in microseconds of this process's CPU per line, of the line the worker logs after each
attempt, JSON-rendered as in production and written to /dev/null. No services needed.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
import uuid

from courier.logs import configure_logging


def _per_line(log: logging.Logger, lines: int) -> float:
    job_id, message_id = uuid.uuid4(), str(uuid.uuid4())
    start = time.process_time()
    for _ in range(lines):
        log.info(
            "job %s attempt %d %s%s in %d ms",
            job_id,
            1,
            "succeeded",
            "",
            0,
            extra={
                "job_id": str(job_id),
                "message_id": message_id,
                "attempt": 1,
                "correlation_id": str(job_id),
                "outcome": "succeeded",
                "duration_ms": 0,
            },
        )
    return (time.process_time() - start) / lines


def main(argv: list[str] | None = None) -> int:
    """Print the outcome line's CPU per line."""
    parser = argparse.ArgumentParser(prog="python -m bench.log_line", description=__doc__)
    parser.add_argument("--lines", type=int, default=5000, help="lines per run (5000)")
    args = parser.parse_args(argv)
    shown, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115 - the log's sink
    try:
        configure_logging("json")
        log = logging.getLogger("middleware.attempts")
        runs = [_per_line(log, args.lines) * 1e6 for _ in range(7)]
    finally:
        sys.stderr.close()
        sys.stderr = shown
    print(
        f"outcome log line: median {statistics.median(runs):.1f} µs CPU per line"
        f" (runs {min(runs):.1f}-{max(runs):.1f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
