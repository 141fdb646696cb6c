"""The dag-processor at LA scale (issue 15): parse and bulk write of a generated catalogue.

In a scratch AIRFLOW_HOME (metadata DB: SQLite, or with ``--postgres`` a scratch database
on the configured PostgreSQL, the embedded pgserver by default) with a generated catalogue
(default 600 bases x 6 tasks), runs ``airflow dag-processor -n 1`` twice: the first cycle
writes every DAG, the second finds nothing changed. Prints the wall time of each cycle, the
file-processing time Airflow reports, and the DAGs in the metadata DB.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(ROOT / "bench")]
AIRFLOW = str(Path(sys.executable).parent / "airflow")


# parse one file and write its DAGs the way the dag-processor does (processor + manager code paths)
PROBE = r"""
import json, sys, time
from pathlib import Path
import structlog
from airflow.dag_processing.collection import update_dag_parsing_results_in_db
from airflow.dag_processing.dagbag import BundleDagBag
from airflow.dag_processing.processor import _serialize_dags
from airflow.utils.session import create_session
from sqlalchemy import text
from sqlalchemy.orm import configure_mappers
folder, files = Path(sys.argv[1]), sys.argv[2:]
configure_mappers()  # once per process in the dag-processor too: not a cost of each write
with create_session() as session:
    session.execute(text("SELECT 1"))
out = {"parse_s": 0.0, "write_s": 0.0, "dags": 0}
for f in files:
    t = time.perf_counter()
    bag = BundleDagBag(dag_folder=str(folder / f), bundle_path=folder, bundle_name="dags-folder")
    dags, _ = _serialize_dags(bag, structlog.get_logger())
    out["parse_s"] += time.perf_counter() - t
    t = time.perf_counter()
    with create_session() as session:
        update_dag_parsing_results_in_db("dags-folder", None, dags, {}, None, set(), session,
                                         files_parsed={("dags-folder", f)})
    out["write_s"] += time.perf_counter() - t
    out["dags"] += len(dags)
print(json.dumps(out))
"""


def probe(env: dict, folder: Path, files: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(folder), *files], env=env, capture_output=True,
                         text=True)
    if out.returncode:
        raise SystemExit(f"probe failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cycle(env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([AIRFLOW, "dag-processor", "-n", "1"], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t
    if out.returncode:
        raise SystemExit(f"dag-processor failed: {out.stderr[-2000:]}")
    return dt, out.stdout + out.stderr


def file_seconds(log: str) -> str:
    """Airflow's own per-file processing time lines (the stats table), compacted."""
    lines = [ln.strip() for ln in log.splitlines() if ".py" in ln and re.search(r"\d+\.\d+s", ln)]
    return "; ".join(" ".join(ln.split()) for ln in lines[-3:])


