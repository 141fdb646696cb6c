"""Issue 10: ready for a real LA — its records in (core load, gazetteer, refresh folder),
manual import, per-base enable flag, retention, redaction, officer-created ids."""
from __future__ import annotations

import csv
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from b2b.ops import core_load
from b2b.ops.core_load import CoreLoadError, load_children_file, load_gazetteer_file, refresh_from_folder

CHILD_HEADER = ["person_id", "upn", "forename", "surname", "gender", "dob", "postcode", "base_id", "guid"]


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def children(*extra) -> list[list]:
    base = [["P1", "R201100018042", "Ann", "Lee", "F", "2016-03-04", "CT1 2AB", "8862001", "g-1"],
            ["P2", "", "Bo", "Lee", "M", "2014-01-02", "CT1 2AB", "8862001", ""],
            ["P3", "", "Cy", "Ray", "M", "2015-05-06", "", "", ""]]
    return base + [list(e) for e in extra]


def child(db, pid):
    return db.execute("SELECT forename, active, version, origin FROM core.child WHERE person_id = %s",
                      (pid,)).fetchone()


# ------------------------------------------------------------------ part 1: the LA's records in
def test_core_load_file_loads_children_and_guid_links_once(db, tmp_path):
    f = write_csv(tmp_path / "children.csv", CHILD_HEADER, children())
    first = load_children_file(db, f)
    assert first["new"] == 3 and first["new_links"] == 1
    again = load_children_file(db, f)
    assert (again["new"], again["updated"], again["deactivated"], again["new_links"]) == (0, 0, 0, 0)
    assert db.execute("SELECT person_id, linked_by FROM core.child_link WHERE student_guid = 'g-1'").fetchone() \
        == ("P1", "la")
    assert db.execute("SELECT count(*) FROM core.child_version").fetchone()[0] == 3


def test_the_school_written_la_code_slash_establishment_is_the_schools_dfe_number(db, tmp_path):
    """"886/2001" (as LAs often write a DfE number) is held as 8862001, the number a school's
    records carry: the matcher compares the two (the school the LA holds, issue 14)."""
    rows = children()
    rows[0][7], rows[1][7] = "886/2001", "886 - 2001"
    load_children_file(db, write_csv(tmp_path / "children.csv", CHILD_HEADER, rows))
    assert db.execute("SELECT person_id, base_id FROM core.child WHERE base_id IS NOT NULL ORDER BY 1").fetchall() \
        == [("P1", "8862001"), ("P2", "8862001")]
    assert db.execute("SELECT base_id FROM core.child_link WHERE student_guid = 'g-1'").fetchone() == ("8862001",)


def test_changed_record_gets_a_new_version_and_history_is_kept(db, tmp_path):
    load_children_file(db, write_csv(tmp_path / "a.csv", CHILD_HEADER, children()))
    rows = children()
    rows[0][2] = "Anne"
    c = load_children_file(db, write_csv(tmp_path / "b.csv", CHILD_HEADER, rows))
    assert (c["new"], c["updated"]) == (0, 1)
    assert child(db, "P1") == ("Anne", True, 2, "la")
    hist = db.execute("""SELECT version, record->>'forename', valid_to IS NULL FROM core.child_version
                          WHERE person_id = 'P1' ORDER BY version""").fetchall()
    assert hist == [(1, "Ann", False), (2, "Anne", True)]


def test_record_missing_from_full_extract_is_inactive_not_deleted_and_comes_back(db, tmp_path):
    load_children_file(db, write_csv(tmp_path / "a.csv", CHILD_HEADER, children()))
    c = load_children_file(db, write_csv(tmp_path / "b.csv", CHILD_HEADER, children()[:2]))
    assert c["deactivated"] == 1
    assert child(db, "P3") == ("Cy", False, 2, "la")
    # a partial extract deactivates nobody
    assert load_children_file(db, write_csv(tmp_path / "c.csv", CHILD_HEADER, children()[:1]),
                              full=False)["deactivated"] == 0
    assert child(db, "P2")[1] is True
    back = load_children_file(db, write_csv(tmp_path / "d.csv", CHILD_HEADER, children()))
    assert back["updated"] == 1 and child(db, "P3") == ("Cy", True, 3, "la")


