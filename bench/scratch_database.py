"""A scratch PostgreSQL database of a benchmark's own on the local server, made and dropped."""

from __future__ import annotations

import psycopg
from psycopg import sql

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def recreate(name: str) -> None:
    """Drop the database if it exists and create it empty."""
    drop(name)
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop(name: str) -> None:
    """Drop the database, disconnecting whoever is still connected."""
    with psycopg.connect(ADMIN, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
