"""Token expiry and last use: an expired token is nobody, and use is recorded cheaply."""

from __future__ import annotations

import pytest
from sqlalchemy import event, select, update

from store import tokens
from store.db import make_sessionmaker
from store.models import ApiToken
from store.sql import now_plus
from tests.support.stack import embedded_client

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgresql", "sqlite"])
def any_engine(request):
    """The engine of each store: PostgreSQL, and SQLite as `courier dev` runs it."""
    return request.getfixturevalue("engine" if request.param == "postgresql" else "sqlite_engine")


def make_token(engine, **options):
    with make_sessionmaker(engine).begin() as session:
        return tokens.create(session, tenant="acme", **options)


def set_column(engine, token, **values):
    with engine.begin() as db:
        db.execute(
            update(ApiToken).where(ApiToken.token_hash == tokens.digest(token)).values(**values)
        )


def column(engine, token, name):
    with engine.connect() as db:
        where = ApiToken.token_hash == tokens.digest(token)
        return db.execute(select(getattr(ApiToken, name)).where(where)).scalar_one()


def authenticate(engine, token):
    with engine.begin() as db:
        return tokens.authenticate(db, token)


def test_a_token_expires_by_the_database_clock(any_engine):
    token = make_token(any_engine, expires_in_s=90 * 86400)
    with any_engine.connect() as db:
        left = db.execute(
            select(
                ApiToken.expires_at > now_plus(89 * 86400),
                ApiToken.expires_at < now_plus(91 * 86400),
            )
        ).one()
    assert all(left)
    assert authenticate(any_engine, token) is not None
    set_column(any_engine, token, expires_at=now_plus(-1))
    assert authenticate(any_engine, token) is None


def test_an_expired_token_gets_401(stack):
    token = make_token(stack.engine, expires_in_s=3600)
    headers = {"Authorization": f"Bearer {token}"}
    assert stack.client.simulate_get("/v1/jobs", headers=headers).status_code == 200
    set_column(stack.engine, token, expires_at=now_plus(-1))
    refused = stack.client.simulate_get("/v1/jobs", headers=headers)
    assert refused.status_code == 401 and "expired" in refused.json["description"]


def test_a_token_cannot_be_made_already_expired(any_engine):
    with pytest.raises(ValueError, match="future"):
        make_token(any_engine, expires_in_s=0)


def test_last_use_is_recorded_at_most_once_a_minute(any_engine):
    token = make_token(any_engine)
    assert column(any_engine, token, "last_used_at") is None
    writes = []

    @event.listens_for(any_engine, "before_cursor_execute")
    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE API_TOKENS"):
            writes.append(statement)

    for _ in range(10):
        assert authenticate(any_engine, token) is not None
    first_use = column(any_engine, token, "last_used_at")
    assert first_use is not None and len(writes) == 1
    event.remove(any_engine, "before_cursor_execute", count)
    set_column(any_engine, token, last_used_at=now_plus(-tokens.LAST_USE_RESOLUTION_S - 1))
    authenticate(any_engine, token)
    assert column(any_engine, token, "last_used_at") >= first_use


def test_the_api_records_last_use(stack, sqlite_engine):
    embedded = embedded_client(sqlite_engine)
    for engine, client in ((stack.engine, stack.client), (sqlite_engine, embedded)):
        token = make_token(engine)
        headers = {"Authorization": f"Bearer {token}"}
        assert client.simulate_get("/v1/jobs", headers=headers).status_code == 200
        assert column(engine, token, "last_used_at") is not None, engine.dialect.name
