"""Quorum queues on a three-node RabbitMQ cluster: the node leading `sync` is killed while
2,000 jobs flow through the API and the workers, who fail over to the other nodes.

Run with `make test-cluster PYTEST_ARGS='-k leader'`. The figures it prints (time to
resume, jobs lost, duplicate runs) are the ones docs/queues-and-job-types.md quotes.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator

import pytest

from tests.faults.conftest import FAST
from tests.faults.harness import FaultDeployment
from tests.faults.rabbitmq_cluster import RabbitCluster
from tests.support import invariants, services
from tests.support.deployment import label_for
from tests.support.polling import wait_for
from tests.support.upstream import ScriptableUpstream

# Starting the cluster alone takes about 35 s on a loaded machine.
pytestmark = [pytest.mark.faults, pytest.mark.cluster, pytest.mark.timeout(600)]

JOBS = 2_000
BATCH = 100
BANDS = ("sync", "sync.mid", "sync.high")


@pytest.fixture
def cluster() -> Iterator[RabbitCluster]:
    try:
        nodes = RabbitCluster()
    except Exception as e:
        services.unavailable("private RabbitMQ nodes (rabbitmq-server)", e)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest,
    database_url: str,
    cluster: RabbitCluster,
    upstream: ScriptableUpstream,
) -> Iterator[FaultDeployment]:
    first = cluster.nodes[0].target
    vhost = first.create_vhost("courier-cluster")
    d = FaultDeployment.create(
        f"cluster-{label_for(request.node.name)}",
        database_url=database_url,
        broker=first,
        vhost=vhost,
        upstream=upstream,
        settings={
            **FAST,
            "COURIER_QUEUE_TYPE": "quorum",
            # A message the broker lost would come back within seconds.
            "COURIER_RECONCILE_INTERVAL_S": "5",
            "COURIER_RECONCILE_SETTLE_S": "10",
        },
    )
    d.env["COURIER_BROKER_URL"] = cluster.amqp_urls(vhost)
    d.env["COURIER_RABBITMQ_API_URL"] = cluster.api_urls()
    yield d
    d.kill_all()


def _bands(d: FaultDeployment) -> dict[str, dict]:
    """Each band's counts, consumers and leader as the management API gives them."""
    seen = {}
    for band in BANDS:
        info = d.broker.queue(d.vhost, band) or {}
        seen[band] = {
            key: info.get(key)
            for key in ("messages_ready", "messages_unacknowledged", "consumers", "leader", "state")
        }
    return seen


def test_killing_the_leader_of_sync_loses_nothing_and_work_resumes_within_30s(deployment, cluster):
    d = deployment
    d.start_api()
    groups = [d.start_worker(f"worker-{i}", processes=1, threads=8) for i in range(2)]
    headers = d.headers
    accepted: list[str] = []
    refused: list[str] = []

    def submit() -> None:
        # Mostly low priority, some of every band, in batches, through the kill.
        for start in range(0, JOBS, BATCH):
            bodies = [
                {"type": "customer_sync", "entity_id": f"c_{i}", "priority": (0, 0, 5, 9)[i % 4]}
                for i in range(start, start + BATCH)
            ]
            status, text = d.post("/v1/jobs/batch", {"jobs": bodies}, headers)
            if status != 207:
                refused.append(f"{status}: {text[:200]}")
                continue
            for item in json.loads(text)["items"]:
                if item["status"] == 202:
                    accepted.append(item["job"]["id"])
                else:
                    refused.append(str(item)[:200])

    submitter = threading.Thread(target=submit, name="cluster-submitter")
    submitter.start()
    try:
        wait_for(
            lambda: d.count("status = 'succeeded'") >= JOBS // 4,
            timeout=120,
            interval=0.2,
            what="a quarter of the jobs done",
        )
        leader = cluster.leader(d.vhost, "sync")
        with d.sql() as conn:
            [killed_at] = conn.execute("SELECT now()").fetchone()
        leader.kill()
        survivor = next(node for node in cluster.live())
        d.broker = survivor.target  # where the checks below look at the queues
    finally:
        submitter.join(timeout=300)
    assert not submitter.is_alive(), "the submissions did not end"
    print(f"killed {leader.node} (the leader of sync) at {killed_at}; refused: {refused[:3]}")

    for band in BANDS[1:]:
        wait_for(
            lambda band=band: invariants.queue_counts(d.broker, d.vhost, band)["ready_now"] == 0,
            timeout=120,
            interval=0.5,
            what=f"{band} drained",
        )
    try:
        report = d.settle_and_check(accepted, timeout=180)
    except AssertionError as e:
        raise AssertionError(f"{e}; the bands then: {_bands(d)}") from None

    with d.sql() as conn:
        finished = [
            row[0]
            for row in conn.execute(
                "SELECT finished_at FROM jobs WHERE finished_at > %s - interval '5 seconds'"
                " ORDER BY finished_at",
                (killed_at,),
            )
        ]
        [runs] = conn.execute("SELECT count(*) FROM attempts").fetchone()
    times = [killed_at, *(t for t in finished if t >= killed_at)]
    gap = max((b - a).total_seconds() for a, b in itertools.pairwise(times))
    republished = sum(len(g.log_lines("reconciler returned")) for g in groups)
    print(
        f"cluster failover: {len(accepted)} accepted, "
        f"{len(accepted) - len(report.jobs)} lost, {runs - len(report.jobs)} extra runs, "
        f"{len(report.duplicate_effects)} duplicate effects, longest pause in finishes after "
        f"the kill {gap:.1f}s, reconciler rounds that republished: {republished}"
    )
    assert not refused, refused[:5]
    assert len(accepted) == JOBS
    assert report.statuses == {"succeeded": JOBS}
    assert gap < 30, f"work paused {gap:.1f}s after the leader was killed"
