"""The tolerant casts of staging (``staging.try_date``/``try_int``/``try_bool``, migration 0044):
the value of the plain cast, NULL wherever the cast raises, without a subtransaction per call."""
from __future__ import annotations

import pytest

# the PL/pgSQL originals (migration 0002): the cast, and NULL on any error
_ORIGINAL = {
    "date": "date", "int": "int", "bool": "boolean",
}
EDGES = [None, "", " ", "x", "null", "[]", "1 2",
         # dates
         "2020-02-29", "2021-02-29", "2020-02-30", "2020-13-01", " 2020-01-01 ", "20200101", "1/2/2020",
         "2020-01-01T10:00:00", "2020-01-01 25:00", "0000-01-01", "0001-01-01 BC", "5874897-12-31",
         "5874898-01-01", "99999-01-01", "epoch", "infinity", "-infinity", "allballs",
         # integers
         "0", "1", "2", "-7", " 12 ", "+3", "2147483647", "2147483648", "-2147483648", "-2147483649", "1e3",
         "1.5", "0x10", "1_000", "١٢",
         # booleans
         "true", "false", "TRUE", "t", "f", "yes", "no", "y", " y ", "on", "off", "of", "o", "1 ", "tru"]


@pytest.mark.parametrize("kind", sorted(_ORIGINAL))
def test_try_cast_equals_the_cast_or_null_on_every_edge_value(db, kind):
    typ = _ORIGINAL[kind]
    db.execute(f"""CREATE FUNCTION pg_temp.original(v text) RETURNS {typ} LANGUAGE plpgsql AS $$
                   BEGIN RETURN v::{typ}; EXCEPTION WHEN others THEN RETURN NULL; END $$""")
    rows = db.execute(f"""SELECT v, pg_temp.original(v)::text, staging.try_{kind}(v)::text
                            FROM unnest(%s::text[]) v""", (EDGES,)).fetchall()
    assert [(v, new) for v, _, new in rows] == [(v, old) for v, old, _ in rows]
    # the edge list does exercise both outcomes
    assert any(old is None for v, old, _new in rows if v is not None)
    assert any(old is not None for _v, old, _new in rows)


def test_try_casts_are_inlined_into_the_calling_statement(db):
    """No function call (and so no subtransaction) per row: the planner inlines the cast."""
    for kind in ("date", "int", "bool"):
        plan = "\n".join(r[0] for r in db.execute(
            f"EXPLAIN VERBOSE SELECT staging.try_{kind}(v) FROM (VALUES ('1'), ('x')) t(v)"))
        assert "try_" not in plan and "pg_input_is_valid" in plan, plan
