"""/v1/dead-letters: dead jobs not yet replayed, and bulk replay (operators only)."""

from __future__ import annotations

import falcon

from api import auth, body
from api.intake import Intake, query_limit, unknown_params
from api.resources.jobs import cursor, page
from api.schemas import DeadLetterReplayRequest
from store import jobs, replays


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
        selection = replays.Selection(
            job_ids=request.job_ids,
            type=request.type,
            error_type=request.error_type,
            tenant=request.tenant,
            limit=request.limit,
        )
        result = replays.replay_dead(
            self._intake.sessions,
            self._intake.broker,
            selection,
            actor=who.label,
            reason=request.reason,
        )
        resp.status = falcon.HTTP_202
        resp.media = {
            "replayed": [{"job_id": str(o), "new_job_id": str(n)} for o, n in result.replayed],
            "count": len(result.replayed),
            "skipped": [{"job_id": str(o), "reason": why} for o, why in result.skipped],
        }
