"""What every Courier harness gives a test, whether the API runs in-process (`Stack`) or as real
`courier` processes (`ProcessDeployment`): tokens, job submission and waiting for a job.

A harness says how it posts to its API and reads a job; submitting and waiting are written
once, here, so a test reads the same in every tier.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cached_property
from typing import Any

from tests.support.polling import wait_for

#: The most jobs one `POST /v1/jobs/batch` takes.
BATCH_LIMIT = 1000


class Harness:
    """Submitting jobs and waiting for them, over whatever API the subclass runs."""

    def token(self, tenant: str = "acme", role: str = "client") -> dict[str, str]:
        """Authorization headers for a new token."""
        raise NotImplementedError

    def post(self, path: str, body: Any, headers: Mapping[str, str]) -> tuple[int, str]:
        """POST a JSON body to the API; its status code and response text."""
        raise NotImplementedError

    def job(self, job_id: str) -> Any:
        """The job's row as it is now."""
        raise NotImplementedError

    def status_of(self, job: Any) -> str:
        """The status in a row that `job()` returned."""
        raise NotImplementedError

    @cached_property
    def headers(self) -> dict[str, str]:
        """A client token of tenant `acme`, made on first use: what `submit` sends by default."""
        return self.token()

    def submit(
        self,
        body: Mapping[str, Any] | None = None,
        /,
        *,
        headers: Mapping[str, str] | None = None,
        **fields: Any,
    ) -> str:
        """Submit one job through `POST /v1/jobs` (`body` and `fields` together make its
        body); it must be accepted (202). Returns its id."""
        status, text = self.post(
            "/v1/jobs", {**(body or {}), **fields}, self.headers if headers is None else headers
        )
        assert status == 202, f"{status}: {text}"
        return json.loads(text)["id"]

    def submit_all(
        self, bodies: Iterable[Mapping[str, Any]], *, headers: Mapping[str, str] | None = None
    ) -> list[str]:
        """Submit jobs through `POST /v1/jobs/batch`, up to 1000 a request; every one must be
        accepted (202). Returns their ids in order."""
        bodies = [dict(body) for body in bodies]
        ids: list[str] = []
        for start in range(0, len(bodies), BATCH_LIMIT):
            status, text = self.post(
                "/v1/jobs/batch",
                {"jobs": bodies[start : start + BATCH_LIMIT]},
                self.headers if headers is None else headers,
            )
            assert status == 207, f"{status}: {text}"
            for item in json.loads(text)["items"]:
                assert item["status"] == 202, item
                ids.append(item["job"]["id"])
        return ids

    def wait_status(self, job_id: str, *statuses: str, timeout: float = 30.0) -> Any:
        """Wait until the job reaches one of `statuses`; its row then."""
        seen: list[Any] = []

        def reached() -> bool:
            seen[:] = [self.job(job_id)]
            return self.status_of(seen[-1]) in statuses

        wait_for(
            reached,
            timeout=timeout,
            what=lambda: f"job {job_id} to be {'/'.join(statuses)} (is {self.status_of(seen[-1])})",
        )
        return seen[-1]
