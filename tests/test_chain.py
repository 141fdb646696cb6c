"""The processing chain (hash filter, load, match, conflicts, apply) against real PostgreSQL."""
import json
import tempfile
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from b2b import pipeline as chain
from b2b.config.settings import Settings
from b2b.ingest.extract import ReceivedMessage, RunContext, store_messages

BASE = "8862003"
DAY1 = datetime(2026, 10, 5, 17, 0, tzinfo=UTC)


def ctx(end=DAY1, dag="b2b__8862003__changed_data"):
    return RunContext(base_id=BASE, task_key="changed_data", dag_id=dag, run_id=f"r-{end:%d}",
                      source="sims_primary", data_filter="changed_data", window_start=end - timedelta(days=1),
                      window_end=end)


def page(group, items):
    return ReceivedMessage(f"{group} p1/1", json.dumps({
        "organisationId": "o", "dataGroup": group, "page": 1, "pageSize": 100, "totalItems": len(items),
        "totalPages": 1, "next": None,
        "items": [{"studentId": g, "changed": "2026-10-05T12:00:00+00:00", "data": d} for g, d in items]}).encode(),
        "application/json", group=group)


JOE = {"upn": "F886200326001", "forename": "Joe", "surname": "Bloggs", "dob": "2016-01-26", "gender": "M",
       "ncy": "5", "reg_group": "5B", "enrol_status": "C", "looked_after": False}
EMMA = {"upn": "V886200326002", "forename": "Emma", "surname": "DAVIDS", "dob": "2017-09-21", "gender": "F",
        "ncy": "4", "enrol_status": "C"}
OLD = {"upn": None, "forename": "Sam", "surname": "Older", "dob": "2005-01-01", "gender": "M", "ncy": "14"}
ADDR = {"paon": "1", "street": "Green Abbey Road", "town": "Canterbury", "postcode": "CT1 2AB"}


#: the LA's children these tests match against
CORE_CHILDREN = """INSERT INTO core.child (person_id, upn, forename, surname, gender, dob, ncy, paon, street, postcode)
                  VALUES ('P1', 'F886200326001', 'Joseph', 'Bloggs', 'M', '2016-01-26', '4', '1', 'Green Abbey Road', 'CT1 2AB'),
                         ('P2', NULL, 'Emma', 'Davids', 'F', '2017-09-21', '4', NULL, NULL, NULL),
                         ('P3', 'J886200326003', 'Zed', 'Other', 'M', '2015-05-05', '6', NULL, NULL, NULL)"""


@pytest.fixture
def core(db):
    db.execute(CORE_CHILDREN)
    db.commit()
    return db


REPORTS = Path(tempfile.gettempdir()) / "b2b-test-reports"


# These tests pin the chain's mechanics with the legacy rule (GUID; UPN + 3 of 4; all 4), whose
# decisions are easy to read; the weights matcher has its own tests (test_matching.py).
LEGACY = Settings(matcher="legacy")


def run_chain(db, c, messages, settings=LEGACY, report_dir=None):
    extract = store_messages(db, c, messages)
    out = {"extract": extract.counts(), "hash": chain.hash_filter(db, c, settings),
           "validate": chain.validate(db, c, report_dir or REPORTS),
           "load": chain.load(db, c), "match": chain.match(db, c, settings),
           "conflicts": chain.conflicts(db, c), "apply": chain.apply(db, c), "commit": chain.commit(db, c)}
    return out


def snapshot_tables(db):
    q = {
        "staging": "SELECT base_id, student_guid, upn, forename, dob FROM staging.student ORDER BY 2",
        "cache": "SELECT base_id, student_guid, block_type, hash, window_order FROM ops.hash_cache ORDER BY 2, 3, 5",
        "match": "SELECT base_id, student_guid, person_id, status, rule, hidden FROM results.match ORDER BY 2, 1",
        "conflict": "SELECT person_id, field, la_value, incoming_value, first_seen, last_seen, times_seen "
                    "FROM results.conflict ORDER BY 1, 2",
        "core": "SELECT person_id, upn, forename, surname, ncy, reg_group, postcode FROM core.child_current ORDER BY 1",
        "links": "SELECT base_id, student_guid, person_id, linked_by FROM core.child_link ORDER BY 2",
        "dispositions": "SELECT b.student_guid, b.block_type, b.disposition FROM raw.inbound_block b ORDER BY 1, 2",
        "log": "SELECT stage, level, counts FROM ops.task_log WHERE file_id IS NULL ORDER BY stage, log_id",
    }
    return {k: db.execute(v).fetchall() for k, v in q.items()}


