"""Trustworthy runs (issue 9): failed, overlapping, replayed and manual runs lose nothing and double nothing.

Chain-level tests drive the stage functions against real PostgreSQL; the F5 / manual-trigger
tests run the generated DAGs with ``dag.test()`` against the simulator on loopback.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest

from b2b import pipeline as chain
from b2b.errors import RunLeaseError
from b2b.ingest.extract import store_messages
from b2b.ops import runs
from tests.support import demo_world_for_dags
from tests.test_chain import ADDR, DAY1, EMMA, JOE, LEGACY, REPORTS, core, ctx, page, run_chain, snapshot_tables

__all__ = ["core"]  # the fixture, imported for these tests

MOVED = dict(ADDR, paon="7", street="New Street", postcode="CT2 7AA")
CORE_SQL = """INSERT INTO core.child (person_id, upn, forename, surname, gender, dob, ncy, paon, street, postcode)
              VALUES ('P1', 'F886200326001', 'Joseph', 'Bloggs', 'M', '2016-01-26', '4', '1', 'Green Abbey Road',
                      'CT1 2AB'),
                     ('P2', NULL, 'Emma', 'Davids', 'F', '2017-09-21', '4', NULL, NULL, NULL)"""


def day(n: int) -> datetime:
    return DAY1 + timedelta(days=n)


# ------------------------------------------------------------------ item 1: a failed run and the hash cache
def test_a_run_that_died_after_load_does_not_hide_its_changes_from_the_next_run(core):
    db = core
    run_chain(db, ctx(day(0)), [page("student", [("g-joe", JOE)]), page("address", [("g-joe", ADDR)])])
    moved = [page("address", [("g-joe", MOVED)])]
    c = ctx(day(1))
    store_messages(db, c, moved)
    chain.hash_filter(db, c, LEGACY)
    chain.validate(db, c, REPORTS)
    assert chain.load(db, c)["loaded"] == 1
    # the run dies here (match raises, the worker is killed): no match, conflicts, apply or commit
    out = run_chain(db, ctx(day(2)), moved)
    assert out["hash"]["skipped_by_cache"] == 0 and out["load"]["loaded"] == 1
    conflicts = db.execute("SELECT field, incoming_value FROM results.conflict WHERE person_id = 'P1'").fetchall()
    assert ("postcode", "CT2 7AA") in conflicts
    applied = db.execute("""SELECT postcode FROM core.child_applied_address WHERE person_id = 'P1'
                             ORDER BY window_order DESC LIMIT 1""").fetchone()
    assert applied == ("CT2 7AA",)
    # and once that run committed, the same block is skipped again
    assert run_chain(db, ctx(day(3)), moved)["hash"]["skipped_by_cache"] == 1


# ------------------------------------------------------------------ item 13: replay gives identical tables
def test_rerunning_earlier_windows_after_later_ones_leaves_identical_tables(core):
    db = core
    windows = [
        (ctx(day(0)), [page("student", [("g-joe", dict(JOE, forename="Joseph")), ("g-emma", EMMA)]),
                       page("address", [("g-joe", ADDR)])]),
        (ctx(day(1)), [page("student", [("g-joe", JOE)])]),  # now the school says "Joe": a conflict
        (ctx(day(2)), [page("address", [("g-joe", MOVED)])]),
    ]
    for c, msgs in windows:
        run_chain(db, c, msgs)
    first = snapshot_tables(db)
    assert ("g-joe", "P1", "matched") in {(r[1], r[2], r[3]) for r in first["match"]}
    for c, msgs in windows:  # the demo rerun on a kept database: every window again, in order
        run_chain(db, c, msgs)
    assert snapshot_tables(db) == first


# ------------------------------------------------------------------ item 4: overlapping runs of one base
@contextmanager
def fresh_db(pg_admin_url, pg_template):
    import psycopg
    from psycopg.conninfo import make_conninfo

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    url = make_conninfo(pg_admin_url, dbname=name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(CORE_SQL)
    try:
        yield url
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


OVERLAP_WINDOWS = [
    [page("student", [("g-joe", JOE), ("g-emma", EMMA)]), page("address", [("g-joe", ADDR)])],
    [page("student", [("g-joe", dict(JOE, reg_group="5C"))])],
    [page("student", [("g-joe", dict(JOE, reg_group="5C")), ("g-emma", dict(EMMA, ncy="5"))])],
    [page("address", [("g-joe", MOVED)]), page("student", [("g-joe", dict(JOE, reg_group="5D"))])],
]


def run_window(url: str, k: int, done: list[threading.Event]) -> None:
    """One whole run of window k on its own connection, as a DAG run would: lease, stages, commit.
    The DAG's previous run is pending until its own run_window is over (Airflow's DAG run state)."""
    import psycopg

    c = ctx(day(k))
    with psycopg.connect(url, autocommit=True) as conn:
        chain.begin_run(conn, c, previous_end=day(k - 1), poll=0.05,
                        predecessor_pending=lambda: "" if k == 0 or done[k - 1].is_set() else "previous run")
        store_messages(conn, c, OVERLAP_WINDOWS[k])
        chain.hash_filter(conn, c, LEGACY)
        chain.validate(conn, c, REPORTS)
        chain.load(conn, c)
        chain.match(conn, c, LEGACY)
        chain.conflicts(conn, c)
        chain.apply(conn, c)
        chain.commit(conn, c)
    done[k].set()


def final_tables(url: str) -> dict:
    import psycopg

    q = {
        "blocks": """SELECT f.window_end, b.student_guid, b.block_type, b.hash, b.disposition
                       FROM raw.inbound_block b JOIN raw.inbound_file f USING (file_id) ORDER BY 1, 2, 3""",
        "cache": "SELECT student_guid, block_type, hash, window_order, committed FROM ops.hash_cache ORDER BY 1, 2, 4",
        "match": "SELECT window_order, student_guid, person_id, status, rule FROM results.match ORDER BY 1, 2",
        "conflict": "SELECT person_id, field, la_value, incoming_value, first_seen, last_seen, times_seen "
                    "FROM results.conflict ORDER BY 1, 2, 4",
        "applied": "SELECT window_order, person_id, ncy, reg_group FROM core.child_applied ORDER BY 1, 2",
        "applied_address": "SELECT window_order, person_id, postcode FROM core.child_applied_address ORDER BY 1, 2",
        "current": "SELECT person_id, upn, forename, ncy, reg_group, postcode FROM core.child_current ORDER BY 1",
        "log": """SELECT window_end, stage, counts FROM ops.task_log
                   WHERE file_id IS NULL AND stage <> 'validate' ORDER BY 1, 2""",
        "watermark": "SELECT base_id, task_key, window_end FROM ops.watermark",
        "lease": "SELECT count(*) FROM ops.base_lease",
    }
    with psycopg.connect(url) as conn:
        return {k: conn.execute(v).fetchall() for k, v in q.items()}


def test_windows_started_together_give_the_tables_of_windows_run_one_after_another(pg_admin_url, pg_template):
    n = len(OVERLAP_WINDOWS)
    with fresh_db(pg_admin_url, pg_template) as url:
        done = [threading.Event() for _ in range(n)]
        for k in range(n):
            run_window(url, k, done)
        sequential = final_tables(url)
    with fresh_db(pg_admin_url, pg_template) as url:
        errors: list[BaseException] = []
        done = [threading.Event() for _ in range(n)]

        def worker(k: int) -> None:
            try:
                run_window(url, k, done)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                done[k].set()

        # a backfill starting its runs together, the latest window first (the worst order)
        threads = [threading.Thread(target=worker, args=(k,)) for k in reversed(range(n))]
        for t in threads:
            t.start()
            time.sleep(0.2)
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        together = final_tables(url)
    assert together == sequential
    assert sequential["lease"] == [(0,)] and sequential["watermark"][0][2] == day(n - 1)


def test_a_failed_run_gives_the_lease_back_and_a_held_lease_makes_others_wait(db):
    db.autocommit = True
    first, second = ctx(day(0)), ctx(day(1))
    runs.begin_run(db, first)
    with pytest.raises(RunLeaseError, match="lease of base 8862003"):
        runs.begin_run(db, second, wait=timedelta(seconds=0.3), poll=0.05)
    runs.fail_run(db, first.base_id, first.dag_id, first.window_end)
    assert runs.begin_run(db, second, wait=timedelta(seconds=0.3), poll=0.05)["waited_seconds"] < 0.3
    states = dict(db.execute("SELECT window_end, state FROM ops.run").fetchall())
    assert states == {day(0): "failed", day(1): "running"}
    # the failed run did not move the watermark
    assert runs.watermark(db, first.base_id, first.task_key) is None


# ------------------------------------------------------------------ items 5 and 6 through real DAG runs
@pytest.fixture(scope="module")
def e2e(pg_admin_url, pg_template):
    """A module database, the demo world served on loopback, Airflow pointed at both."""
    yield from demo_world_for_dags(pg_admin_url, pg_template)


def q(e2e, sql, *args):
    import psycopg

    with psycopg.connect(e2e["url"]) as conn:
        return conn.execute(sql, args).fetchall()


BASE7 = "8862002"
CD = f"b2b__{BASE7}__changed_data"


def test_a_failed_day_is_covered_by_the_next_run_and_a_manual_run_by_the_watermark(e2e):
    import json

    import pendulum

    tz = pendulum.timezone("Europe/London")
    dag = e2e["dags"][CD]
    d1, d2, d3 = (pendulum.datetime(2026, 10, d, 18, 0, tz=tz) for d in (5, 6, 7))
    assert str(dag.test(logical_date=d1).state).endswith("success")
    # day 2: the school refuses the credentials (a retry cannot help): the run fails at once
    key = f"AIRFLOW_CONN_SIMS7_{BASE7}"
    good = os.environ[key]
    os.environ[key] = json.dumps(dict(json.loads(good), password="wrong"))
    try:
        assert str(dag.test(logical_date=d2).state).endswith("failed")
    finally:
        os.environ[key] = good
    assert q(e2e, "SELECT state FROM ops.run WHERE dag_id = %s AND window_end = %s", CD, d2) == [("failed",)]
    assert q(e2e, "SELECT count(*) FROM ops.base_lease") == [(0,)]  # given back by the failure callback
    # day 3 asks since the last successful run (day 1's end): day 2's changes are there
    assert str(dag.test(logical_date=d3).state).endswith("success")
    starts = q(e2e, "SELECT DISTINCT window_start FROM raw.inbound_file WHERE dag_id = %s AND window_end = %s",
               CD, d3)
    assert starts == [(d1,)]
    world = e2e["world"]
    day2 = {g for g, _ in world.pupils(BASE7, "changed_data", d2, d1)}
    day3_only = {g for g, _ in world.pupils(BASE7, "changed_data", d3, d2)}
    assert day2 - day3_only, "the world changes someone on day 2 only"
    got = {r[0] for r in q(e2e, """SELECT DISTINCT b.student_guid FROM raw.inbound_block b
                                    JOIN raw.inbound_file f USING (file_id)
                                   WHERE f.dag_id = %s AND f.window_end = %s""", CD, d3)}
    assert day2 <= got
    assert q(e2e, "SELECT window_end FROM ops.watermark WHERE base_id = %s AND task_key = 'changed_data'",
             BASE7) == [(d3,)]
    # a rerun of day 3 asks for exactly what it asked the first time (idempotent)
    assert str(dag.test(logical_date=d3).state).endswith("success")
    assert q(e2e, "SELECT DISTINCT window_start FROM raw.inbound_file WHERE dag_id = %s AND window_end = %s",
             CD, d3) == [(d1,)]
    # item 6: a manual run with no logical date (airflow dags trigger / REST) covers watermark .. now
    manual = dag.test(logical_date=None)
    assert str(manual.state).endswith("success"), manual.state
    rows = q(e2e, "SELECT window_start, window_end FROM raw.inbound_file WHERE dag_id = %s AND window_end > %s",
             CD, d3)
    assert rows and {r[0] for r in rows} == {d3}
    assert q(e2e, "SELECT count(*) FROM ops.alert WHERE kind = 'changed_data_gap'") == [(0,)]


# ------------------------------------------------------------------ F5 cap and gap, manual window (operator level)
def test_a_watermark_beyond_three_months_is_capped_and_the_gap_is_an_alert(db):
    from types import SimpleNamespace

    import pendulum
    from airflow.sdk import DAG

    from b2b.config.windows import MAX_LOOKBACK
    from b2b_operators.extract import ExtractOperator

    db.autocommit = True
    with DAG(CD, schedule=None, start_date=pendulum.datetime(2026, 9, 1, tz="UTC")):
        op = ExtractOperator(task_id="extract", conn_id=f"sims7_{BASE7}", base_id=BASE7, base_kind="sims7",
                             task_key="changed_data", data_filter="changed_data")
    end = datetime(2026, 12, 1, 18, tzinfo=DAY1.tzinfo)
    old = datetime(2026, 7, 1, 18, tzinfo=DAY1.tzinfo)
    db.execute("INSERT INTO ops.watermark (base_id, task_key, window_end, dag_id, run_id) "
               "VALUES (%s, 'changed_data', %s, %s, 'r0')", (BASE7, old, CD))
    c = op.run_context({"data_interval_start": end - timedelta(days=1), "data_interval_end": end, "run_id": "r1"},
                       db)
    assert (c.window_start, c.window_end) == (end - MAX_LOOKBACK, end)
    alerts = db.execute("SELECT kind, base_id, task_key, details->>'from', details->>'to' FROM ops.alert").fetchall()
    assert alerts == [("changed_data_gap", BASE7, "changed_data", old.isoformat(), (end - MAX_LOOKBACK).isoformat())]
    # asking again (a retry of the stage) raises no second alert
    op.run_context({"data_interval_start": end - timedelta(days=1), "data_interval_end": end, "run_id": "r1"}, db)
    assert db.execute("SELECT count(*) FROM ops.alert").fetchone()[0] == 1
    # a manual run (no logical date, no data interval): watermark .. run_after
    db.execute("UPDATE ops.watermark SET window_end = %s", (end,))
    later = end + timedelta(hours=5)
    c = op.run_context({"run_id": "manual__1", "dag_run": SimpleNamespace(run_after=later)}, db)
    assert (c.window_start, c.window_end) == (end, later)


# ------------------------------------------------------------------ item 7: retry only what a retry can help
class _Unavailable:
    """A school's server that answers every request 503 with Retry-After: 0 (transient, fast)."""

    def __enter__(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                self.send_response(503)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self.server.server_address[1]

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_a_bad_credential_fails_at_once_and_an_unavailable_school_is_retried(e2e):
    import json

    import pendulum

    tz = pendulum.timezone("Europe/London")
    dag = e2e["dags"][f"b2b__{BASE7}__snapshot"]
    extract = dag.tasks[0]  # extract, or the run's one task (TASK_GRANULARITY run): it extracts first
    extract.retries, extract.retry_delay, extract.retry_exponential_backoff = 1, timedelta(seconds=1), False
    key = f"AIRFLOW_CONN_SIMS7_{BASE7}"
    good = os.environ[key]

    def extract_try(dr) -> tuple[str, int]:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            ti = session.scalars(select(TaskInstance).where(
                TaskInstance.dag_id == dr.dag_id, TaskInstance.run_id == dr.run_id,
                TaskInstance.task_id == extract.task_id)).one()
            return str(ti.state).split(".")[-1].lower(), ti.try_number

    try:
        os.environ[key] = json.dumps(dict(json.loads(good), password="wrong"))
        dr = dag.test(logical_date=pendulum.datetime(2026, 9, 27, 18, 0, tz=tz))
        assert str(dr.state).endswith("failed")
        assert extract_try(dr) == ("failed", 1)  # no retry: a retry cannot fix a credential
        with _Unavailable() as port:
            os.environ[key] = json.dumps(dict(json.loads(good), port=port))
            dr = dag.test(logical_date=pendulum.datetime(2026, 9, 20, 18, 0, tz=tz))
        assert str(dr.state).endswith("failed")
        assert extract_try(dr) == ("failed", 2)  # retried once (retries=1), then failed
    finally:
        os.environ[key] = good
    assert q(e2e, "SELECT count(*) FROM ops.base_lease") == [(0,)]


def test_a_stage_cleared_after_its_run_failed_takes_the_lease_again_in_order(db):
    db.autocommit = True
    first, second = ctx(day(0)), ctx(day(1))
    runs.begin_run(db, first)
    assert runs.begin_run(db, first, wait=timedelta(0))["waited_seconds"] == 0  # its next stage: holds it
    runs.fail_run(db, first.base_id, first.dag_id, first.window_end)
    runs.begin_run(db, second)  # the next run has the base now
    # an operator clears `match` of the failed first run: it waits (leaving the run waiting) ...
    with pytest.raises(RunLeaseError, match="held by b2b__8862003__changed_data window 2026-10-06"):
        runs.begin_run(db, first, wait=timedelta(seconds=0.2), poll=0.05, give_up=False)
    assert runs.waiting_for(db, first) > timedelta(0)
    # ... and goes ahead once the base is free
    runs.finish_run(db, second)
    assert runs.begin_run(db, first, wait=timedelta(seconds=0.2), poll=0.05)["waited_seconds"] < 0.2
    assert db.execute("SELECT dag_id, window_end FROM ops.base_lease").fetchall() == [(first.dag_id, day(0))]


def test_a_dag_run_waits_rescheduled_while_another_dag_of_its_base_holds_it(e2e):
    import pendulum

    tz = pendulum.timezone("Europe/London")
    d8 = pendulum.datetime(2026, 10, 8, 18, 0, tz=tz)
    other = (f"b2b__{BASE7}__snapshot", pendulum.datetime(2026, 10, 4, 18, 0, tz=tz))
    q(e2e, "INSERT INTO ops.base_lease (base_id, dag_id, window_end, run_id) VALUES (%s, %s, %s, 'other') "
           "RETURNING base_id", BASE7, *other)
    seen: dict = {}

    def the_other_run_commits_later() -> None:
        """While the snapshot run has the base, this run waits and asks the school for nothing."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = q(e2e, "SELECT state FROM ops.run WHERE dag_id = %s AND window_end = %s", CD, d8)
            if state:
                time.sleep(3)
                seen["state"] = q(e2e, "SELECT state FROM ops.run WHERE dag_id = %s AND window_end = %s", CD, d8)
                seen["files"] = q(e2e, "SELECT count(*) FROM raw.inbound_file WHERE dag_id = %s "
                                       "AND window_end = %s", CD, d8)
                break
            time.sleep(0.5)
        q(e2e, "DELETE FROM ops.base_lease WHERE base_id = %s RETURNING base_id", BASE7)

    other_run = threading.Thread(target=the_other_run_commits_later)
    other_run.start()
    dr = e2e["dags"][CD].test(logical_date=d8)  # dag.test in the main thread (signal handlers)
    other_run.join(timeout=10)
    assert seen == {"state": [("waiting",)], "files": [(0,)]}
    assert str(dr.state).endswith("success")
    assert q(e2e, "SELECT state FROM ops.run WHERE dag_id = %s AND window_end = %s", CD, d8) == [("success",)]
    assert q(e2e, "SELECT count(*) FROM ops.base_lease") == [(0,)]
