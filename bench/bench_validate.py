"""Validate throughput (issue 15): blocks/s on a snapshot, and the fixed cost of a changed-data run.

Builds a generated LA in the simulator, fetches every school's snapshot and next-day
changed-data messages ONCE through the real hooks over loopback HTTP (``floors.prerender``,
not timed), lands them with the real extract and hash filter, then times:

* the Great Expectations import + context, once per process (apart from everything else);
* the validate stage over the snapshot, one run per school as the DAGs run it, with a COLD
  verdict cache (process memo and ``ops.gx_verdict`` empty: GX judges every distinct value)
  and a WARM one (``ops.gx_verdict`` filled, process memo empty at the start, as in a new
  task process); the snapshot's blocks/s and the stage time as a multiple of a bare COPY of
  the same block rows;
* ``validate_blocks`` alone on all the snapshot's blocks in one batch, cold and warm (the
  stage without its SQL);
* in a NEW process, the changed-data day's validate runs (a handful of blocks each, every
  value judged before), repeated: ms per run; it also reports whether Great Expectations
  was imported (it must not be).

``--profile`` prints a cProfile of the warm and cold ``validate_blocks`` batch.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(ROOT / "bench")]

SNAP_END = datetime(2026, 10, 4, 17, 0, tzinfo=UTC)
DAY_END = SNAP_END + timedelta(days=1)


def _ctx(base, data_filter: str, start, end):
    from b2b.context import RunContext

    return RunContext(base_id=base["dfe"], task_key=data_filter, dag_id=f"b2b__{base['dfe']}__{data_filter}",
                      run_id=f"bench-{end:%Y%m%d}", source=base["kind"], data_filter=data_filter,
                      window_start=start, window_end=end)


def _blocks(conn, file_ids: list[int]) -> list[dict]:
    rows = conn.execute("""SELECT file_id, ordinal, base_id, block_type, student_guid, content
                             FROM raw.inbound_block WHERE file_id = ANY(%s) AND disposition = 'pending'
                            ORDER BY file_id, ordinal""", (file_ids,)).fetchall()
    return [dict(file_id=r[0], ordinal=r[1], base_id=r[2], block_type=r[3], student_guid=r[4], content=r[5])
            for r in rows]


def _forget_verdicts(conn, *, store: bool) -> None:
    from b2b.ingest import validation

    validation._verdicts.clear()
    validation._verdict_count = 0
    if store:
        conn.execute("TRUNCATE ops.gx_verdict")


def _stage_pass(conn, bases, report_dir) -> tuple[float, int]:
    from b2b import pipeline as chain

    seconds, checked = 0.0, 0
    for b in bases:
        t = time.perf_counter()
        out = chain.validate(conn, _ctx(b, "snapshot", None, SNAP_END), report_dir)
        seconds += time.perf_counter() - t
        checked += out["checked"]
    return seconds, checked


def _profile(fn) -> None:
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(18)
    pstats.Stats(prof).sort_stats("cumulative").print_stats(25)


def fixed_cost(url: str, bases: list[dict], runs: int, report_dir: str, profile: bool = False) -> int:
    """In a fresh process: the changed-data day's validate runs, all values judged before."""
    from b2b import db
    from b2b import pipeline as chain

    with db.connect(url, autocommit=True) as conn:
        ctxs = [_ctx(b, "changed_data", SNAP_END, DAY_END) for b in bases]
        checked = n = 0

        def timed() -> None:
            nonlocal checked, n
            while n < runs:
                for c in ctxs:
                    checked += chain.validate(conn, c, Path(report_dir))["checked"]
                    n += 1
                    if n == runs:
                        break

        t = time.perf_counter()
        _profile(timed) if profile else timed()
        dt = time.perf_counter() - t
    gx = "great_expectations" in sys.modules
    print(f"validate: changed-data day, new process, every value judged before: {n} runs, "
          f"{checked / n:.1f} blocks/run, {1000 * dt / n:.1f} ms/run; Great Expectations imported: {gx}")
    return 1 if gx else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--schools", type=int, default=50)
    ap.add_argument("--students", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=300, help="changed-data runs timed for the fixed cost")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--fixed-cost", nargs=2, metavar=("DB_URL", "BASES_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import logging
    import warnings

    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    logging.disable(logging.INFO)
    warnings.filterwarnings("ignore")
    report_dir = Path(tempfile.mkdtemp(prefix="b2b-bench-validate-"))
    if args.fixed_cost:
        url, bases_json = args.fixed_cost
        return fixed_cost(url, json.loads(Path(bases_json).read_text()), args.runs, str(report_dir), args.profile)

    import psycopg
    from floors import copy_floor, prerender
    from psycopg.conninfo import make_conninfo

    from b2b import db
    from b2b import pipeline as chain
    from b2b.cli.airflow_env import connection_env, project_airflow_settings
    from b2b.config.settings import Settings
    from simulator.server import start_server
    from simulator.world import World, WorldConfig

    os.environ.update(project_airflow_settings(db.b2b_home() / "bench" / "airflow"))
    world = World(WorldConfig.generated(args.schools, args.students, seed=7))
    server = start_server(world, host="127.0.0.1", port=0)
    os.environ.update(connection_env(world.airflow_connections(server.base_url)))
    bases = [{"dfe": b.dfe, "kind": b.kind} for b in world.config.bases]
    t = time.perf_counter()
    snap = {b.dfe: prerender(world, b, "snapshot", None, SNAP_END) for b in world.config.bases}
    day = {b.dfe: prerender(world, b, "changed_data", SNAP_END, DAY_END) for b in world.config.bases}
    server.shutdown()
    print(f"validate: {args.schools} schools / {args.students} students; payloads fetched in "
          f"{time.perf_counter() - t:.1f}s (not counted)")

    admin_url = db.database_url()
    name = f"b2b_bench_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    url = make_conninfo(admin_url, dbname=name)
    rc = 0
    try:
        with db.connect(url, autocommit=True) as conn:
            db.upgrade(conn)
            settings = Settings()
            file_ids: list[int] = []
            for b in bases:
                c = _ctx(b, "snapshot", None, SNAP_END)
                file_ids += chain.store_messages(conn, c, snap[b["dfe"]]).file_ids
                chain.hash_filter(conn, c, settings)
            blocks = _blocks(conn, file_ids)
            copy_s, copy_rows = copy_floor(conn, file_ids)

            from b2b.ingest import validation

            t = time.perf_counter()
            validation._gx()
            print(f"validate: Great Expectations import + context {time.perf_counter() - t:.1f}s "
                  f"(once per process, not counted below)")

            def batch() -> float:
                t = time.perf_counter()
                validation.validate_blocks(blocks, run_label="bench", as_of=SNAP_END.date())
                return time.perf_counter() - t

            _forget_verdicts(conn, store=True)
            cold_s, checked = _stage_pass(conn, bases, report_dir)
            _forget_verdicts(conn, store=False)
            warm_s, _ = _stage_pass(conn, bases, report_dir)
            _forget_verdicts(conn, store=False)
            batch_cold = batch()
            batch_warm = batch()
            print(f"validate: floor: bare COPY of the same {copy_rows} block rows {copy_s:.2f}s "
                  f"({copy_rows / copy_s:,.0f} rows/s)")
            for label, s in (("cold", cold_s), ("warm", warm_s)):
                print(f"validate: snapshot stage, {label} verdict cache: {checked} blocks in {s:.2f}s = "
                      f"{checked / s:,.0f} blocks/s = {s / copy_s:.1f}x floor ({1000 * s / len(bases):.1f} ms/run)")
            for label, s in (("cold", batch_cold), ("warm", batch_warm)):
                print(f"validate: validate_blocks, one batch of {len(blocks)} blocks, {label}: {s:.2f}s = "
                      f"{len(blocks) / s:,.0f} blocks/s")
            if args.profile:
                print("== profile: validate stage, warm")
                _forget_verdicts(conn, store=False)
                _profile(lambda: _stage_pass(conn, bases, report_dir))
                print("== profile: validate_blocks, warm")
                _profile(batch)
                print("== profile: validate_blocks, cold")
                _forget_verdicts(conn, store=False)
                _profile(batch)

            for b in bases:  # the next day: its values judged once here, so the timed runs below judge none
                c = _ctx(b, "snapshot", None, SNAP_END)
                chain.load(conn, c)
                chain.commit(conn, c)
            for b in bases:
                c = _ctx(b, "changed_data", SNAP_END, DAY_END)
                chain.store_messages(conn, c, day[b["dfe"]])
                chain.hash_filter(conn, c, settings)
                chain.validate(conn, c, report_dir)
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(bases, f)
        rc = subprocess.run([sys.executable, __file__, "--runs", str(args.runs), "--fixed-cost", url, f.name,
                             *(["--profile"] if args.profile else [])]).returncode
        os.unlink(f.name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
