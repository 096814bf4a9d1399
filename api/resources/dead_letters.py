"""/v1/dead-letters: dead jobs not yet replayed, and bulk replay (operators only)."""

from __future__ import annotations

import falcon

from api import auth
from api.intake import Intake
from api.resources.jobs import COMMON, WITH_BODY, send_page
from api.schemas import (
    BulkReplayPreview,
    BulkReplayResult,
    DeadLetterReplayRequest,
    DeadLettersQuery,
    ErrorOut,
    JobPage,
)
from api.spec import operation
from delivery import replays
from store import bulk_replay, queries


class DeadLetters:
    """Dead jobs that wait for an operator."""

    def __init__(self, intake: Intake) -> None:
        self._intake = intake

    @operation(
        query=DeadLettersQuery,
        auth="operator",
        responses={200: JobPage, 400: ErrorOut, 403: ErrorOut, 422: ErrorOut, **COMMON},
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List dead jobs not yet replayed, newest first."""
        auth.require_operator(req)
        query: DeadLettersQuery = req.context.query
        with self._intake.sessions() as session:
            rows, next_id = queries.list_jobs(
                session,
                tenant=query.tenant,
                type=query.type,
                error_type=query.error_type,
                dead_letters=True,
                limit=query.limit,
                before=query.cursor,
            )
            send_page(resp, rows, next_id)

    @operation(
        request=DeadLetterReplayRequest,
        optional_body=True,
        auth="operator",
        responses={200: BulkReplayPreview, 202: BulkReplayResult, 403: ErrorOut, **WITH_BODY},
    )
    def on_post_replay(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Replay dead jobs by id or filter (or all, said so), up to a limit; or preview it."""
        who = auth.require_operator(req)
        request: DeadLetterReplayRequest = req.context.body
        selection = bulk_replay.Selection(
            job_ids=request.job_ids,
            type=request.type,
            error_type=request.error_type,
            tenant=request.tenant,
            limit=request.limit,
            every=request.all,
        )
        selection.check()
        if request.dry_run:
            with self._intake.sessions() as session:
                preview = bulk_replay.preview(session, selection)
            resp.media = {
                "dry_run": True,
                "count": preview.count,
                "job_ids": [str(i) for i in preview.first_ids],
            }
            return
        result = replays.replay_dead(
            self._intake.sessions,
            self._intake.outbox,
            selection,
            actor=who.label,
            reason=request.reason,
            queues=self._intake.queues,
        )
        resp.status = falcon.HTTP_202
        resp.media = {
            "replayed": [{"job_id": str(o), "new_job_id": str(n)} for o, n in result.replayed],
            "count": len(result.replayed),
            "skipped": [{"job_id": str(o), "reason": why} for o, why in result.skipped],
        }
