"""The store's errors: a change that is not allowed, or a database that cannot answer.

Driver errors become these at one boundary (`store.db`); callers map them to answers.
"""

from __future__ import annotations

import uuid


class StoreError(Exception):
    """A requested change to the record is not allowed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class DatabaseUnavailable(StoreError):
    """The database could not be reached or stopped answering; try again later."""


class InvalidValue(StoreError):
    """The database refused a value (text with a NUL character, a number out of range)."""


class EntityBusy(StoreError):
    """The job conflicts with one that has since finished; try again."""


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


class UnnamedReplay(StoreError):
    """A bulk replay names its dead jobs (ids or a filter), or says it means all of them."""
