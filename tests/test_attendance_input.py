"""SIMS Primary changed marks that are not well formed (a fault sweep): one pupil's bad change is an
error anomaly of that pupil's attendance block at validate, naming the rule and the field but not
the value; the other pupils' marks load; a session other than AM/PM is written nowhere. What the
validate stage still lets through stops the load with an AttendanceError naming base, file and
pupil, never a bare ValueError/KeyError that Airflow retries."""
from datetime import UTC, date, datetime

import pytest

from b2b import pipeline as chain
from b2b.config.settings import Settings
from b2b.errors import B2BError
from b2b.ingest.extract import store_messages
from b2b.ingest.validation import validate_blocks
from b2b.reconcile.attendance import AttendanceError, ChangeError, apply_changes, session_offset
from tests.test_attendance import BASE, ctx, current, page

END = datetime(2026, 10, 2, 17, tzinfo=UTC)
GOOD = [{"date": "2026-10-01", "session": "AM", "code": "U"}]  # 1 Oct AM: offset 44
# name: (changes, the rule it breaks, the words of the anomaly's value, what must never be in it)
CASES = {
    "weekend": ([{"date": "2026-10-03", "session": "AM", "code": "/"}], "attendance_change_date",
                "not a school day (weekend)", "2026-10-03"),
    "no_date": ([{"session": "AM", "code": "/"}], "attendance_change_date", "missing", None),
    "bad_date": ([{"date": "03/10/2026", "session": "AM", "code": "/"}], "attendance_change_date",
                 "not YYYY-MM-DD", "03/10/2026"),
    "not_a_day": ([{"date": "2026-02-30", "session": "AM", "code": "/"}], "attendance_change_date",
                  "not a real date", "2026-02-30"),
    "no_session": ([{"date": "2026-10-01", "code": "/"}], "attendance_change_session", "missing", None),
    "session_int": ([{"date": "2026-10-01", "session": 1, "code": "/"}], "attendance_change_session", "not text",
                    None),
    "session_x": ([{"date": "2026-10-01", "session": "XX", "code": "U"}], "attendance_change_session",
                  "not AM or PM", "XX"),
    "date_int": ([{"date": 20261001, "session": "AM", "code": "/"}], "attendance_change_date", "not text",
                 "20261001"),
    "far_future": ([{"date": "9999-12-31", "session": "AM", "code": "/"}], "attendance_change_date",
                   "outside the academic year", "9999"),
    "code_int": ([{"date": "2026-10-01", "session": "AM", "code": 0}], "attendance_change_code", "not text", None),
    "code_long": ([{"date": "2026-10-01", "session": "AM", "code": "UN"}], "attendance_change_code",
                  "more than one character", "UN"),
    # one bad change among good ones makes the whole block an anomaly: none of its changes is written
    "one_of_three": ([{"date": "2026-09-30", "session": "PM", "code": "/"}, {"date": "2026-10-01", "code": "N"},
                      {"date": "2026-10-01", "session": "PM", "code": "/"}], "attendance_change_session",
                     "missing", None),
}


def _run(db, tmp_path, g1_changes, academic_year=2026):
    c = ctx(END)
    store_messages(db, c, [page([("g1", {"academic_year": academic_year, "changes": g1_changes}),
                                 ("g2", {"academic_year": 2026, "changes": GOOD})])])
    chain.hash_filter(db, c, Settings())
    counts = chain.validate(db, c, tmp_path)
    return counts, chain.load(db, c)


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_change_is_an_anomaly_of_its_pupil_and_the_others_load(db, tmp_path, name):
    changes, rule, why, never = CASES[name]
    counts, loaded = _run(db, tmp_path, changes)
    assert counts["invalid_blocks"] == 1 and counts["suspended_files"] == 0
    anomalies = db.execute("SELECT student_guid, block_type, rule, field, value, severity FROM results.anomaly"
                           ).fetchall()
    assert anomalies == [("g1", "attendance", rule, "changes." + rule.rsplit("_", 1)[1], why, "error")]
    assert never is None or never not in anomalies[0][4]  # the problem is named, the value is not
    disposition = dict(db.execute("SELECT student_guid, disposition FROM raw.inbound_block").fetchall())
    assert disposition == {"g1": "invalid", "g2": "loaded"}
    # g2's mark is loaded; nothing of g1's block is written anywhere (not an XX in a PM slot)
    assert current(db, "g2") == "-" * 44 + "U"
    assert loaded["rows"]["attendance_marks"] == 1
    assert db.execute("SELECT count(*) FROM core.attendance_marks WHERE student_guid = 'g1'").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM staging.attendance WHERE student_guid = 'g1'").fetchone()[0] == 0


