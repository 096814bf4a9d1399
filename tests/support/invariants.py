"""The promises of docs/design.md, checked against SQL, the upstream's record and the broker.

`check()` is meant for a system that has settled (see `tests/faults/harness.py`): every
accepted job exists and is terminal (or visibly waiting), attempts are counted exactly,
each succeeded job's upstream write happened (deduplicated by its Idempotency-Key), the
work queue holds nothing ready or unacknowledged, and every dead job has its copy in the
dead-letter queue.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests.support.polling import holds_for, wait_for
from tests.support.services import RabbitTarget
from tests.support.upstream import ScriptableUpstream

TERMINAL = frozenset({"succeeded", "failed", "dead", "cancelled"})
WAITING = frozenset({"queued", "retrying"})
#: Job types whose one upstream write carries `Idempotency-Key: <job id>`.
RECORD_TYPES = frozenset({"customer_sync", "invoice_sync"})
#: How often RabbitMQ's management API refreshes queue counts (its default, 5 s), plus slack.
STATS_INTERVAL_S = 5.5


@dataclass
class Report:
    """What the check saw; `duplicate_effects` are informational (same key, written twice)."""

    jobs: dict[str, dict[str, Any]]
    attempts: dict[str, list[dict[str, Any]]]
    effects: Counter[str]
    duplicate_effects: dict[str, int] = field(default_factory=dict)
    queue: dict[str, int] = field(default_factory=dict)

    @property
    def statuses(self) -> Counter[str]:
        return Counter(j["status"] for j in self.jobs.values())

    def summary(self) -> str:
        """One line for test output."""
        abandoned = sum(
            1 for rows in self.attempts.values() for a in rows if a["status"] == "abandoned"
        )
        return (
            f"{len(self.jobs)} jobs {dict(self.statuses)}; "
            f"{sum(len(r) for r in self.attempts.values())} attempts ({abandoned} abandoned); "
            f"{sum(self.effects.values())} upstream writes for {len(self.effects)} keys, "
            f"{len(self.duplicate_effects)} written more than once; queue {self.queue}"
        )


def load(conn: psycopg.Connection) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """Every job and its attempts, by job id."""
    with conn.cursor(row_factory=dict_row) as cur:
        jobs = {str(r["id"]): r for r in cur.execute("SELECT * FROM jobs")}
        attempts: dict[str, list[dict]] = {job_id: [] for job_id in jobs}
        for row in cur.execute("SELECT * FROM attempts ORDER BY job_id, number"):
            attempts.setdefault(str(row["job_id"]), []).append(row)
    return jobs, attempts


def state(conn: psycopg.Connection) -> list[tuple]:
    """A fingerprint of every job's state, to tell whether anything still moves."""
    return conn.execute(
        "SELECT id, status, attempts, finished_at, dead_lettered_at, "
        "(SELECT count(*) FROM attempts a WHERE a.job_id = j.id AND a.status = 'running') "
        "FROM jobs j ORDER BY id"
    ).fetchall()


def quiescent(conn: psycopg.Connection, *, allow_waiting: bool = False) -> bool:
    """Whether every job is terminal (or, if allowed, waiting for a scheduled attempt)."""
    waiting = " OR (status IN ('queued', 'retrying') AND next_attempt_at IS NOT NULL)"
    (active,) = conn.execute(
        "SELECT count(*) FROM jobs WHERE NOT (status IN ('succeeded','failed','dead','cancelled')"
        + (waiting if allow_waiting else "")
        + ")"
    ).fetchone()
    return active == 0


def queue_counts(broker: RabbitTarget, vhost: str, queue: str) -> dict[str, int]:
    """Ready and unacknowledged messages of a queue: the management API's numbers, and the
    ready count asked of the queue itself (which does not lag)."""
    info = broker.queue(vhost, queue) or {}
    return {
        "ready": int(info.get("messages_ready", 0)),
        "unacked": int(info.get("messages_unacknowledged", 0)),
        "ready_now": broker.ready_now(vhost, queue) if info else 0,
    }


def dead_letter_ids(broker: RabbitTarget, vhost: str, queue: str = "sync") -> Counter[str]:
    """Job ids of the messages in `<queue>.XQ`, by header or, for plain nacks, by body."""
    found: Counter[str] = Counter()
    for message in broker.peek(vhost, f"{queue}.XQ"):
        headers = (message.get("properties") or {}).get("headers") or {}
        job_id = headers.get("x-job-id")
        if job_id is None:
            try:
                job_id = json.loads(message["payload"])["args"][0]
            except (ValueError, KeyError, IndexError, TypeError):
                continue
        found[str(job_id)] += 1
    return found


