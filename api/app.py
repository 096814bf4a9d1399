"""The Falcon application factory."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dramatiq
import falcon
from sqlalchemy.orm import Session, sessionmaker

from api import errors
from api.auth import Authenticate
from api.intake import Defaults, InputCheck, Intake
from api.job_watch import JobWatch
from api.no_store import NoStore
from api.request_id import RequestId
from api.request_spans import RequestSpans
from api.resources.dead_letters import DeadLetters
from api.resources.deliveries import Deliveries
from api.resources.docs import OpenApi
from api.resources.health import Health, Ready
from api.resources.jobs import Job, Jobs
from api.resources.queues import QueuePurge
from api.resources.schedules import Schedule, Schedules
from api.resources.stats import Figures, Metrics, QueueDepths, Stats, shared_figures
from api.resources.upstreams import Upstreams
from api.spec import Routes, openapi
from api.ui import overview_view
from api.ui.pages import Dashboard, Static
from background.recent import Recent
from store import fairness, quotas
from tracing import spans

VERSION = "1.0.0"


def create_app(
    *,
    sessions: sessionmaker[Session],
    broker: dramatiq.Broker,
    queues: Mapping[str, str],
    defaults: Defaults,
    queue_depths: QueueDepths,
    input_checks: Mapping[str, InputCheck] | None = None,
    stats_max_age_s: float = 5.0,
    callback_hosts: frozenset[str] = frozenset(),
    watch: JobWatch | None = None,
    max_waiters: int | None = None,
    heartbeat_s: float = 15.0,
    upstreams: Sequence[str] = (),
    fair_share: int = fairness.DEFAULT_SHARE,
    max_active: int = quotas.DEFAULT_MAX_ACTIVE,
) -> falcon.App:
    """The API, wired to a store and a publishing broker; `queues` maps job types to queues,
    `input_checks` to the check of their input.

    /v1/stats and /metrics share one snapshot of the figures, at most `stats_max_age_s` old.
    A job's `callback_url` must name one of `callback_hosts` (none: webhooks are refused).
    Requests that wait for jobs follow them on `watch` (by default one of the store's own,
    on which at most `max_waiters` wait at once); event streams send a heartbeat every
    `heartbeat_s`. `upstreams` are the upstreams whose circuits operators see (and those with
    one). A tenant has at most about `fair_share` messages waiting in a queue (the relay sends
    the rest as the queue drains) and `max_active` active jobs.
    """
    intake = Intake(
        queues=queues,
        defaults=defaults,
        broker=broker,
        sessions=sessions,
        input_checks=input_checks,
        callback_hosts=callback_hosts,
        fair_share=fair_share,
        max_active=max_active,
    )
    # Naming the request and response types lets the middleware list be checked against them.
    middleware: list[Any] = [NoStore(), RequestId(), Authenticate(sessions.kw["bind"])]
    if spans.enabled():
        # First in, last out: the span covers the other middleware too. Left out when
        # tracing is off, so requests pay nothing for it.
        middleware.insert(0, RequestSpans())
    app: falcon.App[falcon.Request, falcon.Response] = falcon.App(middleware=middleware)
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    routes = Routes(app)

    watch = watch or JobWatch(sessions.kw["bind"], max_followers=max_waiters)
    jobs, job = Jobs(intake), Job(intake, watch, heartbeat_s=heartbeat_s)
    routes.add("/v1/jobs", jobs)
    routes.add("/v1/jobs/batch", jobs, suffix="batch")
    routes.add("/v1/jobs/{job_id:uuid}", job)
    routes.add("/v1/jobs/{job_id:uuid}/attempts", job, suffix="attempts")
    routes.add("/v1/jobs/{job_id:uuid}/events", job, suffix="events")
    routes.add("/v1/jobs/{job_id:uuid}/cancel", job, suffix="cancel")
    routes.add("/v1/jobs/{job_id:uuid}/replay", job, suffix="replay")
    schedules, schedule = Schedules(intake), Schedule(intake)
    routes.add("/v1/schedules", schedules)
    routes.add("/v1/schedules/{schedule_id:uuid}", schedule)
    routes.add("/v1/schedules/{schedule_id:uuid}/trigger", schedule, suffix="trigger")
    routes.add("/v1/jobs/{job_id:uuid}/deliveries", Deliveries(intake))
    dead_letters = DeadLetters(intake)
    routes.add("/v1/dead-letters", dead_letters)
    routes.add("/v1/dead-letters/replay", dead_letters, suffix="replay")
    routes.add("/v1/queues/{queue}/purge", QueuePurge(intake))
    circuits = Upstreams(sessions, upstreams)
    routes.add("/v1/upstreams", circuits)
    routes.add("/v1/upstreams/{name}/circuit", circuits, suffix="circuit")
    figures = shared_figures(
        sessions, queue_depths, max_age_s=stats_max_age_s, queues=queues, upstreams=upstreams
    )
    routes.add("/v1/stats", Stats(figures))
    routes.add("/metrics", Metrics(figures))
    routes.add("/healthz", Health())
    routes.add("/readyz", Ready(sessions, broker))
    docs = OpenApi(
        lambda: _with_job_types(openapi(routes, title="Courier", version=VERSION), queues)
    )
    routes.add("/openapi.json", docs)
    routes.add("/docs", docs, suffix="docs")
    routes.add("/docs/assets/{name}", docs, suffix="asset")
    _add_dashboard(routes, intake, figures, max_age_s=stats_max_age_s, upstreams=upstreams)
    return app


def _with_job_types(document: dict[str, Any], queues: Mapping[str, str]) -> dict[str, Any]:
    # The job types are known only at start-up (the registry); the document lists them.
    for request in ("JobRequest", "ScheduleRequest"):
        job_type = document["components"]["schemas"][request]["properties"]["type"]
        job_type["enum"] = sorted(queues)
    return document


def _add_dashboard(
    routes: Routes,
    intake: Intake,
    figures: Recent[Figures],
    *,
    max_age_s: float,
    upstreams: Sequence[str],
) -> None:
    last_hour = overview_view.last_hour(intake.sessions, max_age_s=max_age_s)
    dashboard = Dashboard(intake, figures, last_hour, upstreams)
    routes.add("/ui", dashboard)
    pages = (
        "login",
        "logout",
        "overview",
        "workers",
        "jobs",
        "dead-letters",
        "schedules",
        "upstreams",
        "audit",
    )
    for page in pages:
        routes.add(f"/ui/{page}", dashboard, suffix=page.replace("-", "_"))
    routes.add("/ui/jobs/{job_id:uuid}", dashboard, suffix="job")
    routes.add("/ui/jobs/{job_id:uuid}/cancel", dashboard, suffix="cancel")
    routes.add("/ui/jobs/{job_id:uuid}/replay", dashboard, suffix="replay")
    routes.add("/ui/dead-letters/replay", dashboard, suffix="dead_letters_replay")
    routes.add("/ui/upstreams/{name}/circuit", dashboard, suffix="circuit")
    routes.add("/ui/schedules/{schedule_id:uuid}", dashboard, suffix="schedule")
    for action in ("pause", "resume", "trigger"):
        routes.add(f"/ui/schedules/{{schedule_id:uuid}}/{action}", dashboard, suffix=action)
    routes.add("/ui/static/{name}", Static())
