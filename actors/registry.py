"""The catalogue of job types and how each becomes a Dramatiq actor."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dramatiq
from pydantic import BaseModel, ValidationError

from actors.upstream import UpstreamClient
from middleware import errors
from middleware.classify import DEFAULT, Rule
from middleware.current_job import RunningJob, current_job


@dataclass(frozen=True)
class Upstreams:
    """The upstream clients a job type may call."""

    crm: UpstreamClient
    billing: UpstreamClient

    def close(self) -> None:
        """Release their connection pools."""
        self.crm.close()
        self.billing.close()


Run = Callable[[RunningJob, Upstreams], dict[str, Any] | None]

#: The upstreams Courier calls, by the names limits and circuits know them by (the fields of
#: `Upstreams`).
UPSTREAMS = ("crm", "billing")


@dataclass(frozen=True)
class JobType:
    """A kind of job: its name (the actor's name), queue, code, what its input must be, its
    error rules and the upstreams it calls (for limits and circuits)."""

    name: str
    queue: str
    run: Run
    payload_model: type[BaseModel] | None = None
    rules: Sequence[Rule] = field(default_factory=tuple)
    needs_entity: bool = False
    upstreams: tuple[str, ...] = ()

    def input_problem(self, entity_id: str | None, payload: Mapping[str, Any]) -> str | None:
        """What makes this input unfit for the job type, in one line; None if nothing.

        The API asks at submission (422) and the worker again before the code runs, for
        jobs that reached the record another way.
        """
        if self.needs_entity and not entity_id:
            return "entity_id is required"
        if self.payload_model is not None:
            try:
                self.payload_model.model_validate(payload)
            except ValidationError as e:
                return _first_error(e)
        return None


_REGISTRY: dict[str, JobType] = {}


def job_type(
    name: str,
    *,
    queue: str = "sync",
    payload: type[BaseModel] | None = None,
    rules: Sequence[Rule] = (),
    entity: bool = False,
    upstreams: Sequence[str] = (),
) -> Callable[[Run], Run]:
    """Register the decorated function as the code of job type `name`.

    `payload` validates the job's payload and `entity` requires an `entity_id`: the API
    refuses other input with 422, and a worker fails it with `InvalidPayload` (a skip).
    `rules` add to or override the default classification. `upstreams` names the upstreams
    the code calls (of `UPSTREAMS`): their limits and circuits apply to its jobs.
    """
    unknown = [u for u in upstreams if u not in UPSTREAMS]
    if unknown:
        raise ValueError(f"job type {name!r}: no upstream {unknown[0]!r} ({UPSTREAMS})")

    def register(run: Run) -> Run:
        if name in _REGISTRY:
            raise ValueError(f"job type {name!r} is already registered")
        _REGISTRY[name] = JobType(
            name, queue, run, payload, tuple(rules), entity, tuple(dict.fromkeys(upstreams))
        )
        return run

    return register


class JobModuleError(ImportError):
    """A module named in COURIER_JOB_MODULES could not be imported."""


#: The modules whose job types every process loads: the built-in ones.
BUILTIN_MODULES = ("actors.builtin",)


def job_types(modules: Sequence[str] = ()) -> Mapping[str, JobType]:
    """Every registered job type, by name: the built-ins and those `modules` add.

    Job types register themselves when their module is imported; this module imports them
    by name, so the catalogue never depends on the job types. The API and the workers must
    load the same modules, or the API accepts jobs of a type no worker runs (they end dead
    with `ActorNotFound`).
    """
    for name in (*BUILTIN_MODULES, *modules):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise JobModuleError(f"COURIER_JOB_MODULES: cannot import {name!r}: {e}") from e
    return dict(_REGISTRY)


class JobQueuesError(ValueError):
    """COURIER_JOB_QUEUES names a job type that no module registers."""


def queues_by_type(
    modules: Sequence[str] = (), overrides: Sequence[tuple[str, str]] = ()
) -> dict[str, str]:
    """Job type name → queue name: the queue each type names, unless `overrides`
    (COURIER_JOB_QUEUES) moves it. The API publishes there and the workers consume there."""
    queues = {name: jt.queue for name, jt in job_types(modules).items()}
    for name, queue in overrides:
        if name not in queues:
            raise JobQueuesError(
                f"COURIER_JOB_QUEUES: no job type {name!r} (known: {', '.join(sorted(queues))})"
            )
        queues[name] = queue
    return queues


def upstreams_by_type(modules: Sequence[str] = ()) -> dict[str, tuple[str, ...]]:
    """Job type name → the upstreams its code calls."""
    return {name: jt.upstreams for name, jt in job_types(modules).items()}


def known_upstreams(modules: Sequence[str] = ()) -> tuple[str, ...]:
    """Every upstream Courier or a job type of `modules` calls, by name."""
    declared = {name for names in upstreams_by_type(modules).values() for name in names}
    return tuple(sorted({*UPSTREAMS, *declared}))


def input_checks(
    modules: Sequence[str] = (),
) -> dict[str, Callable[[str | None, Mapping[str, Any]], str | None]]:
    """Job type name → its `input_problem`, so the API refuses unfit input without running
    any job code."""
    return {name: jt.input_problem for name, jt in job_types(modules).items()}


def declare_all(
    broker: dramatiq.Broker,
    upstreams: Upstreams,
    modules: Sequence[str] = (),
    queues: Mapping[str, str] | None = None,
) -> None:
    """Declare one actor per job type on `broker`, on its queue in `queues` (default: the
    queue the type names)."""
    for jt in job_types(modules).values():
        dramatiq.Actor(
            _actor_body(jt, upstreams),
            broker=broker,
            actor_name=jt.name,
            queue_name=jt.queue if queues is None else queues[jt.name],
            priority=0,
            options={"classifier": DEFAULT.extended(jt.rules), "throws": (errors.JobError,)},
        )


def _actor_body(jt: JobType, upstreams: Upstreams) -> Callable[[str], None]:
    def run(job_id: str) -> None:
        job = current_job()
        problem = jt.input_problem(job.entity_id, job.payload)
        if problem is not None:
            raise errors.InvalidPayload(problem)
        # The result goes to the SQL record through the job, not as a Dramatiq return value.
        job.result = jt.run(job, upstreams)

    run.__name__ = jt.name
    return run


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "payload"
    return f"{where}: {first['msg']}"
