"""The worker's prepared transitions stay within what psycopg parses once and caches."""

from __future__ import annotations

import re

import pytest
from psycopg import _queries
from sqlalchemy.dialects import postgresql

from store import transitions
from store.sql import Chain, _Prepared

CHAINS = {name: v for name, v in vars(transitions).items() if isinstance(v, Chain)}


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_a_prepared_transition_passes_only_the_parameters_its_sql_names(name):
    prepared = _Prepared(CHAINS[name]._combined, postgresql.psycopg.dialect())
    named = set(re.findall(r"%\(([^)]+)\)s", prepared.sql))
    assert set(prepared.defaults) <= named
    assert set(prepared.binds) <= named
    # psycopg parses the SQL anew at every execution past these (its query cache's limits).
    assert len(named) <= _queries.MAX_CACHED_STATEMENT_PARAMS
    assert len(prepared.sql.encode()) <= _queries.MAX_CACHED_STATEMENT_LENGTH
