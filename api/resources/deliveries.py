"""/v1/jobs/{id}/deliveries: the webhook deliveries of a job's end."""

from __future__ import annotations

import uuid
from typing import Any

import falcon

from api import auth
from api.intake import Intake
from api.resources.jobs import COMMON
from api.schemas import DeliveryList, ErrorOut
from api.serialize import timestamp
from api.spec import operation
from store import queries, webhooks
from store.models import WebhookDelivery


class Deliveries:
    """A job's webhook deliveries (the caller's jobs only)."""

    def __init__(self, intake: Intake) -> None:
        self._intake = intake

    @operation(responses={200: DeliveryList, 404: ErrorOut, **COMMON})
    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: uuid.UUID) -> None:
        """A job's webhook deliveries, oldest first."""
        with self._intake.sessions() as session:
            queries.get_job(session, job_id, tenant=auth.scope(req))
            resp.media = {"items": [delivery(d) for d in webhooks.list_for_job(session, job_id)]}


def delivery(row: WebhookDelivery) -> dict[str, Any]:
    """The contract's Delivery object."""
    return {
        "id": str(row.id),
        "event": row.event,
        "url": row.url,
        "status": row.status,
        "attempts": row.attempts,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "created_at": timestamp(row.created_at),
        "delivered_at": timestamp(row.delivered_at),
        "next_attempt_at": timestamp(row.next_attempt_at),
    }
