"""Airflow's cost per task and a changed-data day through the real scheduler (issue 15).

The harness of tests/test_scheduler.py: `b2b airflow` (what `make airflow` runs: `airflow
standalone`, LocalExecutor, Airflow's metadata in a scratch database on the embedded
PostgreSQL, the simulator on loopback) with a generated LA of ``--schools`` schools, each with
a snapshot and a changed-data task; runs are triggered through the REST API (/api/v2).

Both task granularities (the LA setting TASK_GRANULARITY: ``run`` = one task per run,
``stage`` = one task per stage) in ONE Airflow, in the same window:

1. ``run``: one school's snapshot alone: its **per-task overhead** = (the DAG run's wall time -
   the sum of its stages' own seconds) / its task count. The stage seconds are timed by the
   operators around the stage code (their return value, Airflow's XCom; ``ops.task_log`` rows
   stay free of timings so that reruns compare equal), so the difference is Airflow's cost:
   queueing, a worker process per task, parsing the DAG file, API round trips;
2. the other schools' snapshots together (this primes the hash cache; timed, not the goal);
3. **a changed-data day** (Tuesday): every school's changed-data run triggered at once; its
   wall time = first queued to last finished, and the per-task overhead averaged over its runs
   (under load: 2 cores shared by every run);
4. the catalogue is edited to ``stage`` (the catalogue watcher of `b2b airflow` rewrites the
   DAG files, the dag-processor re-parses them); the next changed-data day (Wednesday) the same
   way with one task per stage, then one school's next snapshot alone (per-task overhead).

600-school projection: the day is throughput-bound (all runs queued at once saturate the 2
cores), so the wall time grows with the number of runs: ``wall(600) ~ wall(N) * 600 / N``.
The stage part of it may grow faster than linearly with the LA (matching against more LA
records): ``run_all.py``'s scaling of the stage bench says by how much.

Heavy: run under ``nice -n 5``; everything it starts is stopped, its databases dropped.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

SNAPSHOT_LOGICAL = "2026-10-04T17:00:00Z"  # Sunday 18:00 London: the weekly snapshot
#: the changed-data days: Tuesday with one task per run, Wednesday with one task per stage
CHANGED_LOGICAL = ("2026-10-06T17:00:00Z", "2026-10-07T17:00:00Z")
NEXT_SNAPSHOT_LOGICAL = "2026-10-11T17:00:00Z"
TARGET_SCHOOLS = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def catalogue(schools: int, students: int, granularity: str) -> dict:
    """The generated LA's schools (the simulator's, ``WorldConfig.generated``) with a snapshot and a
    changed-data task each, no catch-up (runs are triggered)."""
    from simulator.world import WorldConfig

    cfg = WorldConfig.generated(schools, students)
    bases = []
    for b in cfg.bases:
        base = {"dfe": b.dfe, "name": b.name, "kind": b.kind, "conn_id": f"{b.kind}_{b.dfe}"}
        if b.migrated_on:
            base["migrated_on"] = b.migrated_on.isoformat()
        bases.append(base)
    tasks = []
    for kind in ("sims7", "sims_primary"):
        dfes = [b["dfe"] for b in bases if b["kind"] == kind]
        if not dfes:
            continue
        tasks += [
            {"key": "snapshot", "name": f"Weekly snapshot ({kind})", "filter": "snapshot",
             "group": {"type": "ncy", "ncys": "all"}, "schedule": "0 18 * * 0", "start_date": "2026-09-01",
             "catchup": False, "bases": dfes},
            {"key": "changed_data", "name": f"Daily changed data ({kind})", "filter": "changed_data",
             "group": {"type": "ncy", "ncys": "all"}, "schedule": "0 18 * * 1-5", "start_date": "2026-09-01",
             "catchup": False, "bases": dfes},
        ]
    return {"version": 1, "la": {"code": cfg.la_code, "name": f"Bench LA ({schools} schools)",
                                 "timezone": "Europe/London", "settings": {"TASK_GRANULARITY": granularity}},
            "bases": bases, "tasks": tasks}


class Api:
    """REST /api/v2 with the admin's JWT (as tests/test_scheduler.py)."""

    def __init__(self, base_url: str, password_file: Path) -> None:
        import requests

        self.base, self.http = base_url, requests.Session()
        password = json.loads(password_file.read_text())["admin"]
        r = self.http.post(f"{base_url}/auth/token", json={"username": "admin", "password": password}, timeout=30)
        r.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def __call__(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, f"{self.base}/api/v2{path}", timeout=120, **kw)
        if r.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
        return r.json()


