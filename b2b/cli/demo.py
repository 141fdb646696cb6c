"""``b2b demo``: the demo LA end to end, through real Airflow DAG runs.

1. starts the embedded PostgreSQL (or uses ``B2B_DATABASE_URL``) and applies migrations;
2. starts the SIMS simulator on 127.0.0.1 with the demo world (4 SIMS 7 + 2 SIMS Primary
   schools) and exposes each school's credentials as an Airflow connection (env vars);
3. runs every generated DAG with ``dag.test()`` for fixed, deterministic windows: each
   base's snapshot, then ``--days`` consecutive changed-data windows, then the other
   tasks (attendance, attainment, LAC, leavers, return to school) once;
4. prints a per-base summary from the warehouse tables and one ``demo:`` line.

Windows are fixed dates in the simulated autumn term, so two runs give the same tables:
a rerun of a window replaces what the previous run stored for it.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from b2b.context import one

if TYPE_CHECKING:
    from typing import TextIO

    from psycopg import Connection

    from b2b.config.catalogue import Catalogue

DEMO_START = datetime(2026, 10, 5, 12, 0)  # Monday of week 6 of the autumn term (LA local time)

log = logging.getLogger(__name__)


def _ticks(cron: str, tz: Any, *, before: Any = None, after: Any = None, count: Any = 1) -> Any:
    from croniter import croniter

    if before is not None:
        it = croniter(cron, before.astimezone(tz))
        return [it.get_prev(datetime)]
    it = croniter(cron, after.astimezone(tz))
    return [it.get_next(datetime) for _ in range(count)]


def demo_plan(catalogue: Catalogue, days: int) -> Any:
    """[(dag_id, logical_date)] in run order; the logical date is the window end."""
    import pendulum

    tz = pendulum.timezone(catalogue.la.timezone)
    start = pendulum.instance(DEMO_START, tz=tz)
    specs = catalogue.dag_specs(include_inactive=False)
    plan: list = []
    snapshot_end: dict = {}

    def daily(s: Any) -> Any:  # the changed-data exports run for --days windows; every other task once
        return s.task.filter == "changed_data" and s.task.direction == "export"

    for s in specs:
        if s.task.filter == "snapshot" and s.task.group_type == "ncy":
            end = _ticks(s.task.schedule, tz, before=start)[0]
            plan.append((s.dag_id, end))
            snapshot_end[s.base.dfe] = max(snapshot_end.get(s.base.dfe, end), end)
    for s in specs:
        if daily(s):
            after = snapshot_end.get(s.base.dfe, start)
            for end in _ticks(s.task.schedule, tz, after=after, count=days):
                plan.append((s.dag_id, end))
    for s in specs:
        if daily(s) or (s.task.filter == "snapshot" and s.task.group_type == "ncy"):
            continue
        after = snapshot_end.get(s.base.dfe, start)
        plan.append((s.dag_id, _ticks(s.task.schedule, tz, after=after)[0]))
    # chronological by window end, as a scheduler would run them: the hash cache compares each window
    # with the windows before it, so this order makes a rerun of the demo reproduce every figure
    return sorted(plan, key=lambda p: (p[1], p[0]))


def _quiet_airflow() -> None:
    for name in ("airflow", "airflow.task", "airflow.processor", "sqlalchemy", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


SUMMARY_SQL = """
WITH f AS (SELECT base_id, count(*) AS files FROM raw.inbound_file GROUP BY 1),
     b AS (SELECT base_id, count(*) AS blocks,
                  count(*) FILTER (WHERE disposition = 'skipped') AS skipped,
                  count(*) FILTER (WHERE disposition = 'loaded') AS loaded
             FROM raw.inbound_block GROUP BY 1),
     m AS (SELECT base_id, count(*) FILTER (WHERE status IN ('matched', 'matched_with_conflicts')) AS matched,
                  count(*) FILTER (WHERE status = 'unmatched') AS unmatched,
                  count(*) FILTER (WHERE status = 'possible') AS possible
             FROM results.current_match GROUP BY 1),
     c AS (SELECT base_id, count(*) AS conflicts FROM results.conflict GROUP BY 1),
     a AS (SELECT base_id, count(*) AS anomalies FROM results.anomaly GROUP BY 1)
SELECT f.base_id, f.files, coalesce(b.blocks, 0), coalesce(b.skipped, 0), coalesce(b.loaded, 0),
       coalesce(m.matched, 0), coalesce(c.conflicts, 0), coalesce(m.unmatched, 0), coalesce(a.anomalies, 0),
       coalesce(m.possible, 0)
  FROM f LEFT JOIN b USING (base_id) LEFT JOIN m USING (base_id) LEFT JOIN c USING (base_id)
  LEFT JOIN a USING (base_id)
 ORDER BY f.base_id
