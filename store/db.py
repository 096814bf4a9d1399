"""Engines and sessions for PostgreSQL (psycopg 3) and SQLite."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DataError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from store import errors, urls

#: Seconds to wait for one host to answer, unless the URL says (`connect_timeout=`). libpq
#: tries the hosts of a multi-host URL in turn, each with this timeout: a dead host that
#: drops packets, instead of refusing, costs this much per new connection.
CONNECT_TIMEOUT_S = 5


def make_engine(
    url: str, *, pool_size: int = 10, pg_settings: dict[str, str] | None = None
) -> Engine:
    """An engine with settings that suit many short transactions from many threads.

    `url` may list several PostgreSQL hosts the way libpq does (`store.urls`); each new
    connection goes to the first that takes writes. `pg_settings` are PostgreSQL session
    settings for every connection of the engine.

    Errors never carry the values of a statement: payloads hold customer data, and an
    error's text ends up in logs. SQLAlchemy leaves the parameters out (`hide_parameters`);
    `_as_store_error` cuts PostgreSQL's message to its first line.

    No pre-ping: it costs a round trip per transaction. After a database restart the first
    use of a stale connection fails (the API answers 503, the worker retries its write) and
    SQLAlchemy then discards the whole pool. After a failover the same happens, and the new
    connections find the promoted server.
    """
    url = urls.engine_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            isolation_level=None,
            hide_parameters=True,
        )
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
    else:
        engine = _postgresql_engine(url, pool_size, pg_settings)
    event.listen(engine, "handle_error", _as_store_error, retval=True)
    return engine


#: The server ends a session whose client stopped answering (its host cut off from the
#: network) within this long, rolling its transaction back: TCP keepalives when the session
#: is idle, `tcp_user_timeout` when a reply of the server's was not acknowledged yet. Without
#: them a transaction open at the cut kept its rows locked for hours (the kernel's
#: defaults), and the reaper, which skips locked rows, from retrying the jobs in it.
SILENT_CLIENT_S = 16
SERVER_KEEPALIVES = {
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": str(SILENT_CLIENT_S * 1000),
}


def _postgresql_engine(url: str, pool_size: int, pg_settings: dict[str, str] | None) -> Engine:
    # connect_args override the URL's parameters: only defaults go there, and the URL's
    # own `?options=` is appended to Courier's.
    connect_args: dict[str, Any] = {
        "options": _options(url, {**SERVER_KEEPALIVES, **(pg_settings or {})}),
    }
    if "connect_timeout" not in urls.parsed(url).query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        hide_parameters=True,
        connect_args=connect_args,
    )


def _options(url: str, settings: dict[str, str]) -> str:
    # The URL's own `?options=` comes last, so what an operator set there wins.
    given = urls.parsed(url).query.get("options")
    given = given[-1] if isinstance(given, tuple) else given
    return " ".join(part for part in (_as_options(settings), given) if part)


def _as_options(settings: dict[str, str]) -> str:
    return " ".join(f"-c {name}={value}" for name, value in settings.items())


#: SQLSTATEs of a server that answers but refuses every write for now: one that became
#: read-only (a standby after a failover, `default_transaction_read_only`), and a role
#: without the privileges it needs. Neither is a bug of a statement; both may be fixed
#: while Courier runs.
_READ_ONLY = "25006"
_WRITES_REFUSED = {_READ_ONLY, "42501"}


def _as_store_error(context: ExceptionContext) -> Exception | None:
    """The one boundary where driver errors become store errors.

    An unreachable or restarting database (or one that asks to try again, as after a
    deadlock, or refuses writes for now, as a read-only one) is DatabaseUnavailable; a
    refused value is InvalidValue. Anything else, a bug in a statement, stays SQLAlchemy's
    error. SQLAlchemy has already invalidated a lost connection when this runs.

    Values stay out of every message: PostgreSQL's DETAIL and CONTEXT lines quote rows and
    keys ("Failing row contains (...)"), so only the primary message is kept, and a refused
    value is named by its error class alone (the primary message quotes the value itself).
    """
    _keep_primary_message(context)
    error = context.sqlalchemy_exception
    sqlstate = getattr(context.original_exception, "sqlstate", None)
    if sqlstate == _READ_ONLY:
        # The session belongs to a server that no longer takes writes, and keeps its
        # read-only default: only a new connection can reach the (new) primary.
        context.is_disconnect = True
    if context.is_disconnect or isinstance(error, OperationalError) or sqlstate in _WRITES_REFUSED:
        cause = context.original_exception
        unavailable = errors.DatabaseUnavailable(f"database unavailable: {cause}".strip())
        unavailable.__cause__ = cause
        return unavailable
    if isinstance(error, DataError):
        refusal = type(context.original_exception).__name__
        invalid = errors.InvalidValue(f"the database refused a value ({refusal})")
        invalid.__cause__ = context.original_exception
        return invalid
    return None


def _keep_primary_message(context: ExceptionContext) -> None:
    # psycopg's errors keep every field in `diag`; only their text is shortened, in the
    # driver's error and in SQLAlchemy's, which copied it already.
    original = context.original_exception
    primary = getattr(getattr(original, "diag", None), "message_primary", None)
    if not primary:
        return
    full = str(original)
    original.args = (primary,)
    wrapped = context.sqlalchemy_exception
    if wrapped is not None and wrapped.args:
        wrapped.args = (str(wrapped.args[0]).replace(full, primary), *wrapped.args[1:])


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (responses are built after it)."""
    return sessionmaker(engine, expire_on_commit=False)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a worker thread writes; foreign keys are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    # A deferred transaction that later writes fails at once with "database is locked" when
    # another thread writes; taking the write lock up front makes it wait its turn instead.
    connection.exec_driver_sql("BEGIN IMMEDIATE")