def test_officer_created_children_are_not_deactivated_by_a_full_extract(db, tmp_path):
    db.execute("INSERT INTO core.child (person_id, forename, surname, origin, updated_by) "
               "VALUES (core.next_person_id(), 'Di', 'Fox', 'officer', 'officer:x')")
    load_children_file(db, write_csv(tmp_path / "a.csv", CHILD_HEADER, children()))
    assert db.execute("SELECT active FROM core.child WHERE origin = 'officer'").fetchone() == (True,)


def test_bad_rows_are_each_named_by_row_and_field_and_nothing_is_loaded(db, tmp_path):
    rows = children(["P4", "XX", "Di", "Fox", "Q", "2015-13-01", "NOT A PC", "123", ""],
                    ["P1", "", "Dup", "Lee", "F", "2016-03-04", "", "", ""],
                    ["", "", "", "Nobody", "", "", "", "", "g-9"])
    f = write_csv(tmp_path / "children.csv", CHILD_HEADER, rows)
    with pytest.raises(CoreLoadError) as e:
        load_children_file(db, f)
    msg = str(e.value)
    for part in ("row 4 (line 5), field upn", "row 4 (line 5), field gender", "row 4 (line 5), field dob",
                 "row 4 (line 5), field postcode", "row 4 (line 5), field base_id",
                 "row 5 (line 6), field person_id: duplicate of row 1", "row 6 (line 7), field person_id: required",
                 "row 6 (line 7), field guid_base", "children.csv"):
        assert part in msg
    assert "Fox" not in msg and "NOT A PC" not in msg  # never a personal value
    assert db.execute("SELECT count(*) FROM core.child").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM core.load_run").fetchone()[0] == 0


def test_missing_required_column_is_refused_with_its_name(db, tmp_path):
    f = write_csv(tmp_path / "children.csv", ["person_id", "forename", "surname"], [["P1", "A", "B"]])
    with pytest.raises(CoreLoadError, match=r"required column\(s\) missing: dob"):
        load_children_file(db, f)


def test_la_style_export_loads_through_the_mapping_file(db, tmp_path):
    from simulator.la_files import write_la_files
    from simulator.world import World, WorldConfig

    world = World(WorldConfig.generated(2, 60, seed=3))
    write_la_files(tmp_path / "b2b", world)
    write_la_files(tmp_path / "la", world, style="la")
    assert (tmp_path / "la" / "children.csv").stat().st_mode & 0o077 == 0
    mapping = core_load.ColumnMapping.load(tmp_path / "la" / "mapping.yaml")
    a = load_children_file(db, tmp_path / "la" / "children.csv", mapping)
    assert a["new"] == len(world.la_core()) and a["new_links"] > 0
    # the same records in our own column names are the same records: nothing changes
    b = load_children_file(db, tmp_path / "b2b" / "children.csv")
    assert (b["new"], b["updated"], b["deactivated"]) == (0, 0, 0)
    g = load_gazetteer_file(db, tmp_path / "la" / "gazetteer.csv", mapping)
    assert g["addresses"] > 0
    assert db.execute("SELECT count(*) FROM core.address_gazetteer WHERE m_pc = upper(replace(postcode, ' ', ''))"
                      ).fetchone()[0] == g["addresses"]


def test_gazetteer_full_extract_replaces_and_bad_uprn_is_refused(db, tmp_path):
    hdr = ["uprn", "paon", "street", "town", "postcode"]
    load_gazetteer_file(db, write_csv(tmp_path / "g1.csv", hdr, [["1", "3", "High St", "Canterbury", "ct1 2ab"],
                                                                 ["2", "4", "High St", "Canterbury", "CT1 2AB"]]))
    c = load_gazetteer_file(db, write_csv(tmp_path / "g2.csv", hdr, [["1", "3", "High St", "Canterbury", "CT1 2AB"]]))
    assert c["removed"] == 1
    assert db.execute("SELECT uprn, m_pc FROM core.address_gazetteer").fetchall() == [("1", "CT12AB")]
    with pytest.raises(CoreLoadError, match=r"row 1 \(line 2\), field uprn"):
        load_gazetteer_file(db, write_csv(tmp_path / "g3.csv", hdr, [["U1", "3", "High St", "C", "CT1 2AB"]]))


