from __future__ import annotations

import pytest

from courier.settings import DEV_BROKER_URL, DEV_DATABASE_URL, Settings, SettingsError


def test_defaults_match_the_contract():
    s = Settings.from_env({})
    assert s.database_url == "postgresql+psycopg://postgres@127.0.0.1:5432/courier"
    assert s.broker_url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert (s.max_attempts, s.min_backoff_ms, s.max_backoff_ms) == (4, 30_000, 300_000)
    assert (s.job_timeout_s, s.upstream_timeout_s, s.log_format) == (600, 10.0, "json")


def test_dev_mode_defaults_to_sqlite_and_the_memory_broker():
    s = Settings.from_env({}, dev=True)
    assert (s.database_url, s.broker_url, s.log_format) == (
        DEV_DATABASE_URL,
        DEV_BROKER_URL,
        "console",
    )
    assert s.uses_memory_broker


def test_environment_overrides_defaults():
    s = Settings.from_env({"COURIER_MAX_ATTEMPTS": "7", "COURIER_UPSTREAM_TIMEOUT_S": "2.5"})
    assert s.max_attempts == 7
    assert s.upstream_timeout_s == 2.5


def test_hung_attempts_get_a_minute_past_their_time_limit_unless_told_otherwise():
    assert Settings.from_env({}).stuck_grace_s == 60
    assert Settings.from_env({"COURIER_STUCK_GRACE_S": "2.5"}).stuck_grace_s == 2.5


def test_by_default_a_lost_message_is_published_again_within_two_minutes():
    # A message lost as soon as it was published: settle time, one round, the settle time for
    # the surplus to be seen again, statistics delay.
    s = Settings()
    assert 2 * s.reconcile_settle_s + s.reconcile_interval_s + 5 < 120


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COURIER_MAX_ATTEMPTS", "many"),
        ("COURIER_MAX_ATTEMPTS", "0"),
        ("COURIER_MAX_ATTEMPTS", "21"),
        ("COURIER_MIN_BACKOFF_MS", "-5"),
        ("COURIER_UPSTREAM_TIMEOUT_S", "0"),
        ("COURIER_DRAIN_TIMEOUT_S", "0"),
        ("COURIER_STUCK_GRACE_S", "0"),
        ("COURIER_STUCK_GRACE_S", "a minute"),
        ("COURIER_RECONCILE_INTERVAL_S", "0"),
        ("COURIER_RECONCILE_SETTLE_S", "soon"),
        ("COURIER_LOG_FORMAT", "xml"),
        ("COURIER_DATABASE_URL", "mysql://x"),
        ("COURIER_BROKER_URL", "redis://x"),
        ("COURIER_CRM_URL", "ftp://crm"),
        ("COURIER_JOB_MODULES", "billing jobs"),
        ("COURIER_JOB_MODULES", "acme.jobs,acme..more"),
    ],
)
def test_an_invalid_value_fails_naming_the_variable(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(
    ("name", "field", "most"),
    [
        ("COURIER_TENANT_MAX_ACTIVE", "tenant_max_active", 2**31 - 1),
        ("COURIER_FAIR_SHARE", "fair_share", 2**31 - 1),
        ("COURIER_WEBHOOK_RETRY_S", "webhook_retry_s", 2_147_483),  # sent in milliseconds
        ("COURIER_MIN_BACKOFF_MS", "min_backoff_ms", 2**31 - 1),
        ("COURIER_MAX_BACKOFF_MS", "max_backoff_ms", 2**31 - 1),
        ("COURIER_JOB_TIMEOUT_S", "job_timeout_s", 2**31 - 1),
        ("COURIER_LEASE_S", "lease_s", 2**31 - 1),
        ("COURIER_WEBHOOK_CONCURRENCY", "webhook_concurrency", 1000),
        ("COURIER_CIRCUIT_FAILURES", "circuit_failures", 2**31 - 1),
        ("COURIER_CIRCUIT_PROBES", "circuit_probes", 32_767),
    ],
)
def test_a_whole_number_beyond_its_bound_fails_at_start_naming_the_variable(name, field, most):
    # The largest backoff, so that COURIER_MIN_BACKOFF_MS may take its bound too.
    env = {"COURIER_MAX_BACKOFF_MS": str(2**31 - 1)}
    assert getattr(Settings.from_env({**env, name: str(most)}), field) == most
    for too_large in (str(most + 1), "99999999999999999999"):
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({**env, name: too_large})
        assert str(raised.value) == f"{name}: must be at most {most}, got {too_large}"


def test_min_backoff_may_not_exceed_max_backoff():
    with pytest.raises(SettingsError, match="COURIER_MIN_BACKOFF_MS"):
        Settings.from_env({"COURIER_MIN_BACKOFF_MS": "5000", "COURIER_MAX_BACKOFF_MS": "1000"})


def test_an_empty_management_api_url_means_none():
    assert Settings.from_env({"COURIER_RABBITMQ_API_URL": ""}).rabbitmq_api_url is None


def test_job_modules_are_a_comma_separated_list_of_dotted_names():
    s = Settings.from_env({"COURIER_JOB_MODULES": " acme.jobs, acme.more_jobs ,"})
    assert s.job_modules == ("acme.jobs", "acme.more_jobs")
    assert Settings.from_env({}).job_modules == ()


def test_circuits_open_after_five_failures_for_thirty_seconds_and_send_three_probes():
    s = Settings.from_env({})
    assert (s.circuit_failures, s.circuit_cooldown_s, s.circuit_probes) == (5, 30.0, 3)
    told = Settings.from_env(
        {
            "COURIER_CIRCUIT_FAILURES": "2",
            "COURIER_CIRCUIT_COOLDOWN_S": "0.5",
            "COURIER_CIRCUIT_PROBES": "1",
        }
    )
    assert (told.circuit_failures, told.circuit_cooldown_s, told.circuit_probes) == (2, 0.5, 1)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("COURIER_CIRCUIT_FAILURES", "0"),
        ("COURIER_CIRCUIT_COOLDOWN_S", "-1"),
        ("COURIER_CIRCUIT_PROBES", "many"),
    ],
)
def test_a_circuit_setting_that_is_not_positive_fails_naming_it(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})
