"""Processing-chain benchmark (issue 3): time and rows/s of each stage, snapshot and changed-data day.

Generates an LA in the simulator (default 100 schools / 40,000 students), loads its LA core
into a scratch database on the configured server (embedded pgserver by default), then for
every school runs exactly what the generated DAGs run, stage by stage (extract of the
messages the real hooks fetched over loopback HTTP, pre-rendered before timing; hash filter,
validate with Great Expectations, load, match, conflicts, apply, contacts): first a snapshot
window, then the next day's changed-data window. Prints per stage: total seconds, rows and
rows/s, ms per run, its time as a multiple of its floor (a bare lxml parse / COPY of the
same bytes and rows), and the share of blocks the hash cache skipped on the changed-data day.
Every SQL statement is timed (a cursor class on the bench's connection): each stage's line
shows its statements per run, a changed-data stage over the 20 ms per run goal (issue 15) is
flagged, and ``--profile`` lists each stage's slowest statements.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(ROOT / "bench")]

STAGES = ("extract", "hash_filter", "validate", "load", "match", "conflicts", "apply", "contacts", "commit")
#: the per-school fixed-cost goal of issue 15: ms of stage time per run on a changed-data day
FIXED_COST_GOAL_MS = 20.0
ROWS = {"extract": "blocks", "hash_filter": "blocks", "validate": "checked", "load": "loaded",
        "match": "students", "conflicts": "conflicts", "apply": "children_updated", "contacts": "candidates",
        "commit": "cache_entries_committed"}


class StatementTimes:
    """Time and count of every statement the bench's connection runs, per stage and statement."""

    def __init__(self) -> None:
        self.stage = ""
        self.by_stage: dict[str, dict[str, list]] = {}

    def add(self, query, seconds: float) -> None:
        text = query
        if not isinstance(query, str):
            try:
                text = query.as_string(None)
            except Exception:  # bytes, or a composed query that needs a connection
                text = str(query)
        key = " ".join(str(text).split())[:110]
        entry = self.by_stage.setdefault(self.stage, {}).setdefault(key, [0, 0.0])
        entry[0] += 1
        entry[1] += seconds

    def take(self) -> dict[str, dict[str, list]]:
        out, self.by_stage = self.by_stage, {}
        return out


TIMES = StatementTimes()


def profiled_cursor_class():
    """A psycopg cursor class that reports each execute to :data:`TIMES`."""
    import psycopg

    class ProfiledCursor(psycopg.Cursor):
        def execute(self, query, params=None, **kw):
            t = time.perf_counter()
            try:
                return super().execute(query, params, **kw)
            finally:
                TIMES.add(query, time.perf_counter() - t)

        def executemany(self, query, params_seq, **kw):
            t = time.perf_counter()
            try:
                return super().executemany(query, params_seq, **kw)
            finally:
                TIMES.add(query, time.perf_counter() - t)

    return ProfiledCursor


#: ``--cprofile STAGE``: one cProfile over that stage's calls in every run of a window
PROFILER: dict = {}