def _wait(check: Any, timeout: float, what: str, log: Path, every: float = 2.0) -> Any:
    from b2b.cli.airflow_env import wait_for

    try:
        return wait_for(check, timeout, what, every)
    except TimeoutError as e:
        raise SystemExit(f"{e}\n{log.read_text()[-3000:]}") from None


def _meta(meta_url: str) -> str:
    """The psycopg URL of the metadata DB (its SQLAlchemy URL without the driver)."""
    from sqlalchemy.engine import make_url

    u = make_url(meta_url)
    from psycopg.conninfo import make_conninfo

    kw = {"dbname": u.database, "user": u.username, "password": u.password, "host": u.host, "port": u.port}
    kw.update(u.query)  # a socket directory as ?host=
    return make_conninfo(**{k: v for k, v in kw.items() if v is not None})


def runs_figures(meta: str, run_id: str) -> list[dict]:
    """Per DAG run of ``run_id``: wall time, tasks, the stages' own seconds (XCom), queued/end."""
    import psycopg

    with psycopg.connect(meta) as c:
        runs = c.execute("SELECT dag_id, queued_at, start_date, end_date, state FROM dag_run WHERE run_id = %s",
                         (run_id,)).fetchall()
        tis = c.execute("""SELECT dag_id, count(*) FROM task_instance WHERE run_id = %s GROUP BY dag_id""",
                        (run_id,)).fetchall()
        xcoms = c.execute("SELECT dag_id, task_id, value FROM xcom WHERE run_id = %s AND key = 'return_value'",
                          (run_id,)).fetchall()
    tasks = dict(tis)
    stage_s: dict[str, float] = {}
    by_stage: dict[str, dict[str, float]] = {}
    for dag_id, task, value in xcoms:
        v = json.loads(value) if isinstance(value, str) else value
        if isinstance(v, str):
            v = json.loads(v)
        v = v or {}
        stage_s[dag_id] = stage_s.get(dag_id, 0.0) + float(v.get("seconds") or 0)
        # each stage's own seconds: a stage task's, or each section of the run task
        parts = {k: float(x["seconds"]) for k, x in v.items() if isinstance(x, dict) and "seconds" in x} \
            if task == "run" else {task: float(v.get("seconds") or 0)}
        for k, sec in parts.items():
            by_stage.setdefault(dag_id, {})[k] = sec
    out = []
    for dag_id, queued, start, end, state in runs:
        wall = (end - start).total_seconds() if start and end else None
        out.append({"dag_id": dag_id, "queued": queued, "start": start, "end": end, "state": state, "wall": wall,
                    "tasks": tasks.get(dag_id, 0), "stage_s": stage_s.get(dag_id, 0.0),
                    "by_stage": by_stage.get(dag_id, {})})
    return out


def trigger_and_wait(api: Api, meta: str, dag_ids: list[str], logical: str, run_id: str, log: Path,
                     timeout: float) -> list[dict]:
    for d in dag_ids:
        api("POST", f"/dags/{d}/dagRuns", json={"logical_date": logical, "dag_run_id": run_id})

    wanted = set(dag_ids)

    def done() -> list[dict] | None:
        rows = [r for r in runs_figures(meta, run_id) if r["dag_id"] in wanted]
        states = [str(r["state"]) for r in rows]
        failed = [r["dag_id"] for r in rows if r["state"] == "failed"]
        if failed:
            raise SystemExit(f"run(s) failed: {failed[:5]}\n{log.read_text()[-3000:]}")
        return rows if len(rows) == len(dag_ids) and all(s == "success" for s in states) else None

    return _wait(done, timeout, f"{len(dag_ids)} run(s) {run_id}", log, every=3)


def summary(rows: list[dict]) -> dict:
    """Wall time of the batch (first queued to last end) and the mean per-task overhead."""
    first = min(r["queued"] or r["start"] for r in rows)
    last = max(r["end"] for r in rows)
    overheads = [(r["wall"] - r["stage_s"]) / r["tasks"] for r in rows if r["tasks"]]
    stages: dict[str, float] = {}
    for r in rows:
        for k, sec in r["by_stage"].items():
            stages[k] = stages.get(k, 0.0) + sec / len(rows)
    return {"runs": len(rows), "tasks": sum(r["tasks"] for r in rows), "wall_s": (last - first).total_seconds(),
            "stage_s": sum(r["stage_s"] for r in rows), "run_wall_mean_s": sum(r["wall"] for r in rows) / len(rows),
            "overhead_per_task_s": sum(overheads) / len(overheads),
            "stage_mean_s": {k: round(v, 2) for k, v in stages.items()}}