def test_chain_matches_conflicts_and_applies(core):
    db = core
    out = run_chain(db, ctx(), [page("student", [("g-joe", JOE), ("g-emma", EMMA), ("g-old", OLD)]),
                                page("address", [("g-joe", ADDR)])])
    assert out["hash"]["skipped_by_cache"] == 0 and out["load"]["loaded"] == 4
    assert out["match"]["by_rule"] == {"upn_3_of_4": 1, "all_4": 1, "none": 1}
    rows = {r[1]: r for r in db.execute(
        "SELECT base_id, student_guid, person_id, status, rule, hidden FROM results.match").fetchall()}
    assert rows["g-joe"][2:] == ("P1", "matched_with_conflicts", "upn_3_of_4", False)
    # "DAVIDS" vs "Davids" is the same surname (case-insensitive), so no conflict for Emma
    assert rows["g-emma"][2:] == ("P2", "matched", "all_4", False)
    assert rows["g-old"][2:] == (None, "unmatched", "none", True)  # F13: older than 18, hidden
    assert db.execute("SELECT field, la_value, incoming_value FROM results.conflict").fetchall() == [
        ("forename", "Joseph", "Joe")]
    core_rows = {r[0]: r for r in db.execute("SELECT person_id, upn, forename, ncy, reg_group FROM core.child_current")}
    assert core_rows["P1"] == ("P1", "F886200326001", "Joseph", "5", "5B")  # school fields applied, name kept
    assert core_rows["P2"][1] == "V886200326002"  # LA had no UPN: filled from the school
    assert core_rows["P3"][3] == "6"  # untouched
    links = db.execute("SELECT student_guid, person_id, linked_by FROM core.child_link ORDER BY 1").fetchall()
    assert links == [("g-emma", "P2", "match"), ("g-joe", "P1", "match")]


def test_second_identical_import_skips_every_block_and_conflict_is_one_row(core):
    db = core
    msgs = [page("student", [("g-joe", JOE), ("g-emma", EMMA)]), page("address", [("g-joe", ADDR)])]
    run_chain(db, ctx(DAY1), msgs)
    out = run_chain(db, ctx(DAY1 + timedelta(days=1)), msgs)
    assert out["hash"]["skipped_by_cache"] == out["hash"]["blocks"] == 3
    assert out["load"]["loaded"] == 0
    # and a third day where Joe's block changes: only that block is processed, by GUID now
    joe2 = dict(JOE, reg_group="5C")
    out = run_chain(db, ctx(DAY1 + timedelta(days=2)),
                    [page("student", [("g-joe", joe2), ("g-emma", EMMA)]), page("address", [("g-joe", ADDR)])])
    assert (out["hash"]["skipped_by_cache"], out["load"]["loaded"]) == (2, 1)
    assert out["match"]["by_rule"] == {"guid": 1}
    conflict = db.execute("SELECT field, times_seen, first_seen, last_seen FROM results.conflict").fetchall()
    assert conflict == [("forename", 2, DAY1, DAY1 + timedelta(days=2))]


def test_cache_off_processes_everything(core):
    db = core
    msgs = [page("student", [("g-joe", JOE)])]
    off = Settings(b2bhcache=False, matcher="legacy")
    run_chain(db, ctx(DAY1), msgs, off)
    out = run_chain(db, ctx(DAY1 + timedelta(days=1)), msgs, off)
    assert out["hash"]["skipped_by_cache"] == 0 and out["load"]["loaded"] == 1


