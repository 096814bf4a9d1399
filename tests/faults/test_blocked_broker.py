"""RabbitMQ blocks publishers (a memory or disk alarm): Courier keeps accepting jobs into SQL,
holds no transaction or row lock while the broker keeps it waiting, and runs every job once
the alarm clears.

The alarm is raised on the session's private node, never on the shared broker.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.faults.harness import elapsed
from tests.faults.private_services import PrivateRabbitMQ
from tests.support.polling import holds_for, wait_for

pytestmark = pytest.mark.faults

#: An accept must answer within this long while the broker blocks publishers.
ACCEPT_BUDGET_S = 5

#: Transactions of the deployment's database open longer than this: with the broker
#: blocked, nothing Courier does should keep one open.
LONG_TRANSACTIONS = """
    SELECT pid, application_name, state, now() - xact_start AS age, left(query, 120) AS query
    FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND xact_start < now() - interval '1 second'
"""

#: Row and relation locks held by other sessions of the database (advisory locks are not).
HELD_LOCKS = """
    SELECT l.pid, l.locktype, l.mode FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE a.datname = current_database() AND l.pid <> pg_backend_pid()
      AND l.locktype <> 'advisory' AND a.xact_start < now() - interval '1 second'
"""


def _set_memory_watermark(node: PrivateRabbitMQ, fraction: str) -> None:
    ctl = "/usr/lib/rabbitmq/bin/rabbitmqctl"
    done = subprocess.run(
        [ctl, "-n", node.node, "set_vm_memory_high_watermark", fraction],
        env=node.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def _memory_alarm(node: PrivateRabbitMQ) -> bool | None:
    """Whether the node reports a memory alarm (None until its first statistics are in)."""
    with node.target.api() as api:
        [stats] = api.get("/api/nodes").json()
    return stats.get("mem_alarm")


@contextlib.contextmanager
def _memory_alarm_raised(node: PrivateRabbitMQ) -> Iterator[None]:
    _set_memory_watermark(node, "0.000001")
    try:
        wait_for(lambda: _memory_alarm(node), timeout=20, what="the memory alarm")
        yield
    finally:
        _set_memory_watermark(node, "0.4")
        wait_for(lambda: _memory_alarm(node) is False, timeout=20, what="the alarm to clear")


def test_a_blocked_broker_slows_no_accept_holds_no_lock_and_loses_no_job(
    deployment_on_private_rabbitmq, private_rabbitmq, upstream
):
    deployment = deployment_on_private_rabbitmq
    deployment.start_api()
    group = deployment.start_worker(processes=1, threads=2)
    warm = deployment.submit(type="customer_sync", entity_id="c_before_alarm")
    deployment.wait_status(warm, "succeeded", timeout=30)

    during, slowest = [], 0.0
    with _memory_alarm_raised(private_rabbitmq):
        for i in range(6):
            started = time.monotonic()
            during.append(deployment.submit(type="customer_sync", entity_id=f"c_blocked_{i}"))
            slowest = max(slowest, elapsed(started))
        started = time.monotonic()
        during += deployment.submit_all(
            {"type": "customer_sync", "entity_id": f"c_blocked_batch_{i}"} for i in range(10)
        )
        slowest = max(slowest, elapsed(started))
        assert slowest < ACCEPT_BUDGET_S, f"an accept took {slowest:.1f}s with publishers blocked"

        # The jobs are past the API's grace: the relay keeps trying to publish them meanwhile.
        with deployment.sql() as conn:

            def nothing_held() -> bool:
                long = conn.execute(LONG_TRANSACTIONS).fetchall()
                locks = conn.execute(HELD_LOCKS).fetchall()
                assert not long and not locks, f"held while blocked: {long} {locks}"
                return True

            holds_for(nothing_held, 6, what="no transaction or lock held while blocked")
        placeholders = ", ".join(["%s"] * len(during))
        waiting = f"id IN ({placeholders}) AND status = 'queued'"
        assert deployment.count(waiting, tuple(during)) == len(during)

    cleared = time.monotonic()
    report = deployment.settle_and_check([warm, *during], timeout=60)
    assert report.statuses == {"succeeded": 1 + len(during)}
    print(
        f"slowest accept while blocked {slowest:.2f}s; all {len(during)} jobs accepted then "
        f"ran {elapsed(cleared):.1f}s after the alarm cleared"
    )
    assert group.restarts() == 0
