"""Extract throughput: simulator over loopback HTTP -> hook -> parse -> COPY into Postgres.

Builds a generated LA in the simulator, then for every school runs the same code the
ExtractOperator runs (hook + ``b2b.extract.store_messages``) for a snapshot window, and
prints students/s and MB/s for SIMS 7 (XML) and SIMS Primary (JSON pages).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--schools", type=int, default=20)
    ap.add_argument("--students", type=int, default=8000)
    args = ap.parse_args(argv)

    from b2b import db
    from b2b.cli.airflow_env import connection_env, project_airflow_settings
    from simulator.server import start_server
    from simulator.world import World, WorldConfig

    os.environ.update(project_airflow_settings(db.b2b_home() / "bench" / "airflow"))
    t = time.perf_counter()
    world = World(WorldConfig.generated(args.schools, args.students, seed=7))
    gen_s = time.perf_counter() - t
    server = start_server(world, host="127.0.0.1", port=0)
    os.environ.update(connection_env(world.airflow_connections(server.base_url)))

    from b2b.ingest.extract import RunContext, store_messages
    from b2b_operators.extract import ExtractOperator

    url = db.database_url()
    until = datetime(2026, 10, 5, 17, 0, tzinfo=UTC)
    totals = {}
    with db.connect(url) as conn:
        db.upgrade(conn)
        for base in world.config.bases:
            conn_id = f"{'sims7' if base.kind == 'sims7' else 'sims_primary'}_{base.dfe}"
            op = ExtractOperator(task_id="extract", base_id=base.dfe, base_kind=base.kind, conn_id=conn_id,
                                 task_key="bench_snapshot", data_filter="snapshot")
            ctx = RunContext(base_id=base.dfe, task_key="bench_snapshot", dag_id=f"bench__{base.dfe}",
                             run_id="bench", source=base.kind, data_filter="snapshot", window_start=None,
                             window_end=until)
            t = time.perf_counter()
            s = store_messages(conn, ctx, op.messages(None, until))
            dt = time.perf_counter() - t
            agg = totals.setdefault(base.kind, {"students": 0, "blocks": 0, "bytes": 0, "seconds": 0.0, "schools": 0})
            agg["students"] += conn.execute(
                "SELECT count(DISTINCT student_guid) FROM raw.inbound_block WHERE file_id = ANY(%s)",
                (s.file_ids,)).fetchone()[0]
            agg["blocks"] += s.blocks
            agg["bytes"] += s.bytes
            agg["seconds"] += dt
            agg["schools"] += 1
        conn.execute("DELETE FROM raw.inbound_file WHERE task_key = 'bench_snapshot'")
        conn.commit()
    server.shutdown()
    print(f"extract: simulator world of {args.schools} schools / {args.students} students generated in {gen_s:.1f}s")
    for kind, a in sorted(totals.items()):
        print(f"extract: {kind:<12} {a['schools']:>3} schools {a['students']:>6} students {a['blocks']:>7} blocks "
              f"{a['bytes'] / 1e6:7.1f} MB in {a['seconds']:6.1f}s -> {a['students'] / a['seconds']:7.0f} students/s, "
              f"{a['bytes'] / 1e6 / a['seconds']:5.1f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
