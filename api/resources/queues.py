"""/v1/queues: purging a queue (operators only)."""

from __future__ import annotations

import falcon

from api import auth
from api.errors import Problem
from api.intake import Intake
from api.resources.jobs import WITH_BODY
from api.schemas import ErrorOut, PurgeRequest, PurgeResult
from api.spec import operation
from delivery import purge


class QueuePurge:
    """Cancel every waiting job of a queue and empty it in the broker."""

    def __init__(self, intake: Intake) -> None:
        self._intake = intake

    @operation(
        request=PurgeRequest,
        optional_body=True,
        auth="operator",
        responses={200: PurgeResult, 403: ErrorOut, 422: ErrorOut, **WITH_BODY},
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, queue: str) -> None:
        """Purge a queue: cancel its queued and retrying jobs and empty it in the broker."""
        who = auth.require_operator(req)
        request: PurgeRequest = req.context.body
        known = sorted(set(self._intake.queues.values()))
        if queue not in known:
            message = f"no job type runs on {queue!r}; queues: {', '.join(known)}"
            raise Problem(
                falcon.HTTP_422,
                "Unknown queue",
                message,
                errors=[{"field": "queue", "message": message}],
            )
        cancelled = purge.purge(
            self._intake.sessions,
            self._intake.broker,
            queue,
            actor=who.label,
            reason=request.reason,
        )
        resp.media = {"queue": queue, "cancelled": cancelled}