def test_guidmatch_off_ignores_links(core):
    db = core
    db.execute("INSERT INTO core.child_link (base_id, student_guid, person_id, linked_by) VALUES (%s, 'g-x', 'P3', 'la')",
               (BASE,))
    stranger = {"upn": None, "forename": "Ann", "surname": "Nobody", "dob": "2016-02-02", "gender": "F"}
    out = run_chain(db, ctx(), [page("student", [("g-x", stranger)])], Settings(guidmatch=False, matcher="legacy"))
    assert out["match"]["by_rule"] == {"none": 1}
    out = run_chain(db, ctx(DAY1 + timedelta(days=1)), [page("student", [("g-x", dict(stranger, ncy="1"))])])
    assert out["match"]["by_rule"] == {"guid": 1}


def test_failed_load_leaves_staging_and_cache_as_before(core):
    db = core
    c = ctx()
    store_messages(db, c, [page("student", [("g-joe", JOE)]), page("address", [("g-joe", ADDR)])])
    chain.hash_filter(db, c, LEGACY)
    before = snapshot_tables(db)
    with pytest.raises(RuntimeError, match="injected"):
        chain.load(db, c, fail_after="address")
    db.rollback()
    assert snapshot_tables(db) == before
    assert db.execute("SELECT count(*) FROM staging.student").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM ops.hash_cache").fetchone()[0] == 0
    # the retry processes the same blocks
    assert chain.load(db, c)["loaded"] == 2


def test_rerun_of_a_window_leaves_identical_tables(core):
    db = core
    msgs = [page("student", [("g-joe", JOE), ("g-emma", EMMA), ("g-old", OLD)]), page("address", [("g-joe", ADDR)])]
    run_chain(db, ctx(DAY1), msgs)
    run_chain(db, ctx(DAY1 + timedelta(days=1)), [page("student", [("g-joe", dict(JOE, reg_group="5C"))])])
    first = snapshot_tables(db)
    # rerun the first window (a cleared DAG run / backfill), then the second again
    run_chain(db, ctx(DAY1), msgs)
    run_chain(db, ctx(DAY1 + timedelta(days=1)), [page("student", [("g-joe", dict(JOE, reg_group="5C"))])])
    assert snapshot_tables(db) == first
    # the LA's own record is never edited by the chain
    assert db.execute("SELECT upn FROM core.child WHERE person_id = 'P2'").fetchone()[0] is None


def test_each_stage_can_be_retried_alone(core):
    db = core
    c = ctx()
    run_chain(db, c, [page("student", [("g-joe", JOE)]), page("address", [("g-joe", ADDR)])])
    first = snapshot_tables(db)
    for stage in (lambda: chain.load(db, c), lambda: chain.match(db, c, LEGACY),
                  lambda: chain.conflicts(db, c), lambda: chain.apply(db, c)):
        stage()
    assert snapshot_tables(db) == first


def test_core_load_is_idempotent(db):
    from b2b.ops.core_load import load_core

    recs = [{"person_id": "P9", "upn": "F886200326001", "guid": "g-9", "base_dfe": BASE, "forename": "Ann",
             "surname": "Lee", "gender": "F", "dob": date(2016, 3, 4), "postcode": "CT1 2AB",
             "address_line1": "3 High St"},
            {"person_id": "P10", "upn": "", "guid": None, "base_dfe": BASE, "forename": "Bo", "surname": "Lee",
             "gender": "M", "dob": "2014-01-02", "postcode": "CT1 2AB"}]
    assert load_core(db, recs) == {"records": 2, "changed": 2, "new_links": 1}
    assert load_core(db, recs) == {"records": 2, "changed": 0, "new_links": 0}
    assert db.execute("SELECT upn, paon FROM core.child WHERE person_id = 'P10'").fetchone() == (None, None)
    assert db.execute("SELECT paon FROM core.child WHERE person_id = 'P9'").fetchone() == ("3 High St",)


