"""Upstream circuits: when calls to one upstream keep failing, the jobs that need it wait.

One row of `circuits` per upstream, one state machine, every time the database's:

- closed: consecutive `UpstreamUnavailable` attempts are counted (a success of a job that
  calls the upstream resets the count); at `Policy.failures` it opens for the cool-down. A
  429 with Retry-After opens it until then.
- open: jobs that call the upstream are parked until `retry_at`, consuming no attempt. The
  first claim or finish after `retry_at` turns it half-open.
- half_open: at most `Policy.probes` jobs go through; the others wait a moment. A probe's
  success closes it; a probe's failure opens it again with the cool-down doubled.
- forced: an operator's open lasts until an operator closes it.

The rule runs in the worker's claim transaction and the accounting in its finish
transaction; each state change is one conditional UPDATE, so processes never race.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as insert_on_conflict
from sqlalchemy.orm import Session

from store import audit
from store.admission import Claiming, Park, Rule
from store.models import CIRCUITS, JOBS
from store.sql import now, now_plus, one_of
from store.states import CLAIMABLE

C = CIRCUITS.c
CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
STATES = (CLOSED, OPEN, HALF_OPEN)
#: The prefix of a job's `waiting_for` while it waits for an upstream's circuit.
WAITING_PREFIX = "upstream:"


@dataclass(frozen=True)
class Policy:
    """When a circuit opens, for how long, and how many probes test it."""

    failures: int = 5  # consecutive UpstreamUnavailable attempts that open it
    cooldown_s: float = 30.0  # the first cool-down; doubled after each failed probe
    probes: int = 3  # jobs let through while half-open
    max_cooldown_s: float = 600.0
    # While half-open, jobs that already spent an attempt wait this long before they may
    # be probes: a fresh job has more attempts to lose to a probe that fails.
    fresh_first_s: float = 5.0


@dataclass(frozen=True)
class Call:
    """What one finished attempt says about one upstream it calls."""

    upstream: str
    ok: bool  # False: UpstreamUnavailable, or rate limited
    retry_after_s: float | None = None  # a 429's Retry-After: open until then


@dataclass(frozen=True)
class State:
    """One upstream's circuit as operators see it."""

    upstream: str
    state: str
    failures: int
    opened_at: datetime | None
    retry_at: datetime | None
    forced: bool
    reason: str | None


def waiting_key(upstream: str) -> str:
    """The `waiting_for` of a job parked on `upstream`'s circuit."""
    return f"{WAITING_PREFIX}{upstream}"


# --- the admission rule -----------------------------------------------------------------

_NAMES: Any = bindparam("names", expanding=True)
_HALF_OPEN_DUE = (
    update(CIRCUITS)
    .where(
        C.upstream.in_(_NAMES),
        C.state == OPEN,
        C.forced.is_(False),
        C.retry_at <= now(),
    )
    .values(state=HALF_OPEN, probes_left=bindparam("probes"), updated_at=now())
)
# Probes handed out whose verdict never came (their worker vanished): hand out new ones.
_PROBES_OVERDUE = (
    update(CIRCUITS)
    .where(
        C.upstream.in_(_NAMES),
        C.state == HALF_OPEN,
        C.forced.is_(False),
        C.probes_left == 0,
        C.updated_at <= now_plus(-bindparam("cooldown_s")),
    )
    .values(probes_left=bindparam("probes"), updated_at=now())
)
_NOT_CLOSED = select(
    C.upstream,
    C.state,
    C.retry_at,
    C.forced,
    C.probes_left,
    C.updated_at,
    now().label("now"),
).where(C.upstream.in_(_NAMES), C.state != CLOSED)
_TAKE_PROBE = (
    update(CIRCUITS)
    .where(C.upstream == bindparam("name"), C.state == HALF_OPEN, C.probes_left > 0)
    .values(probes_left=C.probes_left - 1, updated_at=now())
    .returning(C.upstream)
)


def circuit_rule(upstreams_of: Mapping[str, Sequence[str]], policy: Policy | None = None) -> Rule:
    """The admission rule of circuits: hold back every claiming job whose type calls an
    upstream whose circuit is open, and all but `policy.probes` while it is half-open.

    `upstreams_of` maps a job type to the upstreams it calls (types it does not name call
    none).
    """
    return _CircuitRule(upstreams_of, policy or Policy())


