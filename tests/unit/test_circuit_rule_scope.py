"""The circuit rule concerns only job types that call an upstream: other claims read nothing."""

from __future__ import annotations

import uuid

from store import admission, circuits

CALLS = {"customer_sync": ("crm", "billing"), "report": ()}
RULE = circuits.circuit_rule(CALLS)


def test_the_rule_applies_to_batches_holding_a_type_that_calls_an_upstream():
    assert admission.applies(RULE, {"customer_sync"})
    assert admission.applies(RULE, {"report", "customer_sync"})
    assert admission.applies(RULE, None)  # a message naming no type could be of any


def test_the_rule_leaves_out_types_that_call_no_upstream_or_are_unknown_to_it():
    assert not admission.applies(RULE, {"report"})
    assert not admission.applies(RULE, {"bench_noop"})


def test_a_claim_of_types_calling_no_upstream_sends_no_statement():
    ids = [uuid.uuid4() for _ in range(3)]
    # No connection at all: a statement would fail.
    assert admission.decide(None, ids, [RULE], types={"report"}) == {}  # type: ignore[arg-type]
