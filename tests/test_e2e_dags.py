"""End to end: generated DAGs run with dag.test() against the simulator and real PostgreSQL."""
import os
import uuid
from datetime import datetime, timedelta

import pendulum
import pytest

from b2b.config.catalogue import load_catalogue
from tests.support import demo_world_for_dags

TZ = pendulum.timezone("Europe/London")


@pytest.fixture(scope="module")
def e2e(pg_admin_url, pg_template):
    """A module database, the demo world served on loopback, Airflow pointed at both."""
    yield from demo_world_for_dags(pg_admin_url, pg_template)


def dag_id(base: str, filt: str, group: str = "ncy") -> str:
    for s in load_catalogue().dag_specs(include_inactive=False):
        if s.base.dfe == base and s.task.filter == filt and s.task.group_type == group:
            return s.dag_id
    raise LookupError((base, filt))


def run(e2e, dag: str, end: datetime):
    dr = e2e["dags"][dag].test(logical_date=pendulum.instance(end, tz=TZ))
    assert str(dr.state).endswith("success"), f"{dag} {end}: {dr.state}"
    return dr


def q(e2e, sql, *args):
    import psycopg

    with psycopg.connect(e2e["url"]) as conn:
        return conn.execute(sql, args).fetchall()


def state(e2e, base):
    return {
        "files": q(e2e, "SELECT dag_id, window_end, seq, status, pupils, blocks, sha256 FROM raw.inbound_file "
                        "WHERE base_id = %s ORDER BY 1, 2, 3", base),
        "blocks": q(e2e, "SELECT f.dag_id, f.window_end, b.ordinal, b.block_type, b.student_guid, b.hash, "
                         "b.disposition FROM raw.inbound_block b JOIN raw.inbound_file f USING (file_id) "
                         "WHERE f.base_id = %s ORDER BY 1, 2, 3", base),
        "staging": q(e2e, "SELECT student_guid, upn, surname, dob FROM staging.student WHERE base_id = %s "
                          "ORDER BY 1", base),
        "cache": q(e2e, "SELECT student_guid, block_type, hash, window_order FROM ops.hash_cache "
                        "WHERE base_id = %s ORDER BY 1, 2, 4", base),
        "match": q(e2e, "SELECT student_guid, person_id, status, rule FROM results.match WHERE base_id = %s "
                        "ORDER BY 1, 2", base),
        "conflicts": q(e2e, "SELECT person_id, field, la_value, incoming_value, times_seen FROM results.conflict "
                            "WHERE base_id = %s ORDER BY 1, 2", base),
        "anomalies": q(e2e, "SELECT student_guid, block_type, rule, field FROM results.anomaly WHERE base_id = %s "
                            "ORDER BY 1, 2, 3", base),
        "stages": q(e2e, "SELECT dag_id, window_end, stage, level, counts FROM ops.task_log "
                         "WHERE base_id = %s AND file_id IS NULL ORDER BY 1, 2, 3", base),
    }


SNAP_END = datetime(2026, 10, 4, 18, 0)


def test_sims7_snapshot_lands_files_blocks_and_task_log(e2e):
    dag = dag_id("8862001", "snapshot")
    run(e2e, dag, SNAP_END)
    files = q(e2e, "SELECT status, pupils, blocks, source FROM raw.inbound_file WHERE dag_id = %s", dag)
    assert len(files) == 1 and files[0][0] == "loaded" and files[0][3] == "sims7"
    students = q(e2e, "SELECT count(*) FROM staging.student WHERE base_id = '8862001'")[0][0]
    # the school's record with a wrong UPN check letter is an anomaly, not loaded; the rest all are
    planted = sorted(g for (d, g) in e2e["world"].entry_errors() if d == "8862001")
    anomalies = q(e2e, "SELECT student_guid, block_type, rule, field FROM results.anomaly WHERE base_id = '8862001' "
                       "ORDER BY 1")
    assert planted and anomalies == [(g, "student", "upn_check_letter", "upn") for g in planted]
    assert students == files[0][1] - len(planted) > 100
    other = q(e2e, "SELECT count(*) FROM staging.address WHERE student_guid = ANY(%s)", planted)[0][0]
    assert other == len(planted)  # their address blocks still loaded
    report = q(e2e, "SELECT counts->>'report' FROM ops.task_log WHERE dag_id = %s AND stage = 'validate'", dag)[0][0]
    assert report.endswith(".html") and os.path.exists(report)
    stages = [r[0] for r in q(e2e, "SELECT stage FROM ops.task_log WHERE dag_id = %s AND file_id IS NULL "
                                   "ORDER BY log_id", dag)]
    assert stages == ["extract", "hash_filter", "validate", "load", "match", "conflicts", "apply", "contacts"]
    matched = q(e2e, "SELECT count(*) FILTER (WHERE person_id IS NOT NULL), count(*) FROM results.match "
                     "WHERE base_id = '8862001'")[0]
    assert matched[0] > 0.5 * matched[1]