class _CircuitRule:
    def __init__(self, upstreams_of: Mapping[str, Sequence[str]], policy: Policy) -> None:
        self.upstreams_of = upstreams_of
        self.policy = policy
        #: The job types that call an upstream: a batch of others costs no statement.
        self.types = frozenset(t for t, names in upstreams_of.items() if names)

    def __call__(self, db: Connection, jobs: Sequence[Claiming]) -> dict[uuid.UUID, Park]:
        upstreams_of, policy = self.upstreams_of, self.policy
        names = sorted({name for job in jobs for name in upstreams_of.get(job.type, ())})
        if not names:
            return {}
        # Closed circuits, the usual case, cost one read and no write.
        circuits = _not_closed(db, names)
        if not circuits:
            return {}
        if any(_turns(row, policy) for row in circuits.values()):
            turn = {"names": names, "probes": policy.probes, "cooldown_s": policy.cooldown_s}
            db.execute(_HALF_OPEN_DUE, turn)
            db.execute(_PROBES_OVERDUE, turn)
            circuits = _not_closed(db, names)
        return _hold_back(db, jobs, circuits, upstreams_of, policy)


def _not_closed(db: Connection, names: Sequence[str]) -> dict[str, Any]:
    return {row.upstream: row for row in db.execute(_NOT_CLOSED, {"names": names})}


def _turns(row: Any, policy: Policy) -> bool:
    """Whether the circuit is due to turn half-open, or to hand out probes again, as far as
    this read tells; the UPDATEs decide, so two claims never both turn it."""
    if row.forced:
        return False
    if row.state == OPEN:
        return row.retry_at is not None and row.retry_at <= row.now
    overdue = row.updated_at <= row.now - timedelta(seconds=policy.cooldown_s)
    return bool(row.state == HALF_OPEN and row.probes_left == 0 and overdue)


def _hold_back(
    db: Connection,
    jobs: Sequence[Claiming],
    circuits: Mapping[str, Any],
    upstreams_of: Mapping[str, Sequence[str]],
    policy: Policy,
) -> dict[uuid.UUID, Park]:
    parked: dict[uuid.UUID, Park] = {}
    probing: list[Claiming] = []
    for job in jobs:
        blocked = [circuits[n] for n in upstreams_of.get(job.type, ()) if n in circuits]
        opened = [c for c in blocked if c.state == OPEN]
        if opened:
            parked[job.job_id] = _park_on(opened[0], policy)
        elif blocked:
            probing.append(job)
    if not probing:
        return parked
    spent = _attempts(db, [job.job_id for job in probing])
    # Fresh jobs first: a probe that fails costs its job an attempt.
    for job in sorted(probing, key=lambda j: spent.get(j.job_id, 0)):
        for circuit in (circuits[n] for n in upstreams_of[job.type] if n in circuits):
            fresh_only = circuit.retry_at is not None and circuit.now < circuit.retry_at + (
                timedelta(seconds=policy.fresh_first_s)
            )
            if (spent.get(job.job_id, 0) and fresh_only) or not db.execute(
                _TAKE_PROBE, {"name": circuit.upstream}
            ).first():
                parked[job.job_id] = Park(waiting_key(circuit.upstream))
                break
    return parked


def _park_on(circuit: Any, policy: Policy) -> Park:
    # A forced circuit has no retry_at: its jobs look again after a cool-down, and an
    # operator's close wakes them at once.
    until = circuit.retry_at
    if circuit.forced or until is None:
        until = circuit.now + timedelta(seconds=policy.cooldown_s)
    return Park(waiting_key(circuit.upstream), until)


