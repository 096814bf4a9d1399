"""Admission at claim: which claiming jobs may start now, and which wait.

"Waiting is not failing": a job held back by a concurrency limit or an open circuit is
parked — it keeps its status and attempts, says what it waits for (`waiting_for`), and is
published again when due. Rules decide; the claim parks what any rule holds back.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection


@dataclass(frozen=True)
class Claiming:
    """A job being claimed, as the rules see it."""

    job_id: uuid.UUID
    tenant: str
    type: str
    entity_id: str | None


@dataclass(frozen=True)
class Park:
    """Why a job waits (`key`, e.g. `entity` or `upstream:crm`) and until when (None: the
    default short delay, by the database's clock)."""

    key: str
    until: datetime | None = None


#: A rule: of the jobs being claimed, those it holds back and why.
Rule = Callable[[Connection, Sequence[Claiming]], dict[uuid.UUID, Park]]
