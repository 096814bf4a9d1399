from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from courier.settings import Settings, SettingsError
from store import urls


def connect_args(url: str) -> dict[str, object]:
    """What SQLAlchemy's psycopg dialect hands to psycopg for `url` (no connection made)."""
    parsed = urls.parsed(url)
    args = create_engine(parsed).dialect.create_connect_args(parsed)[1]
    args.pop("context", None)
    return args


def test_a_libpq_host_list_reaches_psycopg_as_libpq_would_read_it():
    url = "postgresql+psycopg://courier:s3cr%40t@db1:5432,db2:5433/courier?connect_timeout=2"
    assert connect_args(url) == {
        "user": "courier",
        "password": "s3cr@t",
        "dbname": "courier",
        "host": "db1,db2",
        "port": "5432,5433",
        "connect_timeout": "2",
        "target_session_attrs": "read-write",
    }


def test_a_host_list_keeps_the_session_attributes_it_asks_for():
    url = "postgresql+psycopg://u@db1,db2/courier?target_session_attrs=primary"
    assert connect_args(url)["target_session_attrs"] == "primary"


def test_hosts_without_ports_and_ipv6_addresses_keep_their_places_in_the_list():
    args = connect_args("postgresql+psycopg://u@db1,[fd00::2]:5433/courier")
    assert (args["host"], args["port"]) == ("db1,fd00::2", ",5433")


def test_single_host_urls_and_sqlite_are_left_as_they_are():
    for url in (
        "postgresql+psycopg://postgres@127.0.0.1:5432/courier",
        "postgresql+psycopg://u:a,b@db1:5432/courier",  # a comma in the password is no list
        "postgresql+psycopg://u@/courier?host=db1:5432&host=db2:5432",
        "sqlite:///courier-dev.db",
    ):
        assert urls.engine_url(url) == url


def test_the_translation_survives_the_round_trip_through_an_engine_url():
    # The worker's group commit makes its engine from another engine's rendered URL.
    url = urls.parsed("postgresql+psycopg://u:pw@db1:5432,db2:5432/courier")
    again = urls.parsed(url.render_as_string(hide_password=False))
    assert again == url


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("postgresql+psycopg://u:pw@db1:5432,db2:x/c", "the port of 'db2' must be a number"),
        ("postgresql+psycopg://u:pw@db1:5432,db2:0/c", "the port of 'db2' must be a number"),
        ("postgresql+psycopg://u:pw@db1:5432,/c", "expected host or host:port"),
        ("postgresql+psycopg://u:pw@db1,db2/c?host=db3", "either before the path or with host="),
        ("postgresql+psycopg://u:pw@db1:abc/c", "not a URL SQLAlchemy can read"),
    ],
)
def test_a_malformed_database_url_stops_start_up_with_one_line_and_no_password(value, message):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"COURIER_DATABASE_URL": value})
    text = str(caught.value)
    assert text.startswith("COURIER_DATABASE_URL: ")
    assert message in text
    assert "\n" not in text
    assert "pw" not in text


def test_a_multi_host_url_is_a_valid_setting_kept_as_written():
    value = "postgresql+psycopg://u@db1:5432,db2:5432/courier?target_session_attrs=read-write"
    assert Settings.from_env({"COURIER_DATABASE_URL": value}).database_url == value
