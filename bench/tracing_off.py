"""What trace context costs with tracing off: each step's CPU per call, in this process.

`.venv/bin/python -m bench.tracing_off [--calls 100000]` prints the best of 5 runs of each
step, in microseconds per call: what the API adds per accepted job (a new traceparent, the
publish check), what a worker adds per attempt and per upstream call. No services needed.
"""

from __future__ import annotations

import argparse
import timeit
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from store.outbox import JobMessage
from tracing import context, spans


@dataclass(frozen=True)
class _Message:
    message_id: str = "m"


def _steps() -> dict[str, Callable[[], object]]:
    traceparent = context.start()
    jobs = [JobMessage(uuid.uuid4(), "customer_sync", "sync", 0, 60, "c", 0, traceparent)]
    messages = [_Message()]

    def attempt() -> None:
        spans.begin_attempt(
            traceparent, queue="sync", message_id="m", job_id="j", job_type="t", attempt=1
        ).finish(None)

    def upstream_call() -> None:
        with spans.upstream_call("CRM", "GET", "http://crm/customers/1") as call:
            call.answered(200)

    def publish() -> None:
        with spans.publishing(jobs, messages):
            pass

    return {
        "new trace for a job (context.start)": context.start,
        "request span check (spans.current)": spans.current,
        "publish span check, per publish": publish,
        "attempt: begin + finish": attempt,
        "upstream call: traceparent header": upstream_call,
    }


def main(argv: list[str] | None = None) -> int:
    """Print each step's cost per call with tracing off."""
    parser = argparse.ArgumentParser(prog="python -m bench.tracing_off", description=__doc__)
    parser.add_argument("--calls", type=int, default=100_000, help="calls per run (100000)")
    args = parser.parse_args(argv)
    assert not spans.enabled(), "tracing must be off here"
    for name, step in _steps().items():
        best = min(timeit.repeat(step, number=args.calls, repeat=5)) / args.calls
        print(f"{name:40s} {best * 1e6:6.2f} µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
