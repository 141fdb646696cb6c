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


def test_a_school_runs_candidates_are_the_children_the_run_wide_statement_finds(db):
    """A school run reads its candidates' columns from the key probes themselves
    (``_SMALL_CANDIDATES``) and skips the whole-surname probe of a surname part that is the
    student's whole surname (syf finds those): the same active children, in person id order,
    as the run-wide statement's temporary tables (every branch) give, with the double-barrelled
    LA child a single surname's part finds, the linked child, and no inactive child."""
    import pandas as pd

    from b2b.matching import CORE_COLUMNS, INCOMING_COLUMNS

    db.execute("""INSERT INTO core.child (person_id, upn, forename, surname, gender, dob, paon, street, postcode,
                                          active) VALUES
        ('P1', NULL, 'Amy', 'Smith', 'F', '2016-05-04', '1', 'Elm Way', 'CT1 1AA', true),
        ('P2', NULL, 'Anna', 'Smith-Jones', 'F', '2016-11-20', '9', 'Oak Road', 'ME4 4BB', true),
        ('P3', NULL, 'Ava', 'Smith', 'F', '2016-01-01', '2', 'Ash Lane', 'TN1 2CC', false),
        ('P4', 'A123456789012', 'Zed', 'Quill', 'M', '2012-02-02', '3', 'Fir Row', 'DA1 3DD', true),
        ('P5', NULL, 'Kit', 'Ng', 'M', '2013-03-03', '5', 'Yew Close', 'BR1 5EE', true),
        ('P6', NULL, 'Beth', 'Jones', 'F', '2015-06-30', '7', 'Elm Way', 'CT2 2FF', true)""")
    db.execute("INSERT INTO core.child_link (base_id, student_guid, person_id, linked_by) "
               "VALUES ('8862001', 'g5', 'P5', 'officer')")
    part = pd.DataFrame([
        ("i1", "8862001", "", "g1", "Alice", "", "Smith", "F", "2016-08-08", "ZZ9 9ZZ", "1 New St"),
        ("i2", "8862001", "A123456789012", "g4", "Zak", "", "Quill-Moon", "M", "2012-02-02", "", ""),
        ("i3", "8862001", "", "g5", "Kit", "", "Ng", "M", None, "", ""),
        ("i4", "8862001", "", "g6", "Ben", "", "Jones", "M", "2016-01-15", "ZZ8 8ZZ", "")],
        columns=INCOMING_COLUMNS)
    with db.transaction():
        small, links, _ = match_stage._one_small_part(db, part, prepared=False)
        match_stage._stage_keys(db, [part])
        db.execute(match_stage._CANDIDATES)
        wide = pd.DataFrame(db.execute(
            f"""SELECT {match_stage.CORE_SELECT} FROM core.child c
                 WHERE c.active AND c.person_id IN (SELECT m.person_id FROM match_cand m) ORDER BY c.person_id""")
            .fetchall(), columns=CORE_COLUMNS)
    # P1 (syf: the student's whole surname), P2 (the part "smith" of an LA double-barrel), P4
    # (UPN), P5 (the GUID link); not P3 (inactive) nor P6 (Ben Jones' initial and surname, another year)
    assert small["person_id"].tolist() == ["P1", "P2", "P4", "P5"]
    assert match_stage._CORE_NAMES == tuple(CORE_COLUMNS)  # (the statement's column names, in the matcher's order)
    assert small.astype(str).values.tolist() == wide.astype(str).values.tolist()
    assert links["person_id"].tolist() == ["P5"]
    # the run's name frequencies, read in the same round trip, are term_frequencies' own
    pending = match_stage.PendingFrequencies(part)
    with db.transaction():
        again, _, _ = match_stage._one_small_part(db, part, prepared=False, frequencies=pending)
        assert pending.rows is not None
        got, want = pending.result(db), match_stage.term_frequencies(db, part)
    assert (got.counts, got.totals) == (want.counts, want.totals) and got.counts["sn"]["smith"] == 2
    assert again.astype(str).values.tolist() == small.astype(str).values.tolist()


def test_a_part_that_is_the_whole_surname_is_kept_for_the_double_barrel_probe_only():
    """``match_k_pyf`` rows carry ``w``: the part is the student's whole surname key (its LA
    namesakes are syf's); the part of a double-barrelled name is not."""
    import pandas as pd

    from b2b.matching import INCOMING_COLUMNS

    part = pd.DataFrame([("i1", "8862001", "", "g1", "Alice", "", "Smith", "F", "2016-08-08", "", ""),
                         ("i2", "8862001", "", "g2", "Zak", "", "Quill-Moon", "M", "2012-02-02", "", "")],
                        columns=INCOMING_COLUMNS)
    rows = match_stage._key_rows([part])
    assert list(rows["match_k_pyf"]) == [(0, "smith", 2016, "a", True), (0, "quill", 2012, "z", False),
                                         (0, "moon", 2012, "z", False)]
    assert (0, "smith", 2016, "a") in rows["match_k_syf"]