def measure(schools: int, students: int, admin: str, keep_log: Path | None, modes: tuple[str, ...] = ("run", "stage"),
            extra_env: dict[str, str] | None = None) -> list[dict]:
    """One `b2b airflow`, both granularities in the same window: the catalogue starts with
    TASK_GRANULARITY run; after its changed-data day the catalogue is edited to ``stage`` (the
    catalogue watcher rewrites the DAG files, the dag-processor re-parses them) and the next
    school day runs with one task per stage."""
    import psycopg
    import yaml
    from psycopg.conninfo import make_conninfo

    from b2b.cli.airflow_env import api_server_up, embedded_metadata_url, stop_process_tree

    tag = uuid.uuid4().hex[:8]
    home = Path(tempfile.mkdtemp(prefix="b2b-bench-sched-"))
    warehouse_db, meta_db = f"b2b_bench_wh_{tag}", f"b2b_bench_af_{tag}"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f"CREATE DATABASE {warehouse_db}")
    warehouse = make_conninfo(admin, dbname=warehouse_db)
    meta_url = embedded_metadata_url(admin, meta_db)
    cat = catalogue(schools, students, "run")
    cat_path = home / "catalogue.yaml"
    cat_path.write_text(yaml.safe_dump(cat, sort_keys=False))
    port = _free_port()
    env = dict(os.environ, B2B_HOME=str(home), AIRFLOW_HOME=str(home / "airflow"), B2B_DATABASE_URL=warehouse,
               B2B_CATALOGUE=str(cat_path), AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=meta_url,
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "plugins")]),
               # only the triggered runs: unpausing starts no run of the latest cron interval
               AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False", **(extra_env or {}))
    for k in ("AIRFLOW__LOGGING__LOGGING_LEVEL", "_AIRFLOW_PARSING_CONTEXT_DAG_ID", "AIRFLOW__CORE__DAGS_FOLDER",
              "B2B_DAGS_FOLDER"):
        env.pop(k, None)
    log_path = home / "standalone.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed below
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "b2b.cli", "airflow", "--port", str(port), "--simulator-port",
                             str(_free_port()), "--schools", str(schools), "--students", str(students)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    meta = _meta(meta_url)
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait(lambda: proc.poll() is None and api_server_up(base_url), 600, "the api-server", log_path)
        api = Api(base_url, home / "airflow" / "simple_auth_manager_passwords.json.generated")
        dfes = [b["dfe"] for b in cat["bases"]]
        snaps = [f"b2b__{d}__snapshot" for d in dfes]
        changed = [f"b2b__{d}__changed_data" for d in dfes]

        def shaped(tasks: int) -> bool:
            """Every DAG serialised, each changed-data DAG with ``tasks`` tasks."""
            try:
                return all(api("GET", f"/dags/{d}/tasks")["total_entries"] == tasks for d in changed)
            except RuntimeError:  # not serialised yet
                return False

        run_tasks = len(cat_tasks("changed_data"))
        _wait(lambda: shaped(1), 900, "the dag-processor to serialise the DAGs", log_path, every=5)
        started = time.monotonic() - t0
        for d in snaps + changed:
            api("PATCH", f"/dags/{d}", json={"is_paused": False})
        results = []
        alone = trigger_and_wait(api, meta, snaps[:1], SNAPSHOT_LOGICAL, "bench_snapshot", log_path, 900)
        rest = trigger_and_wait(api, meta, snaps[1:], SNAPSHOT_LOGICAL, "bench_snapshot", log_path, 3600)
        day = trigger_and_wait(api, meta, changed, CHANGED_LOGICAL[0], "bench_changed_run", log_path, 3600)
        results.append(figures("run", started, alone[0], summary(rest), summary(day), warehouse, CHANGED_LOGICAL[0]))
        if "stage" not in modes:
            return results
        # the LA switches to one task per stage: the catalogue watcher rewrites the files
        t = time.monotonic()
        cat["la"]["settings"]["TASK_GRANULARITY"] = "stage"
        cat_path.write_text(yaml.safe_dump(cat, sort_keys=False))
        _wait(lambda: shaped(run_tasks), 900, "the DAGs re-parsed with one task per stage", log_path, every=3)
        switched = time.monotonic() - t
        day = trigger_and_wait(api, meta, changed, CHANGED_LOGICAL[1], "bench_changed_stage", log_path, 3600)
        alone = trigger_and_wait(api, meta, snaps[:1], NEXT_SNAPSHOT_LOGICAL, "bench_snapshot_stage", log_path, 900)
        results.append(figures("stage", switched, alone[0], None, summary(day), warehouse, CHANGED_LOGICAL[1]))
        return results
    finally:
        stop_process_tree(proc.pid)
        proc.wait(30)
        log.close()
        if keep_log:
            shutil.copy(log_path, keep_log)
        with psycopg.connect(admin, autocommit=True) as c:
            for name in (warehouse_db, meta_db):
                c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        shutil.rmtree(home, ignore_errors=True)