def check(
    conn: psycopg.Connection,
    *,
    accepted: Iterable[str],
    upstream: ScriptableUpstream,
    broker: RabbitTarget,
    vhost: str,
    queue: str = "sync",
    allow_waiting: bool = False,
    effects_exactly_once: bool = False,
    broker_timeout: float = 15.0,
) -> Report:
    """Assert the promises; returns what was seen. Raises AssertionError listing every breach."""
    accepted = [str(i) for i in accepted]
    problems: list[str] = []

    # The queue is drained: nothing ready, nothing held unacknowledged by a worker.
    counts: dict[str, int] = {}

    def drained() -> bool:
        counts.update(queue_counts(broker, vhost, queue))
        return counts["ready"] == counts["unacked"] == counts["ready_now"] == 0

    try:
        wait_for(drained, timeout=broker_timeout, interval=0.5, what="queue drained")
    except AssertionError:
        problems.append(f"queue {queue!r} not drained at quiescence: {counts}")

    # Dead jobs have their copy in the dead-letter queue (the relay backfills after a grace).
    def dead_ids() -> set[str]:
        return {
            str(r[0])
            for r in conn.execute(
                "SELECT id FROM jobs WHERE status = 'dead' AND replayed_by IS NULL"
            )
        }

    missing_dead: set[str] = set()

    def dead_lettered() -> bool:
        missing_dead.clear()
        missing_dead.update(dead_ids() - set(dead_letter_ids(broker, vhost, queue)))
        return not missing_dead

    try:
        wait_for(dead_lettered, timeout=broker_timeout, interval=0.5, what="dead letters")
    except AssertionError:
        problems.append(f"dead jobs missing from {queue}.XQ: {sorted(missing_dead)[:10]}")

    jobs, attempts = load(conn)

    # 1. No accepted job is lost.
    lost = [i for i in accepted if i not in jobs]
    if lost:
        problems.append(f"{len(lost)} accepted job(s) have no row: {lost[:10]}")

    for job_id, job in jobs.items():
        rows = attempts.get(job_id, [])
        where = f"job {job_id} ({job['type']} {job['entity_id']}, {job['status']})"
        status = job["status"]
        # Terminal, or visibly waiting.
        if status not in TERMINAL and not (
            allow_waiting and status in WAITING and job["next_attempt_at"] is not None
        ):
            problems.append(f"{where}: not terminal at quiescence")
        # 3. Attempts are counted in SQL, crashes included.
        numbers = [a["number"] for a in rows]
        if job["attempts"] != len(rows):
            problems.append(f"{where}: attempts={job['attempts']} but {len(rows)} attempt rows")
        if numbers != list(range(1, len(rows) + 1)):
            problems.append(f"{where}: attempts numbered {numbers}")
        running = [a["number"] for a in rows if a["status"] == "running"]
        if len(running) > 1 or (running and status != "running"):
            problems.append(f"{where}: attempts {running} still running")
        if job["attempts"] > job["max_attempts"]:
            problems.append(f"{where}: {job['attempts']} attempts > max {job['max_attempts']}")
        # Each terminal state is written once, with a reason where it is not success.
        if status in TERMINAL and job["finished_at"] is None:
            problems.append(f"{where}: terminal without finished_at")
        if status in ("failed", "dead") and not job["error_type"]:
            problems.append(f"{where}: {status} without a reason (error_type)")
        if status == "succeeded" and (not rows or rows[-1]["status"] != "succeeded"):
            problems.append(f"{where}: succeeded but last attempt is {rows[-1:]}")
        if status == "succeeded" and any(a["status"] == "succeeded" for a in rows[:-1]):
            problems.append(f"{where}: more than one succeeded attempt")

    # 2. Exactly-once state, at-least-once effects deduplicated by Idempotency-Key.
    effects: Counter[str] = Counter(
        c["headers"].get("Idempotency-Key")
        for c in upstream.calls(method="PUT")
        if c["headers"].get("Idempotency-Key")
    )
    succeeded_records = {
        i for i, j in jobs.items() if j["status"] == "succeeded" and j["type"] in RECORD_TYPES
    }
    written = {k for k in effects if k in succeeded_records}
    if written != succeeded_records:
        missing = sorted(succeeded_records - written)
        problems.append(f"{len(missing)} succeeded job(s) never wrote upstream: {missing[:10]}")
    strangers = [k for k in effects if k.split(":")[0] not in jobs]
    if strangers:
        problems.append(f"upstream writes with keys of no job: {strangers[:10]}")
    duplicates = {k: n for k, n in effects.items() if n > 1}
    if effects_exactly_once and duplicates:
        problems.append(f"{len(duplicates)} key(s) written more than once: {duplicates}")

    report = Report(jobs, attempts, effects, duplicates, counts)
    if problems:
        raise AssertionError(
            "invariants broken:\n  " + "\n  ".join(problems[:40]) + f"\n({report.summary()})"
        )
    return report


def settle(
    conn: psycopg.Connection,
    *,
    timeout: float,
    allow_waiting: bool = False,
    still_for: float = STATS_INTERVAL_S,
) -> float:
    """Wait until every job is terminal and nothing in SQL changes for `still_for` seconds.

    A terminal job that changes status or attempts meanwhile breaks "written once, never
    left" and fails at once. The quiet period also outlasts the management API's statistics
    interval, so queue counts read afterwards describe the settled system. Returns how long
    settling took.
    """
    started = time.monotonic()
    while True:
        remaining = timeout - (time.monotonic() - started)
        try:
            wait_for(
                lambda: quiescent(conn, allow_waiting=allow_waiting),
                timeout=max(remaining, 0.1),
                interval=0.2,
            )
        except AssertionError:
            raise AssertionError(
                f"not settled after {timeout}s; active jobs: {_active(conn)}"
            ) from None
        before = {row[0]: row[1:] for row in state(conn)}

        def unchanged(before: dict = before) -> bool:
            now = {row[0]: row[1:] for row in state(conn)}
            for job_id, was in before.items():
                if was[0] in TERMINAL and now.get(job_id, was)[:3] != was[:3]:
                    raise AssertionError(
                        f"terminal job {job_id} changed after the fact: {was} -> {now[job_id]}"
                    )
            if now != before:
                raise _Moved
            return True

        try:
            holds_for(unchanged, still_for, what="the settled state")
            return time.monotonic() - started
        except _Moved:
            if time.monotonic() - started > timeout:
                raise AssertionError(f"state still moving after {timeout}s") from None


class _Moved(Exception):
    """Something changed during the quiet period (e.g. a dead letter was backfilled)."""


def _active(conn: psycopg.Connection) -> dict[str, int]:
    return dict(
        conn.execute(
            "SELECT status, count(*) FROM jobs "
            "WHERE status NOT IN ('succeeded','failed','dead','cancelled') GROUP BY status"
        ).fetchall()
    )