def test_rerun_of_the_same_run_leaves_identical_tables(e2e):
    dag = dag_id("8864001", "snapshot")
    run(e2e, dag, SNAP_END)
    first = state(e2e, "8864001")
    run(e2e, dag, SNAP_END)
    again = state(e2e, "8864001")
    # the task log's counts are the same too; only run ids / timestamps differ (not compared)
    assert again == first


def test_changed_data_days_are_mostly_skipped_by_cache(e2e):
    base = "8862002"
    run(e2e, dag_id(base, "snapshot"), SNAP_END)
    cd = dag_id(base, "changed_data")
    shares = []
    for day in (5, 6, 7):
        end = datetime(2026, 10, day, 18, 0)
        run(e2e, cd, end)
        counts = dict(q(e2e, "SELECT stage, counts FROM ops.task_log WHERE dag_id = %s AND file_id IS NULL "
                             "AND window_end = %s", cd, pendulum.instance(end, tz=TZ)))["hash_filter"]
        shares.append(counts["skipped_by_cache"] / max(counts["blocks"], 1))
    assert shares[1] > 0.5, shares


def test_sims_primary_changed_data_through_pages(e2e):
    base = "8862003"
    run(e2e, dag_id(base, "snapshot"), SNAP_END)
    cd = dag_id(base, "changed_data")
    dr = run(e2e, cd, datetime(2026, 10, 5, 18, 0))
    files = q(e2e, "SELECT label, status FROM raw.inbound_file WHERE dag_id = %s ORDER BY seq", cd)
    assert files and all(s == "loaded" for _, s in files)
    assert {label.split()[0] for label, _ in files} <= {"student", "address", "contacts", "sen", "exclusions"}
    # the window is Airflow's data interval (not now()); real width, after the migration date (F5)
    start, end = q(e2e, "SELECT window_start, window_end FROM raw.inbound_file WHERE dag_id = %s LIMIT 1", cd)[0]
    assert (start, end) == (dr.data_interval_start, dr.data_interval_end)
    assert end - start >= timedelta(hours=24)



def hash_counts(e2e, dag, dr):
    rows = q(e2e, "SELECT counts FROM ops.task_log WHERE dag_id = %s AND file_id IS NULL AND stage = 'hash_filter' "
                  "AND window_end = %s", dag, dr.data_interval_end)
    assert rows, (dag, dr.data_interval_end)
    return rows[0][0]


def test_second_identical_extraction_skips_every_block(e2e):
    base = "8864002"
    run(e2e, dag_id(base, "snapshot"), SNAP_END)
    lac = dag_id(base, "snapshot", "lac")
    # the LAC task the next evening: the world says none of its students changed since the snapshot
    end = datetime(2026, 10, 5, 18, 15)
    world = e2e["world"]
    before = world.state(pendulum.instance(SNAP_END, tz=TZ)).students[base]
    after = world.state(pendulum.instance(end, tz=TZ)).students[base]
    lac_now = [g for g, s in after.items() if s.blocks["student"]["looked_after"] and not s.blocks["student"]["end_date"]]
    assert lac_now and all(before[g].blocks == after[g].blocks for g in lac_now)
    dr = run(e2e, lac, end)
    c = hash_counts(e2e, lac, dr)
    assert c["blocks"] > 0 and c["skipped_by_cache"] == c["blocks"], c


