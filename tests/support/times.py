"""Times for requests, relative to now: the API takes `run_at` only within a year of now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

#: A `run_at` far enough ahead that the job waits through any test, as the API answers it.
LATER = (datetime.now(UTC) + timedelta(days=300)).strftime("%Y-%m-%dT%H:%M:%SZ")
