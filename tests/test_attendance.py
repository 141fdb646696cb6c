"""Attendance store (issue 4): marks-string merges at the right offsets, and the DfE measures."""
import json
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from b2b import pipeline as chain
from b2b.config.settings import Settings
from b2b.ingest.extract import ReceivedMessage, RunContext, store_messages
from b2b.reconcile.attendance import apply_changes, merge, session_offset, window_offset

BASE = "8862003"


def test_session_offsets_skip_weekends():
    start = date(2026, 9, 1)  # a Tuesday
    assert session_offset(start, date(2026, 9, 1), "AM") == 0
    assert session_offset(start, date(2026, 9, 1), "PM") == 1
    assert session_offset(start, date(2026, 9, 4), "PM") == 7  # Tue..Fri: 4th day
    assert session_offset(start, date(2026, 9, 7), "AM") == 8  # the Monday after the weekend
    assert session_offset(start, date(2026, 10, 1), "AM") == 2 * 22  # 22 weekdays in Sep from the 1st
    with pytest.raises(ValueError, match="weekend"):
        session_offset(start, date(2026, 9, 5), "AM")


def test_changes_land_at_their_offsets_across_a_month_boundary():
    stored = "/" * 2 * 22 + "//"  # all of September present, 1 Oct AM+PM present
    changes = [{"date": "2026-09-30", "session": "PM", "code": "N"}, {"date": "2026-10-01", "session": "AM",
                                                                     "code": "I"},
               {"date": "2026-10-02", "session": "AM", "code": "/"}]
    out = apply_changes(stored, 2026, changes)
    assert out[43] == "N" and out[44] == "I" and out[45] == "/" and out[46] == "/"
    assert out[:43] == "/" * 43 and len(out) == 47  # nothing else touched; the string grew by one session


def test_changes_across_the_academic_year_boundary_go_to_each_years_string():
    changes = [{"date": "2027-07-22", "session": "PM", "code": "U"},  # last day of 2026/27
               {"date": "2027-09-01", "session": "AM", "code": "/"}]  # first day of 2027/28 (a Wednesday)
    old_year = apply_changes("/" * 10, 2026, changes)
    new_year = apply_changes(None, 2027, changes)
    k = session_offset(date(2026, 9, 1), date(2027, 7, 22), "PM")
    assert old_year[k] == "U" and old_year[10:k] == "-" * (k - 10) and len(old_year) == k + 1
    assert new_year == "/"


def test_full_task_replaces_from_its_window_and_filtered_task_overlays():
    old = "//////NN//"
    assert merge(old, "--------CC", "replace", from_offset=8) == "//////NNCC"
    assert merge(old, "/\\/\\", "replace") == "/\\/\\"  # whole year replaced (a mark removed at school goes)
    assert merge(old, "-N----U---", "overlay") == "/N////UN//"  # only the carried marks are written
    assert merge(None, "--N", "overlay") == "--N"


def test_month_window_offset():
    end = datetime(2026, 11, 20, 18, tzinfo=UTC)
    assert window_offset(2026, end, None) == 0
    assert window_offset(2026, end, 13) == 0  # the window starts before the year: whole string
    first = date(2026, 10, 21)  # 20 Nov - 30 days
    assert window_offset(2026, end, 1) == session_offset(date(2026, 9, 1), first, "AM")


def ctx(end, dag="b2b__8862003__attendance_changed", attendance="changed", months=1):
    return RunContext(base_id=BASE, task_key=dag.split("__")[-1], dag_id=dag, run_id=f"r{end:%m%d}",
                      source="sims_primary", data_filter="attendance", window_start=end - timedelta(days=1),
                      window_end=end, attendance=attendance, months=months)


def page(items):
    return ReceivedMessage("attendance p1/1", json.dumps({
        "organisationId": "o", "dataGroup": "attendance", "page": 1, "pageSize": 100, "totalItems": len(items),
        "totalPages": 1, "next": None,
        "items": [{"studentId": g, "changed": "2026-10-01T12:00:00+00:00", "data": d} for g, d in items]}).encode(),
        "application/json", group="attendance")


def run(db, c, items, tmp_path):
    store_messages(db, c, [page(items)])
    chain.hash_filter(db, c, Settings())
    chain.validate(db, c, tmp_path)
    return chain.load(db, c)


def current(db, guid="g1", ay=2026):
    row = db.execute("SELECT marks FROM core.attendance_current WHERE student_guid = %s AND academic_year = %s",
                     (guid, ay)).fetchone()
    return row and row[0]


def test_primary_snapshot_then_changed_marks_then_rerun(db, tmp_path):
    d1 = datetime(2026, 9, 30, 17, tzinfo=UTC)
    full = "/" * 40 + "N/"  # 1 Sep .. 29 Sep (21 weekdays = 42 sessions)
    run(db, ctx(d1, dag="b2b__8862003__attendance_snapshot", attendance=None, months=None),
        [("g1", {"academic_year": 2026, "start_date": "2026-09-01", "marks": full})], tmp_path)
    assert current(db) == full
    d2 = d1 + timedelta(days=2)
    changes = [{"date": "2026-09-30", "session": "AM", "code": "/"}, {"date": "2026-09-30", "session": "PM",
                                                                     "code": "/"},
               {"date": "2026-10-01", "session": "AM", "code": "U"}, {"date": "2026-09-29", "session": "AM",
                                                                      "code": "M"}]  # an amendment
    out = run(db, ctx(d2), [("g1", {"academic_year": 2026, "changes": changes})], tmp_path)
    assert out["rows"]["attendance_marks"] == 1
    expected = "/" * 40 + "M/" + "//" + "U"
    assert current(db) == expected
    # a rerun of the same window gives the same string, not a doubly-applied one
    run(db, ctx(d2), [("g1", {"academic_year": 2026, "changes": changes})], tmp_path)
    assert current(db) == expected
    assert db.execute("SELECT count(*) FROM core.attendance_marks").fetchone()[0] == 2