def test_bad_upn_check_letter_is_an_anomaly_and_other_blocks_still_load(core, tmp_path):
    db = core
    bad = dict(JOE, upn="A886200326001")  # check letter should be F
    out = run_chain(db, ctx(), [page("student", [("g-joe", bad), ("g-emma", EMMA)]),
                                page("address", [("g-joe", ADDR), ("g-emma", dict(ADDR, postcode="CT1 2A"))])],
                    report_dir=tmp_path)
    assert out["validate"]["by_rule"] == {"postcode_format": 1, "upn_check_letter": 1}
    anomalies = db.execute("""SELECT student_guid, block_type, rule, field, value, severity
                                FROM results.anomaly ORDER BY 1, 2""").fetchall()
    assert anomalies == [("g-emma", "address", "postcode_format", "postcode", "CT1 2A", "error"),
                         ("g-joe", "student", "upn_check_letter", "upn", "A886200326001", "error")]
    disp = dict(((g, t), d) for g, t, d in db.execute(
        "SELECT student_guid, block_type, disposition FROM raw.inbound_block").fetchall())
    assert disp == {("g-joe", "student"): "invalid", ("g-joe", "address"): "loaded",
                    ("g-emma", "student"): "loaded", ("g-emma", "address"): "invalid"}
    assert db.execute("SELECT student_guid FROM staging.address").fetchall() == [("g-joe",)]
    assert db.execute("SELECT student_guid FROM staging.student").fetchall() == [("g-emma",)]
    # the invalid block is not cached, so the school's next (corrected or not) send is checked again
    cached = db.execute("SELECT student_guid, block_type FROM ops.hash_cache ORDER BY 1, 2").fetchall()
    assert ("g-joe", "student") not in cached and ("g-joe", "address") in cached
    # the report is on disk, named in the task log, and carries no personal values
    report = db.execute("SELECT counts->>'report' FROM ops.task_log WHERE stage = 'validate'").fetchone()[0]
    text = open(report).read()
    assert "upn_check_letter" in text and "A886200326001" not in text and "CT1 2A<" not in text
    # the run's other figures
    assert out["load"]["loaded"] == 2


def test_a_malformed_block_puts_its_file_in_suspense_and_others_go_on(core, tmp_path):
    db = core
    broken = page("sen", [("g-joe", {"start_date": "2026-09-01", "needs": "SPLD"})])  # needs must be a list
    out = run_chain(db, ctx(), [page("student", [("g-emma", EMMA)]), broken], report_dir=tmp_path)
    assert out["validate"]["suspended_files"] == 1
    files = db.execute("SELECT label, status, error FROM raw.inbound_file ORDER BY file_id").fetchall()
    assert files[0][1] in ("parsed", "loaded") and files[1][1] == "suspense"
    assert "'needs' is not a list" in files[1][2]
    log = db.execute("""SELECT level, message FROM ops.task_log WHERE stage = 'validate' AND file_id IS NOT NULL""").fetchall()
    assert log and log[0][0] == "error" and "suspense" in log[0][1]
    assert db.execute("SELECT count(*) FROM staging.student").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM staging.sen_need").fetchone()[0] == 0


def test_sims7_snapshot_pupil_without_core_section_sends_the_file_to_suspense(core, tmp_path):
    import re

    from simulator.world import World, WorldConfig

    db = core
    world = World(WorldConfig.demo())
    xml = world.export_sims7("8862001", "snapshot", DAY1, None)
    broken = re.sub(rb"<StudentCore>.*?</StudentCore>", b"", xml, count=1, flags=re.S)
    c = RunContext(base_id="8862001", task_key="snapshot", dag_id="b2b__8862001__snapshot", run_id="r",
                   source="sims7", data_filter="snapshot", window_start=None, window_end=DAY1)
    out = run_chain(db, c, [ReceivedMessage("export", broken, "application/xml")], report_dir=tmp_path)
    assert out["validate"]["suspended_files"] == 1 and out["load"]["loaded"] == 0
    status, error = db.execute("SELECT status, error FROM raw.inbound_file").fetchone()
    assert status == "suspense" and "1 pupil(s) without the mandatory StudentCore" in error
    assert db.execute("SELECT count(*) FROM staging.address").fetchone()[0] == 0


