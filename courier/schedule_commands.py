"""`courier schedule`: the operator's view of recurring schedules, checked and audited as the
API checks and audits them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from courier.cli_support import BadUsage, Fail, settings_from_env

if TYPE_CHECKING:  # the commands import what they use when they run, to start quickly
    from datetime import datetime

    from pydantic import ValidationError
    from sqlalchemy.orm import Session, sessionmaker

    from api.schedule_input import JobTypes
    from courier.settings import Settings
    from store.models import Schedule
    from store.schedules import LastRun

#: Schedules listed per query while `list` walks through all of them.
PAGE = 500


def _one_schedule(command: Callable[..., None]) -> Callable[..., None]:
    """The argument and option of a command on one schedule: its id, and why."""
    command = click.option("--reason", default=None, help="Why, for the audit log.")(command)
    return click.argument("schedule_id", type=click.UUID)(command)


@click.group()
def schedule() -> None:
    """List, create, pause, resume, trigger and delete recurring schedules."""


@schedule.command("list")
@click.option("--tenant", default=None, help="Only this tenant's schedules.")
@click.option("--type", "job_type", default=None, help="Only schedules of this job type.")
@click.option("--paused/--active", default=None, help="Only paused, or only active, schedules.")
def schedule_list(tenant: str | None, job_type: str | None, paused: bool | None) -> None:
    """List schedules, newest first: cadence, state, next and last run."""
    from store import schedules

    with _sessions()() as session:
        before = None
        click.echo(
            f"{'id':<36}  {'tenant':<12} {'name':<24} {'type':<16} {'cadence':<28} "
            f"{'state':<7} {'next run':<20}  {'last run':<10} skipped"
        )
        while True:
            rows, before = schedules.listing(
                session, tenant=tenant, type=job_type, paused=paused, limit=PAGE, before=before
            )
            runs = schedules.last_runs(session, rows)
            for row in rows:
                click.echo(_line(row, runs.get(row.id)))
            if before is None:
                break


@schedule.command("create")
@click.option("--tenant", required=True, help="The tenant the schedule belongs to.")
@click.option("--name", required=True, help="Unique within the tenant.")
@click.option("--type", "job_type", required=True, help="The job type it creates.")
@click.option("--cron", default=None, help="Five-field cron expression, e.g. '0 3 * * *'.")
@click.option("--interval-s", default=None, type=int, help="Seconds between runs.")
@click.option("--timezone", default="UTC", show_default=True, help="IANA name, for --cron.")
@click.option("--jitter-s", default=0, show_default=True, type=int, help="0..3600.")
@click.option("--overlap", type=click.Choice(["skip", "allow"]), default="skip", show_default=True)
@click.option("--missed", type=click.Choice(["skip", "once"]), default="once", show_default=True)
@click.option("--entity-id", default=None)
@click.option("--payload", default=None, help="A JSON object.")
@click.option("--priority", default=0, show_default=True, type=int, help="0..9.")
@click.option(
    "--max-attempts", default=None, type=int, help="1..20 (default COURIER_MAX_ATTEMPTS)."
)
@click.option("--paused", is_flag=True, help="Create it paused.")
def schedule_create(payload: str | None, job_type: str, **options: Any) -> None:
    """Create a schedule; its id is printed alone on the last line."""
    from pydantic import ValidationError

    from api.schedule_input import InvalidSchedule, new_schedule
    from api.schemas import ScheduleRequest
    from store import schedules

    fields = {name: value for name, value in options.items() if value is not None}
    fields["type"] = job_type
    if payload is not None:
        fields["payload"] = _json_object(payload)
    settings = settings_from_env()
    try:
        request = ScheduleRequest.model_validate(fields)
        new = new_schedule(request, tenant=request.tenant or "", job_types=_job_types(settings))
    except ValidationError as e:
        raise BadUsage(_first_problem(e)) from None
    except InvalidSchedule as e:
        raise BadUsage(f"{_option(e.field)}: {e.message}") from None
    with _sessions()() as session, session.begin(), _conflicts():
        made = schedules.create(session, new)
        schedules.record(session, made, "schedule.create", actor=_actor())
    click.echo(f"created schedule {made.name} for tenant {made.tenant}")
    click.echo(str(made.id))


@schedule.command("pause")
@_one_schedule
def schedule_pause(schedule_id: uuid.UUID, reason: str | None) -> None:
    """Pause a schedule: no jobs until it is resumed."""
    from store import schedules

    with _one(schedule_id) as (session, row):
        done = schedules.pause(session, row, actor=_actor(), reason=reason)
    click.echo(f"paused {row.name}" if done else f"{row.name} was paused already")


@schedule.command("resume")
@_one_schedule
def schedule_resume(schedule_id: uuid.UUID, reason: str | None) -> None:
    """Resume a schedule at its first occurrence after now (those missed are not run)."""
    from api.schedule_input import InvalidSchedule
    from store import schedules

    job_types = _job_types(settings_from_env())
    with _one(schedule_id) as (session, row):
        try:
            job_types.check(row.type, row.entity_id, row.payload)
        except InvalidSchedule as e:
            raise Fail(f"cannot resume: {e}") from None
        done = schedules.resume(session, row, actor=_actor(), reason=reason)
        first = schedules.next_runs(row, 1)
    if not done:
        click.echo(f"{row.name} was not paused")
        return
    click.echo(f"resumed {row.name}; next run {_when(first[0]) if first else '-'}")


@schedule.command("trigger")
@_one_schedule
def schedule_trigger(schedule_id: uuid.UUID, reason: str | None) -> None:
    """Create the schedule's job now, outside its cadence; the job id is printed last."""
    from api.schedule_input import InvalidSchedule
    from courier.broker import publishing_broker
    from delivery.outbox import Outbox
    from store import errors, schedules
    from store.outbox import JobMessage

    settings = settings_from_env()
    sessions = _sessions()
    with _one(schedule_id, sessions) as (session, row):
        try:
            queue = _job_types(settings).queue_of(row.type)
            job = schedules.trigger(
                session,
                row,
                queue=queue,
                timeout_s=settings.job_timeout_s,
                actor=_actor(),
                reason=reason,
            )
        except InvalidSchedule as e:
            raise Fail(f"cannot trigger: {e}") from None
        except errors.DuplicateActiveJob as e:
            raise Fail(str(e)) from None
    # An in-memory broker lives in `courier dev`'s process: its relay publishes the job.
    if not settings.uses_memory_broker:
        broker = publishing_broker(settings)
        try:
            Outbox(broker, sessions.kw["bind"]).publish([JobMessage.of(job)])
        finally:
            broker.close()
    click.echo(f"triggered {row.name}: job {job.type} queued")
    click.echo(str(job.id))


