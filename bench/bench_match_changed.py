"""A changed-data day's match runs replayed, rolled back (issue 15): round trips, client CPU, wall.

Reads a database kept by ``bench_stages.py --keep`` (the newest ``b2b_bench_*``, or ``--db``),
takes the runs of its last window (the changed-data day: one run per school) and replays the
match stage of each, ``--repeat`` times, each in a transaction rolled back (nothing kept), then
prints per run: the median wall ms, client CPU ms (``time.process_time``), statements, and
round trips (in a libpq trace, the turns from the client's messages to the server's answer: one
per statement sent alone, one per read or sync of a pipeline), in all and for the runs with and without students.

A kept database's statistics are fresh: plans that flip on statistics lagging behind a
snapshot's growth are not seen here (``bench_stages.py`` sees them). And psycopg forgets its
prepared statements at each rollback: every replay plans every statement, where the bench's
one connection, committing, plans a repeated statement a few times only (server time is
overstated here, by ~2-3 ms a run at 50 schools).

    PYTHONPATH=. python bench/bench_match_changed.py [--db NAME] [--repeat 5] [--cprofile]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]


class Rollback(Exception):
    """Ends a replay's transaction (rolled back)."""


def runs_of_last_window(conn):
    """The RunContexts of the newest window's runs (one per DAG)."""
    from b2b.context import RunContext

    rows = conn.execute(
        """SELECT DISTINCT ON (f.dag_id) f.dag_id, f.base_id, f.window_start, f.window_end
             FROM raw.inbound_file f
            WHERE f.window_end = (SELECT max(window_end) FROM raw.inbound_file)
            ORDER BY f.dag_id""").fetchall()
    out = []
    for dag_id, base_id, start, end in rows:
        task_key = dag_id.split("__")[-1]
        out.append(RunContext(base_id=base_id, task_key=task_key, dag_id=dag_id, run_id="replay",
                              source="sims7", data_filter=task_key, window_start=start, window_end=end))
    return out


class Statements:
    """Counts the statements the connection's cursors execute."""

    n = 0


def counting_cursor_class():
    import psycopg

    class Counting(psycopg.Cursor):
        def execute(self, query, params=None, **kw):
            Statements.n += 1
            return super().execute(query, params, **kw)

        def copy(self, statement, params=None, **kw):
            Statements.n += 1
            return super().copy(statement, params, **kw)

    return Counting


def replay(conn, ctx, settings, stage):
    """One run of the stage, rolled back."""
    try:
        with conn.transaction():
            out = stage(conn, ctx, settings)
            raise Rollback
    except Rollback:
        pass
    return out


def round_trips(conn, ctx, settings, stage) -> int:
    """The round trips of one replay (a libpq trace's turns from client to server)."""
    from psycopg import pq

    with tempfile.TemporaryFile() as f:
        conn.pgconn.trace(f.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            replay(conn, ctx, settings, stage)
        finally:
            conn.pgconn.untrace()
        f.seek(0)
        text = f.read().decode("utf-8", "replace")
    # a round trip: the client's messages, then the server's answer (the turns from F to B
    # lines; a pipeline's fetch inside it is one too, its sync at the end another)
    turns, last = 0, ""
    for line in text.splitlines():
        side = line[:1]
        turns += side == "B" and last == "F"
        last = side or last
    return turns - 2  # (the replay's own BEGIN and ROLLBACK, not the stage's)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", help="the kept bench database (default: the newest b2b_bench_*)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cprofile", action="store_true", help="print a cProfile of the timed replays")
    args = ap.parse_args(argv)

    import logging
    import warnings

    logging.disable(logging.INFO)
    warnings.filterwarnings("ignore")
    import psycopg
    from psycopg.conninfo import make_conninfo

    from b2b import db
    from b2b.config.settings import Settings
    from b2b.reconcile.match_stage import match

    admin_url = db.database_url()
    name = args.db
    if not name:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            found = admin.execute("""SELECT d.datname FROM pg_database d WHERE d.datname LIKE 'b2b_bench_%'
                                     ORDER BY (pg_stat_file('base/' || d.oid || '/PG_VERSION')).modification DESC
                                     LIMIT 1""").fetchone()
        if not found:
            print("no kept bench database: run bench_stages.py --keep first")
            return 2
        name = found[0]
    settings = Settings()
    with db.connect(make_conninfo(admin_url, dbname=name), autocommit=True) as conn:
        conn.cursor_factory = counting_cursor_class()
        runs = runs_of_last_window(conn)
        students = {}
        for ctx in runs:
            students[ctx.dag_id] = replay(conn, ctx, settings, match)["students"]  # (a warm-up)
        trips, stmts = {}, {}
        for ctx in runs:
            Statements.n = 0
            trips[ctx.dag_id] = round_trips(conn, ctx, settings, match)
            stmts[ctx.dag_id] = Statements.n
        conn.cursor_factory = psycopg.Cursor
        wall: dict[str, list[float]] = {c.dag_id: [] for c in runs}
        cpu: dict[str, list[float]] = {c.dag_id: [] for c in runs}
        prof = None
        if args.cprofile:
            import cProfile

            prof = cProfile.Profile()
        for _ in range(args.repeat):
            for ctx in runs:
                t, c = time.perf_counter(), time.process_time()
                if prof is not None:
                    prof.enable()
                replay(conn, ctx, settings, match)
                if prof is not None:
                    prof.disable()
                wall[ctx.dag_id].append(1000 * (time.perf_counter() - t))
                cpu[ctx.dag_id].append(1000 * (time.process_time() - c))
    print(f"match, {len(runs)} runs of the last window of {name}, {args.repeat} replays each (rolled back), "
          f"median per run; {sum(students.values())} students in all")
    groups = {"all runs": [c.dag_id for c in runs],
              "runs with students": [c.dag_id for c in runs if students[c.dag_id]],
              "runs without students": [c.dag_id for c in runs if not students[c.dag_id]]}
    for label, ids in groups.items():
        if not ids:
            continue
        med_wall = statistics.mean(statistics.median(wall[i]) for i in ids)
        med_cpu = statistics.mean(statistics.median(cpu[i]) for i in ids)
        print(f"  {label:<22} {len(ids):4} runs  wall {med_wall:6.2f} ms/run  client CPU {med_cpu:6.2f} ms/run  "
              f"{statistics.mean(stmts[i] for i in ids):5.1f} statements  "
              f"{statistics.mean(trips[i] for i in ids):4.1f} round trips")
    if prof is not None:
        import pstats

        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    sys.exit(main())