def test_f27_flags_sen_groups_and_exclusions_reach_the_la_view(core):
    db = core
    joe = dict(JOE, eal=True, gifted_talented=False, service_child=True, traveller=False, connexions_assent=True)
    sen = {"start_date": "2025-09-01", "needs": [{"type": "SLCN", "ranking": 2}, {"type": "ASD", "ranking": 1}]}
    excl = {"exclusions": [{"category": "FIXD", "start_date": "2026-09-15", "end_date": "2026-09-16",
                            "reason": "PP", "term": "AUT", "academic_year": 2026, "sessions": 2}]}
    off = Settings(b2bhcache=False, matcher="legacy")  # F6 below: whole groups re-sent, cache or not
    out = run_chain(db, ctx(DAY1), [page("student", [("g-joe", joe)]), page("sen", [("g-joe", sen)]),
                                    page("exclusions", [("g-joe", excl)])], off)
    assert (out["apply"]["sen_groups_updated"], out["apply"]["exclusion_groups_updated"]) == (1, 1)
    row = db.execute("SELECT eal, service_child, connexions_assent FROM core.child_current WHERE person_id = 'P1'")
    assert row.fetchone() == (True, True, True)
    needs = db.execute("SELECT need_type, ranking FROM core.child_sen_need_current WHERE person_id = 'P1' "
                       "ORDER BY ranking").fetchall()
    assert needs == [("ASD", 1), ("SLCN", 2)]
    ex = db.execute("SELECT category, start_date::text, reason, term, academic_year, sessions "
                    "FROM core.child_exclusion_current WHERE person_id = 'P1'").fetchall()
    assert ex == [("FIXD", "2026-09-15", "PP", "AUT", 2026, 2)]
    # F6: the school re-sends the same whole SEN group (its exclusions changed): only what differs is imported
    excl2 = {"exclusions": excl["exclusions"] + [{"category": "LNCH", "start_date": "2026-10-01", "reason": "DB",
                                                  "term": "AUT", "academic_year": 2026}]}
    out = run_chain(db, ctx(DAY1 + timedelta(days=1)), [page("sen", [("g-joe", sen)]),
                                                       page("exclusions", [("g-joe", excl2)])], off)
    assert (out["apply"]["sen_groups_updated"], out["apply"]["exclusion_groups_updated"]) == (0, 1)
    assert db.execute("SELECT count(*) FROM core.child_exclusion_current WHERE person_id = 'P1'").fetchone()[0] == 2
    # the last SEN need removed: the group becomes empty, and so does the LA view
    out = run_chain(db, ctx(DAY1 + timedelta(days=2)), [page("sen", [("g-joe", {"start_date": "2025-09-01",
                                                                                  "needs": []})])], off)
    assert out["apply"]["sen_groups_updated"] == 1
    assert db.execute("SELECT count(*) FROM core.child_sen_need_current WHERE person_id = 'P1'").fetchone()[0] == 0


def test_conflicts_rerun_updates_only_the_match_decisions_that_change(core):
    db = core
    c = ctx()
    run_chain(db, c, [page("student", [("g-joe", JOE), ("g-emma", EMMA)]), page("address", [("g-joe", ADDR)])])

    def decisions():
        return {r[0]: r[1:] for r in db.execute(
            "SELECT student_guid, status, explanation->'differing_fields', xmin::text FROM results.match")}

    before = decisions()
    assert before["g-joe"][:2] == ("matched_with_conflicts", ["forename"])
    assert before["g-emma"][:2] == ("matched", None)
    # a rerun with nothing changed writes no decision again
    chain.conflicts(db, c)
    assert decisions() == before
    # the officer settles Joe's forename: the rerun marks Joe matched; the explanation still
    # names the field (the run's observation); Emma's decision is not rewritten
    db.execute("""INSERT INTO results.conflict_resolution (person_id, field, la_value, incoming_value, resolution,
                                                           resolved_by)
                  VALUES ('P1', 'forename', 'Joseph', 'Joe', 'kept_la', 'officer')""")
    chain.conflicts(db, c)
    after = decisions()
    assert after["g-joe"][:2] == ("matched", ["forename"]) and after["g-joe"][2] != before["g-joe"][2]
    assert after["g-emma"] == before["g-emma"]
