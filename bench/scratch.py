"""Scratch databases for the stand-alone benchmarks, made empty and dropped afterwards."""

from __future__ import annotations

import psycopg
from psycopg import sql

from bench.stack import PG_ADMIN


def recreate_database(name: str) -> None:
    """Drop the database `name` if it exists and create it empty."""
    drop_database(name)
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(name: str) -> None:
    """Drop the database `name`, disconnecting whoever is still on it."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
