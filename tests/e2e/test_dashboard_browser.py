"""A new operator, in a real browser, finds a dead job, sees why it died, replays it, and
watches the replay succeed; finds a schedule, triggers it, and follows its job; reads the
overview's plot, sees what each worker runs, and tries the API in its explorer. Screenshots
go to test-artifacts/."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from selenium.webdriver.common.by import By

from store import schedules
from store.cadence import Cadence
from store.db import make_engine, make_sessionmaker
from tests.support.browser import start_browser
from tests.support.polling import wait_for
from tests.support.processes import ARTIFACTS

pytestmark = pytest.mark.e2e


@pytest.fixture
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


def shot(browser, name):
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / f"dashboard-{name}.png"))


def log_in(browser, deployment):
    operator = deployment.token("ops", "operator")["Authorization"].split()[1]
    browser.get(f"{deployment.api_url}/ui/login")
    browser.find_element(By.NAME, "token").send_keys(operator)
    browser.find_element(By.CSS_SELECTOR, "form button").click()
    wait_for(lambda: browser.current_url.endswith("/ui/overview"), what="the overview")


def test_an_operator_finds_a_dead_job_and_replays_it_to_success(deployment, upstream, browser):
    deployment.start_api()
    deployment.start_worker(threads=2)
    upstream.script(
        "GET",
        "/crm/customers/c_broken",
        {"status": 503, "body": {"error": "maintenance"}},
        repeat_last=True,
    )
    client = deployment.token("acme")
    job_id = deployment.submit(
        type="customer_sync", entity_id="c_broken", max_attempts=2, headers=client
    )
    with deployment.http() as http:
        wait_for(
            lambda: http.get(f"/v1/jobs/{job_id}", headers=client).json()["status"] == "dead",
            timeout=30,
            what="the job to die",
        )
    upstream.reset()  # the CRM is back
    log_in(browser, deployment)

    browser.find_element(By.LINK_TEXT, "Dead letters").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "table.jobs tbody tr")
    assert len(rows) == 1 and "c_broken" in rows[0].text and "UpstreamUnavailable" in rows[0].text
    shot(browser, "1-dead-letters")

    rows[0].find_element(By.CSS_SELECTOR, "a").click()
    attempts = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "ol.timeline li")]
    assert len(attempts) == 2
    assert (
        "retry" in attempts[0]
        and "UpstreamUnavailable" in attempts[0]
        and "503 from CRM" in attempts[0]
    )
    assert "dead" in attempts[1]
    shot(browser, "2-why-it-died")

    replay_form = browser.find_element(By.CSS_SELECTOR, "form[action$='/replay']")
    replay_form.find_element(By.NAME, "reason").send_keys("CRM maintenance is over")
    replay_form.find_element(By.TAG_NAME, "button").click()
    wait_for(lambda: "Replay of" in browser.page_source, what="the new job's page")

    def succeeded() -> bool:
        browser.refresh()
        return "succeeded" in browser.find_element(By.CSS_SELECTOR, "h1 .status").text

    wait_for(succeeded, timeout=30, interval=0.5, what="the replay to succeed")
    shot(browser, "3-replay-succeeded")
    browser.find_element(By.CSS_SELECTOR, "a.lineage").click()
    assert "Replayed by" in browser.page_source
    assert "CRM maintenance is over" in browser.page_source  # the audit entry
    browser.find_element(By.LINK_TEXT, "Dead letters").click()
    assert "Nothing here." in browser.page_source


def test_an_operator_finds_a_schedule_triggers_it_and_follows_its_job(
    deployment, database_url, browser
):
    deployment.start_api()
    deployment.start_worker(threads=2)
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            hourly = schedules.create(
                session,
                schedules.NewSchedule(
                    tenant="acme",
                    name="hourly-customer-sync",
                    type="customer_sync",
                    entity_id="c_42",
                    cadence=Cadence.checked(cron=None, interval_s=3600),
                    max_attempts=4,
                ),
            )
            schedules.add_job(  # the run of the hour before, as the scheduler left it
                session,
                hourly,
                scheduled_for=hourly.next_occurrence - timedelta(hours=1),
                outcome="created",
                queue="sync",
                timeout_s=60,
            )
            schedules.create(
                session,
                schedules.NewSchedule(
                    tenant="acme",
                    name="nightly-directory",
                    type="directory_sync",
                    cadence=Cadence.checked(
                        cron="0 3 * * *", interval_s=None, timezone="Europe/Berlin", jitter_s=300
                    ),
                    max_attempts=4,
                ),
            )
    finally:
        engine.dispose()
    log_in(browser, deployment)

    browser.find_element(By.LINK_TEXT, "Schedules").click()
    rows = browser.find_elements(By.CSS_SELECTOR, "table.schedules tbody tr")
    assert [r.find_element(By.TAG_NAME, "a").text for r in rows] == [
        "nightly-directory",
        "hourly-customer-sync",
    ]
    for row in rows:
        assert re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row.find_element(By.CLASS_NAME, "next-run").text
        )
    assert rows[1].find_element(By.CSS_SELECTOR, "td.last-run a .status").text
    assert "every 3600 s" in rows[1].text and "0 3 * * *" in rows[0].text

    rows[0].find_element(By.LINK_TEXT, "nightly-directory").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "ol.next-runs li")) == 5
    shot(browser, "schedule")
    trigger = browser.find_element(By.CSS_SELECTOR, "form[action$='/trigger']")
    trigger.find_element(By.NAME, "reason").send_keys("the directory changed today")
    trigger.find_element(By.TAG_NAME, "button").click()
    wait_for(lambda: "Scheduled by" in browser.page_source, what="the triggered job's page")
    job_url = browser.current_url

    def succeeded() -> bool:
        browser.refresh()
        return "succeeded" in browser.find_element(By.CSS_SELECTOR, "h1 .status").text

    wait_for(succeeded, timeout=30, interval=0.5, what="the triggered job to succeed")
    assert "the directory changed today" in browser.page_source  # the audit entry
    browser.find_element(By.CSS_SELECTOR, "a.schedule").click()  # back to its schedule
    assert browser.find_element(By.TAG_NAME, "h1").text == "nightly-directory"
    job_id = job_url.rsplit("/", 1)[1]
    browser.find_element(By.CSS_SELECTOR, f"table.jobs a[href='/ui/jobs/{job_id}']").click()
    assert browser.current_url == job_url

    browser.find_element(By.LINK_TEXT, "Schedules").click()
    last_run = browser.find_elements(By.CSS_SELECTOR, "table.schedules td.last-run")[0]
    assert last_run.find_element(By.CSS_SELECTOR, ".status").text == "succeeded"
    shot(browser, "schedules")


def test_an_operator_reads_the_overview_sees_what_workers_run_and_tries_the_api(
    deployment, upstream, browser
):
    # The slow job must still run while a loaded machine serves every page of the test.
    deployment.env["COURIER_UPSTREAM_TIMEOUT_S"] = "60"
    deployment.start_api()
    deployment.start_worker(threads=2)
    client = deployment.token("acme")
    done = deployment.submit(type="customer_sync", entity_id="c_quick", headers=client)
    upstream.script(  # the CRM answers this one slowly: it is running while we look
        "GET",
        "/crm/customers/c_slow",
        {"status": 200, "body": {"id": "c_slow"}, "delay_s": 30},
    )
    with deployment.http() as http:
        wait_for(
            lambda: http.get(f"/v1/jobs/{done}", headers=client).json()["status"] == "succeeded",
            timeout=30,
            what="the quick job to succeed",
        )
        slow = deployment.submit(type="customer_sync", entity_id="c_slow", headers=client)
        wait_for(
            lambda: http.get(f"/v1/jobs/{slow}", headers=client).json()["status"] == "running",
            timeout=30,
            what="the slow job to start",
        )
    log_in(browser, deployment)

    assert browser.find_element(By.TAG_NAME, "h1").text == "Overview"
    succeeded = browser.find_elements(By.CSS_SELECTOR, "svg.plot .series.succeeded circle.point")
    assert [p.get_attribute("data-count") for p in succeeded] == ["1"]
    assert succeeded[0].rect["width"] > 0  # drawn, not only in the markup
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.plot polyline")) == 4
    assert "sync" in browser.find_element(By.CSS_SELECTOR, "table.queues").text
    shot(browser, "overview")

    browser.find_element(By.LINK_TEXT, "Workers").click()
    [process] = browser.find_elements(By.CSS_SELECTOR, "h3.process")
    host, pid = process.text.split()[0].rsplit(":", 1)
    assert pid.isdigit() and host in browser.find_element(By.CSS_SELECTOR, "section.host h2").text
    [row] = browser.find_elements(By.CSS_SELECTOR, "table.running tbody tr")
    assert "customer_sync" in row.text and "acme" in row.text and "#1" in row.text
    shot(browser, "workers")
    row.find_element(By.CSS_SELECTOR, "a").click()
    assert browser.current_url.endswith(f"/ui/jobs/{slow}")

    browser.get(f"{deployment.api_url}/docs")
    wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"),
        timeout=20,
        what="the explorer to list the operations",
    )
    listed = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/dead-letters", "/v1/stats"} <= listed
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "api-explorer.png"))

    # Authorize with an operator's token, then try GET /v1/stats with it.
    operator = deployment.token("ops", "operator")["Authorization"].split()[1]
    browser.find_element(By.CSS_SELECTOR, ".auth-wrapper button.authorize").click()
    browser.find_element(By.CSS_SELECTOR, ".modal-ux input").send_keys(operator)
    browser.find_element(By.CSS_SELECTOR, ".modal-ux .auth-btn-wrapper button.authorize").click()
    browser.find_element(By.CSS_SELECTOR, ".modal-ux button.btn-done").click()
    [stats] = [
        block
        for block in browser.find_elements(By.CSS_SELECTOR, ".opblock-get")
        if block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").text == "/v1/stats"
    ]
    stats.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait_for(lambda: stats.find_elements(By.CSS_SELECTOR, ".try-out__btn"), what="Try it out")
    stats.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    stats.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = ".live-responses-table tbody td.response-col_status"
    wait_for(lambda: stats.find_elements(By.CSS_SELECTOR, status), what="the call's answer")
    assert stats.find_element(By.CSS_SELECTOR, status).text.strip() == "200"
    assert '"dead_letters"' in stats.find_element(By.CSS_SELECTOR, ".live-responses-table").text
    # Nothing the explorer needs was refused by the page's policy or failed to load.
    refused = [
        e
        for e in browser.get_log("browser")
        if "Content Security Policy" in e["message"] or "/docs" in e["message"]
    ]
    assert not refused, refused