def test_cache_off_processes_everything(e2e):
    from dataclasses import replace

    from b2b_operators.factory import build_dags

    base = "8862002"
    run(e2e, dag_id(base, "snapshot"), SNAP_END)
    cat = load_catalogue()
    off = build_dags(replace(cat, la=replace(cat.la, settings=replace(cat.la.settings, b2bhcache=False))))
    dag = dag_id(base, "snapshot", "lac")
    end = datetime(2026, 10, 5, 18, 15)
    dr = off[dag].test(logical_date=pendulum.instance(end, tz=TZ))
    assert str(dr.state).endswith("success")
    c = hash_counts(e2e, dag, dr)
    assert c["blocks"] > 0 and c["skipped_by_cache"] == 0, c


def test_students_first_loaded_by_an_attendance_task_are_matched(e2e):
    # an attendance export carries each student's core block; once loaded it is cached, so the
    # snapshot after it skips that block: the attendance run itself must have matched it
    base = "8864001"
    run(e2e, f"b2b__{base}__attendance_all", datetime(2026, 10, 2, 18, 30))
    run(e2e, dag_id(base, "snapshot"), SNAP_END)
    loaded = q(e2e, "SELECT count(DISTINCT student_guid) FROM staging.student WHERE base_id = %s", base)[0][0]
    matched = q(e2e, "SELECT count(DISTINCT student_guid) FROM results.match WHERE base_id = %s", base)[0][0]
    assert loaded > 100 and matched == loaded


