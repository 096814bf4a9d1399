"""Checking what a schedule is asked to be, for the API and `courier schedule` alike.

A request is first validated as `ScheduleRequest` (field by field), then here against what
only the running service knows: its job types and their input checks, and the cadence as a
whole. Both callers turn `InvalidSchedule` into their own answer (422, exit status 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from api.intake import InputCheck
from api.schemas import SchedulePatch, ScheduleRequest
from store.cadence import Cadence, CadenceError
from store.models import Schedule
from store.schedules import NewSchedule


class InvalidSchedule(ValueError):
    """A schedule that cannot be stored; `field` names the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class JobTypes:
    """The job types a schedule may run: their queues and input checks, and the default
    number of attempts (COURIER_MAX_ATTEMPTS)."""

    queues: Mapping[str, str]
    input_checks: Mapping[str, InputCheck]
    max_attempts: int

    def queue_of(self, job_type: str) -> str:
        """The queue of a known job type; InvalidSchedule for one no worker runs."""
        queue = self.queues.get(job_type)
        if queue is None:
            known = ", ".join(sorted(self.queues))
            raise InvalidSchedule("type", f"{job_type!r} is not a job type; known types: {known}")
        return queue

    def check(self, job_type: str, entity_id: str | None, payload: Mapping[str, Any]) -> None:
        """InvalidSchedule for an unknown type or input the job type would refuse."""
        self.queue_of(job_type)
        check = self.input_checks.get(job_type)
        problem = None if check is None else check(entity_id, payload)
        if problem is not None:
            # The checks name the entity when it is at fault, and the payload's fields else.
            field = "entity_id" if problem.startswith("entity_id") else "payload"
            raise InvalidSchedule(field, f"not valid for {job_type}: {problem}")


def new_schedule(request: ScheduleRequest, *, tenant: str, job_types: JobTypes) -> NewSchedule:
    """The store's view of a validated request; InvalidSchedule if it cannot run."""
    new = _as_new(request, tenant=tenant, job_types=job_types)
    job_types.check(request.type, request.entity_id, request.payload)
    return new


def _as_new(request: ScheduleRequest, *, tenant: str, job_types: JobTypes) -> NewSchedule:
    # The cadence is checked here, before the job type: the order in which fields are named.
    return NewSchedule(
        tenant=tenant,
        name=request.name,
        type=request.type,
        cadence=cadence(request),
        entity_id=request.entity_id,
        payload=request.payload,
        priority=request.priority,
        max_attempts=request.max_attempts or job_types.max_attempts,
        overlap=request.overlap,
        missed=request.missed,
        paused=request.paused,
    )


def cadence(request: ScheduleRequest) -> Cadence:
    """The request's cadence, checked as a whole; InvalidSchedule naming the field at fault."""
    try:
        return Cadence.checked(
            cron=request.cron,
            interval_s=request.interval_s,
            timezone=request.timezone,
            jitter_s=request.jitter_s,
        )
    except CadenceError as e:
        raise InvalidSchedule(e.field, e.message) from None


def patched(schedule: Schedule, patch: SchedulePatch, *, job_types: JobTypes) -> NewSchedule:
    """What the schedule becomes with the patch's fields, checked like a new schedule.

    Raises pydantic's ValidationError for a field set to null that needs a value, and
    InvalidSchedule as `new_schedule` does. The job type and input are checked again only
    when they change or the schedule is resumed, so a schedule whose type has gone can still
    be paused, renamed or deleted.
    """
    given = patch.model_dump(exclude_unset=True)
    merged = {**_fields_of(schedule), **given}
    # Giving one kind of cadence replaces the other, as a user switching means.
    if given.get("cron") is not None and "interval_s" not in given:
        merged["interval_s"] = None
    if given.get("interval_s") is not None and "cron" not in given:
        merged["cron"] = None
    request = ScheduleRequest.model_validate(merged)
    new = _as_new(request, tenant=schedule.tenant, job_types=job_types)
    resuming = schedule.paused and not request.paused
    if resuming or given.keys() & {"type", "entity_id", "payload"}:
        job_types.check(request.type, request.entity_id, request.payload)
    return new


def _fields_of(schedule: Schedule) -> dict[str, Any]:
    return {name: getattr(schedule, name) for name in SchedulePatch.model_fields}