def run_window(conn, world, data_filter: str, start, end, settings, report_dir, per_run_url: str | None = None) -> dict:
    """Every school's run of one window, stage by stage, on ``conn``; or, with ``per_run_url``,
    each run on a connection of its own (as each Airflow task opens one: no statement cached
    or prepared from an earlier run, the server's per-connection caches cold; the connecting
    itself is not in any stage's time)."""
    from floors import copy_floor, parse_floor, prerender

    from b2b import db
    from b2b import pipeline as chain
    from b2b.ingest.extract import RunContext, store_messages
    from b2b.reconcile import contacts

    totals: dict = {s: {"seconds": 0.0, "rows": 0} for s in STAGES}
    blocks = skipped = unchanged = 0
    t = time.perf_counter()
    rendered = {base.dfe: prerender(world, base, data_filter, start, end) for base in world.config.bases}
    fetch_s = time.perf_counter() - t
    all_messages = [m for ms in rendered.values() for m in ms]
    file_ids: list[int] = []
    for base in world.config.bases:
        dag_id = f"b2b__{base.dfe}__{data_filter}"
        ctx = RunContext(base_id=base.dfe, task_key=data_filter, dag_id=dag_id, run_id=f"bench-{end:%Y%m%d}",
                         source=base.kind, data_filter=data_filter, window_start=start, window_end=end)
        msgs = rendered[base.dfe]
        # (a new connection is closed, committed, after its run; the shared one is left open)
        with (db.connect(per_run_url, autocommit=True, cursor_factory=conn.cursor_factory) if per_run_url
              else nullcontext(conn)) as rc:
            steps = [
                ("extract", lambda: store_messages(rc, ctx, msgs)),
                ("hash_filter", lambda: chain.hash_filter(rc, ctx, settings)),
                ("validate", lambda: chain.validate(rc, ctx, report_dir)),
                ("load", lambda: chain.load(rc, ctx)),
                ("match", lambda: chain.match(rc, ctx, settings)),
                ("conflicts", lambda: chain.conflicts(rc, ctx)),
                ("apply", lambda: chain.apply(rc, ctx)),
                ("contacts", lambda: contacts.sync(rc, ctx)),
                ("commit", lambda: chain.commit(rc, ctx)),  # the next window's cache sees this one
            ]
            for stage, fn in steps:
                TIMES.stage = stage
                prof = PROFILER.get(stage)
                t = time.perf_counter()
                if prof is not None:
                    prof.enable()
                out = fn()
                if prof is not None:
                    prof.disable()
                totals[stage]["seconds"] += time.perf_counter() - t
                if stage == "extract":
                    file_ids += out.file_ids
                    out = out.counts()
                totals[stage]["rows"] += int(out.get(ROWS[stage], 0) or 0)
                if stage == "contacts" and out.get("unchanged"):
                    unchanged += 1
                if stage == "hash_filter":
                    blocks += out["blocks"]
                    skipped += out["skipped_by_cache"]
    TIMES.stage = ""
    for stage, prof in PROFILER.items():
        import pstats

        print(f"cProfile of {stage}, {data_filter} window ({len(world.config.bases)} runs), by own time:")
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        print(f"cProfile of {stage}, {data_filter} window, by cumulative time:")
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
        PROFILER[stage] = type(prof)()
    statements = TIMES.take()
    for stage in STAGES:
        stmts = statements.get(stage, {})
        totals[stage]["statements"] = sum(n for n, _ in stmts.values())
        totals[stage]["sql_s"] = sum(s for _, s in stmts.values())
        totals[stage]["top"] = sorted(([k, n, s] for k, (n, s) in stmts.items()), key=lambda r: -r[2])[:6]
    copy_s, copy_rows = copy_floor(conn, file_ids)
    totals["_cache"] = {"blocks": blocks, "skipped": skipped, "contacts_unchanged": unchanged}
    totals["_floor"] = {"parse_s": parse_floor(all_messages), "copy_s": copy_s, "copy_rows": copy_rows,
                        "bytes": sum(len(m.content) for m in all_messages), "fetch_s": fetch_s,
                        "runs": len(world.config.bases)}
    return totals


# each stage's floor: extract = bare parse + bare COPY of its blocks; the stages that read or
# write those block rows = bare COPY of the same rows
FLOOR = {"extract": ("parse_s", "copy_s"), "hash_filter": ("copy_s",), "validate": ("copy_s",),
         "load": ("copy_s",)}