def _attempts(db: Connection, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    rows = db.execute(
        select(JOBS.c.id, JOBS.c.attempts).where(JOBS.c.id.in_(bindparam("ids", expanding=True))),
        {"ids": list(job_ids)},
    )
    return {row.id: row.attempts for row in rows}


# --- accounting: what finished attempts say about the upstreams -------------------------


@dataclass
class _Tally:
    """The calls of one batch to one upstream, in the order they finished."""

    succeeded: bool = False
    failures: int = 0  # since the last success in the batch
    retry_after_s: float | None = None

    def add(self, call: Call) -> None:
        if call.ok:
            self.succeeded, self.failures = True, 0
            return
        self.failures += 1
        if call.retry_after_s:
            self.retry_after_s = max(self.retry_after_s or 0.0, call.retry_after_s)


_ENSURE = (
    insert_on_conflict(CIRCUITS)
    .values(state=CLOSED, failures=0, probes_left=0, forced=False, updated_at=now())
    .on_conflict_do_nothing(index_elements=[C.upstream])
)
_LOCK = (
    select(C.upstream, C.state, C.failures, C.opened_at, C.retry_at, C.forced)
    .where(C.upstream.in_(_NAMES))
    .order_by(C.upstream)
    .with_for_update()
)
# A success touches a row only when it has something to undo, so that the steady state
# (closed, no failures) writes nothing and no two processes wait for one row.
_SUCCESS_MATTERS = select(C.upstream).where(
    C.upstream.in_(_NAMES), C.forced.is_(False), (C.failures > 0) | (C.state == HALF_OPEN)
)


def record(db: Connection, calls: Iterable[Call], policy: Policy | None = None) -> None:
    """Count the finished attempts' `calls` towards their upstreams' circuits, in the
    finish transaction."""
    policy = policy or Policy()
    tallies: dict[str, _Tally] = {}
    for call in calls:
        tallies.setdefault(call.upstream, _Tally()).add(call)
    failing = sorted(n for n, t in tallies.items() if t.failures)
    succeeding = [n for n, t in tallies.items() if not t.failures]
    if succeeding:
        succeeding = list(db.scalars(_SUCCESS_MATTERS, {"names": succeeding}))
    if failing:
        db.execute(_ENSURE, [{"upstream": name} for name in failing])
    names = sorted({*failing, *succeeding})
    if not names:
        return
    for row in db.execute(_LOCK, {"names": names}).all():
        changes = _after(row, tallies[row.upstream], policy)
        if changes:
            db.execute(
                update(CIRCUITS)
                .where(C.upstream == row.upstream)
                .values(updated_at=now(), **changes)
            )


def _after(row: Any, tally: _Tally, policy: Policy) -> dict[str, Any] | None:
    """The columns to change on `row` after `tally`; None if nothing changes."""
    if row.forced:
        return None
    if row.state == OPEN:
        return None  # attempts admitted before it opened say nothing new
    if row.state == HALF_OPEN:
        if tally.failures:
            previous = policy.cooldown_s
            if row.opened_at is not None and row.retry_at is not None:
                previous = (row.retry_at - row.opened_at).total_seconds()
            doubled = min(max(previous * 2, policy.cooldown_s), policy.max_cooldown_s)
            return _opening(max(doubled, tally.retry_after_s or 0.0), row.failures + 1)
        return _closing()
    failures = (0 if tally.succeeded else row.failures) + tally.failures
    if tally.retry_after_s:
        return _opening(tally.retry_after_s, failures)
    if failures >= policy.failures:
        return _opening(policy.cooldown_s, failures)
    return {"failures": failures} if failures != row.failures else None


def _opening(seconds: float, failures: int) -> dict[str, Any]:
    return {
        "state": OPEN,
        "failures": failures,
        "opened_at": now(),
        "retry_at": now_plus(seconds),
        "probes_left": 0,
        "reason": None,
    }


def _closing() -> dict[str, Any]:
    return {
        "state": CLOSED,
        "failures": 0,
        "opened_at": None,
        "retry_at": None,
        "probes_left": 0,
        "reason": None,
    }


# --- operators --------------------------------------------------------------------------


def states_of(db: Connection, upstreams: Iterable[str]) -> list[State]:
    """The circuit of every upstream in `upstreams` and of every one with a row, by name;
    one without a row is closed."""
    rows = {row.upstream: row for row in db.execute(select(CIRCUITS))}
    shown = []
    for name in sorted({*upstreams, *rows}):
        row = rows.get(name)
        if row is None:
            shown.append(State(name, CLOSED, 0, None, None, False, None))
        else:
            shown.append(
                State(
                    name,
                    row.state,
                    row.failures,
                    row.opened_at,
                    row.retry_at,
                    row.forced,
                    row.reason,
                )
            )
    return shown


_WAKE = (
    update(JOBS)
    .where(
        JOBS.c.waiting_for == bindparam("key"),
        one_of(JOBS.c.status, CLAIMABLE),
        JOBS.c.published_at.is_(None),
        JOBS.c.next_attempt_at > now(),
    )
    .values(next_attempt_at=now())
)


def force(db: Connection, upstream: str, state: str, *, reason: str | None) -> State:
    """Force `upstream`'s circuit open (until an operator closes it) or closed (failures
    forgotten); jobs it held back are due at once on a close."""
    if state not in (OPEN, CLOSED):
        raise ValueError(f"a circuit is forced open or closed, not {state!r}")
    db.execute(_ENSURE, {"upstream": upstream})
    if state == OPEN:
        values = {**_opening(0, 0), "retry_at": None, "forced": True, "reason": reason}
    else:
        values = {**_closing(), "forced": False, "reason": reason}
        db.execute(_WAKE, {"key": waiting_key(upstream)})
    db.execute(update(CIRCUITS).where(C.upstream == upstream).values(updated_at=now(), **values))
    (shown,) = (s for s in states_of(db, [upstream]) if s.upstream == upstream)
    return shown


def force_by(
    session: Session, upstream: str, state: str, *, actor: str, reason: str | None
) -> State:
    """`force` by an operator, audited (`circuit.open` or `circuit.close`) in the same
    transaction."""
    shown = force(session.connection(), upstream, state, reason=reason)
    action = "circuit.open" if state == OPEN else "circuit.close"
    audit.record(session, actor=actor, action=action, reason=reason, details={"upstream": upstream})
    return shown
