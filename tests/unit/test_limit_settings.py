"""COURIER_LIMITS: what it accepts, and the one line a bad entry stops a process with."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from courier.settings import DEFAULT_LIMITS, Settings, SettingsError
from store.limits import Limit


def limits(raw: str) -> tuple[Limit, ...]:
    return Settings.from_env({"COURIER_LIMITS": raw}).limits


def test_by_default_one_directory_sync_runs_per_entity():
    assert Settings.from_env({}).limits == DEFAULT_LIMITS == (Limit("entity", 1, "directory_sync"),)


def test_limits_of_job_types_and_of_upstreams_are_read_in_order():
    assert limits(" directory_sync:entity=1, customer_sync:tenant=20,upstream:crm=5 ,") == (
        Limit("entity", 1, type="directory_sync"),
        Limit("tenant", 20, type="customer_sync"),
        Limit("upstream", 5, upstream="crm"),
    )
    assert limits("invoice_sync:upstream=3")[0].waiting_for == "upstream"
    assert limits("upstream:billing=3")[0].waiting_for == "upstream:billing"


def test_a_job_type_whose_name_holds_colons_can_be_limited():
    assert limits("acme:contact_sync:entity=1") == (Limit("entity", 1, "acme:contact_sync"),)


def test_an_empty_value_means_no_limits():
    assert limits("") == ()


@pytest.mark.parametrize(
    "entry",
    [
        "customer_sync",
        "customer_sync=2",
        "customer_sync:tenant",
        "customer_sync:tenant=0",
        "customer_sync:tenant=-1",
        "customer_sync:tenant=two",
        "customer_sync:region=2",
        "upstream:ftp=2",
        ":tenant=2",
    ],
)
def test_a_malformed_entry_is_refused_naming_the_variable_and_the_entry(entry):
    with pytest.raises(SettingsError) as raised:
        limits(f"directory_sync:entity=1,{entry}")
    message = str(raised.value)
    assert message.startswith("COURIER_LIMITS: ") and repr(entry) in message
    assert "\n" not in message


def test_a_limit_given_twice_is_refused():
    with pytest.raises(SettingsError, match="repeats"):
        limits("customer_sync:tenant=2,customer_sync:tenant=3")


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("customer_sync:tenant=zero", "customer_sync:tenant=zero"),
        ("no_such_type:entity=1", "no_such_type"),
    ],
)
def test_the_worker_command_stops_at_start_with_one_line_naming_the_entry(value, named):
    env = {**os.environ, "COURIER_LIMITS": value}
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "courier"), "worker", "--no-restart"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "COURIER_LIMITS" in line and named in line
