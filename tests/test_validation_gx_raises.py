"""A value Great Expectations cannot evaluate (GX raises on it) fails its expectation for that value
only: the batch's other values get their own verdicts, whatever the rows' order, and the raising
verdict is remembered (in the process and in ops.gx_verdict) as a failure, never as a pass."""
from datetime import date

import pytest

from b2b.ingest import validation
from b2b.ingest.validation import validate_blocks

AS_OF = date(2026, 10, 5)


def blk(block_type, content, ordinal, guid="g1"):
    return {"file_id": 1, "ordinal": ordinal, "base_id": "8862001", "block_type": block_type,
            "student_guid": guid, "content": content}


def found(result):
    return sorted((a.ordinal, a.rule, a.field, a.value) for a in result.anomalies)


@pytest.fixture(autouse=True)
def _cold():
    validation._verdicts.clear()  # every value judged by GX afresh in each test
    yield
    validation._verdicts.clear()


def sen_blocks(order):
    rankings = {"X": 1, 21: 2, 3: 3}
    return [blk("sen", {"needs": [{"type": "ASD", "ranking": r}]}, rankings[r], guid=f"g{rankings[r]}")
            for r in order]


@pytest.mark.parametrize("order", [("X", 21, 3), (21, 3, "X"), (3, "X", 21)])
def test_a_ranking_gx_cannot_compare_fails_and_the_out_of_range_one_beside_it_still_fails(order):
    # GX raises inside the between metric for the whole batch (text beside numbers); it used to
    # report that nested under the metric's id, and every ranking of the batch passed
    r = validate_blocks(sen_blocks(order), run_label="t", as_of=AS_OF)
    assert found(r) == [(1, "sen_ranking", "ranking", "X"), (2, "sen_ranking", "ranking", "21")]
    assert r.invalid_blocks == {(1, 1), (1, 2)} and not r.suspended


def test_a_raising_verdict_is_stored_as_a_failure_and_reused_by_a_new_process(db):
    first = validate_blocks(sen_blocks(("X", 21, 3)), run_label="t", as_of=AS_OF, verdicts=db)
    key = next(k for k, e in validation._plan("sen")["expectations"] if e["meta"]["rule"] == "sen_ranking")
    digest = validation._expectation_digest(key)
    stored = dict(db.execute("SELECT value_key, failed FROM ops.gx_verdict WHERE expectation = %s",
                             (digest,)).fetchall())
    by_value = {v: stored[validation._value_digest(validation._value_key("", v))] for v in ("X", 21, 3)}
    assert by_value == {"X": True, 21: True, 3: False}
    validation._verdicts.clear()  # as a new task process: verdicts come from ops.gx_verdict only
    again = validate_blocks(sen_blocks((3, 21, "X")), run_label="t", as_of=AS_OF, verdicts=db)
    assert found(again) == found(first)


def attendance(marks_in_order):
    return [blk("attendance", {"academic_year": 2026, "marks": m}, o, guid=f"g{o}") for o, m in marks_in_order]


MARKS = [(1, {"am": "/"}), (2, "//L"), (3, "%"), (4, ["/"]), (5, "/\\")]


@pytest.mark.parametrize("order", [MARKS, MARKS[::-1], MARKS[1:] + MARKS[:1]])
def test_an_object_in_a_regex_column_fails_first_or_last_and_the_run_goes_on(order):
    r = validate_blocks(attendance(order), run_label="t", as_of=AS_OF)
    assert not r.suspended
    assert found(r) == [(1, "attendance_code", "marks", "{'am': '/'}"), (3, "attendance_code", "marks", "%"),
                        (4, "attendance_code", "marks", "['/']")]
    assert r.invalid_blocks == {(1, 1), (1, 3), (1, 4)}


def test_objects_in_set_columns_fail_without_hiding_the_other_failures():
    blocks = [blk("student", {"upn": "F886200326001", "surname": "B", "forename": "J", "dob": "2016-01-26",
                              "gender": {"code": "M"}}, 1),
              blk("student", {"upn": "F886200326001", "surname": "B", "forename": "J", "dob": "2016-01-26",
                              "gender": "Q"}, 2, guid="g2"),
              blk("attendance", {"academic_year": 2026, "changes": [
                  {"date": "2026-10-01", "session": "AM", "code": {"c": "/"}},
                  {"date": "2026-10-01", "session": "PM", "code": "%"}]}, 3),
              blk("contacts", {"contacts": [{"relationship": {"r": 1}}, {"relationship": "ZZZ"},
                                            {"relationship": "PAM"}]}, 4)]
    r = validate_blocks(blocks, run_label="t", as_of=AS_OF)
    assert not r.suspended
    rules = found(r)
    assert (1, "gender_code", "gender", "{'code': 'M'}") in rules and (2, "gender_code", "gender", "Q") in rules
    assert [a for a in rules if a[0] == 4] == [(4, "relationship_code", "relationship", "ZZZ"),
                                               (4, "relationship_code", "relationship", "{'r': 1}")]
    # the object is not text (attendance_change_code), and not a DfE code either
    assert [a[1] for a in rules if a[0] == 3] == ["attendance_change_code", "attendance_code"]
    assert r.invalid_blocks == {(1, 1), (1, 2), (1, 3)}  # contacts' relationship is a warning


def test_many_distinct_rankings_gx_cannot_compare_all_fail_and_the_numbers_keep_their_verdicts(db):
    texts = [f"R{i}" for i in range(40)]  # more than a probe's threshold, all of one type
    blocks = sen_blocks(("X", 21, 3)) + [blk("sen", {"needs": [{"type": "ASD", "ranking": t}]}, 10 + n,
                                              guid=f"t{n}") for n, t in enumerate(texts)]
    r = validate_blocks(blocks[::-1], run_label="t", as_of=AS_OF, verdicts=db)
    assert found(r) == sorted([(1, "sen_ranking", "ranking", "X"), (2, "sen_ranking", "ranking", "21")]
                              + [(10 + n, "sen_ranking", "ranking", t) for n, t in enumerate(texts)])
    validation._verdicts.clear()
    assert found(validate_blocks(blocks, run_label="t", as_of=AS_OF, verdicts=db)) == found(r)  # as stored
