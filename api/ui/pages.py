"""The dashboard's pages and forms; every value is escaped by the templates (autoescape)."""

from __future__ import annotations

import io
import json
import mimetypes
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import falcon
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from api import body, serialize
from api.intake import Intake
from api.resources.stats import Figures
from api.ui import login_cookie as login
from api.ui import overview_view, schedule_view
from api.ui.render import render
from background.recent import Recent
from delivery import replays
from store import (
    actions,
    audit,
    bulk_replay,
    circuits,
    errors,
    overview,
    queries,
    schedules,
    states,
    tokens,
)
from store.models import Schedule

HERE = Path(__file__).parent
PAGE = 50
#: Where a login, and `/ui` itself, lead.
LANDING = "/ui/overview"
#: How often a live overview reloads itself, in seconds.
LIVE_EVERY_S = 5
_FORMS = falcon.media.URLEncodedFormHandler()
#: Any JSON value, parsed as the API parses bodies.
_ANY_JSON: TypeAdapter[Any] = TypeAdapter(Any)


class Dashboard:
    """All `/ui` routes, as suffixed responders of one resource."""

    public = True  # authenticated by the login cookie, not a bearer token

    def __init__(
        self,
        intake: Intake,
        figures: Recent[Figures],
        last_hour: Recent[overview_view.LastHour],
        upstreams: Sequence[str] = (),
    ) -> None:
        self._intake = intake
        self._upstreams = tuple(upstreams)
        self._sessions = intake.sessions
        # The stats snapshot /v1/stats and /metrics answer from: counts by status and queue
        # depths cost the overview nothing more, however often it is loaded.
        self._figures = figures
        self._last_hour = last_hour

    # -- login ------------------------------------------------------------------------------

    def on_get_login(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._login_page(req, resp, error=None)

    def on_post_login(self, req: falcon.Request, resp: falcon.Response) -> None:
        form = _form(req)
        try:
            login.check_csrf(req, form, cookie=login.LOGIN_COOKIE)
        except falcon.HTTPForbidden:
            resp.status = falcon.HTTP_403
            error = "The login form was stale or sent from elsewhere: please log in again."
            self._login_page(req, resp, error=error, renew=True)
            return
        token = str(form.get("token", "")).strip()
        with self._sessions.begin() as session:
            who = tokens.authenticate(session, token) if token else None
        if who is None or not who.is_operator:
            resp.status = falcon.HTTP_403
            error = (
                "That is not a live operator token."
                if who is None
                else "Client tokens cannot log in."
            )
            self._login_page(req, resp, error=error)
            return
        login.login(resp, self._sessions, who, secure=login.is_secure_origin(req))
        raise falcon.HTTPSeeOther(LANDING)

    def on_post_logout(self, req: falcon.Request, resp: falcon.Response) -> None:
        self._operator(req)
        login.check_csrf(req, _form(req))
        login.logout(req, resp, self._sessions)
        raise falcon.HTTPSeeOther("/ui/login")

    # -- pages ------------------------------------------------------------------------------

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        raise falcon.HTTPSeeOther(LANDING)

    def on_get_overview(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = self._operator(req)
        figures = self._figures.get()
        depths = figures.queues
        hour = self._last_hour.get()
        # The snapshot's ages: 0 where no job is ready.
        oldest = {q: age or None for q, age in figures.ages.queue_oldest_s.items()}
        self._render(
            resp,
            "overview.html",
            who=who,
            req=req,
            now=serialize.timestamp(hour.at),
            counts=figures.summary.jobs,
            dead_letters=figures.summary.dead_letters,
            chart=overview_view.throughput_chart(hour.throughput),
            total_finished=hour.throughput.total,
            queues=overview_view.queue_rows(depths, oldest),
            depths_unknown=any(d.get("ready") is None for d in depths.values()),
            errors=overview_view.error_rows(hour.errors),
            # Reloaded by the browser itself (no script), as often as the snapshot changes.
            live=LIVE_EVERY_S if req.get_param("live") == "1" else None,
            live_every=LIVE_EVERY_S,
        )

    def on_get_workers(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = self._operator(req)
        with self._sessions() as session:
            at = overview.database_now(session)
            running = overview.running_attempts(session)
        self._render(
            resp,
            "workers.html",
            who=who,
            req=req,
            hosts=overview_view.hosts(running, at=at),
            truncated=len(running) >= overview.RUNNING,
            limit=overview.RUNNING,
        )

    def on_get_jobs(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = self._operator(req)
        filters = _filters(req, ("status", "type", "tenant", "entity_id"))
        if filters.get("status") not in (None, *states.VALUES):
            filters.pop("status")
        with self._sessions() as session:
            rows, next_id = queries.list_jobs(
                session, limit=PAGE, before=_cursor(req), **_listing(filters)
            )
            self._render(
                resp,
                "jobs.html",
                who=who,
                req=req,
                jobs=[serialize.job(r) for r in rows],
                statuses=states.VALUES,
                filters=filters,
                next_url=_next("/ui/jobs", filters, next_id),
            )

    def on_get_job(self, req: falcon.Request, resp: falcon.Response, job_id: uuid.UUID) -> None:
        who = self._operator(req)
        with self._sessions() as session:
            try:
                row = queries.get_job(session, job_id, tenant=None)
            except errors.JobNotFound:
                raise falcon.HTTPNotFound(title="Not Found", description="no such job") from None
            job = serialize.job(row)
            self._render(
                resp,
                "job.html",
                who=who,
                req=req,
                job=job,
                schedule_name=_schedule_name(session, row.schedule_id),
                attempts=[serialize.attempt(a) for a in queries.list_attempts(session, job_id)],
                audit=[_entry(e) for e in audit.entries(session, job_id=job_id)],
                payload_json=json.dumps(job["payload"], indent=2, sort_keys=True),
                result_json=json.dumps(job["result"], indent=2, sort_keys=True),
            )

    def on_get_dead_letters(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = self._operator(req)
        filters = _filters(req, ("type", "error_type", "tenant"))
        with self._sessions() as session:
            rows, next_id = queries.list_jobs(
                session, dead_letters=True, limit=PAGE, before=_cursor(req), **_listing(filters)
            )
            self._render(
                resp,
                "dead_letters.html",
                who=who,
                req=req,
                jobs=[serialize.job(r) for r in rows],
                filters=filters,
                next_url=_next("/ui/dead-letters", filters, next_id),
            )

    def on_get_schedules(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = self._operator(req)
        filters = _filters(req, ("tenant", "type", "paused"))
        paused = {"yes": True, "no": False}.get(filters.get("paused", ""))
        if paused is None:
            filters.pop("paused", None)
        with self._sessions() as session:
            rows, next_id = schedules.listing(
                session,
                tenant=filters.get("tenant"),
                type=filters.get("type"),
                paused=paused,
                limit=PAGE,
                before=_cursor(req),
            )
            runs = schedules.last_runs(session, rows)
            self._render(
                resp,
                "schedules.html",
                who=who,
                req=req,
                schedules=[schedule_view.of(s, runs.get(s.id), next_count=1) for s in rows],
                filters=filters,
                next_url=_next("/ui/schedules", filters, next_id),
            )

    def on_get_schedule(
        self, req: falcon.Request, resp: falcon.Response, schedule_id: uuid.UUID
    ) -> None:
        who = self._operator(req)
        with self._sessions() as session:
            self._schedule_page(req, resp, session, who, _find_schedule(session, schedule_id))

    def on_get_audit(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = self._operator(req)
        with self._sessions() as session:
            entries = [_entry(e) for e in audit.entries(session, limit=200)]
        self._render(resp, "audit.html", who=who, req=req, entries=entries)

    def on_get_upstreams(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = self._operator(req)
        with self._sessions() as session:
            shown = circuits.states_of(session.connection(), self._upstreams)
        self._render(resp, "upstreams.html", who=who, req=req, upstreams=shown)

    # -- actions ----------------------------------------------------------------------------

    def on_post_circuit(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        who = self._operator(req)
        form = _form(req)
        login.check_csrf(req, form)
        state = form.get("state")
        if name not in self._upstreams:
            raise falcon.HTTPNotFound(title="Not Found", description=f"no upstream {name!r}")
        if state not in (circuits.OPEN, circuits.CLOSED):
            raise falcon.HTTPBadRequest(
                title="Bad Request", description="a circuit is forced open or closed"
            )
        with self._sessions.begin() as session:
            circuits.force_by(session, name, state, actor=who.label, reason=_reason(form))
        raise falcon.HTTPSeeOther("/ui/upstreams")

    def on_post_cancel(self, req: falcon.Request, resp: falcon.Response, job_id: uuid.UUID) -> None:
        who = self._operator(req)
        form = _form(req)
        login.check_csrf(req, form)
        with self._sessions.begin() as session:
            row = queries.get_job(session, job_id, tenant=None)
            actions.cancel(session, row, actor=who.label, reason=_reason(form))
        raise falcon.HTTPSeeOther(f"/ui/jobs/{job_id}")

    def on_post_replay(self, req: falcon.Request, resp: falcon.Response, job_id: uuid.UUID) -> None:
        who = self._operator(req)
        form = _form(req)
        login.check_csrf(req, form)
        payload = _payload(form)
        with self._sessions.begin() as session:
            old = queries.get_job(session, job_id, tenant=None)
            if payload is not None:
                self._intake.check_input(old.type, old.entity_id, payload)
            with self._intake.one_more(old.tenant, session):
                new = actions.replay(
                    session,
                    old,
                    actor=who.label,
                    payload=payload,
                    reason=_reason(form),
                    via="ui",
                    queues=self._intake.queues,
                    new_trace=replays.new_trace,
                )
        self._intake.publish([new])
        if old.status == states.Status.DEAD:
            self._intake.forget_dead_letters([old])
        raise falcon.HTTPSeeOther(f"/ui/jobs/{new.id}")

    def on_post_dead_letters_replay(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = self._operator(req)
        form = _form(req)
        login.check_csrf(req, form)
        raw_ids = form.get("job_ids") or []
        try:
            ids = [uuid.UUID(i) for i in (raw_ids if isinstance(raw_ids, list) else [raw_ids])]
        except ValueError:
            raise falcon.HTTPBadRequest(title="Bad Request", description="invalid job id") from None
        if not ids:
            raise falcon.HTTPSeeOther("/ui/dead-letters")
        replays.replay_dead(
            self._sessions,
            self._intake.outbox,
            bulk_replay.Selection(job_ids=ids, limit=len(ids)),
            actor=who.label,
            reason=_reason(form),
            queues=self._intake.queues,
        )
        raise falcon.HTTPSeeOther("/ui/dead-letters")

    def on_post_pause(
        self, req: falcon.Request, resp: falcon.Response, schedule_id: uuid.UUID
    ) -> None:
        self._pause_or_resume(req, schedule_id, paused=True)

    def on_post_resume(
        self, req: falcon.Request, resp: falcon.Response, schedule_id: uuid.UUID
    ) -> None:
        self._pause_or_resume(req, schedule_id, paused=False)

    def on_post_trigger(
        self, req: falcon.Request, resp: falcon.Response, schedule_id: uuid.UUID
    ) -> None:
        who = self._operator(req)
        form = _form(req)
        login.check_csrf(req, form)
        try:
            with self._sessions.begin() as session:
                schedule = _find_schedule(session, schedule_id, for_update=True)
                queue = self._intake.queues.get(schedule.type)
                if queue is None:
                    raise _UnknownType(f"no worker knows the job type {schedule.type!r}")
                job = self._intake.trigger(
                    session, schedule, queue=queue, actor=who.label, reason=_reason(form)
                )
        except (_UnknownType, errors.DuplicateActiveJob) as e:
            # Rolled back; the schedule's page again, saying why.
            resp.status = falcon.HTTP_409
            with self._sessions() as session:
                schedule = _find_schedule(session, schedule_id)
                self._schedule_page(
                    req, resp, session, who, schedule, notice=f"Not triggered: {e}."
                )
            return
        self._intake.publish([job])
        raise falcon.HTTPSeeOther(f"/ui/jobs/{job.id}")

    # -- plumbing ---------------------------------------------------------------------------

    def _operator(self, req: falcon.Request) -> tokens.Principal:
        try:
            return login.operator(req, self._sessions)
        except login.LoginRequired:
            raise falcon.HTTPSeeOther("/ui/login") from None

    def _pause_or_resume(
        self, req: falcon.Request, schedule_id: uuid.UUID, *, paused: bool
    ) -> None:
        who = self._operator(req)
        form = _form(req)
        login.check_csrf(req, form)
        with self._sessions.begin() as session:
            schedule = _find_schedule(session, schedule_id, for_update=True)
            toggle = schedules.pause if paused else schedules.resume
            toggle(session, schedule, actor=who.label, reason=_reason(form))
        raise falcon.HTTPSeeOther(f"/ui/schedules/{schedule_id}")

    def _schedule_page(
        self,
        req: falcon.Request,
        resp: falcon.Response,
        session: Session,
        who: tokens.Principal,
        schedule: Schedule,
        *,
        notice: str | None = None,
    ) -> None:
        run = schedules.last_runs(session, [schedule]).get(schedule.id)
        rows, next_id = queries.list_jobs(
            session, tenant=None, schedule_id=schedule.id, limit=PAGE, before=_cursor(req)
        )
        self._render(
            resp,
            "schedule.html",
            who=who,
            req=req,
            notice=notice,
            schedule=schedule_view.of(schedule, run, next_count=5),
            payload_json=json.dumps(schedule.payload, indent=2, sort_keys=True),
            jobs=[serialize.job(r) for r in rows],
            next_url=_next(f"/ui/schedules/{schedule.id}", {}, next_id),
        )

    def _login_page(
        self, req: falcon.Request, resp: falcon.Response, *, error: str | None, renew: bool = False
    ) -> None:
        csrf = login.login_form_token(req, resp, renew=renew)
        self._render(resp, "login.html", who=None, error=error, csrf=csrf)

    def _render(self, resp: falcon.Response, template: str, **context: Any) -> None:
        req = context.pop("req", None)
        context.setdefault("csrf", login.csrf_token(req) if req is not None else "")
        context.setdefault("notice", None)
        resp.content_type = falcon.MEDIA_HTML
        resp.text = render(template, **context)
        # The dashboard is never framed (clickjacking) and loads nothing from elsewhere.
        resp.set_header("X-Frame-Options", "DENY")
        resp.set_header("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'")


class Static:
    """The dashboard's stylesheets and the API explorer's script."""

    public = True

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        path = HERE / "static" / name
        if name != path.name or not path.is_file():
            raise falcon.HTTPNotFound(title="Not Found")
        resp.content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        resp.data = path.read_bytes()


def _form(req: falcon.Request) -> dict[str, Any]:
    if req.content_type is None or not req.content_type.startswith(
        "application/x-www-form-urlencoded"
    ):
        raise falcon.HTTPUnsupportedMediaType(
            title="Unsupported Media Type", description="send a form"
        )
    # Read through the capped reader first: parsing an unbounded body costs memory.
    raw = body.read(req)
    media = _FORMS.deserialize(io.BytesIO(raw), req.content_type, len(raw))
    return media if isinstance(media, dict) else {}


def _reason(form: dict[str, Any]) -> str | None:
    reason = str(form.get("reason") or "").strip()
    return reason[:1000] or None


def _payload(form: dict[str, Any]) -> dict[str, Any] | None:
    text = str(form.get("payload") or "").strip()
    if not text:
        return None
    body.refuse_nul(text.encode())
    try:
        # The API's JSON parser, not `json.loads`: deep nesting is an error, not a crash.
        payload = _ANY_JSON.validate_json(text)
    except ValidationError:
        raise falcon.HTTPBadRequest(
            title="Bad Request", description="the payload is not valid JSON"
        ) from None
    if not isinstance(payload, dict):
        raise falcon.HTTPBadRequest(
            title="Bad Request", description="the payload must be a JSON object"
        )
    return payload


def _filters(req: falcon.Request, names: tuple[str, ...]) -> dict[str, str]:
    return {n: v for n in names if (v := (req.get_param(n) or "").strip())}


def _listing(filters: dict[str, str]) -> dict[str, Any]:
    return {
        "tenant": filters.get("tenant"),
        "status": filters.get("status"),
        "type": filters.get("type"),
        "entity_id": filters.get("entity_id"),
        "error_type": filters.get("error_type"),
    }


def _cursor(req: falcon.Request) -> uuid.UUID | None:
    try:
        return uuid.UUID(req.get_param("cursor") or "")
    except ValueError:
        return None


def _next(path: str, filters: dict[str, str], next_id: uuid.UUID | None) -> str | None:
    return None if next_id is None else f"{path}?{urlencode({**filters, 'cursor': str(next_id)})}"


def _entry(e: Any) -> dict[str, Any]:
    return {
        "at": serialize.timestamp(e.at),
        "actor": e.actor,
        "action": e.action,
        "job_id": e.job_id,
        "reason": e.reason,
        "details": e.details,
    }


def _find_schedule(
    session: Session, schedule_id: uuid.UUID, *, for_update: bool = False
) -> Schedule:
    # Locked for an action: one operator action at a time per schedule, so a double click
    # pauses (or audits) once.
    try:
        return schedules.get(session, schedule_id, tenant=None, lock=for_update)
    except schedules.ScheduleNotFound:
        raise falcon.HTTPNotFound(title="Not Found", description="no such schedule") from None


def _schedule_name(session: Session, schedule_id: uuid.UUID | None) -> str | None:
    if schedule_id is None:
        return None
    return session.scalar(select(Schedule.name).where(Schedule.id == schedule_id))


class _UnknownType(Exception):
    """The schedule's job type is not one this deployment runs."""
