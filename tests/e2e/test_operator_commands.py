"""`courier replay`, `courier stats`, `courier prune` and the logs, as an operator meets them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from store.db import make_engine, make_sessionmaker
from tests.support.polling import wait_for
from tests.support.records import add_dead

pytestmark = pytest.mark.e2e


def make_dead(deployment, http, headers, entities):
    for entity in entities:
        deployment.upstream.script(
            "GET", f"/crm/customers/{entity}", {"status": 503}, repeat_last=True
        )
    ids = [
        deployment.submit(type="customer_sync", entity_id=e, max_attempts=1, headers=headers)
        for e in entities
    ]
    for job_id in ids:
        wait_for(
            lambda j=job_id: http.get(f"/v1/jobs/{j}", headers=headers).json()["status"] == "dead",
            timeout=30,
            what="dead",
        )
    return ids


def test_courier_replay_dry_run_lists_and_replay_replays_with_a_progress_bar(deployment):
    deployment.start_api()
    deployment.start_worker(threads=4)
    headers = deployment.token()
    with deployment.http() as http:
        ids = make_dead(deployment, http, headers, ["c_1", "c_2", "c_3"])
        dry = deployment.run("replay", "--dry-run", "--type", "customer_sync")
        assert dry.returncode == 0, dry.stderr
        assert "would replay 3 dead job(s)" in dry.stdout and all(i in dry.stdout for i in ids)
        deployment.upstream.reset()
        done = deployment.run(
            "replay",
            "--error-type",
            "UpstreamUnavailable",
            "--limit",
            "2",
            "--reason",
            "CRM back",
            "--progress",
        )
        assert done.returncode == 0, done.stderr
        assert "replayed 2 dead job(s)" in done.stdout
        assert "2/2" in done.stderr  # the progress bar
        operator = deployment.token("ops", "operator")
        left = http.get("/v1/dead-letters", headers=operator).json()["items"]
        assert len(left) == 1
        replayed = [
            j for j in http.get("/v1/jobs", headers=operator).json()["items"] if j["replay_of"]
        ]
        assert len(replayed) == 2
        for job in replayed:
            wait_for(
                lambda j=job: (
                    http.get(f"/v1/jobs/{j['id']}", headers=headers).json()["status"] == "succeeded"
                ),
                timeout=30,
                what="replay to succeed",
            )


def test_courier_replay_names_its_jobs_or_says_all_and_a_dry_run_shows_the_first_ids(
    deployment, database_url
):
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    old = add_dead(sessions, 23) + add_dead(sessions, 2, tenant="globex")
    engine.dispose()
    newest_first = [str(i) for i in reversed(old)]
    for unnamed in (("replay",), ("replay", "--dry-run"), ("replay", "--limit", "5")):
        refused = deployment.run(*unnamed)
        assert refused.returncode == 2, (unnamed, refused.stdout, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1 and "--all" in refused.stderr
    dry = deployment.run("replay", "--all", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.strip().splitlines()
    assert lines == [*newest_first[:20], "would replay 25 dead job(s) (the first 20 above)"]
    filtered = deployment.run("replay", "--tenant", "globex", "--dry-run")
    assert filtered.stdout.strip().splitlines() == [*newest_first[:2], "would replay 2 dead job(s)"]
    with deployment.sql() as sql:
        assert sql.execute("SELECT count(*) FROM audit_log").fetchone()[0] == 0
    assert deployment.count("replay_of IS NOT NULL") == 0
    done = deployment.run("replay", "--all", "--reason", "CRM back", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "replayed 25 dead job(s), skipped 0" in done.stdout
    assert deployment.count("replay_of IS NOT NULL") == 25


def test_courier_stats_prints_counts_and_queue_depths(deployment):
    deployment.start_api()
    deployment.start_worker(threads=2)
    headers = deployment.token()
    with deployment.http() as http:
        make_dead(deployment, http, headers, ["c_9"])
    text = deployment.run("stats")
    assert text.returncode == 0, text.stderr
    assert (
        "customer_sync" in text.stdout
        and "queue sync:" in text.stdout
        and "dead letters 1" in text.stdout
    )
    as_json = json.loads(deployment.run("stats", "--json").stdout)
    assert as_json["jobs"]["dead"] == 1 and as_json["dead_letters"] == 1
    assert set(as_json["queues"]["sync"]) == {"ready", "unacked", "delayed", "dead"}


def test_courier_prune_reports_what_it_deleted(deployment):
    deployment.start_api()
    deployment.start_worker(threads=2)
    headers = deployment.token()
    job_id = deployment.submit(type="customer_sync", entity_id="c_p", headers=headers)
    with deployment.http() as http:
        wait_for(
            lambda: http.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"] == "succeeded",
            what="success",
        )
    assert (
        "would delete 0 job(s)" in deployment.run("prune", "--older-than", "1d", "--dry-run").stdout
    )
    pruned = deployment.run("prune", "--older-than", "0s")
    assert pruned.returncode == 0, pruned.stderr
    assert "deleted 1 job(s)" in pruned.stdout and "1 succeeded" in pruned.stdout
    bad = deployment.run("prune", "--older-than", "soon")
    assert bad.returncode == 2 and "30d" in bad.stderr


def test_worker_logs_are_json_lines_with_the_job_fields(deployment):
    deployment.start_api()
    worker = deployment.start_worker(threads=2)
    headers = {**deployment.token(), "X-Request-ID": "corr-log"}
    job_id = deployment.submit(type="customer_sync", entity_id="c_log", headers=headers)
    wait_for(
        lambda: '"outcome": "succeeded"' in worker.output(), timeout=30, what="the outcome line"
    )
    lines = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    [outcome] = [entry for entry in lines if entry.get("job_id") == job_id and "outcome" in entry]
    assert outcome["correlation_id"] == "corr-log" and outcome["attempt"] == 1
    assert outcome["message_id"] and outcome["duration_ms"] >= 0 and outcome["level"] == "info"


def created_secret(deployment, *args):
    done = deployment.run("token", "create", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def token_rows(deployment, *args):
    """`courier token list` as dicts, by the table's headings (columns are 2+ spaces apart)."""
    done = deployment.run("token", "list", *args)
    assert done.returncode == 0, done.stderr
    heading, *lines = done.stdout.strip().splitlines()
    names = re.split(r"\s{2,}", heading)
    assert names == ["id", "tenant", "role", "name", "created", "last used", "expires", "revoked"]
    return [dict(zip(names, re.split(r"\s{2,}", line), strict=True)) for line in lines]


