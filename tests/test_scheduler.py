"""The path users take, with Airflow's real scheduler: `b2b airflow` (what `make airflow` runs)
starts `airflow standalone` on a scratch Airflow home against the simulator and a scratch
warehouse; the test logs in through the REST API (JWT from /auth/token), unpauses and triggers a
snapshot DAG and a changed-data DAG, waits for them, checks `ops.run_summary` and a task log,
then runs the README's backfill commands verbatim and checks the windows they produced.

Marked ``scheduler``; skipped locally with ``B2B_SKIP_SCHEDULER=1``, never when ``CI=true``.
Everything it starts is torn down (the process group of `b2b airflow`, its databases).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime

import pytest
import yaml

from b2b import PROJECT_ROOT
from b2b.cli.airflow_env import api_server_up, wait_for
from tests.conftest import TEST_HOME, _with_db

pytestmark = [
    pytest.mark.scheduler,
    pytest.mark.skipif(os.environ.get("B2B_SKIP_SCHEDULER") == "1" and os.environ.get("CI", "").lower() != "true",
                       reason="B2B_SKIP_SCHEDULER=1 (never skipped when CI=true)"),
]

BASE = "8862001"
SNAPSHOT, CHANGED = f"b2b__{BASE}__snapshot", f"b2b__{BASE}__changed_data"
DEADLINE_S = 420  # the whole scenario; a real run of one school takes well under a minute


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _catalogue(path) -> None:
    """The demo catalogue cut to one school's snapshot and changed data, without catch-up (unpausing
    starts one run for the latest interval instead of one per school day since September)."""
    cat = yaml.safe_load((PROJECT_ROOT / "include" / "catalogue" / "demo.yaml").read_text())
    cat["bases"] = [b for b in cat["bases"] if b["dfe"] == BASE]
    cat["tasks"] = [dict(t, bases=[BASE], catchup=False) for t in cat["tasks"]
                    if BASE in t["bases"] and t["key"] in ("snapshot", "changed_data")]
    path.write_text(yaml.safe_dump(cat, sort_keys=False))


def readme_backfill_block() -> str:
    """The shell block of the README's "How to backfill" section, as written."""
    text = (PROJECT_ROOT / "README.md").read_text()
    section = text.split("## How to backfill", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


class Api:
    def __init__(self, base_url: str, password_file) -> None:
        import requests

        self.base, self.http = base_url, requests.Session()
        password = json.loads(password_file.read_text())["admin"]
        r = self.http.post(f"{base_url}/auth/token", json={"username": "admin", "password": password}, timeout=30)
        r.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def __call__(self, method: str, path: str, **kw):
        r = self.http.request(method, f"{self.base}/api/v2{path}", timeout=60, **kw)
        assert r.status_code < 300, (method, path, r.status_code, r.text[:500])
        return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text


@pytest.fixture(scope="module")
def airflow(pg_admin_url, pg_template):
    import psycopg

    from b2b.cli.airflow_env import embedded_metadata_url

    tag = uuid.uuid4().hex[:8]
    home = TEST_HOME / f"scheduler-{tag}"
    home.mkdir(parents=True)
    warehouse_db, meta_db = f"t_sched_{tag}", f"af_{tag}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {warehouse_db} TEMPLATE {pg_template}")
    warehouse = _with_db(pg_admin_url, warehouse_db)
    _catalogue(home / "catalogue.yaml")
    port = _free_port()
    env = dict(os.environ, B2B_HOME=str(home), AIRFLOW_HOME=str(home / "airflow"), B2B_DATABASE_URL=warehouse,
               B2B_CATALOGUE=str(home / "catalogue.yaml"),
               AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=embedded_metadata_url(pg_admin_url, meta_db),
               PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "plugins")]))
    for k in ("AIRFLOW__LOGGING__LOGGING_LEVEL", "_AIRFLOW_PARSING_CONTEXT_DAG_ID"):
        env.pop(k, None)
    log = open(home / "standalone.log", "w")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen([sys.executable, "-m", "b2b.cli", "airflow", "--port", str(port),
                             "--simulator-port", str(_free_port())],
                            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base_url = f"http://127.0.0.1:{port}"
        _wait(lambda: proc.poll() is None and api_server_up(base_url), 240, "the api-server to answer", home)
        api = Api(base_url, home / "airflow" / "simple_auth_manager_passwords.json.generated")
        _wait(lambda: {SNAPSHOT, CHANGED} <= {d["dag_id"] for d in api("GET", "/dags")["dags"]}, 180,
              "the dag-processor to serialise the DAGs", home)
        yield {"api": api, "env": env, "home": home, "warehouse": warehouse, "started": time.monotonic()}
    finally:
        stop_tree(proc)
        log.close()
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            for name in (warehouse_db, meta_db):
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        shutil.rmtree(home, ignore_errors=True)


def stop_tree(proc: subprocess.Popen, grace: float = 30) -> None:
    """Stop `b2b airflow` and everything under it: the standalone components and the task workers
    (which start sessions of their own, so a process-group signal alone misses them)."""
    from b2b.cli.airflow_env import stop_process_tree

    stop_process_tree(proc.pid, grace)
    proc.wait(10)


def _wait(check, timeout: float, what: str, home=None, every: float = 2.0):
    try:
        return wait_for(check, timeout, what, every)
    except TimeoutError as e:
        tail = (home / "standalone.log").read_text()[-4000:] if home else ""
        pytest.fail(f"{e}\n{tail}")


def _runs(api, dag_id: str) -> list[dict]:
    return api("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]


def _wait_runs_done(airflow, dag_id: str, run_ids: set[str] | None = None, run_type: str | None = None,
                    count: int = 1) -> list[dict]:
    api = airflow["api"]
    remaining = DEADLINE_S - (time.monotonic() - airflow["started"])

    def done():
        runs = [r for r in _runs(api, dag_id) if (run_ids is None or r["dag_run_id"] in run_ids)
                and (run_type is None or r["run_type"] == run_type)]
        failed = [r for r in runs if r["state"] == "failed"]
        assert not failed, f"{dag_id}: run(s) failed: {[r['dag_run_id'] for r in failed]}"
        return runs if len(runs) >= count and all(r["state"] == "success" for r in runs) else None

    return _wait(done, max(remaining, 60), f"{dag_id} runs to succeed", airflow["home"], every=3)


def _utc(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _intervals(cron: str, tz: str, lo: datetime, hi: datetime) -> list[tuple[datetime, datetime]]:
    """The cron intervals (start, end) in UTC whose start (a backfill run's logical date) lies in [lo, hi]."""
    from zoneinfo import ZoneInfo

    from croniter import croniter

    it = croniter(cron, lo.astimezone(ZoneInfo(tz)))
    ticks = [it.get_next(datetime)]
    while ticks[-1] <= hi:
        ticks.append(it.get_next(datetime))
    ticks = [t.astimezone(lo.tzinfo) for t in ticks]
    return [(a, b) for a, b in zip(ticks, ticks[1:]) if a <= hi]


def _one_task(api, dag_id: str) -> bool:
    """The DAG runs as one task (the LA setting TASK_GRANULARITY run, issue 15)."""
    return [t["task_id"] for t in api("GET", f"/dags/{dag_id}/tasks")["tasks"]] == ["run"]


def test_ui_lists_connections_display_names_and_assets(airflow):
    """What a newcomer sees: the school's and the warehouse's connections (in the metadata DB, not
    only in the standalone process's environment), school names in the DAG list, the assets."""
    api = airflow["api"]
    conns = {c["connection_id"]: c for c in api("GET", "/connections", params={"limit": 100})["connections"]}
    assert {f"sims7_{BASE}", "b2b_warehouse"} <= set(conns)
    assert conns["b2b_warehouse"]["conn_type"] == "postgres"
    assert conns[f"sims7_{BASE}"]["password"] in (None, "***")  # the API never shows a secret
    dag = api("GET", f"/dags/{SNAPSHOT}")
    assert "Green Abbey Primary School" in dag["dag_display_name"]
    assets = {a["name"]: a for a in api("GET", "/assets", params={"limit": 100})["assets"]}
    produced_by = {(t["dag_id"], t["task_id"]) for t in assets[f"b2b_staging_{BASE}"]["producing_tasks"]}
    load = "run" if _one_task(api, SNAPSHOT) else "load"  # TASK_GRANULARITY run: the run's one task loads
    assert {(SNAPSHOT, load), (CHANGED, load)} <= produced_by
    consumers = {d["dag_id"] for d in assets["b2b_conflicts"]["scheduled_dags"]}
    assert consumers == {"b2b__maintenance__clear_conflicts"}


def test_scheduler_runs_triggered_snapshot_and_changed_data_dags(airflow):
    api = airflow["api"]
    triggered = {SNAPSHOT: ("2026-10-04T17:00:00Z", "api_snapshot"), CHANGED: ("2026-10-02T17:00:00Z", "api_changed")}
    for dag_id, (logical, run_id) in triggered.items():
        api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        api("POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": logical, "dag_run_id": run_id})
    runs = {dag_id: _wait_runs_done(airflow, dag_id, {run_id})[0] for dag_id, (_, run_id) in triggered.items()}

    import psycopg

    with psycopg.connect(airflow["warehouse"]) as conn:
        for dag_id, run in runs.items():
            row = conn.execute("""SELECT files_received, blocks_received, errors, stages_done FROM ops.run_summary
                                   WHERE dag_id = %s AND window_end = %s""",
                               (dag_id, _utc(run["data_interval_end"]))).fetchone()
            assert row is not None, f"{dag_id}: no ops.run_summary row for window {run['data_interval_end']}"
            files, blocks, errors, stages = row
            assert files >= 1 and errors == 0, (dag_id, row)
            assert {"extract", "hash_filter", "validate", "load", "match", "conflicts", "apply"} <= set(stages.split(","))
        snapshot_blocks = conn.execute("SELECT blocks_received FROM ops.run_summary WHERE dag_id = %s",
                                       (SNAPSHOT,)).fetchone()[0]
        assert snapshot_blocks > 100

    # the validate stage's log (its task's, or its section of the run task's): our stage line, and
    # none of Great Expectations' INFO chatter
    one = _one_task(api, SNAPSHOT)
    text = api("GET", f"/dags/{SNAPSHOT}/dagRuns/api_snapshot/taskInstances/{'run' if one else 'validate'}/logs/1",
               headers={"Accept": "application/json"})
    lines = [json.dumps(e) for e in text["content"]] if isinstance(text, dict) else str(text).splitlines()
    assert any(f"base {BASE} validate:" in ln for ln in lines), lines[-5:]
    assert not [ln for ln in lines if "great_expectations" in ln], "GX INFO lines in the task log"
    if one:  # every stage in its own section of the log, in order, each closed with its line
        opened = [s for s in ("extract", "hash_filter", "validate", "load", "match", "conflicts", "apply",
                              "contacts", "commit") if any(f"::group::{s}" in ln for ln in lines)]
        assert opened == ["extract", "hash_filter", "validate", "load", "match", "conflicts", "apply", "contacts",
                          "commit"], opened
        assert all(any(f"base {BASE} {s}:" in ln for ln in lines) for s in opened)
    assert len(lines) < (80 if one else 40), f"{len(lines)} log lines"


def test_readme_backfill_command_runs_as_written(airflow):
    api = airflow["api"]
    block = readme_backfill_block()
    dag_id = re.search(r"--dag-id (\S+)", block).group(1)
    assert dag_id == CHANGED
    before = {r["dag_run_id"] for r in _runs(api, dag_id)}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=PROJECT_ROOT, env=airflow["env"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    # the windows: one run per school-day interval starting in [--from-date, --to-date]
    lo = _utc(re.search(r"--from-date (\S+)", block).group(1) + "T00:00:00Z")
    hi = _utc(re.search(r"--to-date (\S+)", block).group(1) + "T00:00:00Z")
    expected = _intervals("0 18 * * 1-5", "Europe/London", lo, hi)
    assert expected, "the README's window holds no school day"
    runs = _wait_runs_done(airflow, dag_id, run_type="backfill", count=len(expected))
    assert not {r["dag_run_id"] for r in runs} & before
    intervals = sorted((_utc(r["data_interval_start"]), _utc(r["data_interval_end"])) for r in runs)
    assert intervals == expected

    import psycopg

    with psycopg.connect(airflow["warehouse"]) as conn:
        windows = {r[0] for r in conn.execute(
            "SELECT window_end FROM ops.run_summary WHERE dag_id = %s AND errors = 0", (dag_id,))}
    assert {e for _, e in intervals} <= windows