"""
COLUMNS = ("files", "blocks", "skipped_by_cache", "loaded", "matched", "conflicts", "unmatched", "anomalies")
TABLE_COLUMNS = COLUMNS + ("possible",)  # the table also shows the officer queue; the demo: line is fixed


def print_summary(conn: Connection, out: TextIO = sys.stdout) -> dict:
    """Per-base table and the final ``demo:`` line (matched/unmatched: students' current decision)."""
    rows = conn.execute(SUMMARY_SQL).fetchall()
    header = f"{'base':<9} " + " ".join(f"{c:>16}" for c in TABLE_COLUMNS)
    print(header, file=out)
    print("-" * len(header), file=out)
    totals = dict.fromkeys(TABLE_COLUMNS, 0)
    for row in rows:
        print(f"{row[0]:<9} " + " ".join(f"{v:>16}" for v in row[1:]), file=out)
        for k, v in zip(TABLE_COLUMNS, row[1:]):
            totals[k] += v
    extra = one(conn, EXTRA_SQL)
    print("contacts: {} accounts ({} disabled), {} rejected (results.rejected_contact); attendance: {} marks "
          "strings; return to school: {} runs, {} corrected fields sent".format(*extra), file=out)
    print("demo: " + " ".join(f"{k}={totals[k]}" for k in COLUMNS), file=out)
    return totals


EXTRA_SQL = """
SELECT (SELECT count(*) FROM core.contact), (SELECT count(*) FROM core.contact WHERE NOT active),
       (SELECT count(DISTINCT (base_id, person_id)) FROM results.rejected_contact),
       (SELECT count(*) FROM core.attendance_current),
       (SELECT count(*) FROM raw.outbound_file), (SELECT count(*) FROM results.returned_field)
"""


def run_counts(conn: Connection, dag_id: str, window_end: datetime) -> dict:
    rows = conn.execute("""SELECT stage, counts FROM ops.task_log WHERE dag_id = %s AND window_end = %s
                           AND file_id IS NULL""", (dag_id, window_end)).fetchall()
    return {stage: counts for stage, counts in rows}


def run_demo(days: int = 3, fresh: bool | None = None) -> int:
    from b2b import db
    from b2b.cli.airflow_env import connection_env, prepare_airflow_env

    t0 = time.perf_counter()
    url = db.database_url()
    if fresh is None:  # the embedded database is the demo's own sandbox; a configured one is not
        fresh = not (os.environ.get("B2B_DATABASE_URL") or "").strip()
    print(f"warehouse: {db.redact(url)}" + (" (starting empty)" if fresh else " (keeping earlier runs)"))
    from simulator.server import start_server
    from simulator.world import World, WorldConfig

    world = World(WorldConfig.demo())
    from b2b.ops.core_load import load_adults, load_core, load_gazetteer
    from simulator.la_files import adult_rows, gazetteer_rows

    with db.connect(url, autocommit=True) as conn:
        if fresh:
            conn.execute("DROP SCHEMA IF EXISTS raw, staging, core, results, ops CASCADE")
        db.upgrade(conn)
        core = load_core(conn, world.la_core())
        load_gazetteer(conn, gazetteer_rows(world))  # the LA's LLPG extract: the reports' postcode check
        load_adults(conn, adult_rows(world))  # the parents and carers it holds (F14 carer matching)
    print(f"LA core: {core['records']} child records ({core['changed']} new or changed), "
          f"{core['new_links']} new GUID links")
    server = start_server(world, host="127.0.0.1", port=0)
    print(f"SIMS simulator: {server.base_url} ({len(world.config.bases)} schools)")
    os.environ.update(connection_env(world.airflow_connections(server.base_url)))
    os.environ["B2B_DATABASE_URL"] = url
    prepare_airflow_env(quiet=True)
    _quiet_airflow()

    from b2b.config.catalogue import load_catalogue
    from b2b_operators.factory import build_dags

    catalogue = load_catalogue()
    dags = build_dags(catalogue)
    plan = demo_plan(catalogue, days)
    print(f"running {len(plan)} DAG runs over {len(dags)} DAGs ...")
    failures = 0
    try:
        for i, (dag_id, end) in enumerate(plan, start=1):
            t = time.perf_counter()
            run = dags[dag_id].test(logical_date=end)
            state = getattr(run, "state", "?")
            ok = str(state).endswith("success")
            failures += not ok
            with db.connect(url) as conn:
                counts = run_counts(conn, dag_id, end)
            hf = counts.get("hash_filter", {})
            skipped = (f"{hf.get('skipped_by_cache', 0):>5}/{hf.get('blocks', 0):<5} blocks skipped by cache"
                       if hf.get("blocks") else "")
            print(f"[{i:>3}/{len(plan)}] {dag_id:<40} {end:%a %d %b %H:%M}  {str(state).split('.')[-1]:<7} "
                  f"{time.perf_counter() - t:5.1f}s  {skipped}", flush=True)
    finally:
        server.shutdown()
    with db.connect(url) as conn:
        print()
        print_summary(conn)
        from b2b.outbound.reports import write_week

        write_week(conn, {d: b.name for d, b in catalogue.bases.items()}, db.b2b_home() / "reports")
    print(f"{len(plan)} DAG runs, {failures} failed, {time.perf_counter() - t0:.0f}s")
    return 1 if failures else 0
