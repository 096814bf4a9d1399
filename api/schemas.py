"""Request and response shapes; the API validates with them and the OpenAPI document uses them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
)

from store import states


def _text_only(value: Any) -> Any:
    # Pydantic would read a bare number as Unix time; the contract says RFC 3339 strings.
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 timestamp string")
    return value


def _whole_number(value: Any) -> Any:
    # JSON's 3.0 is the integer 3 (as JSON Schema says); "3" and true are not numbers.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be a whole number")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be a whole number")
        return int(value)
    return value


#: How far from now a job may be scheduled, either way.
RUN_AT_WINDOW = timedelta(days=365)


def _within_the_window(value: datetime) -> datetime:
    # Far dates with offsets (9999-12-31T23:00:00-05:00) leave Python's datetime range once
    # in UTC, and would break every listing that reads them back. The API host's clock is
    # close enough for a window of a year.
    now = datetime.now(UTC)
    if not now - RUN_AT_WINDOW <= value <= now + RUN_AT_WINDOW:
        raise ValueError("must lie within one year of now")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_text_only)]
RunAt = Annotated[Timestamp, AfterValidator(_within_the_window)]
WHOLE = BeforeValidator(_whole_number)
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
#: A tenant as a token names it (`courier token create --tenant`): 1 to 64 characters.
Tenant = Annotated[str, Field(min_length=1, max_length=64)]
Reason = Annotated[str, Field(max_length=1000)]


class Strict(BaseModel):
    """Unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", strict=False)


class JobRequest(Strict):
    """A job to run."""

    type: Name
    entity_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: Annotated[int, Field(ge=0, le=9), WHOLE] = 0
    run_at: RunAt | None = Field(None, description="When to run; within one year of now.")
    max_attempts: Annotated[int, Field(ge=1, le=20), WHOLE] | None = None
    # Well below RabbitMQ's 30-minute delivery acknowledgement timeout.
    timeout_s: Annotated[int, Field(ge=1, le=1500), WHOLE] | None = None
    callback_url: str | None = Field(
        None,
        max_length=2048,
        description="Where Courier POSTs the Job when it ends (a webhook): http or https, "
        "on a host the deployment allows, without user or password.",
    )


class BatchRequest(Strict):
    """Up to 1000 jobs accepted in one transaction; each is validated on its own."""

    jobs: Annotated[list[Any], Field(min_length=1, max_length=1000)]


class ReplayRequest(Strict):
    """Replay a finished job, optionally with a corrected payload."""

    payload: dict[str, Any] | None = None
    reason: Reason | None = None


class CancelRequest(Strict):
    """Why a job is cancelled (optional)."""

    reason: Reason | None = None


class PurgeRequest(Strict):
    """Why a queue is purged (optional, for the audit log)."""

    reason: Reason | None = None


class CircuitRequest(Strict):
    """Force an upstream's circuit open (until closed so) or closed."""

    state: Literal["open", "closed"]
    reason: Reason | None = None


class DeadLetterReplayRequest(Strict):
    """Replay dead jobs by id or by filter; with neither, only with `all` set."""

    job_ids: Annotated[list[uuid.UUID], Field(max_length=1000)] | None = None
    type: Name | None = None
    error_type: Annotated[str, Field(max_length=128)] | None = None
    tenant: Tenant | None = None
    limit: Annotated[int, Field(ge=1, le=1000), WHOLE] = 1000
    reason: Reason | None = None
    all: StrictBool = Field(
        False, description="Replay dead jobs of every type and tenant (no ids, no filter)."
    )
    dry_run: StrictBool = Field(
        False, description="Only count the jobs and show the first ids; replay nothing."
    )


Status = Literal[states.VALUES]  # type: ignore[valid-type]


class Progress(BaseModel):
    """How far a running job got."""

    current: int
    total: int | None = None
    message: str | None = None


class JobOut(BaseModel):
    """A job as the API shows it."""

    id: uuid.UUID
    tenant: str
    type: str
    queue: str
    entity_id: str | None
    payload: dict[str, Any]
    status: Status
    priority: int
    attempts: int
    max_attempts: int
    progress: Progress | None
    result: dict[str, Any] | None
    error_type: str | None
    error: str | None
    correlation_id: str
    replay_of: uuid.UUID | None
    replayed_by: uuid.UUID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    next_attempt_at: datetime | None
    run_at: datetime | None
    schedule_id: uuid.UUID | None
    scheduled_for: datetime | None
    callback_url: str | None
    #: What a waiting job waits for (a concurrency limit's key, an open circuit); null otherwise.
    waiting_for: str | None
    status_url: str


