"""`courier schedule`, as an operator meets it: real commands against the real API and workers."""

from __future__ import annotations

import pytest

from tests.support.polling import wait_for

pytestmark = pytest.mark.e2e

RECORDS = ("--tenant", "acme", "--type", "customer_sync", "--entity-id", "c_1")


def last_line(done) -> str:
    return done.stdout.strip().splitlines()[-1]


def audit_log(deployment) -> list[tuple[str, str, str | None]]:
    with deployment.sql() as conn:
        return conn.execute(
            "SELECT action, actor, reason FROM audit_log"
            " WHERE action LIKE 'schedule.%%' ORDER BY id"
        ).fetchall()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("--cron", "61 * * * *"), "--cron"),
        (("--cron", "0 3 * * *", "--timezone", "Mars/Olympus"), "--timezone"),
        (("--interval-s", "0"), "--interval-s"),
        (("--cron", "0 3 * * *", "--interval-s", "60"), "--cron"),
        ((), "--cron"),  # neither
        (("--cron", "0 3 * * *", "--jitter-s", "3601"), "--jitter-s"),
        (("--cron", "0 3 * * *", "--priority", "10"), "--priority"),
        (("--cron", "0 3 * * *", "--payload", "{nope"), "--payload"),
        (("--cron", "0 3 * * *", "--payload", '{"colour": "red"}'), "--payload"),
        (("--cron", "0 3 * * *", "--name", "has spaces"), "--name"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_option(deployment, args, named):
    done = deployment.run("schedule", "create", "--name", "nightly", *RECORDS, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in done.stderr
    with deployment.sql() as conn:
        assert conn.execute("SELECT count(*) FROM schedules").fetchone()[0] == 0


def test_an_unknown_job_type_exits_2(deployment):
    done = deployment.run(
        "schedule", "create", "--tenant", "acme", "--name", "n", "--type", "nope",
        "--interval-s", "60",
    )  # fmt: skip
    assert done.returncode == 2 and "--type" in done.stderr and "customer_sync" in done.stderr


def test_create_list_pause_resume_trigger_and_delete_a_schedule(deployment):
    deployment.start_api()
    headers = deployment.token("acme")
    created = deployment.run(
        "schedule", "create", "--name", "nightly-records", *RECORDS,
        "--cron", "0 3 * * *", "--timezone", "Europe/Berlin", "--jitter-s", "60",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    schedule_id = last_line(created)
    again = deployment.run(
        "schedule", "create", "--name", "nightly-records", *RECORDS, "--interval-s", "60"
    )
    assert again.returncode == 1 and "nightly-records" in again.stderr
    other = deployment.run(
        "schedule", "create", "--name", "other", "--tenant", "globex",
        "--type", "directory_sync", "--interval-s", "900", "--paused",
    )  # fmt: skip
    assert other.returncode == 0, other.stderr

    listed = deployment.run("schedule", "list", "--tenant", "acme")
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if schedule_id in line]
    assert "nightly-records" in row and "0 3 * * * Europe/Berlin" in row and "active" in row
    assert "other" not in listed.stdout
    only_paused = deployment.run("schedule", "list", "--paused").stdout
    assert "other" in only_paused and schedule_id not in only_paused
    assert "other" not in deployment.run("schedule", "list", "--active").stdout

    with deployment.http() as http:
        shown = http.get(f"/v1/schedules/{schedule_id}", headers=headers).json()
        assert shown["tenant"] == "acme" and len(shown["next_runs"]) == 5

        paused = deployment.run("schedule", "pause", schedule_id, "--reason", "CRM upgrade")
        assert paused.returncode == 0, paused.stderr
        assert http.get(f"/v1/schedules/{schedule_id}", headers=headers).json()["next_runs"] == []
        resumed = deployment.run("schedule", "resume", schedule_id)
        assert resumed.returncode == 0 and "next run" in resumed.stdout
        assert (
            len(http.get(f"/v1/schedules/{schedule_id}", headers=headers).json()["next_runs"]) == 5
        )

        # No worker yet: the triggered job stays active, and a second trigger meets it.
        triggered = deployment.run("schedule", "trigger", schedule_id, "--reason", "now")
        assert triggered.returncode == 0, triggered.stderr
        job_id = last_line(triggered)
        busy = deployment.run("schedule", "trigger", schedule_id)
        assert busy.returncode == 1 and job_id in busy.stderr
        deployment.start_worker()
        wait_for(
            lambda: http.get(f"/v1/jobs/{job_id}", headers=headers).json()["status"] == "succeeded",
            timeout=60,
            what="the triggered job to succeed",
        )
        assert str(deployment.job(job_id)["schedule_id"]) == schedule_id
        last_run = http.get(f"/v1/schedules/{schedule_id}", headers=headers).json()["last_run"]
        assert last_run["job_id"] == job_id and last_run["status"] == "succeeded"

        deleted = deployment.run("schedule", "delete", schedule_id)
        assert deleted.returncode == 0, deleted.stderr
        assert http.get(f"/v1/schedules/{schedule_id}", headers=headers).status_code == 404
        assert str(deployment.job(job_id)["schedule_id"]) == schedule_id

    log = audit_log(deployment)
    assert [action for action, _, _ in log] == [
        "schedule.create",
        "schedule.create",
        "schedule.pause",
        "schedule.resume",
        "schedule.trigger",
        "schedule.delete",
    ]
    assert all(actor.startswith("cli:") for _, actor, _ in log)
    assert log[2][2] == "CRM upgrade" and log[4][2] == "now"


def test_a_missing_schedule_exits_1_and_a_malformed_id_exits_2(deployment):
    for command in ("pause", "resume", "trigger", "delete"):
        missing = deployment.run("schedule", command, "01900000-0000-7000-8000-000000000000")
        assert missing.returncode == 1, (command, missing.stderr)
        assert len(missing.stderr.strip().splitlines()) == 1 and "no schedule" in missing.stderr
        malformed = deployment.run("schedule", command, "nope")
        assert malformed.returncode == 2, (command, malformed.stderr)


def test_every_schedule_command_has_help(deployment):
    for command in ("list", "create", "pause", "resume", "trigger", "delete"):
        done = deployment.run("schedule", command, "--help")
        assert done.returncode == 0 and "Usage: courier schedule" in done.stdout, command
