"""/v1/dead-letters: dead jobs not yet replayed, and bulk replay (operators only)."""

from __future__ import annotations

import falcon

from api import auth, body
from api.intake import Intake, query_limit, unknown_params
from api.resources.jobs import cursor, page
from api.schemas import DeadLetterReplayRequest
from store import actions, jobs

# Replays are committed in chunks so a bulk replay never holds locks for long.
CHUNK = 200


class DeadLetters:
    """Dead jobs that wait for an operator."""

    def __init__(self, intake: Intake) -> None:
        self._intake = intake

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        auth.require_operator(req)
        unknown_params(req, {"type", "error_type", "tenant", "limit", "cursor"})
        with self._intake.sessions() as session:
            rows, next_id = jobs.list_jobs(
                session,
                tenant=req.get_param("tenant"),
                type=req.get_param("type"),
                error_type=req.get_param("error_type"),
                dead_letters=True,
                limit=query_limit(req),
                before=cursor(req),
            )
            resp.media = page(rows, next_id)

    def on_post_replay(self, req: falcon.Request, resp: falcon.Response) -> None:
        who = auth.require_operator(req)
        request = body.parse(req, DeadLetterReplayRequest, empty_ok=True)
        replayed: list[dict[str, str]] = []
        before = None
        while len(replayed) < request.limit:
            with self._intake.sessions.begin() as session:
                rows, before = jobs.list_jobs(
                    session,
                    tenant=request.tenant,
                    type=request.type,
                    error_type=request.error_type,
                    ids=request.job_ids,
                    dead_letters=True,
                    limit=min(CHUNK, request.limit - len(replayed)),
                    before=before,
                )
                pairs = [
                    (
                        old,
                        actions.replay(
                            session, old, actor=who.label, reason=request.reason, via="bulk"
                        ),
                    )
                    for old in rows
                ]
            self._intake.publish([new for _, new in pairs])
            self._intake.forget_dead_letters([old for old, _ in pairs])
            replayed += [{"job_id": str(o.id), "new_job_id": str(n.id)} for o, n in pairs]
            if before is None:
                break
        resp.status = falcon.HTTP_202
        resp.media = {"replayed": replayed, "count": len(replayed)}