@schedule.command("delete")
@_one_schedule
def schedule_delete(schedule_id: uuid.UUID, reason: str | None) -> None:
    """Delete a schedule; the jobs it created stay."""
    from store import schedules

    with _one(schedule_id) as (session, row):
        schedules.delete(session, row, actor=_actor(), reason=reason)
    click.echo(f"deleted {row.name}")


def _sessions() -> sessionmaker[Session]:
    from store.db import make_engine, make_sessionmaker

    return make_sessionmaker(make_engine(settings_from_env().database_url))


@contextmanager
def _one(
    schedule_id: uuid.UUID, sessions: sessionmaker[Session] | None = None
) -> Iterator[tuple[Session, Schedule]]:
    """A transaction and the schedule, locked in it; exit status 1 when there is none."""
    from store import schedules

    with (sessions or _sessions())() as session, session.begin():
        try:
            row = schedules.get(session, schedule_id, tenant=None, lock=True)
        except schedules.ScheduleNotFound:
            raise Fail(f"no schedule {schedule_id}") from None
        yield session, row


@contextmanager
def _conflicts() -> Iterator[None]:
    from store import schedules

    try:
        yield
    except schedules.DuplicateScheduleName as e:
        raise Fail(str(e)) from None


def _job_types(settings: Settings) -> JobTypes:
    from actors.registry import JobQueuesError, input_checks, queues_by_type
    from api.schedule_input import JobTypes

    try:
        queues = queues_by_type(settings.job_modules, settings.job_queues)
    except JobQueuesError as e:
        raise Fail(str(e)) from None
    return JobTypes(queues, input_checks(settings.job_modules), settings.max_attempts)


def _actor() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        raise BadUsage("--payload: not valid JSON") from None
    if not isinstance(value, dict):
        raise BadUsage("--payload: must be a JSON object")
    return value


def _first_problem(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_context=False, include_input=False)[0]
    field = ".".join(str(p) for p in first["loc"])
    return f"{_option(field)}: {first['msg']}"


def _option(field: str) -> str:
    return "--" + field.split(".")[0].replace("_", "-")


def _line(row: Schedule, last: LastRun | None) -> str:
    from store import schedules

    cadence = f"{row.cron} {row.timezone}" if row.cron else f"every {row.interval_s}s"
    state = "paused" if row.paused else "active"
    first = schedules.next_runs(row, 1)
    last_status = "-" if last is None else last.status
    return (
        f"{row.id!s:<36}  {row.tenant:<12} {row.name:<24} {row.type:<16} {cadence:<28} "
        f"{state:<7} {_when(first[0]) if first else '-':<20}  {last_status:<10} "
        f"{row.skipped_runs}"
    )


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}Z"