class AttemptOut(BaseModel):
    """One attempt of a job."""

    number: int
    status: Literal[states.ATTEMPT_VALUES]  # type: ignore[valid-type]
    decision: Literal[states.DECISION_VALUES] | None  # type: ignore[valid-type]
    error_type: str | None
    error: str | None
    retry_in_ms: int | None
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    worker: str


class DeliveryOut(BaseModel):
    """One webhook delivery of a job's end."""

    id: uuid.UUID
    event: str
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    next_attempt_at: datetime | None


class DeliveryList(BaseModel):
    """A job's webhook deliveries, oldest first."""

    items: list[DeliveryOut]


class JobPage(BaseModel):
    """A page of jobs, newest first."""

    items: list[JobOut]
    next_cursor: str | None


class AttemptList(BaseModel):
    """A job's attempts in order."""

    items: list[AttemptOut]


class BatchItem(BaseModel):
    """The fate of one job of a batch."""

    status: Literal[202, 409, 422, 429]
    job: JobOut | None = None
    title: str | None = None
    description: str | None = None
    existing_job_id: uuid.UUID | None = None
    errors: list[FieldError] | None = None


class BatchResult(BaseModel):
    """One item per submitted job, in order."""

    items: list[BatchItem]


class Replayed(BaseModel):
    """An old job and the new job that replays it."""

    job_id: uuid.UUID
    new_job_id: uuid.UUID


class BulkReplayResult(BaseModel):
    """What a bulk replay did."""

    replayed: list[Replayed]
    count: int
    skipped: list[Skipped]


class BulkReplayPreview(BaseModel):
    """What a bulk replay would take (a dry run: nothing was replayed)."""

    dry_run: Literal[True]
    count: int = Field(description="How many dead jobs the replay would take.")
    job_ids: list[uuid.UUID] = Field(description="The first (newest) of them, up to 20.")


class PurgeResult(BaseModel):
    """What a purge did."""

    queue: str
    cancelled: int = Field(description="How many queued or retrying jobs were cancelled.")


class UpstreamOut(BaseModel):
    """One upstream's circuit."""

    upstream: str
    state: Literal["closed", "open", "half_open"]
    failures: int = Field(description="Consecutive UpstreamUnavailable attempts counted.")
    opened_at: datetime | None
    retry_at: datetime | None = Field(description="When probes may go through (open).")
    forced: bool = Field(description="Forced open by an operator: open until closed so.")
    reason: str | None


class UpstreamList(BaseModel):
    """Every known upstream's circuit, by name."""

    upstreams: list[UpstreamOut]


class FieldError(BaseModel):
    """One invalid field of a request."""

    field: str
    message: str


class ErrorOut(BaseModel):
    """Every error answer has this shape; some carry one of the optional fields."""

    model_config = ConfigDict(extra="allow")

    title: str
    description: str | None = None
    errors: list[FieldError] | None = None
    existing_job_id: uuid.UUID | None = None


Limit = Annotated[int, Field(ge=1, le=500)]


class ListJobsQuery(Strict):
    """Filters and paging of the job list (`tenant` only for operators)."""

    status: Status | None = None
    type: str | None = None
    entity_id: str | None = None
    tenant: str | None = None
    limit: Limit = 50
    cursor: uuid.UUID | None = None


class WaitQuery(BaseModel):
    """How long a read of a job may wait for the job to end or change (other query
    parameters are ignored, as they always were here)."""

    wait_s: Annotated[int, Field(ge=1, le=60)] | None = Field(
        None,
        description="Answer as soon as the job is terminal (or, with If-None-Match, differs "
        "from that version), or after this many seconds, with the job either way.",
    )


class DeadLettersQuery(Strict):
    """Filters and paging of the dead-letter list."""

    type: str | None = None
    error_type: str | None = None
    tenant: str | None = None
    limit: Limit = 50
    cursor: uuid.UUID | None = None


class Skipped(BaseModel):
    """A dead job a bulk replay left alone, and why."""

    job_id: uuid.UUID
    reason: str


class QueueDepth(BaseModel):
    """Messages in one queue; null when the broker's management API does not answer."""

    ready: int | None
    unacked: int | None
    delayed: int | None
    dead: int | None