def test_readme_example_queries_run(e2e):
    """The SQL the README offers analysts runs against a warehouse the DAGs filled."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    statements = [s for block in re.findall(r"```sql\n(.*?)```", readme, re.S) for s in block.split(";") if s.strip()]
    assert len(statements) >= 5
    run(e2e, dag_id("8862001", "snapshot"), SNAP_END)
    results = [q(e2e, s) for s in statements]
    assert results[0], "open conflicts per school should list the demo school's conflicts"


def test_run_summary_gives_the_f9_counts_per_run(e2e):
    base = "8862001"
    dag = dag_id(base, "snapshot")
    dr = run(e2e, dag, SNAP_END)
    row = q(e2e, """SELECT files_received, blocks_received, skipped_by_cache, invalid_blocks, anomalies,
                           blocks_loaded, students_matched, unmatched, errors, task_key
                      FROM ops.run_summary WHERE dag_id = %s AND window_end = %s""", dag, dr.data_interval_end)
    assert len(row) == 1
    files, blocks, skipped, invalid, anomalies, loaded, matched, unmatched, errors, task = row[0]
    assert (files, errors, task) == (1, 0, "snapshot")
    assert blocks == q(e2e, "SELECT count(*) FROM raw.inbound_block b JOIN raw.inbound_file f USING (file_id) "
                            "WHERE f.dag_id = %s AND f.window_end = %s", dag, dr.data_interval_end)[0][0]
    assert skipped + invalid + loaded == blocks
    assert invalid == anomalies == len([1 for (d, _) in e2e["world"].entry_errors() if d == base])
    students = q(e2e, "SELECT count(*) FROM results.match m JOIN raw.inbound_file f USING (file_id) "
                      "WHERE f.dag_id = %s AND f.window_end = %s", dag, dr.data_interval_end)[0][0]
    assert matched + unmatched == students


def test_shell_match_gives_the_same_decisions_as_the_dag(e2e, tmp_path):
    """``b2b match`` on CSV exports of the same data decides exactly as the DAG's match stage."""
    import csv
    import subprocess
    import sys

    import psycopg

    from b2b.matching import CORE_COLUMNS, INCOMING_COLUMNS
    from b2b.reconcile.match_stage import incoming_frame

    base = "8862004"
    dag = dag_id(base, "snapshot")
    dr = run(e2e, dag, SNAP_END)
    with psycopg.connect(e2e["url"]) as conn:
        files = [r[0] for r in conn.execute("SELECT file_id FROM raw.inbound_file WHERE dag_id = %s AND window_end = %s",
                                            (dag, dr.data_interval_end))]
        inc = incoming_frame(conn, files, dr.data_interval_end)
        # the LA's own GUID links become CORE.csv's guid column (the same evidence, +12 either way)
        core = conn.execute("""SELECT c.person_id, c.upn, l.student_guid, c.forename, c.middle_names, c.surname,
                                      c.gender, c.dob, c.postcode, concat_ws(' ', c.paon, c.street), c.base_id
                                 FROM core.child c
                                 LEFT JOIN core.child_link l ON l.person_id = c.person_id AND l.base_id = %s
                                      AND l.linked_by = 'la'
                                ORDER BY 1""", (base,)).fetchall()
        dag_rows = {f"{f}|{g}": (s, p or "") for f, g, s, p in conn.execute(
            "SELECT file_id, student_guid, status, person_id FROM results.match WHERE file_id = ANY(%s)", (files,))}
        links = conn.execute("""SELECT count(*) FROM core.child_link WHERE base_id = %s AND linked_by <> 'la'
                                   AND file_id <> ALL(%s)""", (base, files)).fetchone()[0]
    assert links == 0  # links from other runs would be an input the CSV path does not have
    with open(tmp_path / "core.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CORE_COLUMNS)
        w.writerows([["" if v is None else v for v in r] for r in core])
    inc[INCOMING_COLUMNS].to_csv(tmp_path / "inc.csv", index=False)
    res = subprocess.run([sys.executable, "-m", "b2b.cli", "match", "--core", str(tmp_path / "core.csv"),
                          "--incoming", str(tmp_path / "inc.csv"), "--out", str(tmp_path / "out.csv")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    with open(tmp_path / "out.csv") as f:
        shell = {r["incoming_id"]: r for r in csv.DictReader(f)}
    assert len(shell) == len(dag_rows) > 100
    for iid, (status, pid) in dag_rows.items():
        s = shell[iid]
        dag_status = "matched" if status == "matched_with_conflicts" else status
        shell_status = "matched" if s["status"] == "matched_with_conflicts" else s["status"]
        assert (shell_status, s["person_id"]) == (dag_status, pid), iid


def test_maintenance_dags_run(e2e):
    run(e2e, dag_id("8862001", "snapshot"), SNAP_END)
    staged = q(e2e, "SELECT count(*) FROM staging.student")[0][0]
    assert q(e2e, "SELECT count(*) FROM ops.hash_cache")[0][0] > 0
    run(e2e, "b2b__maintenance__clear_conflicts", datetime(2026, 10, 6, 5, 30))
    run(e2e, "b2b__maintenance__delete_files", datetime(2027, 6, 1, 5, 45))  # a window far after the imports
    assert q(e2e, "SELECT count(*) FROM raw.inbound_file WHERE payload IS NOT NULL")[0][0] == 0
    assert q(e2e, "SELECT count(*) FROM staging.student")[0][0] == staged  # only the payloads went
    dr = e2e["dags"]["b2b__maintenance__clear_cached_data"].test()
    assert str(dr.state).endswith("success")
    assert q(e2e, "SELECT count(*) FROM ops.hash_cache")[0][0] == 0


def test_demo_summary_line_has_the_exact_form_and_true_counts(e2e):
    import io
    import re

    import psycopg

    from b2b.cli.demo import print_summary

    run(e2e, dag_id("8862001", "snapshot"), SNAP_END)
    buf = io.StringIO()
    with psycopg.connect(e2e["url"]) as conn:
        totals = print_summary(conn, out=buf)
    last = buf.getvalue().strip().splitlines()[-1]
    assert re.fullmatch(r"demo: files=\d+ blocks=\d+ skipped_by_cache=\d+ loaded=\d+ matched=\d+ conflicts=\d+ "
                        r"unmatched=\d+ anomalies=\d+", last), last
    statuses = dict(q(e2e, "SELECT status, count(*) FROM results.current_match GROUP BY 1"))
    assert totals["matched"] == statuses.get("matched", 0) + statuses.get("matched_with_conflicts", 0)
    assert totals["unmatched"] == statuses.get("unmatched", 0) and totals["possible"] == statuses.get("possible", 0)
    assert totals["anomalies"] == q(e2e, "SELECT count(*) FROM results.anomaly")[0][0]


def test_attendance_tasks_keep_one_marks_string_per_student_and_year(e2e):
    """SIMS 7 full-year task and SIMS Primary changed marks, through the generated DAGs, against the
    simulator's own marks."""
    world = e2e["world"]
    end = datetime(2026, 10, 9, 18, 30)  # Friday: the weekly SIMS 7 attendance task (3 months)
    dr = run(e2e, "b2b__8862001__attendance_all", end)
    until = dr.data_interval_end
    st = world.state(until)
    stored = dict(q(e2e, "SELECT student_guid, marks FROM core.attendance_current WHERE base_id = '8862001' "
                         "AND academic_year = 2026"))
    on_roll = {g: s for g, s in st.students["8862001"].items() if not s.blocks["student"]["end_date"]}
    assert set(stored) == set(on_roll)
    for g, s in list(on_roll.items())[:40]:
        assert stored[g] == world.marks_string(s, 2026, until)  # the window covers the whole year so far

    # SIMS Primary: changed marks on two days land where the school's own string has them
    for day in (datetime(2026, 10, 6, 18, 30), datetime(2026, 10, 7, 18, 30)):
        dr = run(e2e, "b2b__8862003__attendance_changed", day)
    until = dr.data_interval_end
    st = world.state(until)
    rows = q(e2e, "SELECT student_guid, marks FROM core.attendance_current WHERE base_id = '8862003'")
    assert len(rows) > 100
    for g, marks in rows:
        school = world.marks_string(st.students["8862003"][g], 2026, until)
        written = [k for k, m in enumerate(marks) if m != "-"]
        assert written and all(school[k] == marks[k] for k in written), g


def test_a_changed_school_task_raises_an_alert(e2e):
    from dataclasses import replace

    from b2b_operators.factory import build_dags

    base = "8862002"
    run(e2e, dag_id(base, "snapshot", "lac"), datetime(2026, 10, 5, 18, 15))
    assert q(e2e, "SELECT count(*) FROM ops.alert WHERE base_id = %s", base)[0][0] == 0
    cat = load_catalogue()
    tasks = tuple(replace(t, ncys=("5", "6")) if t.key == "lac_snapshot" else t for t in cat.tasks)
    changed = build_dags(replace(cat, tasks=tasks))
    dag = dag_id(base, "snapshot", "lac")
    dr = changed[dag].test(logical_date=pendulum.instance(datetime(2026, 10, 6, 18, 15), tz=TZ))
    assert str(dr.state).endswith("success")
    alerts = q(e2e, "SELECT kind, task_key, details FROM ops.alert WHERE base_id = %s", base)
    assert len(alerts) == 1 and alerts[0][:2] == ("task_changed", "lac_snapshot")
    assert alerts[0][2]["changed"]["ncys"] == {"was": None, "now": ["5", "6"]}


# ------------------------------------------------------------------ issue 15: one task per run (TASK_GRANULARITY)
def granular_dags(granularity: str) -> dict:
    from dataclasses import replace

    from b2b_operators.factory import build_dags

    cat = load_catalogue()
    return build_dags(replace(cat, la=replace(cat.la, settings=replace(cat.la.settings,
                                                                       task_granularity=granularity))))


@pytest.fixture
def fresh_warehouse(e2e, pg_admin_url, pg_template):
    """A factory of fresh warehouses (the LA's records loaded), each made the DAGs' warehouse
    (``B2B_DATABASE_URL``) until the next one; the module's warehouse is restored at the end."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from b2b.ops.core_load import load_core

    names: list[str] = []

    def make() -> dict:
        name = f"e2e_gr_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name} TEMPLATE {pg_template}")
        names.append(name)
        url = make_conninfo(pg_admin_url, dbname=name)
        with psycopg.connect(url, autocommit=True) as conn:
            load_core(conn, e2e["world"].la_core())
        os.environ["B2B_DATABASE_URL"] = url
        return {"url": url}

    yield make
    os.environ["B2B_DATABASE_URL"] = e2e["url"]
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        for name in names:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def comparable(wh, base):
    """The base's tables (``state``), the task log's counts without the validation report's path."""
    s = state(wh, base)
    s["stages"] = [(d, w, st, lv, {k: v for k, v in c.items() if k != "report"}) for d, w, st, lv, c in s["stages"]]
    s["watermark"] = q(wh, "SELECT task_key, window_end FROM ops.watermark WHERE base_id = %s ORDER BY 1", base)
    s["runs"] = q(wh, "SELECT dag_id, window_start, window_end, state FROM ops.run WHERE base_id = %s ORDER BY 1, 3",
                  base)
    s["lease"] = q(wh, "SELECT count(*) FROM ops.base_lease")
    return s


GR_BASE = "8862001"
GR_DAYS = (SNAP_END, datetime(2026, 10, 6, 18, 0))  # the weekly snapshot, then a changed-data day


def run_days(wh, dags):
    """The base's snapshot, then its changed-data day (cache and watermark from the snapshot)."""
    for dag, end in zip((dag_id(GR_BASE, "snapshot"), dag_id(GR_BASE, "changed_data")), GR_DAYS):
        dr = dags[dag].test(logical_date=pendulum.instance(end, tz=TZ))
        assert str(dr.state).endswith("success"), f"{dag} {end}: {dr.state}"
    return comparable(wh, GR_BASE)


def test_one_task_per_run_gives_the_tables_and_stage_log_of_one_task_per_stage(fresh_warehouse):
    run_dags = granular_dags("run")
    assert [t.task_id for t in run_dags[dag_id(GR_BASE, "changed_data")].tasks] == ["run"]
    by_stage = run_days(fresh_warehouse(), granular_dags("stage"))
    by_run = run_days(fresh_warehouse(), run_dags)
    assert by_run == by_stage
    stages = [r[2] for r in by_run["stages"] if r[0] == dag_id(GR_BASE, "changed_data")]
    assert sorted(stages) == sorted(["extract", "hash_filter", "validate", "load", "match", "conflicts", "apply",
                                     "contacts"])  # every stage still has its own ops.task_log row
    assert by_run["lease"] == [(0,)] and len(by_run["watermark"]) == 2
    assert any(c.get("skipped_by_cache") for d, _, st, _, c in by_run["stages"]
               if st == "hash_filter" and d.endswith("changed_data"))


def test_a_run_task_failing_in_a_middle_stage_gives_the_lease_back_and_its_retry_the_clean_tables(
        fresh_warehouse, tmp_path):
    clean = fresh_warehouse()
    dag = dag_id(GR_BASE, "snapshot")
    dr = granular_dags("run")[dag].test(logical_date=pendulum.instance(SNAP_END, tz=TZ))
    assert str(dr.state).endswith("success")
    expected = comparable(clean, GR_BASE)

    wh = fresh_warehouse()
    dags = granular_dags("run")
    dags[dag].get_task("run").retries = 0  # this attempt fails for good (dag.test does not wait out retries)
    home = tmp_path / "home"
    home.mkdir()
    (home / "reports").write_text("not a folder")  # validate cannot write its report: a real OSError
    saved = os.environ.get("B2B_HOME")
    os.environ["B2B_HOME"] = str(home)
    try:
        failed = dags[dag].test(logical_date=pendulum.instance(SNAP_END, tz=TZ))
    finally:
        if saved is None:
            os.environ.pop("B2B_HOME", None)
        else:
            os.environ["B2B_HOME"] = saved
    assert str(failed.state).endswith("failed")
    logged = {r[0] for r in q(wh, "SELECT stage FROM ops.task_log WHERE dag_id = %s AND file_id IS NULL", dag)}
    assert {"extract", "hash_filter"} <= logged and "load" not in logged  # it failed in the middle
    assert q(wh, "SELECT state FROM ops.run WHERE dag_id = %s", dag) == [("failed",)]
    assert q(wh, "SELECT count(*) FROM ops.base_lease") == [(0,)]  # the failure callback gave it back
    assert q(wh, "SELECT count(*) FROM ops.watermark") == [(0,)]
    assert q(wh, "SELECT count(*) FROM ops.hash_cache WHERE committed") == [(0,)]  # nothing counted yet

    retried = granular_dags("run")[dag].test(logical_date=pendulum.instance(SNAP_END, tz=TZ))
    assert str(retried.state).endswith("success")
    got = comparable(wh, GR_BASE)
    assert got == expected