def test_courier_token_list_shows_every_token_and_revoke_takes_its_id(deployment):
    deployment.start_api()
    client = created_secret(deployment, "--tenant", "acme", "--name", "billing sync")
    created_secret(deployment, "--tenant", "ops", "--role", "operator", "--expires-in", "90d")
    headers = {"Authorization": f"Bearer {client}"}
    with deployment.http() as http:
        assert http.get("/v1/jobs", headers=headers).status_code == 200
        listing = deployment.run("token", "list").stdout
        assert client not in listing  # secrets are never shown
        acme, ops = token_rows(deployment)
        assert (acme["tenant"], acme["role"], acme["name"]) == ("acme", "client", "billing sync")
        assert acme["last used"].endswith("Z") and acme["expires"] == acme["revoked"] == "-"
        assert (ops["tenant"], ops["role"], ops["name"], ops["last used"]) == (
            "ops", "operator", "-", "-"
        )  # fmt: skip
        in_90_days = datetime.now(UTC) + timedelta(days=90)
        assert ops["expires"].startswith(f"{in_90_days:%Y-%m-%d}")
        assert token_rows(deployment, "--tenant", "ops") == [ops]

        assert deployment.run("token", "revoke", acme["id"]).stdout.strip() == "revoked"
        assert http.get("/v1/jobs", headers=headers).status_code == 401
        assert token_rows(deployment, "--tenant", "acme")[0]["revoked"].endswith("Z")
        again = deployment.run("token", "revoke", acme["id"])
        assert again.returncode == 1 and "no live token" in again.stderr


def test_a_token_made_to_expire_stops_working_and_a_bad_span_exits_2(deployment):
    for bad in ("soon", "90", "0d", "-5m"):
        done = deployment.run("token", "create", "--tenant", "acme", "--expires-in", bad)
        assert done.returncode == 2, (bad, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1 and "--expires-in" in done.stderr
    deployment.start_api()
    short = created_secret(deployment, "--tenant", "acme", "--expires-in", "2s")
    headers = {"Authorization": f"Bearer {short}"}
    with deployment.http() as http:
        wait_for(
            lambda: http.get("/v1/jobs", headers=headers).status_code == 401,
            timeout=15,
            what="the token to expire",
        )
    assert token_rows(deployment, "--tenant", "acme")[0]["expires"].endswith("(expired)")
