"""The errors a job can end with, and what each means for retrying it.

Every error an actor raises on purpose derives from `JobError`. `Retryable` errors are
tried again with backoff until `max_attempts`, then the job goes dead; `Permanent` errors
skip the job (`failed`) after one attempt. Anything else is treated as a bug: retried.
"""

from __future__ import annotations


class JobError(Exception):
    """A job attempt ended with an error Courier knows how to classify."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip().splitlines()[0])


class Retryable(JobError):
    """The attempt failed for a reason that may go away: try again later."""

    #: Delay the upstream asked for, in milliseconds (e.g. from Retry-After), if any.
    retry_after_ms: int | None = None
    #: The upstream that failed (`crm`), whose circuit counts the failure; None: none.
    upstream: str | None = None


class Permanent(JobError):
    """The attempt failed for a reason that trying again will not fix."""


class UpstreamUnavailable(Retryable):
    """The upstream could not be reached, timed out or answered 5xx."""

    def __init__(self, message: str | None = None, *, upstream: str | None = None) -> None:
        super().__init__(message)
        self.upstream = upstream


class UpstreamRateLimited(Retryable):
    """The upstream answered 429 Too Many Requests."""

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after_ms: int | None = None,
        upstream: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms
        self.upstream = upstream


class UpstreamNotFound(Permanent):
    """The upstream does not have the entity (404 or 410)."""


class UpstreamForbidden(Permanent):
    """The upstream refused our credentials (401 or 403)."""


class UpstreamRejected(Permanent):
    """The upstream rejected the request as invalid (400, 409, 422 or another 4xx)."""


class InvalidPayload(Permanent):
    """The job's payload fails its type's validation."""


class Cancelled(JobError):
    """The job was cancelled while it ran; it stopped at a checkpoint."""


class LeaseLost(JobError):
    """The attempt no longer owns its job (reaped while its worker was cut off or frozen);
    it stopped at a checkpoint, and its finish is fenced off."""