def test_refresh_folder_moves_loaded_files_to_done_and_refused_to_suspense(db, tmp_path):
    inbox = tmp_path / "inbound" / "core"
    inbox.mkdir(parents=True)
    write_csv(inbox / "gazetteer.csv", ["uprn", "postcode"], [["1", "CT1 2AB"]])
    write_csv(inbox / "children_1.csv", CHILD_HEADER, children())
    out = refresh_from_folder(db, inbox)
    assert out["files"] == 2 and out["refused"] == 0
    assert not list(inbox.glob("*.csv")) and len(list((inbox / "done").glob("*.csv"))) == 2
    write_csv(inbox / "children_2.csv", CHILD_HEADER, children(["P9", "", "X", "Y", "M", "bad", "", "", ""]))
    with pytest.raises(CoreLoadError, match="moved to suspense"):
        refresh_from_folder(db, inbox)
    reasons = list((inbox / "suspense").glob("*.reason.txt"))
    assert len(reasons) == 1 and "row 4 (line 5), field dob" in reasons[0].read_text()
    assert db.execute("SELECT count(*) FROM core.child").fetchone()[0] == 3


def test_load_core_records_keeps_its_counts(db):
    recs = [{"person_id": "P9", "upn": "R201100018042", "guid": "g-9", "base_dfe": "8862001", "forename": "Ann",
             "surname": "Lee", "gender": "F", "dob": date(2016, 3, 4), "postcode": "CT1 2AB"}]
    assert core_load.load_core(db, recs) == {"records": 1, "changed": 1, "new_links": 1}
    assert core_load.load_core(db, recs) == {"records": 1, "changed": 0, "new_links": 0}