def report(label: str, totals: dict, *, goal: bool = False, profile: bool = False) -> dict:
    total = sum(v["seconds"] for k, v in totals.items() if k in STAGES)
    f = totals["_floor"]
    runs = f["runs"]
    print(f"{label}: {total:7.1f}s of stage time in all, {runs} runs "
          f"(payloads pre-rendered: simulator + HTTP took {f['fetch_s']:.1f}s, not counted)")
    print(f"  floors: bare parse of the same {f['bytes'] / 1e6:.1f} MB {f['parse_s']:.2f}s; "
          f"bare COPY of the same {f['copy_rows']} block rows {f['copy_s']:.2f}s")
    over = []
    for s in STAGES:
        v = totals[s]
        rate = v["rows"] / v["seconds"] if v["seconds"] else 0
        floor = sum(f[k] for k in FLOOR.get(s, ()))
        times = f"{v['seconds'] / floor:6.1f}x floor" if floor else ""
        ms = 1000 * v["seconds"] / runs
        flag = f"  > {FIXED_COST_GOAL_MS:.0f} ms/run goal" if goal and ms > FIXED_COST_GOAL_MS else ""
        if flag:
            over.append(s)
        print(f"  {s:<12} {v['seconds']:7.2f}s {v['rows']:>8} {ROWS[s]:<16} {rate:>9,.0f} rows/s "
              f"{ms:7.1f} ms/run {v['statements'] / runs:5.1f} stmts/run {times}{flag}")
        if profile:
            for text, n, secs in v["top"]:
                print(f"      {1000 * secs / runs:7.2f} ms/run {n / runs:5.1f}x  {text}")
    c = totals["_cache"]
    print(f"  hash cache: {c['skipped']} of {c['blocks']} blocks skipped "
          f"({100 * c['skipped'] / max(c['blocks'], 1):.1f}%); contacts rebuild skipped (no new student/contacts "
          f"data) in {c['contacts_unchanged']} of {runs} runs")
    if goal:
        print(f"  over the {FIXED_COST_GOAL_MS:.0f} ms/run goal on this day: {', '.join(over) or 'none'}")
    return {"total_s": total, "runs": runs, **{s: totals[s] for s in STAGES}, "floor": f, "cache": c,
            "over_goal": over}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--schools", type=int, default=100)
    ap.add_argument("--students", type=int, default=40000)
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    ap.add_argument("--connection-per-run", action="store_true",
                    help="each school's run on a new connection, as each Airflow task opens one (default: one "
                         "connection for every run, which plans and caches a repeated statement once)")
    ap.add_argument("--per-run-via", metavar="CONNINFO",
                    help="with --connection-per-run: open each run's connection through this server instead (a "
                         "pooler such as PgBouncer in front of the same PostgreSQL; host, port and user are taken "
                         "from it, the database is the bench's own)")
    ap.add_argument("--json", help="also write the figures to this JSON file (bench/run_all.py)")
    ap.add_argument("--profile", action="store_true", help="list each stage's slowest SQL statements")
    ap.add_argument("--cprofile", choices=STAGES, help="print a cProfile of this stage's Python, per window")
    args = ap.parse_args(argv)
    if args.per_run_via and not args.connection_per_run:
        ap.error("--per-run-via goes with --connection-per-run")
    if args.cprofile:
        import cProfile

        PROFILER[args.cprofile] = cProfile.Profile()
    import logging
    import warnings

    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    logging.disable(logging.INFO)  # hook/GX progress lines; the figures are printed below
    warnings.filterwarnings("ignore")

    import psycopg
    from psycopg.conninfo import make_conninfo

    from b2b import db
    from b2b.cli.airflow_env import connection_env, project_airflow_settings
    from b2b.config.settings import Settings
    from b2b.ops.core_load import load_core
    from simulator.server import start_server
    from simulator.world import World, WorldConfig

    os.environ.update(project_airflow_settings(db.b2b_home() / "bench" / "airflow"))
    t = time.perf_counter()
    world = World(WorldConfig.generated(args.schools, args.students, seed=7))
    print(f"stages: world of {args.schools} schools / {args.students} students generated in "
          f"{time.perf_counter() - t:.1f}s")
    server = start_server(world, host="127.0.0.1", port=0)
    os.environ.update(connection_env(world.airflow_connections(server.base_url)))

    admin_url = db.database_url()
    name = f"b2b_bench_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(admin_url, dbname=name)
    report_dir = Path(tempfile.mkdtemp(prefix="b2b-bench-reports-"))
    try:
        with db.connect(url, autocommit=True) as conn:
            db.upgrade(conn)
            conn.cursor_factory = profiled_cursor_class()
            t = time.perf_counter()
            core = load_core(conn, world.la_core())
            print(f"stages: LA core of {core['records']} children loaded in {time.perf_counter() - t:.1f}s")
            settings = Settings()
            snap_end = datetime(2026, 10, 4, 17, 0, tzinfo=UTC)
            day_end = snap_end + timedelta(days=1)
            # once per process, not per run: what an Airflow task process pays before its first run
            t = time.perf_counter()
            from b2b.ingest import validation

            validation._gx()
            once = time.perf_counter() - t
            print(f"stages: Great Expectations import + context {once:.1f}s (once per process, not in the stages)")
            per_run = url if args.connection_per_run else None
            if args.per_run_via:
                per_run = make_conninfo(args.per_run_via, dbname=name)
            print("stages: " + ("a new connection for each school's run (as each Airflow task opens one)" if per_run
                                else "one connection for every run (repeated statements planned and cached once)")
                  + (f", through {db.redact(args.per_run_via)}" if args.per_run_via else ""))
            figures = {"schools": args.schools, "students": args.students, "gx_once_s": once,
                       "connection": ("per run via " + db.redact(args.per_run_via) if args.per_run_via
                                      else "per run" if per_run else "one"),
                       "snapshot": report("snapshot (Sun 4 Oct)", run_window(conn, world, "snapshot", None, snap_end,
                                                                          settings, report_dir, per_run),
                                          profile=args.profile),
                       "changed_data": report("changed data (Mon 5 Oct)",
                                              run_window(conn, world, "changed_data", snap_end, day_end, settings,
                                                         report_dir, per_run), goal=True, profile=args.profile)}
            if args.json:
                Path(args.json).write_text(json.dumps(figures))
    finally:
        server.shutdown()
        if not args.keep:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
