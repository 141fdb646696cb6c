"""A school run's blocking keys go to Postgres as array literals built in Python
(``match_stage._array_literal``, issue 15): whatever a key holds comes back exactly."""
import random
from datetime import date

from b2b.reconcile import match_stage


def test_key_arrays_come_back_exactly_whatever_they_hold(db):
    rng = random.Random(11)
    alphabet = 'ab "\\{},\'NULL\té∅ ;$'
    texts = ["", "NULL", "null", '"', "\\", "\\\\\"", "{a,b}", " padded ", "a,b", "Ǆé", "O'Brien", "12A", "x" * 300]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12))) for _ in range(3000)]
    texts += [None, "x", None]
    ints = [0, 1, -1, 2026, 1231, 10 ** 9, None]
    dates = ["2016-02-29", "2019-12-31", None, "2020-01-02"]
    bools = [True, False, None, True]
    for values, typ in ((texts, "text"), (ints, "int"), (dates, "date"), (bools, "bool"), ([], "text"), ([], "int")):
        got = db.execute(f"SELECT %s::{typ}[]", (match_stage._array_literal(values, typ),)).fetchone()[0]
        expected = [v and date.fromisoformat(v) for v in values] if typ == "date" else list(values)
        assert got == expected, typ


def test_the_small_part_statements_read_the_keys_as_the_temporary_tables_hold_them(db):
    """``_as_arrays`` turns each key table into an ``unnest`` of its literals: row for row what
    ``_stage_keys`` COPYs into the table."""
    import pandas as pd

    students = pd.DataFrame({
        "incoming_id": ["1|g1", "1|g2"], "base_id": ["8861234", "8861234"], "upn": ["A123456789012", None],
        "guid": ["g1", 'g"2\\'], "forename": ["Zoë", "O'Neil"], "middle_names": [None, ""],
        "surname": ['Smith-"Jones"', "Brown"], "gender": ["F", "M"], "dob": [date(2016, 12, 3), None],
        "postcode": ["CT1 2AB", None], "address_line1": ["1 High St", None]})
    rows = match_stage._key_rows([students])
    with db.transaction():
        match_stage._stage_keys(db, [students])
        for name, keyed in rows.items():
            cols = ", ".join(("part", *match_stage._KEY_COLUMNS[name]))
            sql, params = match_stage._as_arrays(f"SELECT {cols} FROM {name}", {name: keyed})
            from_arrays = sorted(map(tuple, db.execute(sql, params).fetchall()), key=repr)
            from_table = sorted(map(tuple, db.execute(f"SELECT {cols} FROM {name}").fetchall()), key=repr)
            assert from_arrays == from_table, name
            assert len(from_table) == len(keyed), name
