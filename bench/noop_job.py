"""The benchmark's no-op job type, loaded with `COURIER_JOB_MODULES=bench.noop_job`.

It runs Courier's whole path (API, ledger, middleware, broker) around an actor that does
nothing, which is what bare Dramatiq's no-op actor is compared with in section 3.
"""

from __future__ import annotations

from actors.registry import Upstreams, job_type
from middleware.current_job import RunningJob

NAME = "bench_noop"


@job_type(NAME)
def bench_noop(job: RunningJob, upstreams: Upstreams) -> None:
    """Nothing: the job succeeds with no result."""
