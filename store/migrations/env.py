"""Alembic environment: migrates the connection or URL that store.migrate hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from store import urls
from store.models import Base

config = context.config
connection = config.attributes.get("connection")


def run(conn: Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=Base.metadata,
        render_as_batch=conn.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    run(connection)
else:
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("no database to migrate: pass a connection or set sqlalchemy.url")
    engine = create_engine(urls.engine_url(url))
    with engine.connect() as conn:
        run(conn)
    engine.dispose()
