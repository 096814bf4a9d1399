"""Job types that exist only in the test suite, to reach code paths no built-in type has."""

from __future__ import annotations

from typing import Any

from actors.registry import Upstreams, job_type
from middleware.current_job import RunningJob


@job_type("bug_for_test")
def bug_for_test(job: RunningJob, upstreams: Upstreams) -> dict[str, Any]:
    """Fails like a bug would, every time."""
    return {"ratio": 1 / len(job.payload)}


@job_type("bug_once_for_test")
def bug_once_for_test(job: RunningJob, upstreams: Upstreams) -> dict[str, Any]:
    """Fails like a bug on its first attempt only, as if a retry got past a race."""
    if job.claim.number == 1:
        return {"ratio": 1 / 0}
    return {"ratio": 1.0}
