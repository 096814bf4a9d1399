from __future__ import annotations

import pytest
from dramatiq.middleware.time_limit import TimeLimitExceeded

from middleware import errors
from middleware.classify import CANCEL, DEFAULT, RETRY, SKIP, Rule


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (errors.UpstreamUnavailable("503 from CRM"), RETRY),
        (errors.UpstreamRateLimited("429", retry_after_ms=1500), RETRY),
        (errors.UpstreamNotFound(), SKIP),
        (errors.UpstreamForbidden(), SKIP),
        (errors.UpstreamRejected(), SKIP),
        (errors.InvalidPayload("entity_id is required"), SKIP),
        (TimeLimitExceeded(), RETRY),
        (errors.Cancelled(), CANCEL),
        (ZeroDivisionError("division by zero"), RETRY),
    ],
)
def test_each_error_of_the_contract_gets_its_decision(error, kind):
    verdict = DEFAULT.classify(error)
    assert verdict.kind == kind
    assert verdict.error_type == type(error).__name__
    assert verdict.message


def test_a_rate_limit_carries_the_delay_the_upstream_asked_for():
    assert DEFAULT.classify(errors.UpstreamRateLimited(retry_after_ms=1500)).retry_after_ms == 1500


def test_a_job_type_can_override_the_default_rules():
    class Flaky(errors.UpstreamRejected):
        """A rejection this upstream is known to take back."""

    classifier = DEFAULT.extended([Rule(Flaky, RETRY), Rule(KeyError, SKIP)])
    assert classifier.classify(Flaky()).kind == RETRY
    assert classifier.classify(KeyError("x")).kind == SKIP
    assert classifier.classify(errors.UpstreamRejected()).kind == SKIP
    assert DEFAULT.classify(Flaky()).kind == SKIP  # the default table is untouched


def test_long_error_messages_are_shortened():
    verdict = DEFAULT.classify(RuntimeError("x" * 5000))
    assert len(verdict.message) <= 500
