"""The relay's pace: rounds come sooner while the broker drains what it sends fast."""

from __future__ import annotations

import pytest

from delivery import relay as relay_rounds
from middleware.relay import HURRY_S, Relay


class Rounds:
    """Stands in for the relay's two rounds: each publish round sends the next figure."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, published: list[int]) -> None:
        self.published = list(published)
        self.dead_letter_rounds = 0
        monkeypatch.setattr(relay_rounds, "publish_due", self.publish_due)
        monkeypatch.setattr(relay_rounds, "copy_missing_dead_letters", self.copy)

    def publish_due(self, *args: object, **kwargs: object) -> int:
        return self.published.pop(0) if self.published else 0

    def copy(self, *args: object, **kwargs: object) -> int:
        self.dead_letter_rounds += 1
        return 0


def _relay(interval_s: float = 0.5) -> Relay:
    return Relay(
        outbox=None,  # type: ignore[arg-type]
        engine=None,  # type: ignore[arg-type]
        interval_s=interval_s,
        batch=500,
        share=500,
    )


def test_a_relay_that_has_published_nothing_waits_its_interval(monkeypatch):
    Rounds(monkeypatch, [])
    relay = _relay()
    relay.tick()
    assert relay.next_wait_s() == 0.5


def test_a_round_that_tops_up_much_of_a_share_makes_the_next_come_soon(monkeypatch):
    Rounds(monkeypatch, [400])
    relay = _relay()
    relay.tick()
    assert relay.next_wait_s() == HURRY_S


def test_full_batches_count_together_and_the_round_goes_on_until_one_is_not_full(monkeypatch):
    rounds = Rounds(monkeypatch, [500, 500, 3])
    relay = _relay()
    relay.tick()
    assert rounds.published == []
    assert relay.next_wait_s() == HURRY_S


def test_between_the_two_the_wait_is_the_time_to_drain_a_quarter_share(monkeypatch):
    Rounds(monkeypatch, [100])
    relay = _relay(interval_s=60.0)
    relay._last_round -= 10.0  # the round before was 10 s ago: 10 jobs/s
    relay.tick()
    assert relay.next_wait_s() == pytest.approx(125 / 10, rel=0.05)


def test_once_the_broker_takes_little_the_relay_returns_to_its_interval(monkeypatch):
    Rounds(monkeypatch, [400, 2])
    relay = _relay()
    relay.tick()
    relay.tick()
    assert relay.next_wait_s() == 0.5


def test_dead_letters_are_copied_once_an_interval_even_while_the_relay_hurries(monkeypatch):
    rounds = Rounds(monkeypatch, [400] * 5)
    relay = _relay(interval_s=60.0)
    for _ in range(5):
        relay.tick()
    assert relay.next_wait_s() == HURRY_S
    assert rounds.dead_letter_rounds == 1  # the first round's; the next is due in 60 s
