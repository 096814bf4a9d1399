"""Job ids: UUIDv7 that sort in the order they were made."""

from __future__ import annotations

import time

from store import ids


def test_ids_are_version_7_and_strictly_increasing():
    made = [ids.new_id() for _ in range(10_000)]
    assert all(i.version == 7 and i.variant == "specified in RFC 4122" for i in made)
    assert made == sorted(made) and len(set(made)) == len(made)


def test_ids_keep_their_order_within_a_millisecond_and_when_the_clock_steps_back(monkeypatch):
    # The module's memory of the last id is restored afterwards, with the clock.
    monkeypatch.setattr(ids, "_last_millis", 0)
    monkeypatch.setattr(ids, "_last_rand", 0)
    now = [time.time_ns()]
    monkeypatch.setattr(ids.time, "time_ns", lambda: now[0])
    same_millisecond = [ids.new_id() for _ in range(100)]
    now[0] -= 5_000_000_000  # the clock steps back five seconds
    after_step_back = [ids.new_id() for _ in range(100)]
    made = same_millisecond + after_step_back
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(i.version == 7 for i in made)
    millis = {i.int >> 80 for i in made}
    assert millis == {now[0] // 1_000_000 + 5_000}
