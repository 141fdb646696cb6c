"""Extract throughput with pre-rendered payloads: parse, then parse + COPY into Postgres.

Builds a generated LA in the simulator and fetches every school's snapshot messages ONCE
through the real hooks over loopback HTTP (not timed: the simulator's own XML/JSON rendering
is not ours). Then times, per MIS (SIMS 7 XML, SIMS Primary JSON pages): the parser alone,
the whole extract stage (``store_messages``: store, parse, COPY, log), and the floors on the
same input: a bare lxml parse / json.loads of the same bytes and a bare COPY of the same rows.
Each rate is printed with its multiple of its floor (parse: the bare parse; extract: bare parse +
bare COPY), and with the CPU seconds it took (this process + the Postgres backend, when that
runs on this machine): on a shared machine the CPU figure moves less than the wall clock.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(ROOT / "bench")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--schools", type=int, default=50)
    ap.add_argument("--students", type=int, default=20000)
    args = ap.parse_args(argv)

    from floors import copy_floor, parse_floor, prerender

    from b2b import db
    from b2b.cli.airflow_env import connection_env, project_airflow_settings
    from simulator.server import start_server
    from simulator.world import World, WorldConfig

    os.environ.update(project_airflow_settings(db.b2b_home() / "bench" / "airflow"))
    world = World(WorldConfig.generated(args.schools, args.students, seed=7))
    server = start_server(world, host="127.0.0.1", port=0)
    os.environ.update(connection_env(world.airflow_connections(server.base_url)))

    from b2b.ingest.extract import RunContext, parse_message, store_messages
    from b2b.ingest.messages import message_schema, part_schema

    until = datetime(2026, 10, 5, 17, 0, tzinfo=UTC)
    t = time.perf_counter()
    rendered = {base.dfe: (base, prerender(world, base, "snapshot", None, until)) for base in world.config.bases}
    print(f"extract: {args.schools} schools / {args.students} students; payloads fetched from the simulator in "
          f"{time.perf_counter() - t:.1f}s (not counted)")
    message_schema()  # compiled once per process
    part_schema()
    totals: dict[str, dict] = {}
    with db.connect(db.database_url()) as conn:
        db.upgrade(conn)
        backend_cpu = _backend_cpu(conn)
        for base, msgs in rendered.values():
            ctx = RunContext(base_id=base.dfe, task_key="bench_snapshot", dag_id=f"bench__{base.dfe}",
                             run_id="bench", source=base.kind, data_filter="snapshot", window_start=None,
                             window_end=until)
            agg = totals.setdefault(base.kind, {"blocks": 0, "bytes": 0, "parse_s": 0.0, "store_s": 0.0,
                                                "floor_parse_s": 0.0, "floor_copy_s": 0.0, "schools": 0,
                                                "parse_cpu": 0.0, "store_cpu": 0.0})
            t, c = time.perf_counter(), time.process_time()
            for m in msgs:
                parse_message(ctx, m)
            agg["parse_s"] += time.perf_counter() - t
            agg["parse_cpu"] += time.process_time() - c
            t, c, b = time.perf_counter(), time.process_time(), backend_cpu()
            s = store_messages(conn, ctx, msgs)
            agg["store_s"] += time.perf_counter() - t
            agg["store_cpu"] += time.process_time() - c + backend_cpu() - b
            agg["floor_parse_s"] += parse_floor(msgs)
            agg["floor_copy_s"] += copy_floor(conn, s.file_ids)[0]
            agg["blocks"] += s.blocks
            agg["bytes"] += s.bytes
            agg["schools"] += 1
        conn.execute("DELETE FROM raw.inbound_file WHERE task_key = 'bench_snapshot'")
        conn.commit()
    server.shutdown()
    for kind, a in sorted(totals.items()):
        floor = a["floor_parse_s"] + a["floor_copy_s"]
        print(f"extract: {kind:<12} {a['schools']:>3} schools {a['blocks']:>7} blocks {a['bytes'] / 1e6:6.1f} MB | "
              f"parse {a['parse_s']:5.2f}s {a['blocks'] / a['parse_s']:7,.0f} blocks/s = "
              f"{a['parse_s'] / a['floor_parse_s']:4.1f}x floor (bare parse {a['floor_parse_s']:.2f}s; "
              f"cpu {a['parse_cpu']:.2f}s) | extract (store+parse+COPY+logs) {a['store_s']:5.2f}s "
              f"{a['blocks'] / a['store_s']:7,.0f} blocks/s = {a['store_s'] / floor:4.1f}x floor "
              f"(bare parse + bare COPY {floor:.2f}s; cpu incl. Postgres backend {a['store_cpu']:.2f}s)")
    return 0


def _backend_cpu(conn):
    """A function giving the CPU seconds used so far by this connection's Postgres backend
    (0 when the server is not a process on this machine)."""
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    conn.commit()
    host = conn.info.host or ""
    stat = Path(f"/proc/{pid}/stat" if host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")
                else "/nonexistent")
    tick = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / tick
    return cpu


if __name__ == "__main__":
    sys.exit(main())