def test_the_session_is_case_blind_and_a_good_block_loads_beside_a_bad_one(db, tmp_path):
    counts, _ = _run(db, tmp_path, [{"date": "2026-10-01", "session": "pm", "code": "N"},
                                    {"date": "2026-10-02", "session": "AM", "code": None}])
    assert counts["anomalies"] == 0
    assert current(db, "g1") == "-" * 45 + "N" and current(db, "g2") == "-" * 44 + "U"


@pytest.mark.parametrize(("named", "day", "ok"), [
    (2026, "2026-09-01", True), (2026, "2027-07-22", True), (2026, "2025-09-01", False),
    ("2026", "2026-10-01", True),  # the block's year as text, as the staging table reads it
    (2027, "2026-09-30", True),  # a window across 1 September: last year's mark amended, within three months
    (2026, "2027-09-01", False),  # next year's date is far from the run (2 October 2026)
    (None, "2026-10-01", True), (None, "2027-10-01", False),  # no year named: the run's
])
def test_a_change_lies_in_the_academic_year_its_block_names(named, day, ok):
    block = {"file_id": 1, "ordinal": 1, "base_id": BASE, "block_type": "attendance", "student_guid": "g1",
             "content": {"academic_year": named, "changes": [{"date": day, "session": "AM", "code": "/"}]}}
    r = validate_blocks([block], run_label="t", as_of=END.date())
    assert [(a.rule, a.field, a.value) for a in r.anomalies] == (
        [] if ok else [("attendance_change_date", "changes.date", "outside the academic year")])


@pytest.mark.parametrize("name", [n for n in CASES if n != "far_future"])
def test_apply_changes_refuses_a_bad_change_without_quoting_it(name):
    changes = CASES[name][0]
    with pytest.raises(ChangeError) as err:
        apply_changes("//", 2026, changes)
    assert str(err.value).startswith(("change date:", "change session:", "change code:"))
    assert CASES[name][3] is None or CASES[name][3] not in str(err.value)


def test_a_session_other_than_am_or_pm_has_no_offset():
    with pytest.raises(ValueError, match="AM or PM"):
        session_offset(date(2026, 9, 1), date(2026, 10, 1), "XX")


@pytest.mark.parametrize("name", ["weekend", "no_date", "session_x", "date_int", "code_long"])
def test_load_stops_with_the_projects_error_on_what_validation_let_through(db, tmp_path, name):
    """A block that reaches the load unvalidated: a clear AttendanceError (no retry), nothing written."""
    c = ctx(END)
    store_messages(db, c, [page([("g2", {"academic_year": 2026, "changes": GOOD}),
                                 ("g1", {"academic_year": 2026, "changes": CASES[name][0]})])])
    chain.hash_filter(db, c, Settings())
    file_id = db.execute("SELECT file_id FROM raw.inbound_file").fetchone()[0]
    with pytest.raises(AttendanceError) as err:
        chain.load(db, c)  # the validate stage skipped
    e = err.value
    assert isinstance(e, B2BError) and not e.retryable
    assert (e.base, e.file, e.record) == (BASE, file_id, "pupil g1")
    assert str(e).startswith(f"base {BASE}, file {file_id}, record pupil g1: attendance changes cannot be applied")
    assert CASES[name][3] is None or CASES[name][3] not in str(e)
    assert e.__cause__ is None and e.__suppress_context__  # no bare Python error (with the values) chained
    # the load is one transaction: nothing of the run is written
    assert db.execute("SELECT count(*) FROM core.attendance_marks").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM staging.attendance").fetchone()[0] == 0
