"""SQL constructs that PostgreSQL and SQLite spell differently, so that statements are written once.

Every transition is one Core statement; these let the same statement run on both engines:
the database's clock (`now`, `now_plus`, `millis_since`), a batch of rows passed as one
parameter (`Batch`), and a fixed list of values rendered into the SQL (`one_of`).
"""

from __future__ import annotations

import json
import uuid
from collections import namedtuple
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ColumnElement,
    Connection,
    String,
    TableClause,
    and_,
    bindparam,
    column,
    literal_column,
    select,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import StatementError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ColumnClause, FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import TypeDecorator, TypeEngine

from store.types import UtcDateTime

# SQLAlchemy's SQLite DATETIME format (microseconds, six digits), so that the database's
# timestamps compare as strings with the ones SQLAlchemy writes.
_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f000', 'now'{})"


class now(FunctionElement[Any]):
    """The database's current time: leases, due times and ages are decided by one clock."""

    type = UtcDateTime()
    inherit_cache = True


class now_plus(FunctionElement[Any]):
    """The database's current time plus `seconds` (a number or numeric expression)."""

    type = UtcDateTime()
    inherit_cache = True


class millis_since(FunctionElement[Any]):
    """Whole milliseconds from a timestamp column to the database's current time."""

    inherit_cache = True


@compiles(now, "postgresql")
def _now_pg(element: now, compiler: SQLCompiler, **kw: Any) -> str:
    return "now()"


@compiles(now, "sqlite")
def _now_sqlite(element: now, compiler: SQLCompiler, **kw: Any) -> str:
    return _SQLITE_NOW.format("")


@compiles(now_plus, "postgresql")
def _now_plus_pg(element: now_plus, compiler: SQLCompiler, **kw: Any) -> str:
    (seconds,) = element.clauses
    return f"(now() + ({compiler.process(seconds, **kw)}) * interval '1 second')"


@compiles(now_plus, "sqlite")
def _now_plus_sqlite(element: now_plus, compiler: SQLCompiler, **kw: Any) -> str:
    (seconds,) = element.clauses
    return _SQLITE_NOW.format(f", printf('%+.6f seconds', {compiler.process(seconds, **kw)})")


@compiles(millis_since, "postgresql")
def _millis_since_pg(element: millis_since, compiler: SQLCompiler, **kw: Any) -> str:
    (since,) = element.clauses
    return f"CAST(extract(epoch FROM now() - {compiler.process(since, **kw)}) * 1000 AS BIGINT)"


@compiles(millis_since, "sqlite")
def _millis_since_sqlite(element: millis_since, compiler: SQLCompiler, **kw: Any) -> str:
    (since,) = element.clauses
    return (
        # Rounded, as PostgreSQL's cast is: julianday's doubles are some 50 µs off.
        f"CAST(round((julianday('now') - julianday({compiler.process(since, **kw)}))"
        " * 86400000) AS INTEGER)"
    )


def one_of(expression: ColumnElement[Any], values: Iterable[str]) -> ColumnElement[bool]:
    """`expression IN ('a', 'b')` with the values in the SQL text, not parameters.

    A fixed list in the text keeps the statement the same for every call, and lets the
    planner match partial indexes whose predicate names the same values.
    """
    return expression.in_([literal_column(f"'{v}'") for v in values])


