"""The built-in job types (docs/queues-and-job-types.md): copy CRM records into Billing."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from actors.registry import Upstreams, job_type
from actors.upstream import segment
from middleware import errors
from middleware.current_job import RunningJob

#: Every built-in type reads the CRM and writes Billing.
BOTH = ("crm", "billing")


class NoPayload(BaseModel):
    """The record sync types take no payload fields."""

    model_config = ConfigDict(extra="forbid")


def _copy_record(job: RunningJob, upstreams: Upstreams, collection: str) -> dict[str, Any]:
    assert job.entity_id  # the job type needs one: checked before the code runs
    path = f"/{collection}/{segment(job.entity_id)}"
    record = upstreams.crm.get_object(path, correlation_id=job.correlation_id)
    job.checkpoint()
    status = upstreams.billing.put_json(
        path, record, correlation_id=job.correlation_id, idempotency_key=job.job_id
    )
    return {"billing_status": status}


@job_type("customer_sync", payload=NoPayload, entity=True, upstreams=BOTH)
def customer_sync(job: RunningJob, upstreams: Upstreams) -> dict[str, Any]:
    """GET the customer from the CRM and PUT it to Billing."""
    return _copy_record(job, upstreams, "customers")


@job_type("invoice_sync", payload=NoPayload, entity=True, upstreams=BOTH)
def invoice_sync(job: RunningJob, upstreams: Upstreams) -> dict[str, Any]:
    """GET the invoice from the CRM and PUT it to Billing."""
    return _copy_record(job, upstreams, "invoices")


class DirectoryPayload(BaseModel):
    """Optional knobs of a directory sync."""

    model_config = ConfigDict(extra="forbid")
    start_page: int = 1


@job_type("directory_sync", payload=DirectoryPayload, upstreams=BOTH)
def directory_sync(job: RunningJob, upstreams: Upstreams) -> dict[str, Any]:
    """Page through the CRM's customers and PUT each to Billing, reporting progress."""
    page: int | None = DirectoryPayload.model_validate(job.payload).start_page
    synced = 0
    while page is not None:
        listing = upstreams.crm.get_object(
            f"/customers?page={page}", correlation_id=job.correlation_id
        )
        if not isinstance(listing.get("items"), list):
            raise errors.UpstreamUnavailable(
                f"malformed page {page} from CRM", upstream=upstreams.crm.key
            )
        total = listing.get("total") if isinstance(listing.get("total"), int) else None
        for item in listing["items"]:
            job.checkpoint()
            if not isinstance(item, dict) or not item.get("id"):
                raise errors.UpstreamUnavailable(
                    f"CRM page {page} holds an item without an id", upstream=upstreams.crm.key
                )
            item_id = str(item["id"])
            upstreams.billing.put_json(
                f"/customers/{segment(item_id)}",
                item,
                correlation_id=job.correlation_id,
                idempotency_key=f"{job.job_id}:{item_id}",
            )
            synced += 1
            job.report_progress(synced, total, f"page {page}")
        next_page = listing.get("next_page")
        page = next_page if isinstance(next_page, int) else None
    return {"synced": synced}