# ------------------------------------------------------------------ part 2: manual import (F39)
SIMS7_BASE = "8862001"
UNTIL = datetime(2026, 10, 4, 18, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def small_world():
    from simulator.world import BaseSpec, World, WorldConfig

    return World(WorldConfig(seed=11, bases=(BaseSpec(SIMS7_BASE, "Green Abbey Primary School", "sims7", "primary", 25),
                                            BaseSpec("8862002", "Oakfield Primary School", "sims7", "primary", 5))))


def catalogue_with(tmp_path, **base_changes) -> Path:
    """The demo catalogue, with changes to base 8862001 (e.g. enabled=False)."""
    import yaml

    from b2b.config.catalogue import DEFAULT_PATH

    data = yaml.safe_load(DEFAULT_PATH.read_text())
    for b in data["bases"]:
        if str(b["dfe"]) == SIMS7_BASE:
            b.update(base_changes)
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_manual_xml_file_goes_through_the_dag_path_once(db, tmp_path, small_world):
    from b2b.ingest.manual import ingest_file, manual_dag_id

    f = tmp_path / "export.xml"
    f.write_bytes(small_world.export_sims7(SIMS7_BASE, "snapshot", UNTIL))
    r = ingest_file(db, f, SIMS7_BASE, report_dir=tmp_path / "reports")
    assert r["status"] == "loaded" and r["pupils"] >= 25
    n = r["pupils"]
    assert list(r["stages"]) == ["extract", "hash_filter", "validate", "load", "match", "conflicts", "apply",
                                 "contacts"]
    assert db.execute("SELECT count(DISTINCT student_guid) FROM staging.student").fetchone() == (n,)
    assert db.execute("SELECT count(*) FROM results.match WHERE file_id = %s", (r["file_id"],)).fetchone() == (n,)
    stages = {s for (s,) in db.execute("SELECT DISTINCT stage FROM ops.task_log WHERE dag_id = %s",
                                       (manual_dag_id(SIMS7_BASE),))}
    assert {"extract", "hash_filter", "validate", "load", "match"} <= stages
    assert ingest_file(db, f, SIMS7_BASE)["status"] == "duplicate"
    assert db.execute("SELECT count(*) FROM raw.inbound_file").fetchone() == (1,)


@pytest.mark.parametrize("content, reason", [
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>', ""),
    (b"<B2BMessage><unclosed>", ""),
    (b'{"dataGroup": "student", "items": []}', "not XML"),
])
def test_hostile_or_broken_manual_file_is_kept_in_suspense_with_nothing_loaded(db, tmp_path, content, reason):
    from b2b.ingest.manual import ingest_file

    f = tmp_path / "bad.xml"
    f.write_bytes(content)
    r = ingest_file(db, f, SIMS7_BASE, report_dir=tmp_path)
    assert r["status"] == "suspense" and reason in r["reason"]
    assert db.execute("SELECT status, error IS NOT NULL FROM raw.inbound_file").fetchall() == [("suspense", True)]
    assert db.execute("SELECT count(*) FROM raw.inbound_block").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM staging.student").fetchone() == (0,)


def test_manual_file_for_another_school_is_refused(db, tmp_path, small_world):
    from b2b.ingest.manual import ingest_file

    f = tmp_path / "other.xml"
    f.write_bytes(small_world.export_sims7("8862002", "snapshot", UNTIL))
    r = ingest_file(db, f, SIMS7_BASE, report_dir=tmp_path)
    assert r["status"] == "suspense"
    assert db.execute("SELECT count(*) FROM raw.inbound_block").fetchone() == (0,)


def test_manual_import_reads_only_a_regular_file(db, tmp_path):
    from b2b.errors import IngestError
    from b2b.ingest.manual import ingest_file

    link = tmp_path / "export.xml"
    link.symlink_to("/etc/passwd")  # stored in suspense, payload and all, as "not XML"
    with pytest.raises(IngestError, match="file export.xml: a symbolic link, not a file received; not read") as exc:
        ingest_file(db, link, SIMS7_BASE, report_dir=tmp_path)
    assert "root" not in str(exc.value)
    with pytest.raises(IngestError, match="not a regular file"):  # IsADirectoryError, a traceback
        ingest_file(db, tmp_path, SIMS7_BASE, report_dir=tmp_path)
    assert db.execute("SELECT count(*) FROM raw.inbound_file").fetchone() == (0,)
    empty = tmp_path / "empty.xml"
    empty.write_bytes(b"\n")
    assert ingest_file(db, empty, SIMS7_BASE, report_dir=tmp_path)["reason"] == "an empty file (no message in it)"


def test_two_manual_imports_of_one_base_at_once_import_it_once(db_url, tmp_path, small_world):
    """Two officers (the CLI's autocommit connections) import the same file at once: one
    imports, the other is refused or finds it imported; a scheduled run's lease is waited for."""
    import threading
    from datetime import timedelta

    import psycopg

    from b2b.errors import RunLeaseError
    from b2b.ingest import manual
    from b2b.ops import runs
    from tests.test_chain import ctx

    f = tmp_path / "export.xml"
    f.write_bytes(small_world.export_sims7(SIMS7_BASE, "snapshot", UNTIL))
    out: list = []

    def one():
        with psycopg.connect(db_url, autocommit=True) as conn:
            try:
                out.append(manual.ingest_file(conn, f, SIMS7_BASE, report_dir=tmp_path)["status"])
            except RunLeaseError as exc:
                out.append(str(exc))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert "loaded" in out and len(out) == 2, out
    assert out[out.index("loaded") - 1] in ("duplicate", f"base {SIMS7_BASE}: another manual import of this base "
                                                          "is under way; try again when it has finished"), out
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM raw.inbound_file").fetchone() == (1,)
        n = conn.execute("SELECT count(DISTINCT student_guid) FROM staging.student").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM staging.student").fetchone() == (n,)
        assert conn.execute("SELECT count(*) FROM results.match").fetchone() == (n,)
        assert conn.execute("SELECT count(*) FROM ops.base_lease").fetchone() == (0,)  # released
        # a scheduled run of the base holds its lease: the import waits, then says so
        run = ctx(UNTIL, dag=f"b2b__{SIMS7_BASE}__snapshot")
        run = type(run)(**{**run.__dict__, "base_id": SIMS7_BASE})
        runs.begin_run(conn, run)
        g = tmp_path / "changed.xml"
        g.write_bytes(small_world.export_sims7(SIMS7_BASE, "changed_data", UNTIL + timedelta(days=1), UNTIL))
        old, manual.LEASE_WAIT = manual.LEASE_WAIT, timedelta(seconds=1)
        try:
            with pytest.raises(RunLeaseError, match=f"for the lease of base {SIMS7_BASE} \\(held by "
                                                    f"b2b__{SIMS7_BASE}__snapshot"):
                manual.ingest_file(conn, g, SIMS7_BASE, data_filter="changed_data", report_dir=tmp_path)
        finally:
            manual.LEASE_WAIT = old
        assert conn.execute("SELECT count(*) FROM raw.inbound_file").fetchone() == (1,)


def test_inbound_folder_moves_files_to_done_and_suspense(db, tmp_path, small_world):
    from b2b.ingest.manual import ingest_folder

    inbox = tmp_path / "inbound" / "xml"
    (inbox / SIMS7_BASE).mkdir(parents=True)
    (inbox / SIMS7_BASE / "8862001_snapshot_1.xml").write_bytes(small_world.export_sims7(SIMS7_BASE, "snapshot", UNTIL))
    (inbox / SIMS7_BASE / "broken.xml").write_bytes(b"<nope")
    (inbox / "9999999").mkdir()
    (inbox / "9999999" / "x.xml").write_bytes(b"<x/>")
    out = ingest_folder(db, inbox)
    assert (out["loaded"], out["suspense"], out["left"]) == (1, 1, 1)
    assert len(list((inbox / SIMS7_BASE / "done").glob("*.xml"))) == 1
    assert len(list((inbox / SIMS7_BASE / "suspense").glob("*.reason.txt"))) == 1
    assert (inbox / "9999999" / "x.xml").exists()  # an unknown base's file is left for a person to look at


# ------------------------------------------------------------------ part 6: per-base enable flag (F40)
def test_switched_off_base_refuses_manual_import_and_its_dags_refuse_to_run(db, tmp_path, small_world,
                                                                             monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from b2b.config.catalogue import load_catalogue
    from b2b.errors import DisabledError
    from b2b.ingest.manual import ingest_file
    from b2b_operators.base import airflow_errors
    from b2b_operators.chain import LoadOperator

    path = catalogue_with(tmp_path, enabled=False)
    cat = load_catalogue(path)
    assert cat.bases[SIMS7_BASE].enabled is False
    assert any(s.base.dfe == SIMS7_BASE for s in cat.dag_specs(include_inactive=False))  # tasks are kept
    f = tmp_path / "export.xml"
    f.write_bytes(small_world.export_sims7(SIMS7_BASE, "snapshot", UNTIL))
    with pytest.raises(DisabledError, match="switched off"):
        ingest_file(db, f, SIMS7_BASE, catalogue_path=path)
    monkeypatch.setenv("B2B_CATALOGUE", str(path))
    op = LoadOperator(task_id="load", base_id=SIMS7_BASE, base_kind="sims7", task_key="snapshot",
                      data_filter="snapshot")
    context = {"data_interval_start": UNTIL, "data_interval_end": UNTIL, "run_id": "r"}
    with pytest.raises(AirflowFailException, match=f"base {SIMS7_BASE}: the base is switched off"):
        with airflow_errors():
            op.run_context(context)
    monkeypatch.setenv("B2B_CATALOGUE", str(catalogue_with(tmp_path)))
    assert op.run_context(context).base_id == SIMS7_BASE


def test_matcher_ignores_inactive_children(db, tmp_path):
    from datetime import timedelta

    from tests.test_chain import DAY1, ctx, page, run_chain
    from tests.test_officer import WEIGHTS

    cy = {"upn": None, "forename": "Cy", "surname": "Ray", "dob": "2015-05-06", "gender": "M"}
    load_children_file(db, write_csv(tmp_path / "a.csv", CHILD_HEADER, children()))
    run_chain(db, ctx(DAY1), [page("student", [("g-cy1", cy)])], WEIGHTS)
    before = db.execute("SELECT person_id FROM results.current_match WHERE student_guid = 'g-cy1'").fetchone()
    assert before == ("P3",)  # found while active
    load_children_file(db, write_csv(tmp_path / "b.csv", CHILD_HEADER, children()[:2]))  # P3 left the LA
    run_chain(db, ctx(DAY1 + timedelta(days=1)), [page("student", [("g-cy2", cy)])], WEIGHTS)
    assert db.execute("SELECT status, person_id FROM results.current_match WHERE student_guid = 'g-cy2'"
                      ).fetchone() == ("unmatched", None)


# ------------------------------------------------------------------ part 4: retention (F44)
def test_delete_files_enforces_each_retention_and_keeps_what_analysts_need(db, tmp_path):
    import os
    import time
    from datetime import timedelta

    from b2b.config.settings import Settings
    from b2b.ingest.extract import ReceivedMessage
    from b2b.ops.maintenance import enforce_retention
    from tests.test_chain import DAY1, ctx, page, run_chain
    from tests.test_officer import WEIGHTS

    amy = {"upn": None, "forename": "Amy", "surname": "Twist", "dob": "2016-05-05", "gender": "F", "ncy": "5"}
    db.execute("INSERT INTO core.child (person_id, forename, surname, gender, dob) "
               "VALUES ('P1', 'Amy', 'Twist', 'F', '2016-05-05')")
    broken = ReceivedMessage("student p2/2", b"not json", "application/json", group="student")
    run_chain(db, ctx(DAY1), [page("student", [("g-amy", amy)]), broken], WEIGHTS)
    run_chain(db, ctx(DAY1 + timedelta(days=1)), [page("student", [("g-amy", dict(amy, ncy="6"))])], WEIGHTS)
    old_file, new_file = [r[0] for r in db.execute("SELECT file_id FROM raw.inbound_file WHERE status <> 'suspense' "
                                                   "ORDER BY window_order")]
    db.execute("""INSERT INTO raw.outbound_file (base_id, task_key, dag_id, run_id, window_end, pupils, payload,
                                                 size_bytes, sha256, status)
                  VALUES ('8862001', 'ret', 'd', 'r', now(), 1, '\\x00', 1, 'x', 'delivered')""")
    db.execute("""INSERT INTO results.anomaly (file_id, ordinal, base_id, student_guid, block_type, rule, field, value)
                  VALUES (%s, 1, '8862003', 'g-amy', 'student', 'r', 'upn', 'BAD-VALUE')""", (old_file,))
    home = tmp_path / "home"
    old_files = [home / "reports" / "validation" / "old.html", home / "inbound" / "xml" / "8862001" / "suspense" / "a.xml",
                 home / "inbound" / "core" / "done" / "children.csv"]
    for p in old_files:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
        past = time.time() - 400 * 86400
        os.utime(p, (past, past))
    fresh = home / "reports" / "validation" / "new.html"
    fresh.write_text("x")
    core_before = db.execute("SELECT count(*) FROM core.child").fetchone()
    matches_before = db.execute("SELECT count(*) FROM results.match").fetchone()

    today = enforce_retention(db, Settings(), now=datetime.now(UTC), home=home)
    # nothing in the database is old enough yet; the 400-day-old files go
    # (core.child's noted changes are no data and always pruned)
    assert {k: v for k, v in today.items() if v} == {"reports": 1, "done_files": 1, "suspense_files": 1,
                                                      "child_change_rows": 1}
    assert not any(p.exists() for p in old_files) and fresh.exists()

    later = datetime.now(UTC) + timedelta(days=400)
    c = enforce_retention(db, Settings(), now=later, home=home)
    assert c["payloads"] == 3 and c["outbound_payloads"] == 1 and c["anomaly_values"] == 1
    assert c["blocks"] == 1 and c["staging_rows"] == 1 and c["reports"] == 1 and not fresh.exists()
    assert c["child_change_rows"] == 0  # pruned by the first run; core.child unchanged since
    # the superseded block is emptied, the latest kept (contacts and the hash filter build on it)
    content = dict(db.execute("SELECT file_id, content FROM raw.inbound_block").fetchall())
    assert content[old_file] == {} and content[new_file] != {}
    assert db.execute("SELECT count(*) FROM staging.student").fetchone() == (1,)
    assert db.execute("SELECT file_id FROM staging.student").fetchone() == (new_file,)
    # analysts' tables keep what they need
    assert db.execute("SELECT count(*) FROM core.child").fetchone() == core_before
    assert db.execute("SELECT count(*) FROM results.match").fetchone() == matches_before
    assert db.execute("SELECT rule FROM results.anomaly").fetchone() == ("r",)
    assert db.execute("SELECT counts->>'staging_rows' FROM ops.retention_run ORDER BY run_id DESC LIMIT 1"
                      ).fetchone() == ("1",)


def test_delete_files_drops_gx_verdicts_the_validate_stage_no_longer_uses(db, tmp_path):
    """ops.gx_verdict keeps an unsalted digest of each value GX judged (a postcode, a DOB, a UPN:
    a dictionary of the possible values reverses it); validate pruned it only when it stored new
    verdicts, so they outlived every retention once runs stopped. Delete Files drops them."""
    from datetime import timedelta

    from b2b.config.settings import Settings
    from b2b.ingest.validation import _value_digest
    from b2b.ops.maintenance import enforce_retention
    from tests.test_chain import ADDR, DAY1, ctx, page, run_chain
    from tests.test_officer import WEIGHTS

    amy = {"upn": None, "forename": "Amy", "surname": "Twist", "dob": "2016-05-05", "gender": "F", "ncy": "5"}
    run_chain(db, ctx(DAY1), [page("student", [("g-amy", amy)]),
                              page("address", [("g-amy", dict(ADDR, postcode="CT9 9QX"))])], WEIGHTS)
    db.commit()
    postcode = ("SELECT count(*) FROM ops.gx_verdict WHERE value_key = %s", (_value_digest(("str", "CT9 9QX")),))
    assert db.execute(*postcode).fetchone() == (1,)
    assert enforce_retention(db, Settings(), home=tmp_path)["gx_verdicts"] == 0  # in use: kept
    later = datetime.now(UTC) + timedelta(days=36)
    assert enforce_retention(db, Settings(), now=later, home=tmp_path)["gx_verdicts"] >= 1
    assert db.execute(*postcode).fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM ops.gx_verdict").fetchone() == (0,)
    # a shorter retention of the anomaly values is the verdicts' too
    run_chain(db, ctx(DAY1 + timedelta(days=1)), [page("address", [("g-amy", dict(ADDR, postcode="CT9 9QY"))])],
              WEIGHTS)
    db.commit()
    soon = datetime.now(UTC) + timedelta(days=8)
    assert enforce_retention(db, Settings(report_retention_days=7), now=soon, home=tmp_path)["gx_verdicts"] >= 1


def test_resolved_suspense_payload_goes_before_the_general_retention(db):
    from datetime import timedelta

    from b2b.config.settings import Settings
    from b2b.ingest.extract import ReceivedMessage
    from b2b.ops.maintenance import enforce_retention
    from tests.test_chain import DAY1, ctx, page, run_chain
    from tests.test_officer import WEIGHTS

    broken = ReceivedMessage("student p1/1", b"not json", "application/json", group="student")
    run_chain(db, ctx(DAY1), [broken], WEIGHTS)
    settings = Settings(file_retention_days=365, suspense_retention_days=10)
    soon = datetime.now(UTC) + timedelta(days=11)
    assert enforce_retention(db, settings, now=soon)["suspense_payloads"] == 0  # not resolved yet: kept
    run_chain(db, ctx(DAY1 + timedelta(days=1)), [page("student", [("g-x", {"forename": "X", "surname": "Y",
                                                                              "dob": "2016-01-01", "gender": "M"})])],
              WEIGHTS)
    assert enforce_retention(db, settings, now=soon)["suspense_payloads"] == 1
    assert db.execute("SELECT payload IS NULL, error IS NOT NULL FROM raw.inbound_file WHERE status = 'suspense'"
                      ).fetchone() == (True, True)


# ------------------------------------------------------------------ the DAGs' operator
def test_la_dag_operators_process_their_folders_and_fail_with_the_reasons(db, db_url, tmp_path, monkeypatch,
                                                                           small_world):
    from airflow.sdk.exceptions import AirflowFailException

    from b2b_operators.la_dags import LaFolderOperator, build_la_dags

    monkeypatch.setenv("B2B_DATABASE_URL", db_url)
    monkeypatch.setenv("B2B_HOME", str(tmp_path))
    core = tmp_path / "inbound" / "core"
    core.mkdir(parents=True)
    write_csv(core / "children.csv", CHILD_HEADER, children())
    out = LaFolderOperator(task_id="core_refresh", action="core_refresh").execute({})
    assert out["files"] == 1 and (core / "done").is_dir()
    xml = tmp_path / "inbound" / "xml" / SIMS7_BASE
    xml.mkdir(parents=True)
    (xml / "a_snapshot.xml").write_bytes(small_world.export_sims7(SIMS7_BASE, "snapshot", UNTIL))
    (xml / "b.xml").write_bytes(b"<broken")
    with pytest.raises(AirflowFailException, match=r"1 of 2 file\(s\) put in suspense: b.xml"):
        LaFolderOperator(task_id="manual_import", action="manual_import").execute({})
    db.rollback()
    assert db.execute("SELECT count(*) FROM core.child").fetchone() == (3,)
    assert db.execute("SELECT status FROM raw.inbound_file ORDER BY file_id").fetchall() == [("loaded",),
                                                                                            ("suspense",)]
    from b2b.config.catalogue import load_catalogue

    assert set(build_la_dags(load_catalogue().la)) == {"b2b__core__refresh", "b2b__manual_import"}


# ------------------------------------------------------------------ the commands
def test_core_load_and_ingest_commands_document_their_formats(capsys):
    from b2b.cli.main import main

    for argv, words in ((["core", "load", "--help"], ["children CSV", "gazetteer CSV", "mapping file", "guid_base",
                                                       "date_format", "inactive"]),
                        (["ingest", "--help"], ["SIMS 7 XML", "dataGroup", "suspense", "manual_import",
                                                "SHA-256"])):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert all(w in out for w in words), argv


def test_core_load_and_ingest_commands(db, db_url, tmp_path, monkeypatch, capsys, small_world):
    from b2b.cli.main import main

    monkeypatch.setenv("B2B_DATABASE_URL", db_url)
    monkeypatch.setenv("B2B_HOME", str(tmp_path))
    good = write_csv(tmp_path / "children.csv", CHILD_HEADER, children())
    assert main(["core", "load", str(good)]) == 0
    assert "new 3" in capsys.readouterr().out
    bad = write_csv(tmp_path / "bad.csv", CHILD_HEADER, children(["P9", "", "X", "Y", "M", "31/12/2015", "", "", ""]))
    assert main(["core", "load", str(bad)]) == 1
    assert "row 4 (line 5), field dob" in capsys.readouterr().err
    f = tmp_path / "export.xml"
    f.write_bytes(small_world.export_sims7(SIMS7_BASE, "snapshot", UNTIL))
    assert main(["ingest", str(f), "--base", SIMS7_BASE]) == 0
    assert "status loaded" in capsys.readouterr().out
    (tmp_path / "broken.xml").write_bytes(b"<x")
    assert main(["ingest", str(tmp_path / "broken.xml"), "--base", SIMS7_BASE]) == 1
    assert "status suspense" in capsys.readouterr().out
