"""/v1/jobs: submit, list, read, follow attempts, cancel and replay jobs."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import falcon
from pydantic import ValidationError

from api import auth, body, job_events, serialize, versions
from api.errors import Problem, as_problem, store_problem
from api.intake import Intake, correlation_id, shared_traceparent, traceparent
from api.job_watch import Follower, JobWatch, WatchFull
from api.schemas import (
    AttemptList,
    BatchRequest,
    BatchResult,
    CancelRequest,
    ErrorOut,
    JobOut,
    JobPage,
    JobRequest,
    ListJobsQuery,
    ReplayRequest,
    WaitQuery,
)
from api.spec import operation
from api.versions import Version
from delivery import replays
from store import actions, errors, models, queries, states, submissions

IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,256}$")

#: A page of jobs holds items up to about this many bytes (at least one item), whatever its
#: limit: 500 jobs of 64 KiB payloads would otherwise be a 32 MiB answer.
PAGE_BYTES = 1024 * 1024

#: Error answers every authenticated endpoint may give.
COMMON = {401: ErrorOut, 503: ErrorOut}
WITH_BODY = {**COMMON, 400: ErrorOut, 413: ErrorOut, 422: ErrorOut}
#: What a request that creates a job may also get: 429 over its tenant's quota.
CREATES = {**WITH_BODY, 429: ErrorOut}

IF_NONE_MATCH = {
    "If-None-Match": {
        "description": "A Job's ETag. Without wait_s: 304 while the job is that version. "
        "With wait_s: answer as soon as the job differs from it.",
        "schema": {"type": "string"},
    }
}
LAST_EVENT_ID = {
    "Last-Event-ID": {
        "description": "The id of the last event received: the stream resumes after it.",
        "schema": {"type": "string"},
    }
}


class Jobs:
    """The collection of the caller's jobs."""

    def __init__(self, intake: Intake) -> None:
        self._intake = intake

    @operation(
        request=JobRequest,
        responses={202: JobOut, 200: JobOut, 409: ErrorOut, **CREATES},
        headers={
            "Idempotency-Key": {
                "description": "Same key and body: the same job (200); another body: 422.",
                "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY.pattern},
            },
            "X-Request-ID": {
                "description": "Becomes the job's correlation_id when it is 1-128 characters "
                "of A-Z a-z 0-9 . _ : / + = - (else a new id is made).",
                "schema": {"type": "string"},
            },
        },
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Submit a job."""
        who = auth.principal(req)
        request: JobRequest = req.context.body
        key = req.get_header("Idempotency-Key")
        if key is not None and not IDEMPOTENCY_KEY.match(key):
            raise Problem(
                falcon.HTTP_422,
                "Invalid request",
                "Idempotency-Key is 1 to 256 visible ASCII characters",
            )
        new = self._intake.new_job(
            request,
            tenant=who.tenant,
            correlation_id=correlation_id(req),
            idempotency_key=key,
            request_hash=body.fingerprint(request) if key else None,
            traceparent=traceparent(req),
        )
        # One statement on the request's connection (no transaction of its own): the
        # idempotency lookup and the conflict explanations are single reads around it.
        db = auth.connection(req)
        if self._intake.admit(who.tenant) == 0:
            # A repeat of an accepted request is answered with its job, quota or not.
            with db.begin():
                repeat = submissions.repeat_of(db, new)
            if repeat is None:
                raise self._intake.over_quota(who.tenant)
            job, created = repeat, False
        else:
            try:
                with db.begin():
                    job, created = submissions.create_job(db, new)
            except Exception:
                self._intake.refund(who.tenant, 1)
                raise
            if not created:
                self._intake.refund(who.tenant, 1)
        if created:
            self._intake.publish([job])
        resp.status = falcon.HTTP_202 if created else falcon.HTTP_200
        resp.location = f"/v1/jobs/{job.id}"
        versions.send(resp, Version.of(serialize.job(job)))

    @operation(request=BatchRequest, responses={207: BatchResult, **WITH_BODY})
    def on_post_batch(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Submit up to 1000 jobs; the accepted ones are stored in one transaction.

        Items beyond the tenant's quota answer 429; those before them are accepted in order.
        """
        who = auth.principal(req)
        batch: BatchRequest = req.context.body
        items: list[dict[str, Any] | None] = []  # None: submitted, outcome below
        news = []
        shared_trace = shared_traceparent(req)
        for raw in batch.jobs:
            try:
                request = JobRequest.model_validate(raw)
                news.append(
                    self._intake.new_job(
                        request,
                        tenant=who.tenant,
                        correlation_id=correlation_id(req),
                        traceparent=shared_trace,
                    )
                )
                items.append(None)  # filled in from the insert's outcome below
            except ValidationError as e:
                items.append(_item(as_problem(e)))
            except Problem as p:
                items.append(_item(p))
        admitted = self._intake.admit(who.tenant, len(news))
        if admitted < len(news):
            over = self._intake.over_quota(who.tenant)
            items = _over_quota(items, admitted, over)
            news = news[:admitted]
            resp.set_headers(over.headers or {})
        try:
            with self._intake.sessions.begin() as session:
                stored = submissions.create_jobs(session, news)
        except Exception:
            self._intake.refund(who.tenant, admitted)
            raise
        self._intake.refund(who.tenant, sum(1 for s in stored if not isinstance(s, models.Job)))
        outcomes = iter(stored)
        accepted: list[models.Job] = []
        answers: list[dict[str, Any] | models.Job] = []  # a refusal, or an accepted job
        for item in items:
            if item is not None:
                answers.append(item)
                continue
            outcome = next(outcomes)
            if isinstance(outcome, errors.StoreError):
                answers.append(_item(store_problem(outcome)))
            else:
                accepted.append(outcome)
                answers.append(outcome)
        self._intake.publish(accepted)
        resp.status = falcon.HTTP_207
        resp.media = {
            "items": [
                {"status": 202, "job": serialize.job(a)} if isinstance(a, models.Job) else a
                for a in answers
            ]
        }

    @operation(
        query=ListJobsQuery,
        responses={200: JobPage, 400: ErrorOut, 403: ErrorOut, 422: ErrorOut, **COMMON},
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List jobs, newest first, a page at a time."""
        query: ListJobsQuery = req.context.query
        tenant = auth.listing_scope(req, query.tenant)
        with self._intake.sessions() as session:
            rows, next_id = queries.list_jobs(
                session,
                tenant=tenant,
                status=query.status,
                type=query.type,
                entity_id=query.entity_id,
                limit=query.limit,
                before=query.cursor,
            )
            send_page(resp, rows, next_id)


class Job:
    """One job of the caller's, its attempts, its events, and what can be done to it."""

    def __init__(self, intake: Intake, watch: JobWatch, *, heartbeat_s: float = 15.0) -> None:
        self._intake = intake
        self._watch = watch
        self._heartbeat_s = heartbeat_s

    @operation(
        query=WaitQuery,
        responses={200: JobOut, 304: None, 404: ErrorOut, 422: ErrorOut, **COMMON},
        headers=IF_NONE_MATCH,
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: uuid.UUID) -> None:
        """Read a job, or wait for it to end or change (`wait_s`)."""
        wait_s = req.context.query.wait_s
        if wait_s is None:
            version = self._read(req, job_id)
            if version.named_by(req.if_none_match):
                resp.status = falcon.HTTP_304
                resp.etag = version.etag
                return
            versions.send(resp, version)
            return
        # Followed before it is read: a change in between is then not missed.
        follower = self._follow(job_id, attempts=False)
        try:
            version = self._read(req, job_id)
            auth.release(req)  # no connection is held while waiting
            version = _awaited(follower, version, req.if_none_match, wait_s)
        finally:
            follower.close()
        versions.send(resp, version)

    @operation(
        responses={200: None, 204: None, 404: ErrorOut, 422: ErrorOut, **COMMON},
        headers=LAST_EVENT_ID,
    )
    def on_get_events(self, req: falcon.Request, resp: falcon.Response, job_id: uuid.UUID) -> None:
        """Follow a job's changes as server-sent events, until it ends."""
        last = _last_event_id(req)
        follower = self._follow(job_id, attempts=True)
        try:
            db = auth.connection(req)
            job = serialize.job(queries.read_job(db, job_id, tenant=auth.scope(req)))
            attempts = [serialize.attempt(a) for a in queries.attempts_of(db, [job_id])]
            auth.release(req)
        except BaseException:
            follower.close()
            raise
        stream = job_events.EventStream(
            follower, Version.of(job, attempts), last=last, heartbeat_s=self._heartbeat_s
        )
        if stream.finished:
            # 204 tells an EventSource not to reconnect: there is nothing after this.
            stream.close()
            resp.status = falcon.HTTP_204
            return
        resp.content_type = "text/event-stream"
        resp.set_header("X-Accel-Buffering", "no")  # a proxy must pass each event on at once
        resp.stream = stream

    def _follow(self, job_id: uuid.UUID, *, attempts: bool) -> Follower:
        try:
            return self._watch.follow(job_id, attempts=attempts)
        except WatchFull as e:
            raise Problem(
                falcon.HTTP_503,
                "Too many waiting requests",
                f"{e}; ask again shortly (a read without wait_s is answered at once)",
                headers={"Retry-After": "1"},
            ) from None

    def _read(self, req: falcon.Request, job_id: uuid.UUID) -> Version:
        row = queries.read_job(auth.connection(req), job_id, tenant=auth.scope(req))
        return Version.of(serialize.job(row))

    @operation(responses={200: AttemptList, 404: ErrorOut, **COMMON})
    def on_get_attempts(
        self, req: falcon.Request, resp: falcon.Response, job_id: uuid.UUID
    ) -> None:
        """A job's attempts, in order."""
        with self._intake.sessions() as session:
            queries.get_job(session, job_id, tenant=auth.scope(req))
            attempts = queries.list_attempts(session, job_id)
            resp.media = {"items": [serialize.attempt(a) for a in attempts]}

    @operation(
        request=CancelRequest,
        optional_body=True,
        responses={200: JobOut, 404: ErrorOut, 409: ErrorOut, **WITH_BODY},
    )
    def on_post_cancel(self, req: falcon.Request, resp: falcon.Response, job_id: uuid.UUID) -> None:
        """Cancel a job: waiting ones at once, running ones at their next checkpoint."""
        request: CancelRequest = req.context.body
        who = auth.principal(req)
        with self._intake.sessions.begin() as session:
            job = queries.get_job(session, job_id, tenant=auth.scope(req))
            job = actions.cancel(session, job, actor=who.label, reason=request.reason)
            versions.send(resp, Version.of(serialize.job(job)))

    @operation(
        request=ReplayRequest,
        optional_body=True,
        responses={202: JobOut, 403: ErrorOut, 404: ErrorOut, 409: ErrorOut, **CREATES},
    )
    def on_post_replay(self, req: falcon.Request, resp: falcon.Response, job_id: uuid.UUID) -> None:
        """Replay a failed, dead (operators) or cancelled job as a new, linked job."""
        request: ReplayRequest = req.context.body
        who = auth.principal(req)
        with self._intake.sessions.begin() as session:
            old = queries.get_job(session, job_id, tenant=auth.scope(req))
            if old.status == states.Status.DEAD and not who.is_operator:
                raise Problem(falcon.HTTP_403, "Forbidden", "dead jobs are replayed by operators")
            if request.payload is not None:
                self._intake.check_input(old.type, old.entity_id, request.payload)
            # The replay is a new active job of the old one's tenant: its quota applies.
            with self._intake.one_more(old.tenant, session):
                new = actions.replay(
                    session,
                    old,
                    actor=who.label,
                    payload=request.payload,
                    reason=request.reason,
                    queues=self._intake.queues,
                    new_trace=replays.new_trace,
                )
        self._intake.publish([new])
        if old.status == states.Status.DEAD:
            self._intake.forget_dead_letters([old])
        resp.status = falcon.HTTP_202
        resp.location = f"/v1/jobs/{new.id}"
        versions.send(resp, Version.of(serialize.job(new)))


def send_page(
    resp: falcon.Response,
    rows: Sequence[Any],
    next_id: uuid.UUID | None,
    *,
    item: Callable[[Any], dict[str, Any]] = serialize.job,
) -> None:
    """Answer a page of rows (jobs, unless `item` shows them otherwise) in the contract's
    shape, cut short before its items pass PAGE_BYTES; `next_cursor` then continues after the
    last item sent.

    Each item is encoded once, to measure it and to send it.
    """
    items: list[bytes] = []
    size = 0
    for row in rows:
        encoded = json.dumps(item(row), ensure_ascii=False).encode()
        if items and size + len(encoded) > PAGE_BYTES:
            next_id = rows[len(items) - 1].id
            break
        items.append(encoded)
        size += len(encoded) + 1
    cursor = json.dumps(None if next_id is None else str(next_id)).encode()
    resp.content_type = falcon.MEDIA_JSON
    resp.data = b'{"items": [' + b", ".join(items) + b'], "next_cursor": ' + cursor + b"}"


def _item(problem: Problem) -> dict:
    return {"status": int(problem.status_code), **problem.to_dict()}


def _over_quota(
    items: list[dict[str, Any] | None], admitted: int, problem: Problem
) -> list[dict[str, Any] | None]:
    """The batch's items with each valid job after the first `admitted` refused by `problem`."""
    refusal = _item(problem)
    out: list[dict[str, Any] | None] = []
    for item in items:
        if item is None and admitted == 0:
            item = dict(refusal)
        elif item is None:
            admitted -= 1
        out.append(item)
    return out


def _awaited(
    follower: Follower,
    version: Version,
    if_none_match: Sequence[falcon.ETag | str] | None,
    wait_s: float,
) -> Version:
    """The job's version once it is terminal or differs from If-None-Match's, or the latest
    one after `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while version.status not in states.TERMINAL and (
        not if_none_match or version.named_by(if_none_match)
    ):
        remaining = deadline - time.monotonic()
        newer = follower.next(remaining) if remaining > 0 else None
        if newer is None:
            break
        version = newer
    return version


def _last_event_id(req: falcon.Request) -> job_events.EventId | None:
    header = req.get_header("Last-Event-ID")
    if not header:
        return None
    try:
        return job_events.EventId.parse(header)
    except ValueError:
        raise Problem(
            falcon.HTTP_422,
            "Invalid request",
            "Last-Event-ID is not the id of an event of this stream",
        ) from None