def hand_counts(marks):
    present = sum(m in "/\\LBDJPVWK" for m in marks)
    auth = sum(m in "CEIMRSTQH" for m in marks)
    unauth = sum(m in "GNOU" for m in marks)
    return present, auth, unauth


def test_persistent_absence_figures_match_a_hand_computation(db, tmp_path):
    d1 = datetime(2026, 10, 9, 17, tzinfo=UTC)
    # g1: 3 absences in 20 sessions of Sep-ish -> 15% -> persistent; g2: 1 in 20 -> 5%; X and '-' not counted
    g1 = "//NN//I/////////////" + "XX--//"
    g2 = "////////////////N///" + "##//"
    run(db, ctx(d1, dag="b2b__8862003__attendance_snapshot", attendance=None, months=None),
        [("g1", {"academic_year": 2026, "start_date": "2026-09-01", "marks": g1}),
         ("g2", {"academic_year": 2026, "start_date": "2026-09-01", "marks": g2})], tmp_path)
    rows = {r[0]: r[1:] for r in db.execute(
        """SELECT student_guid, sessions_possible, present, authorised_absence, unauthorised_absence,
                  absence_rate, persistent_absence
             FROM results.attendance_summary('2026-09-01', '2026-09-30')""")}
    for guid, marks in (("g1", g1), ("g2", g2)):
        p, a, u = hand_counts(marks)
        assert rows[guid][:4] == (p + a + u, p, a, u)
        assert float(rows[guid][4]) == pytest.approx(round((a + u) / (p + a + u), 4))
    assert rows["g1"][5] is True and rows["g2"][5] is False
    # a period that starts mid-string: 7 Sep (offset 8) .. 8 Sep (sessions 8-11) of g1 = "////"
    sub = db.execute("""SELECT sessions_possible, present FROM results.attendance_summary('2026-09-07', '2026-09-08')
                         WHERE student_guid = 'g1'""").fetchone()
    assert sub == (4, 4)
    school = db.execute("""SELECT students, persistently_absent, persistent_absence_rate
                             FROM results.school_attendance_summary('2026-09-01', '2026-09-30')""").fetchone()
    assert school == (2, 1, 0.5)


# ------------------------------------------------------------------ issue 9 item 14: F30 previous year
@pytest.fixture(scope="module")
def world():
    from simulator.world import World, WorldConfig

    return World(WorldConfig.demo())


def _previous_year_run(db, world, tmp_path, end, months):
    import re

    dfe = "8862001"
    xml = world.export_sims7(dfe, "attendance", end, None, attendance="all_previous", months=months)
    c = RunContext(base_id=dfe, task_key="attendance_previous", dag_id=f"b2b__{dfe}__attendance_previous",
                   run_id=f"r{end:%m%d}", source="sims7", data_filter="attendance", window_start=None,
                   window_end=end, attendance="all_previous", months=months)
    store_messages(db, c, [ReceivedMessage("export", xml, "application/xml")])
    chain.hash_filter(db, c, Settings())
    chain.validate(db, c, tmp_path)
    chain.load(db, c)
    sent = {g.decode(): m.decode() for g, m in re.findall(
        rb"<ApplicationReference>([^<]+)</ApplicationReference>.*?<Marks>([^<]*)</Marks>", xml, flags=re.S)}
    stored = dict(db.execute("SELECT student_guid, marks FROM core.attendance_current WHERE base_id = %s "
                             "AND academic_year = 2025", (dfe,)).fetchall())
    return sent, stored


@pytest.mark.parametrize("months", [1, 3])
def test_first_previous_year_run_with_a_short_month_filter_stores_the_whole_year(db, world, tmp_path, months):
    sent, stored = _previous_year_run(db, world, tmp_path, datetime(2026, 10, 2, 18, tzinfo=UTC), months)
    assert sent and stored == {g: m.rstrip("-") or "-" for g, m in sent.items()}
    assert sum(len(m) > 300 for m in stored.values()) > 50  # whole years, not empty strings


def test_previous_year_run_with_13_months_keeps_the_first_sessions(db, world, tmp_path):
    sent, stored = _previous_year_run(db, world, tmp_path, datetime(2026, 10, 2, 18, tzinfo=UTC), 13)
    assert stored == {g: m.rstrip("-") or "-" for g, m in sent.items()}
    assert any(not m.startswith("-" * 10) for m in stored.values())


def test_month_window_applies_to_the_current_year_only():
    end = datetime(2026, 10, 2, 18, tzinfo=UTC)
    assert window_offset(2025, end, 13) == 0 and window_offset(2025, end, 3) == 0
    assert window_offset(2026, end, 1, "all_current") > 0
    assert window_offset(2026, end, 1, "all_previous") == 0