def count_dags(env: dict) -> int:
    probe = ("from airflow.utils.session import create_session\nfrom airflow.models.serialized_dag import "
             "SerializedDagModel\nfrom sqlalchemy import func, select\nwith create_session() as s:\n"
             "    print(s.scalar(select(func.count()).select_from(SerializedDagModel)))")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def live(env: dict, cat: Path, folder: Path, admin: str, dbname: str, quiet_s: float = 60.0) -> None:
    """A long-running dag-processor on the split files with `make airflow`'s settings
    (``b2b.cli.airflow_env.DAG_PROCESSOR_SETTINGS``): once it has every DAG, (a) a quiet window
    with nothing changed: how many DAGs it re-parsed and re-wrote; (b) one base renamed in the
    catalogue, its file rewritten (``write_dag_files``, as the catalogue watcher does): seconds
    until the new name is in the metadata DB, i.e. in the UI."""
    import psycopg
    import yaml
    from psycopg.conninfo import make_conninfo

    from b2b.cli.airflow_env import DAG_PROCESSOR_SETTINGS
    from b2b.config.dag_files import write_dag_files

    env = dict(env, **DAG_PROCESSOR_SETTINGS, AIRFLOW__CORE__DAGS_FOLDER=str(folder))
    meta = make_conninfo(admin, dbname=dbname)
    data = yaml.safe_load(cat.read_text())

    log = open(folder.parent / "dag-processor.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([AIRFLOW, "dag-processor"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def parsed() -> tuple[int, object]:
        with psycopg.connect(meta) as c:
            return c.execute("SELECT count(*), max(last_parsed_time) FROM dag").fetchone()

    try:
        t = time.perf_counter()
        last, stable_since = None, time.perf_counter()
        while time.perf_counter() - t < 1800:  # every file parsed once: the DAG count and times settle
            now = parsed()
            if now != last:
                last, stable_since = now, time.perf_counter()
            elif time.perf_counter() - stable_since > 20 and now[0] > 0:
                break
            time.sleep(2)
        settled = time.perf_counter() - t - 20
        print(f"dag-processor live (split, modified_time, min_file_process_interval "
              f"{DAG_PROCESSOR_SETTINGS['AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL']}s): "
              f"{last[0]} DAGs parsed and written in about {settled:.0f}s after start")
        before = parsed()
        time.sleep(quiet_s)
        with psycopg.connect(meta) as c:
            again = c.execute("SELECT count(*) FROM dag WHERE last_parsed_time > %s", (before[1],)).fetchone()[0]
            stale = c.execute("SELECT count(*) FROM dag WHERE is_stale").fetchone()[0]
        print(f"dag-processor live: nothing changed for {quiet_s:.0f}s: {again} DAGs re-parsed/re-written, "
              f"{stale} marked stale (a cycle with nothing changed parses and writes nothing)")
        base = data["bases"][len(data["bases"]) // 2]
        base["name"] = f"{base['name']} (renamed)"
        cat.write_text(yaml.safe_dump(data, sort_keys=False))
        t = time.perf_counter()
        counts = write_dag_files(cat, folder)
        dag_id = next(f"b2b__{base['dfe']}__{tk['key']}" for tk in data["tasks"] if base["dfe"] in tk["bases"])
        while time.perf_counter() - t < 600:
            with psycopg.connect(meta) as c:
                shown = c.execute("SELECT dag_display_name FROM dag WHERE dag_id = %s", (dag_id,)).fetchone()
            if shown and "(renamed)" in (shown[0] or ""):
                break
            time.sleep(0.5)
        seen = time.perf_counter() - t
        with psycopg.connect(meta) as c:
            rewritten = c.execute("SELECT count(*) FROM dag WHERE last_parsed_time > %s", (before[1],)).fetchone()[0]
        print(f"dag-processor live: one base renamed: {counts['written']} file rewritten, the new name in the "
              f"metadata DB (the UI) after {seen:.1f}s; {rewritten} DAGs re-parsed/re-written")
    finally:
        from b2b.cli.airflow_env import stop_process_tree

        stop_process_tree(proc.pid)  # the processor and its file-parsing children
        proc.wait(30)
        log.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bases", type=int, default=600)
    ap.add_argument("--tasks", type=int, default=6)
    ap.add_argument("--postgres", action="store_true", help="metadata DB on PostgreSQL instead of SQLite")
    ap.add_argument("--live-only", action="store_true",
                    help="with --postgres: only the long-running dag-processor on the split files")
    args = ap.parse_args(argv)
    if args.live_only and not args.postgres:
        ap.error("--live-only needs --postgres")
    import yaml
    from gen_catalogue import generate

    from b2b.cli.airflow_env import project_airflow_settings

    tmp = Path(tempfile.mkdtemp(prefix="b2b-bench-dagproc-"))
    cat = tmp / "catalogue.yaml"
    cat.write_text(yaml.safe_dump(generate(args.bases, args.tasks), sort_keys=False))
    env = dict(os.environ, **project_airflow_settings(tmp / "airflow"), B2B_CATALOGUE=str(cat),
               AIRFLOW__LOGGING__LOGGING_LEVEL="INFO", AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT="600",
               AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT="600")
    admin = name = None
    if args.postgres:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict

        from b2b import db

        admin = db.database_url()
        name = f"b2b_bench_af_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        info = conninfo_to_dict(admin)
        host = info.get("host", "127.0.0.1")
        where = f"@/{name}?host={host}" if host.startswith("/") else f"@{host}:{info.get('port', 5432)}/{name}"
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"postgresql+psycopg2://{info.get('user', 'postgres')}:{where}"
    backend = "PostgreSQL" if args.postgres else "SQLite"
    try:
        t = time.perf_counter()
        subprocess.run([AIRFLOW, "db", "migrate"], env=env, capture_output=True, check=True)
        print(f"dag-processor: {backend} metadata DB migrated in {time.perf_counter() - t:.0f}s (not counted)")
        from b2b.config.dag_files import BUCKETS, write_dag_files

        split = tmp / "dags"
        write_dag_files(cat, split)
        env_split = dict(env, AIRFLOW__CORE__DAGS_FOLDER=str(split),
                         AIRFLOW__DAG_PROCESSOR__FILE_PARSING_SORT_MODE="modified_time",
                         AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL="86400")
        if not args.live_only:
            first, log1 = cycle(env)
            second, log2 = cycle(env)
            dags = count_dags(env)
            print(f"dag-processor: {args.bases} bases x {args.tasks} tasks, {backend}: {dags} serialized DAGs")
            print(f"dag-processor: first cycle (all new)      {first:6.1f}s wall  [{file_seconds(log1)}]")
            print(f"dag-processor: next cycle (nothing changed) {second:6.1f}s wall  [{file_seconds(log2)}]")
            one = probe(env, ROOT / "dags", ["b2b_generated.py"])
            print(f"dag-processor: one file, nothing changed: parse {one['parse_s']:.1f}s + write "
                  f"{one['write_s']:.1f}s of {one['dags']} DAGs (each cycle, every min_file_process_interval)")
            # the split: DAG files per bucket of bases, in a scratch DAG folder
            files = sorted(p.name for p in split.glob("*.py"))
            moved, _log = cycle(env_split)
            every = probe(env_split, split, files)
            edit = probe(env_split, split, files[1:2])
            print(f"dag-processor: split into {len(files)} files ({BUCKETS} buckets): first cycle {moved:.1f}s "
                  f"wall; all files re-parsed (a restart): parse {every['parse_s']:.1f}s + write "
                  f"{every['write_s']:.1f}s")
            print(f"dag-processor: split, one base edited: its file only, parse {edit['parse_s']:.2f}s + write "
                  f"{edit['write_s']:.2f}s ({edit['dags']} DAGs); nothing changed: no file parsed "
                  "(modified_time sort mode, min_file_process_interval 1 day)")
        if args.postgres:
            live(env_split, cat, split, admin, name)
    finally:
        if name:
            import psycopg

            with psycopg.connect(admin, autocommit=True) as c:
                c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
