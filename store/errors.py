"""Errors the store raises when a transition is not allowed; callers map them to answers."""

from __future__ import annotations

import uuid


class StoreError(Exception):
    """A requested change to the record is not allowed."""


class JobNotFound(StoreError):
    """No such job (or not visible to this tenant)."""


class DuplicateActiveJob(StoreError):
    """An active job of the same tenant, type and entity already exists."""

    def __init__(self, existing_job_id: uuid.UUID) -> None:
        super().__init__(f"an active job for this entity already exists: {existing_job_id}")
        self.existing_job_id = existing_job_id


class IdempotencyConflict(StoreError):
    """The Idempotency-Key was already used with a different request body."""


class InvalidTransition(StoreError):
    """The job's current status does not allow this action."""