class StatsOut(BaseModel):
    """An operator's overview."""

    jobs: dict[str, int]
    by_type: dict[str, dict[str, int]]
    success_rate: float | None
    retry_count: int
    dead_letters: int
    avg_duration_ms: float | None
    p95_duration_ms: float | None
    queues: dict[str, QueueDepth]


class HealthOut(BaseModel):
    """The process is up."""

    status: Literal["ok"]


class ReadyOut(BaseModel):
    """Whether the database and the broker answer."""

    title: str
    description: str
    checks: dict[str, Literal["ok", "unavailable"]]


# Schedules (recurring jobs).

#: A schedule's name: the characters of a job type's name, up to 128 of them.
ScheduleName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
EntityId = Annotated[str, Field(min_length=1, max_length=256)]
Priority = Annotated[int, Field(ge=0, le=9), WHOLE]
MaxAttempts = Annotated[int, Field(ge=1, le=20), WHOLE]
Cron = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        description="Five-field cron expression, read in wall-clock time of `timezone`.",
    ),
]
#: At least a second, at most a year and a day (the column is a 32-bit integer).
IntervalS = Annotated[
    int,
    Field(ge=1, le=366 * 86400, description="Seconds between occurrences, from the epoch."),
    WHOLE,
]
Timezone = Annotated[str, Field(min_length=1, max_length=64, description="IANA timezone name.")]
JitterS = Annotated[
    int,
    Field(ge=0, le=3600, description="Each occurrence is delayed by a stable offset below it."),
    WHOLE,
]
Overlap = Literal["skip", "allow"]
Missed = Literal["skip", "once"]


class ScheduleRequest(Strict):
    """A schedule to create: exactly one of `cron` and `interval_s`."""

    tenant: Tenant | None = Field(
        None, description="Operators must name the tenant; a client may only name its own."
    )
    name: ScheduleName
    type: Name
    entity_id: EntityId | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = 0
    max_attempts: MaxAttempts | None = None
    cron: Cron | None = None
    interval_s: IntervalS | None = None
    timezone: Timezone = "UTC"
    jitter_s: JitterS = 0
    overlap: Overlap = Field("skip", description="skip: no new job while the last one is active.")
    missed: Missed = Field(
        "once", description="After downtime: skip missed occurrences, or run the latest once."
    )
    paused: StrictBool = False


class SchedulePatch(Strict):
    """Fields of a schedule to change; giving `cron` or `interval_s` alone replaces the other."""

    name: ScheduleName | None = None
    type: Name | None = None
    entity_id: EntityId | None = None
    payload: dict[str, Any] | None = None
    priority: Priority | None = None
    max_attempts: MaxAttempts | None = None
    cron: Cron | None = None
    interval_s: IntervalS | None = None
    timezone: Timezone | None = None
    jitter_s: JitterS | None = None
    overlap: Overlap | None = None
    missed: Missed | None = None
    paused: StrictBool | None = Field(None, description="true pauses, false resumes.")


class TriggerRequest(Strict):
    """Why a schedule's job is created now (optional, for the audit log)."""

    reason: Reason | None = None


class LastRunOut(BaseModel):
    """The job a schedule created most recently."""

    job_id: uuid.UUID
    scheduled_for: datetime
    status: Status


class ScheduleOut(BaseModel):
    """A schedule as the API shows it."""

    id: uuid.UUID
    tenant: str
    name: str
    type: str
    entity_id: str | None
    payload: dict[str, Any]
    priority: int
    max_attempts: int
    cron: str | None
    interval_s: int | None
    timezone: str
    jitter_s: int
    overlap: Overlap
    missed: Missed
    paused: bool
    paused_reason: str | None = Field(description="Why Courier paused it itself; else null.")
    next_runs: list[datetime] = Field(description="The next five runs, jitter applied.")
    last_run: LastRunOut | None
    skipped_runs: int
    created_at: datetime
    updated_at: datetime


class SchedulePage(BaseModel):
    """A page of schedules, newest first."""

    items: list[ScheduleOut]
    next_cursor: str | None


class ListSchedulesQuery(Strict):
    """Filters and paging of the schedule list (`tenant` only for operators)."""

    type: str | None = None
    paused: bool | None = None
    tenant: str | None = None
    limit: Limit = 50
    cursor: uuid.UUID | None = None
