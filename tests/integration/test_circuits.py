"""Upstream circuits on real PostgreSQL (and the embedded SQLite): the state machine the
finishes drive, the admission rule the claims ask, and operators' view and overrides."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, update

from store import circuits
from store.admission import Claiming, Park
from store.circuits import CLOSED, HALF_OPEN, OPEN, Call, Policy
from store.models import AUDIT_LOG, CIRCUITS, JOBS
from store.types import utcnow
from tests.support.dashboard import csrf_of, page, post_form, secret, session_of
from tests.support.polling import wait_for
from tests.support.records import insert_jobs

pytestmark = pytest.mark.integration

POLICY = Policy(failures=3, cooldown_s=30, probes=2, max_cooldown_s=100, fresh_first_s=5)
CALLS_CRM = {"customer_sync": ("crm",), "invoice_sync": ("billing",), "both": ("crm", "billing")}
RULE = circuits.circuit_rule(CALLS_CRM, POLICY)
DOWN, UP = Call("crm", ok=False), Call("crm", ok=True)


def record(engine: Engine, *calls: Call) -> None:
    with engine.begin() as db:
        circuits.record(db, calls, POLICY)


def circuit(engine: Engine, upstream: str = "crm"):
    with engine.connect() as db:
        return db.execute(select(CIRCUITS).where(CIRCUITS.c.upstream == upstream)).one()


def cool_down_ends(engine: Engine, upstream: str = "crm", *, ago_s: float = 0.0) -> None:
    """Let the cool-down pass (retry_at moved into the past, the cool-down kept)."""
    row = circuit(engine, upstream)
    shift = (row.retry_at - utcnow()) + timedelta(seconds=ago_s + 0.001)
    with engine.begin() as db:
        db.execute(
            update(CIRCUITS)
            .where(CIRCUITS.c.upstream == upstream)
            .values(opened_at=row.opened_at - shift, retry_at=row.retry_at - shift)
        )


def claiming(engine: Engine, count: int, type: str = "customer_sync", **columns) -> list:
    ids = insert_jobs(engine, count, type=type, **columns)
    return [Claiming(job_id=i, tenant="t", type=type, entity_id=str(i)) for i in ids]


def admit(engine: Engine, jobs: list[Claiming]) -> dict[uuid.UUID, Park]:
    with engine.begin() as db:
        return RULE(db, jobs)


def test_consecutive_unavailable_attempts_open_the_circuit_for_the_cool_down(engine):
    record(engine, DOWN, DOWN)
    assert (circuit(engine).state, circuit(engine).failures) == (CLOSED, 2)

    record(engine, DOWN)

    row = circuit(engine)
    assert (row.state, row.failures) == (OPEN, 3)
    assert (row.retry_at - row.opened_at).total_seconds() == pytest.approx(30, abs=0.01)


def test_a_success_between_failures_resets_the_count(engine):
    record(engine, DOWN, DOWN)
    record(engine, UP)
    record(engine, DOWN, DOWN)

    assert (circuit(engine).state, circuit(engine).failures) == (CLOSED, 2)


def test_within_one_batch_only_the_failures_after_its_last_success_count(engine):
    record(engine, DOWN, DOWN, UP, DOWN)

    assert circuit(engine).failures == 1


def test_a_rate_limit_with_retry_after_opens_the_circuit_until_then(engine):
    record(engine, Call("billing", ok=False, retry_after_s=12))

    row = circuit(engine, "billing")
    assert row.state == OPEN
    assert (row.retry_at - row.opened_at).total_seconds() == pytest.approx(12, abs=0.01)


def test_an_open_circuit_parks_the_jobs_that_call_it_until_retry_at(engine):
    record(engine, DOWN, DOWN, DOWN)
    crm_jobs, billing_jobs = claiming(engine, 2), claiming(engine, 1, type="invoice_sync")
    both = claiming(engine, 1, type="both")

    parked = admit(engine, [*crm_jobs, *billing_jobs, *both])

    retry_at = circuit(engine).retry_at
    expected = Park("upstream:crm", retry_at)
    assert parked == {j.job_id: expected for j in [*crm_jobs, *both]}


def test_after_the_cool_down_only_the_probes_go_through_and_the_rest_wait_a_moment(engine):
    record(engine, DOWN, DOWN, DOWN)
    cool_down_ends(engine)
    jobs = claiming(engine, 5)

    parked = admit(engine, jobs)

    row = circuit(engine)
    assert (row.state, row.probes_left) == (HALF_OPEN, 0)
    assert len(parked) == 3 and set(parked.values()) == {Park("upstream:crm")}
    assert admit(engine, claiming(engine, 1)) != {}  # no probe left


def test_fresh_jobs_are_the_probes_before_jobs_that_already_spent_an_attempt(engine):
    record(engine, DOWN, DOWN, DOWN)
    cool_down_ends(engine)
    tried = claiming(engine, 2, status="retrying", attempts=1)
    fresh = claiming(engine, 1)

    parked = admit(engine, [*tried, fresh[0]])

    assert set(parked) == {j.job_id for j in tried}
    assert circuit(engine).probes_left == 1


def test_jobs_that_spent_an_attempt_may_probe_once_fresh_ones_had_their_turn(engine):
    record(engine, DOWN, DOWN, DOWN)
    cool_down_ends(engine, ago_s=POLICY.fresh_first_s)
    tried = claiming(engine, 1, status="retrying", attempts=1)

    assert admit(engine, tried) == {}


def test_a_probe_that_succeeds_closes_the_circuit(engine):
    record(engine, DOWN, DOWN, DOWN)
    cool_down_ends(engine)
    admit(engine, claiming(engine, 1))

    record(engine, UP)

    row = circuit(engine)
    assert (row.state, row.failures, row.retry_at) == (CLOSED, 0, None)
    assert admit(engine, claiming(engine, 3)) == {}


def test_a_probe_that_fails_opens_it_again_for_twice_the_cool_down_up_to_the_cap(engine):
    record(engine, DOWN, DOWN, DOWN)
    for expected in (60, 100, 100):
        cool_down_ends(engine)
        admit(engine, claiming(engine, 1))
        record(engine, DOWN)
        row = circuit(engine)
        assert row.state == OPEN
        assert (row.retry_at - row.opened_at).total_seconds() == pytest.approx(expected, abs=0.01)


def test_attempts_that_end_while_it_is_open_change_nothing(engine):
    record(engine, DOWN, DOWN, DOWN)
    before = circuit(engine)

    record(engine, UP, DOWN)

    assert circuit(engine) == before


def test_probes_whose_verdict_never_comes_are_handed_out_again_after_a_cool_down(engine):
    record(engine, DOWN, DOWN, DOWN)
    cool_down_ends(engine)
    admit(engine, claiming(engine, 2))  # both probes taken; their workers vanish
    with engine.begin() as db:
        db.execute(update(CIRCUITS).values(updated_at=utcnow() - timedelta(seconds=31)))

    assert admit(engine, claiming(engine, 1)) == {}


def test_a_forced_open_circuit_stays_open_until_an_operator_closes_it(engine):
    with engine.begin() as db:
        circuits.force(db, "crm", OPEN, reason="CRM maintenance")
    record(engine, UP)
    [job] = claiming(engine, 1)

    parked = admit(engine, [job])

    row = circuit(engine)
    assert (row.state, row.forced, row.reason, row.retry_at) == (
        OPEN,
        True,
        "CRM maintenance",
        None,
    )
    assert parked[job.job_id].key == "upstream:crm" and parked[job.job_id].until is not None


def test_closing_a_forced_circuit_wakes_the_jobs_parked_on_it(engine):
    with engine.begin() as db:
        circuits.force(db, "crm", OPEN, reason=None)
    later = utcnow() + timedelta(minutes=5)
    [parked] = insert_jobs(
        engine, 1, waiting_for="upstream:crm", next_attempt_at=later, published_at=None
    )
    [other] = insert_jobs(engine, 1, waiting_for="entity", next_attempt_at=later, published_at=None)

    with engine.begin() as db:
        shown = circuits.force(db, "crm", CLOSED, reason="back")

    assert (shown.state, shown.forced, shown.reason) == (CLOSED, False, "back")
    with engine.connect() as db:
        due = dict(db.execute(select(JOBS.c.id, JOBS.c.next_attempt_at <= utcnow())).all())
    assert due == {parked: True, other: False}


def test_the_embedded_store_runs_the_same_state_machine(sqlite_engine):
    record(sqlite_engine, DOWN, DOWN, DOWN)
    cool_down_ends(sqlite_engine)
    jobs = claiming(sqlite_engine, 3)

    parked = admit(sqlite_engine, jobs)
    record(sqlite_engine, UP)

    assert len(parked) == 1
    assert circuit(sqlite_engine).state == CLOSED


def test_a_worker_counts_unavailable_attempts_against_the_upstream_that_failed(stack, upstream):
    for i in range(3):
        upstream.script("GET", f"/crm/customers/c_{i}", {"status": 503}, repeat_last=True)
    stack.start_worker(threads=2, circuit_failures=3)
    job_ids = [stack.submit(type="customer_sync", entity_id=f"c_{i}") for i in range(3)]

    wait_for(lambda: circuit_or_none(stack.engine) is not None, what="a crm circuit row")
    wait_for(lambda: circuit(stack.engine).state == OPEN, what="the crm circuit opened")

    assert sum(stack.job(j).attempts for j in job_ids) >= 3
    assert circuit_or_none(stack.engine, "billing") is None  # it was never called


def test_a_success_of_a_job_that_calls_the_upstream_resets_its_failures(stack, upstream):
    record(stack.engine, DOWN, DOWN)
    stack.start_worker(threads=1)
    job_id = stack.submit(type="customer_sync", entity_id="c_ok")

    wait_for(lambda: stack.job(job_id).status == "succeeded", what="the job succeeded")

    assert circuit(stack.engine).failures == 0


def circuit_or_none(engine: Engine, upstream: str = "crm"):
    with engine.connect() as db:
        return db.execute(select(CIRCUITS).where(CIRCUITS.c.upstream == upstream)).first()


def upstreams(stack, headers):
    response = stack.client.simulate_get("/v1/upstreams", headers=headers)
    assert response.status_code == 200, response.text
    return {u["upstream"]: u for u in response.json["upstreams"]}


def force(stack, name, body, headers):
    return stack.client.simulate_post(f"/v1/upstreams/{name}/circuit", json=body, headers=headers)


def test_operators_see_every_known_upstream_with_its_circuit(stack):
    record(stack.engine, DOWN, DOWN, DOWN)

    shown = upstreams(stack, stack.token("ops", "operator"))

    assert set(shown) == {"crm", "billing"}
    assert shown["billing"] == {
        "upstream": "billing",
        "state": "closed",
        "failures": 0,
        "opened_at": None,
        "retry_at": None,
        "forced": False,
        "reason": None,
    }
    crm = shown["crm"]
    assert (crm["state"], crm["failures"], crm["forced"]) == ("open", 3, False)
    assert crm["opened_at"].endswith("Z") and crm["retry_at"] > crm["opened_at"]


def test_an_operator_forces_a_circuit_open_and_closed_audited(stack):
    operator = stack.token("ops", "operator")

    opened = force(stack, "crm", {"state": "open", "reason": "CRM maintenance"}, operator)
    assert opened.status_code == 200, opened.text
    assert (opened.json["state"], opened.json["forced"], opened.json["retry_at"]) == (
        "open",
        True,
        None,
    )
    assert upstreams(stack, operator)["crm"]["reason"] == "CRM maintenance"

    closed = force(stack, "crm", {"state": "closed", "reason": "back"}, operator)
    assert closed.status_code == 200, closed.text
    assert (closed.json["state"], closed.json["forced"]) == ("closed", False)
    with stack.engine.connect() as db:
        audited = db.execute(
            select(AUDIT_LOG.c.action, AUDIT_LOG.c.reason, AUDIT_LOG.c.details).order_by(
                AUDIT_LOG.c.at
            )
        ).all()
    assert [tuple(a) for a in audited] == [
        ("circuit.open", "CRM maintenance", {"upstream": "crm"}),
        ("circuit.close", "back", {"upstream": "crm"}),
    ]


@pytest.mark.parametrize(
    ("name", "body", "status"),
    [
        ("erp", {"state": "open"}, 404),
        ("crm", {"state": "half_open"}, 422),
        ("crm", {"state": "open", "extra": 1}, 422),
        ("crm", {}, 422),
    ],
)
def test_forcing_an_unknown_upstream_or_another_state_is_refused(stack, name, body, status):
    response = force(stack, name, body, stack.token("ops", "operator"))

    assert response.status_code == status, response.text
    assert set(response.json) >= {"title", "description"}
    assert circuit_or_none(stack.engine, name) is None


def test_clients_may_neither_see_nor_force_circuits(stack):
    client = stack.token("acme", "client")

    assert stack.client.simulate_get("/v1/upstreams", headers=client).status_code == 403
    assert force(stack, "crm", {"state": "open"}, client).status_code == 403
    assert circuit_or_none(stack.engine) is None


def test_metrics_report_each_upstreams_circuit_state(stack):
    record(stack.engine, DOWN, DOWN, DOWN)

    def scraped() -> str:
        text = stack.client.simulate_get("/metrics").text
        return text if 'courier_upstream_circuit{state="open",upstream="crm"} 1.0' in text else ""

    text = wait_for(scraped, what="crm open in /metrics")
    assert 'courier_upstream_circuit{state="closed",upstream="crm"} 0.0' in text
    assert 'courier_upstream_circuit{state="closed",upstream="billing"} 1.0' in text
    assert 'courier_upstream_circuit{state="half_open",upstream="billing"} 0.0' in text


def test_the_upstreams_page_shows_each_circuit_and_forces_one_with_a_csrf_checked_form(stack):
    operator = session_of(stack, secret(stack.token("ops", "operator")))
    record(stack.engine, DOWN, DOWN, DOWN)

    html = page(stack, "/ui/upstreams", operator).text
    assert '<a href="/ui/upstreams">Upstreams</a>' in html
    assert "billing" in html and "open" in html and "Close" in html
    forged = post_form(
        stack, "/ui/upstreams/billing/circuit", operator, state="open", reason="x", csrf="0" * 64
    )
    assert forged.status_code == 403 and circuit_or_none(stack.engine, "billing") is None

    csrf = csrf_of(html)
    opened = post_form(
        stack, "/ui/upstreams/billing/circuit", operator, state="open", reason="audit", csrf=csrf
    )
    assert opened.status_code == 303 and opened.headers["Location"].endswith("/ui/upstreams")
    assert (circuit(stack.engine, "billing").state, circuit(stack.engine, "billing").forced) == (
        OPEN,
        True,
    )
    closed = post_form(
        stack, "/ui/upstreams/crm/circuit", operator, state="closed", reason="back", csrf=csrf
    )
    assert closed.status_code == 303 and circuit(stack.engine).state == CLOSED
    assert "(forced)" in page(stack, "/ui/upstreams", operator).text


def test_the_upstreams_page_needs_a_login(stack):
    response = stack.client.simulate_get("/ui/upstreams")

    assert response.status_code == 303 and response.headers["Location"].endswith("/ui/login")


def test_a_job_waiting_on_an_open_circuit_can_be_cancelled(stack, upstream):
    opened = force(
        stack, "crm", {"state": "open", "reason": "maintenance"}, stack.token("ops", "operator")
    )
    assert opened.status_code == 200, opened.text
    stack.start_worker(threads=1)
    job_id = stack.submit(type="customer_sync", entity_id="c_parked")
    wait_for(lambda: stack.job(job_id).waiting_for == "upstream:crm", what="the job parked")

    cancelled = stack.client.simulate_post(f"/v1/jobs/{job_id}/cancel", headers=stack.headers)

    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json["status"] == "cancelled"
    job = stack.job(job_id)
    assert (job.status, job.attempts, job.waiting_for) == ("cancelled", 0, None)
    assert upstream.calls("/crm/customers/c_parked") == []