class _Rows(TypeDecorator[Sequence[Sequence[Any]]]):
    """A batch's rows as one JSON parameter: lists of values, column by column."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: Sequence[Sequence[Any]] | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        hex_ids = dialect.name == "sqlite"  # SQLAlchemy stores UUIDs there as 32 hex digits
        return json.dumps(
            [list(row) for row in value],
            default=lambda v: _json_value(v, hex_ids),
            separators=(",", ":"),
        )


def _json_value(value: Any, hex_ids: bool) -> Any:
    if isinstance(value, uuid.UUID):
        return value.hex if hex_ids else str(value)
    raise TypeError(f"{type(value).__name__} cannot be part of a batch")


class Batch(TableClause):
    """A batch of rows given as one bind parameter, usable as a table in any statement.

    `Batch("b", column("id", Uuid), column("number", Integer))` is a table `b(id, number)`
    whose rows are the list bound to parameter `b` at execution: `{"b": [(id, n), ...]}`.
    One statement then serves one row or a thousand, with the same SQL text every time.
    Values are JSON: UUIDs, numbers, strings, None and JSON objects.
    """

    inherit_cache = True

    def __init__(self, name: str, *columns: ColumnClause[Any]) -> None:
        super().__init__(name, *columns)
        self.rows = bindparam(name, type_=_Rows())

    def has(self, key: ColumnElement[Any], column: str = "id") -> ColumnElement[bool]:
        """Join on `key = <batch>.column`, with the batch's keys also given to `key`'s index.

        Joined to the batch alone, a plan made on a fresh table may scan the table once per
        batch row; `key = ANY(ARRAY(SELECT column FROM batch))` is answered by the index.
        """
        return and_(_InBatch(key, self, column), key == self.c[column])


class _InBatch(ColumnElement[bool]):
    inherit_cache = True
    type = Boolean()
    _traverse_internals = [
        ("lookup", InternalTraversal.dp_clauseelement),
        ("batch", InternalTraversal.dp_clauseelement),
        ("position", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, key: ColumnElement[Any], batch: Batch, column: str) -> None:
        self.lookup = key
        self.batch = batch
        self.position = [c.name for c in batch.columns].index(column)
        self.column_type = batch.columns[column].type


def _pg_value(i: int, type_: TypeEngine[Any], compiler: SQLCompiler) -> str:
    if _is_json(type_):
        return f"nullif(r->{i}, 'null')"
    return f"CAST(r->>{i} AS {compiler.dialect.type_compiler_instance.process(type_)})"


def _pg_rows(batch: Batch, compiler: SQLCompiler, **kw: Any) -> str:
    return f"jsonb_array_elements(CAST({compiler.process(batch.rows, **kw)} AS JSONB)) AS r"


@compiles(_InBatch, "postgresql")
def _in_batch_pg(element: _InBatch, compiler: SQLCompiler, **kw: Any) -> str:
    value = _pg_value(element.position, element.column_type, compiler)
    rows = _pg_rows(element.batch, compiler, **kw)
    return f"{compiler.process(element.lookup, **kw)} = ANY(ARRAY(SELECT {value} FROM {rows}))"


@compiles(_InBatch, "sqlite")
def _in_batch_sqlite(element: _InBatch, compiler: SQLCompiler, **kw: Any) -> str:
    rows = compiler.process(element.batch.rows, **kw)
    return (
        f"{compiler.process(element.lookup, **kw)} IN "
        f"(SELECT json_extract(value, '$[{element.position}]') FROM json_each({rows}))"
    )


@compiles(Batch, "postgresql")
def _batch_pg(element: Batch, compiler: SQLCompiler, asfrom: bool = False, **kw: Any) -> str:
    name = compiler.preparer.quote(element.name)
    if not asfrom:
        return name
    values = ", ".join(
        f"{_pg_value(i, c.type, compiler)} AS {compiler.preparer.quote(c.name)}"
        for i, c in enumerate(element.columns)
    )
    # Materialized: a plan that reads the batch once per job it looks up rereads stored
    # rows instead of parsing the JSON again.
    return f"(SELECT {values} FROM {_pg_rows(element, compiler, **kw)}) AS {name}"


@compiles(Batch, "sqlite")
def _batch_sqlite(element: Batch, compiler: SQLCompiler, asfrom: bool = False, **kw: Any) -> str:
    name = compiler.preparer.quote(element.name)
    if not asfrom:
        return name
    values = ", ".join(
        f"json_extract(value, '$[{i}]') AS {compiler.preparer.quote(c.name)}"
        for i, c in enumerate(element.columns)
    )
    rows = compiler.process(element.rows, **kw)
    return f"(SELECT {values} FROM json_each({rows})) AS {name}"


def _is_json(type_: TypeEngine[Any]) -> bool:
    return isinstance(type_, JSON)


class Chain:
    """A transition over several tables: a statement whose RETURNING rows feed the next ones.

    `first` is a DML statement with RETURNING; each of `then(done)` builds a further
    statement from a table `done` holding the `carry` columns of the rows `first` returned.
    PostgreSQL runs them all as one statement (a data-modifying WITH, one round trip);
    SQLite, which has none, runs `first` and then each further one over its rows as a Batch.
    Either way every statement is written once. `notify(done)`, a condition true of every
    row, is evaluated once for its side effect on PostgreSQL (`store.job_changes.announcing`);
    SQLite, which has no notifications, leaves it out.
    """

    def __init__(
        self,
        first: Any,
        *then: Callable[[Any], Any],
        carry: Sequence[str],
        name: str = "done",
        notify: Callable[[Any], ColumnElement[bool]] | None = None,
    ) -> None:
        returned = {c.key: c for c in first.exported_columns}
        self.first = first
        self.carry = tuple(carry)
        carried = Batch(name, *(column(n, returned[n].type) for n in carry))
        self._sequential = [build(carried) for build in then]
        self._name = name
        done = first.cte(name)
        self._combined = select(*done.c).add_cte(
            *(build(done).cte(f"{name}_then{i or ''}") for i, build in enumerate(then))
        )
        if notify is not None:
            self._combined = self._combined.where(notify(done))
        self._prepared: _Prepared | None = None

    def run(self, db: Connection, params: dict[str, Any]) -> Sequence[Any]:
        """Run every statement in the caller's transaction; returns the rows `first` returned
        (with the columns as attributes)."""
        if db.dialect.name == "postgresql":
            if self._prepared is None:
                self._prepared = _Prepared(self._combined, db.dialect)
            return self._prepared.run(db, params)
        rows = db.execute(self.first, params).all()
        if rows:
            carried = [tuple(getattr(row, n) for n in self.carry) for row in rows]
            for statement in self._sequential:
                db.execute(statement, {**params, self._name: carried})
        return rows


class _Prepared:
    """A SELECT compiled once for one dialect and run as driver SQL.

    For the statements a worker runs for every batch: SQLAlchemy's per-execution work
    (cache key, parameter and result set-up) cost more than the round trip. The driver SQL
    still runs through the connection, so errors cross the store's one boundary.
    """

    def __init__(self, statement: Any, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = compiled.string
        # Only the binds its SQL names: the compilation also lists some it did not render,
        # and psycopg parses a statement again at every execution when it is given more
        # than 50 parameters.
        binds = {n: b for n, b in compiled.binds.items() if f"%({n})s" in self.sql}
        # The statement's own constants (literals bound as parameters).
        self.defaults = {n: b.effective_value for n, b in binds.items() if not b.required}
        self.binds = {
            name: processor
            for name, bind in binds.items()
            if (processor := bind.type.bind_processor(dialect)) is not None
        }
        columns = list(statement.selected_columns)
        self.results = [c.type.result_processor(dialect, None) for c in columns]
        self.row = namedtuple("Row", [c.key for c in columns])  # type: ignore[misc]

    def run(self, db: Connection, params: dict[str, Any]) -> list[Any]:
        values = {**self.defaults, **params}
        for name, processor in self.binds.items():
            try:
                values[name] = processor(values[name])
            except Exception as e:  # a value no column can take, as SQLAlchemy reports it
                raise StatementError(str(e), self.sql, None, e) from e
        rows = db.exec_driver_sql(self.sql, values)
        return [
            self.row(*(v if p is None else p(v) for p, v in zip(self.results, r, strict=True)))
            for r in rows
        ]
