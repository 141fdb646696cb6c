"""Helpers several test modules share (plain functions; fixtures stay in conftest.py)."""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any


def demo_world_for_dags(pg_admin_url: str, pg_template: str) -> Iterator[dict[str, Any]]:
    """Generator for module fixtures that run the generated DAGs: a module database with the
    demo LA's records, the demo world served on loopback, Airflow's connections and
    B2B_DATABASE_URL pointed at both. Yields ``{"url", "dags", "world"}``; undoes it all after."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from b2b.cli.airflow_env import connection_env, migrate_airflow_db
    from b2b.config.catalogue import load_catalogue
    from b2b.ops.core_load import load_core
    from simulator.server import start_server
    from simulator.world import World, WorldConfig

    name = f"e2e_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    url = make_conninfo(pg_admin_url, dbname=name)
    world = World(WorldConfig.demo())
    server = start_server(world, host="127.0.0.1", port=0)
    saved = dict(os.environ)
    try:
        os.environ.update(connection_env(world.airflow_connections(server.base_url)))
        os.environ["B2B_DATABASE_URL"] = url
        migrate_airflow_db()
        with psycopg.connect(url, autocommit=True) as conn:
            load_core(conn, world.la_core())
        from b2b_operators.factory import build_dags

        yield {"url": url, "dags": build_dags(load_catalogue()), "world": world}
    finally:
        server.shutdown()
        os.environ.clear()
        os.environ.update(saved)
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def linked_children(db: Any, base_id: str, n: int) -> None:
    """``n`` LA children P1..Pn, each linked to the school's student g1..gn of ``base_id``, and
    the statistics collector told (a run table grown past what its statistics say)."""
    db.execute("""INSERT INTO core.child (person_id, forename, surname, dob)
                  SELECT 'P' || k, 'Fn', 'Sn', '2010-01-01' FROM generate_series(1, %s) k""", (n,))
    db.execute("""INSERT INTO core.child_link (base_id, student_guid, person_id, linked_by)
                  SELECT %s, 'g' || k, 'P' || k, 'la' FROM generate_series(1, %s) k""", (base_id, n))
    db.execute("SELECT pg_stat_force_next_flush()")


def load_bench_dataset(core: Any, inc: Any, db_url: str) -> str:
    """The matching bench's records loaded as one DAG run (``bench_matching.load_dag_db``); its dag id."""
    import sys
    from pathlib import Path

    bench = str(Path(__file__).resolve().parent.parent / "bench")
    sys.path.insert(0, bench)
    try:
        from bench_matching import DAG_ID, load_dag_db
    finally:
        sys.path.remove(bench)
    load_dag_db(core, inc, db_url)
    return str(DAG_ID)


def school_with_la_adults(db: Any, tmp_path: Any) -> Any:
    """One primary school (8862001, 60 pupils) whose snapshot is imported as a DAG run does,
    after the LA's children and adults files are loaded; the simulator's world. (The caller
    points B2B_HOME at ``tmp_path``.)"""
    from datetime import UTC, datetime

    from b2b.ingest.manual import ingest_file
    from b2b.ops.core_load import load_adults_file, load_core
    from simulator.la_files import write_la_files
    from simulator.world import BaseSpec, World, WorldConfig

    world = World(WorldConfig(seed=5, bases=(BaseSpec("8862001", "Green Abbey Primary School", "sims7", "primary", 60),)))
    load_core(db, world.la_core())
    write_la_files(tmp_path / "la", world)
    load_adults_file(db, tmp_path / "la" / "adults.csv")
    f = tmp_path / "snapshot.xml"
    f.write_bytes(world.export_sims7("8862001", "snapshot", datetime(2026, 10, 5, 17, tzinfo=UTC)))
    ingest_file(db, f, "8862001")
    return world
