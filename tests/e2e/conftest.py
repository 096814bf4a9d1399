"""The real commands against real services: `courier migrate`, `courier api`, `courier worker`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.deployment import ProcessDeployment, label_for
from tests.support.services import SHARED_RABBITMQ
from tests.support.upstream import ScriptableUpstream

#: Timings a little shorter than the defaults, so retries and reaping take seconds.
E2E_SETTINGS = {
    "COURIER_MIN_BACKOFF_MS": "100",
    "COURIER_MAX_BACKOFF_MS": "500",
    "COURIER_LEASE_S": "5",
    "COURIER_REAPER_INTERVAL_S": "1",
    "COURIER_LOG_FORMAT": "json",
}


@pytest.fixture
def deployment(
    request: pytest.FixtureRequest, database_url: str, vhost: str, upstream: ScriptableUpstream
) -> Iterator[ProcessDeployment]:
    """A migrated database and an empty vhost; start the processes a test needs."""
    d = ProcessDeployment.create(
        f"e2e-{label_for(request.node.name)}",
        database_url=database_url,
        broker=SHARED_RABBITMQ,
        vhost=vhost,
        upstream=upstream,
        settings=E2E_SETTINGS,
    )
    d.migrate()
    yield d
    d.stop_all()