def cat_tasks(data_filter: str) -> list[str]:
    """The tasks of a stage-granularity export DAG (extract ... commit)."""
    from b2b_operators.factory import run_stages

    return run_stages(data_filter)


def figures(mode: str, started: float, one: dict, snapshots: dict | None, day: dict, warehouse: str,
            logical: str) -> dict:
    import psycopg

    end = datetime.fromisoformat(logical.replace("Z", "+00:00"))
    with psycopg.connect(warehouse) as c:
        blocks, skipped = c.execute("""SELECT sum((counts->>'blocks')::int), sum((counts->>'skipped_by_cache')::int)
                                         FROM ops.task_log WHERE stage = 'hash_filter' AND file_id IS NULL
                                          AND dag_id LIKE '%%changed_data' AND window_end = %s""", (end,)).fetchone()
    return {"mode": mode, "startup_s": started,
            "alone": {"tasks": one["tasks"], "wall_s": one["wall"], "stage_s": one["stage_s"],
                      "overhead_per_task_s": (one["wall"] - one["stage_s"]) / one["tasks"]},
            "snapshots": snapshots, "changed_day": day, "changed_blocks": blocks, "changed_skipped": skipped}


def report(results: list[dict], schools: int) -> None:
    for r in results:
        a, s, d = r["alone"], r["snapshots"], r["changed_day"]
        print(f"scheduler [{r['mode']}]: scheduler warm-up {'on' if r.get('warm', True) else 'off'}, "
              f"parallelism {r.get('parallelism', 'default')}")
        print(f"scheduler [{r['mode']}]: " + (f"Airflow up with {2 * schools} DAGs in {r['startup_s']:.0f}s"
              if r["mode"] == "run" else f"catalogue edited to TASK_GRANULARITY stage: every DAG re-parsed with "
              f"one task per stage {r['startup_s']:.0f}s later") + " (not counted)")
        print(f"scheduler [{r['mode']}]: one snapshot alone: {a['tasks']} task(s), run {a['wall_s']:.1f}s wall, "
              f"stages {a['stage_s']:.1f}s -> overhead {a['overhead_per_task_s']:.2f}s per task")
        if s:
            print(f"scheduler [{r['mode']}]: {s['runs']} snapshots together: {s['wall_s']:.0f}s wall, "
                  f"stages {s['stage_s']:.0f}s in all, overhead {s['overhead_per_task_s']:.2f}s per task")
        print(f"scheduler [{r['mode']}]: changed-data day, {d['runs']} schools together ({d['tasks']} tasks, "
              f"{r['changed_blocks']} blocks, {r['changed_skipped']} skipped by cache): {d['wall_s']:.0f}s wall, "
              f"stages {d['stage_s']:.0f}s in all, mean run {d['run_wall_mean_s']:.0f}s, "
              f"overhead {d['overhead_per_task_s']:.2f}s per task")
        print(f"scheduler [{r['mode']}]: changed-data day, mean seconds per run of each stage: "
              + ", ".join(f"{k} {v:.2f}" for k, v in d["stage_mean_s"].items()))
        proj = d["wall_s"] * TARGET_SCHOOLS / d["runs"]
        print(f"scheduler [{r['mode']}]: projected changed-data day for {TARGET_SCHOOLS} schools "
              f"(throughput-bound: wall x {TARGET_SCHOOLS}/{d['runs']}): {proj / 60:.1f} min (goal <= 30 min)")


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schools", type=int, default=50)
    ap.add_argument("--students", type=int, default=10000)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--keep-log", type=Path, help="copy the standalone log here")
    ap.add_argument("--run-only", action="store_true", help="only TASK_GRANULARITY run (no stage-mode day)")
    ap.add_argument("--no-warm", action="store_true",
                    help="B2B_AIRFLOW_WARM=0: the scheduler does not pre-import the tasks' modules (the before figure)")
    ap.add_argument("--parallelism", type=int, help="AIRFLOW__CORE__PARALLELISM (default: what `b2b airflow` sets)")
    args = ap.parse_args(argv)
    from b2b import db

    t = datetime.now()
    extra = {"B2B_AIRFLOW_WARM": "0"} if args.no_warm else {}
    if args.parallelism:
        extra["AIRFLOW__CORE__PARALLELISM"] = str(args.parallelism)
    results = measure(args.schools, args.students, db.database_url(), args.keep_log,
                      ("run",) if args.run_only else ("run", "stage"), extra)
    for r in results:
        r["warm"], r["parallelism"] = not args.no_warm, extra.get("AIRFLOW__CORE__PARALLELISM", "default")
    for r in results:
        r["measured_at"] = t.isoformat(timespec="seconds")
    report(results, args.schools)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
