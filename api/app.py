"""The Falcon application factory."""

from __future__ import annotations

from collections.abc import Mapping

import dramatiq
import falcon
from sqlalchemy.orm import Session, sessionmaker

from api import errors
from api.auth import Authenticate
from api.intake import Defaults, Intake
from api.request_id import RequestId
from api.resources.dead_letters import DeadLetters
from api.resources.health import Health, Ready
from api.resources.jobs import Job, Jobs
from api.resources.stats import Metrics, QueueDepths, Stats
from api.ui.pages import Dashboard, Static


def create_app(
    *,
    sessions: sessionmaker[Session],
    broker: dramatiq.Broker,
    queues: Mapping[str, str],
    defaults: Defaults,
    queue_depths: QueueDepths,
) -> falcon.App:
    """The API, wired to a store and a publishing broker; `queues` maps job types to queues."""
    intake = Intake(queues=queues, defaults=defaults, broker=broker, sessions=sessions)
    app = falcon.App(middleware=[RequestId(), Authenticate(sessions)])
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)

    jobs, job = Jobs(intake), Job(intake)
    app.add_route("/v1/jobs", jobs)
    app.add_route("/v1/jobs/batch", jobs, suffix="batch")
    app.add_route("/v1/jobs/{job_id:uuid}", job)
    app.add_route("/v1/jobs/{job_id:uuid}/attempts", job, suffix="attempts")
    app.add_route("/v1/jobs/{job_id:uuid}/cancel", job, suffix="cancel")
    app.add_route("/v1/jobs/{job_id:uuid}/replay", job, suffix="replay")
    dead_letters = DeadLetters(intake)
    app.add_route("/v1/dead-letters", dead_letters)
    app.add_route("/v1/dead-letters/replay", dead_letters, suffix="replay")
    app.add_route("/v1/stats", Stats(sessions, queue_depths))
    app.add_route("/metrics", Metrics(sessions, queue_depths))
    dashboard = Dashboard(intake)
    app.add_route("/ui", dashboard)
    for page in ("login", "logout", "jobs", "dead-letters", "audit"):
        app.add_route(f"/ui/{page}", dashboard, suffix=page.replace("-", "_"))
    app.add_route("/ui/jobs/{job_id:uuid}", dashboard, suffix="job")
    app.add_route("/ui/jobs/{job_id:uuid}/cancel", dashboard, suffix="cancel")
    app.add_route("/ui/jobs/{job_id:uuid}/replay", dashboard, suffix="replay")
    app.add_route("/ui/dead-letters/replay", dashboard, suffix="dead_letters_replay")
    app.add_route("/ui/static/{name}", Static())
    app.add_route("/healthz", Health())
    app.add_route("/readyz", Ready(sessions, broker))
    return app
