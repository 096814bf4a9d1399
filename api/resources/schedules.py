"""/v1/schedules: create, list, read, change, delete and trigger recurring jobs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import falcon
from sqlalchemy.orm import Session

from api import auth, serialize, versions
from api.errors import Problem, not_found
from api.intake import Intake
from api.resources.jobs import COMMON, CREATES, WITH_BODY, send_page
from api.schedule_input import InvalidSchedule, JobTypes, new_schedule, patched
from api.schemas import (
    ErrorOut,
    JobOut,
    ListSchedulesQuery,
    ScheduleOut,
    SchedulePage,
    SchedulePatch,
    ScheduleRequest,
    TriggerRequest,
)
from api.spec import operation
from api.versions import Version
from store import schedules
from store.models import Schedule as ScheduleRow
from store.tokens import Principal


def job_types_of(intake: Intake) -> JobTypes:
    """The job types schedules are checked against: the ones jobs are."""
    return JobTypes(intake.queues, intake.input_checks, intake.defaults.max_attempts)


class Schedules:
    """The collection of the caller's schedules."""

    def __init__(self, intake: Intake) -> None:
        self._intake = intake
        self._job_types = job_types_of(intake)

    @operation(
        request=ScheduleRequest,
        responses={201: ScheduleOut, 403: ErrorOut, 409: ErrorOut, **WITH_BODY},
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a schedule (operators name its tenant)."""
        who = auth.principal(req)
        request: ScheduleRequest = req.context.body
        with unprocessable():
            new = new_schedule(request, tenant=_tenant_for(who, request), job_types=self._job_types)
        with self._intake.sessions.begin() as session:
            schedule = schedules.create(session, new)
            schedules.record(session, schedule, "schedule.create", actor=who.label)
        resp.status = falcon.HTTP_201
        resp.location = f"/v1/schedules/{schedule.id}"
        resp.media = serialize.schedule(schedule, None)

    @operation(
        query=ListSchedulesQuery,
        responses={200: SchedulePage, 400: ErrorOut, 403: ErrorOut, 422: ErrorOut, **COMMON},
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List schedules, newest first, a page at a time."""
        query: ListSchedulesQuery = req.context.query
        tenant = auth.listing_scope(req, query.tenant)
        with self._intake.sessions() as session:
            rows, next_id = schedules.listing(
                session,
                tenant=tenant,
                type=query.type,
                paused=query.paused,
                limit=query.limit,
                before=query.cursor,
            )
            runs = schedules.last_runs(session, rows)
        send_page(resp, rows, next_id, item=lambda row: serialize.schedule(row, runs.get(row.id)))


class Schedule:
    """One schedule of the caller's, and what can be done to it."""

    def __init__(self, intake: Intake) -> None:
        self._intake = intake
        self._job_types = job_types_of(intake)

    @operation(responses={200: ScheduleOut, 404: ErrorOut, **COMMON})
    def on_get(self, req: falcon.Request, resp: falcon.Response, schedule_id: uuid.UUID) -> None:
        """Read a schedule."""
        with self._intake.sessions() as session:
            resp.media = _shown(session, _get(session, req, schedule_id))

    @operation(
        request=SchedulePatch,
        responses={200: ScheduleOut, 404: ErrorOut, 409: ErrorOut, **WITH_BODY},
    )
    def on_patch(self, req: falcon.Request, resp: falcon.Response, schedule_id: uuid.UUID) -> None:
        """Change a schedule; a new cadence starts at its first occurrence after now."""
        who = auth.principal(req)
        patch: SchedulePatch = req.context.body
        with self._intake.sessions.begin() as session:
            schedule = _get(session, req, schedule_id, lock=True)
            with unprocessable():
                wanted = patched(schedule, patch, job_types=self._job_types)
            schedules.change(session, schedule, wanted, actor=who.label)
            resp.media = _shown(session, schedule)

    @operation(responses={204: None, 404: ErrorOut, **COMMON})
    def on_delete(self, req: falcon.Request, resp: falcon.Response, schedule_id: uuid.UUID) -> None:
        """Delete a schedule; the jobs it created stay."""
        who = auth.principal(req)
        with self._intake.sessions.begin() as session:
            schedules.delete(session, _get(session, req, schedule_id, lock=True), actor=who.label)
        resp.status = falcon.HTTP_204

    @operation(
        request=TriggerRequest,
        optional_body=True,
        responses={202: JobOut, 404: ErrorOut, 409: ErrorOut, **CREATES},
    )
    def on_post_trigger(
        self, req: falcon.Request, resp: falcon.Response, schedule_id: uuid.UUID
    ) -> None:
        """Create the schedule's job now, outside its cadence."""
        who = auth.principal(req)
        request: TriggerRequest = req.context.body
        with self._intake.sessions.begin() as session:
            schedule = _get(session, req, schedule_id, lock=True)
            with unprocessable():
                queue = self._job_types.queue_of(schedule.type)
            job = self._intake.trigger(
                session, schedule, queue=queue, actor=who.label, reason=request.reason
            )
        self._intake.publish([job])
        resp.status = falcon.HTTP_202
        resp.location = f"/v1/jobs/{job.id}"
        versions.send(resp, Version.of(serialize.job(job)))


@contextmanager
def unprocessable() -> Iterator[None]:
    """Answer InvalidSchedule with 422 naming the field."""
    try:
        yield
    except InvalidSchedule as e:
        raise Problem(
            falcon.HTTP_422,
            "Invalid request",
            str(e),
            errors=[{"field": e.field, "message": e.message}],
        ) from None


def _tenant_for(who: Principal, request: ScheduleRequest) -> str:
    if who.is_operator:
        if request.tenant is None:
            raise Problem(
                falcon.HTTP_422,
                "Invalid request",
                "tenant: operators name the tenant the schedule belongs to",
                errors=[{"field": "tenant", "message": "required for operators"}],
            )
        return request.tenant
    if request.tenant is not None and request.tenant != who.tenant:
        raise Problem(falcon.HTTP_403, "Forbidden", "a client creates schedules of its own tenant")
    return who.tenant


def _get(
    session: Session, req: falcon.Request, schedule_id: uuid.UUID, *, lock: bool = False
) -> ScheduleRow:
    # Another tenant's schedule answers exactly as a missing one.
    try:
        return schedules.get(session, schedule_id, tenant=auth.scope(req), lock=lock)
    except schedules.ScheduleNotFound:
        raise not_found("no such schedule") from None


def _shown(session: Session, schedule: ScheduleRow) -> dict:
    return serialize.schedule(schedule, schedules.last_runs(session, [schedule]).get(schedule.id))
