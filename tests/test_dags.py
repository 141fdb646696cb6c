"""DAG integrity: every generated DAG loads, is well-formed, and parsing stays cheap."""
import os
import subprocess
import sys
import textwrap

import pytest

from b2b import PROJECT_ROOT
from b2b.config.catalogue import load_catalogue

DAGS = PROJECT_ROOT / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert dagbag.dags, "no DAG was generated"


def test_one_dag_per_active_pair(dagbag):
    cat = load_catalogue()
    expected = sorted(s.dag_id for s in cat.dag_specs(include_inactive=False))
    expected += [f"b2b__maintenance__{a}" for a in ("clear_cached_data", "clear_conflicts", "delete_files")]
    expected += ["b2b__reports__weekly"]
    assert sorted(dagbag.dag_ids) == sorted(expected)
    inactive = [s.dag_id for s in cat.dag_specs() if not s.active]
    assert not set(inactive) & set(dagbag.dag_ids)


def test_dags_are_well_formed(dagbag):
    from airflow.timetables.interval import CronDataIntervalTimetable

    for dag_id, dag in dagbag.dags.items():
        assert dag_id.startswith("b2b__")
        if "maintenance" in dag.tags or "reports" in dag.tags:
            assert dag.doc_md and dag.max_active_runs == 1
            continue
        assert dag.max_active_runs == 1, dag_id
        assert "b2b" in dag.tags and any(t.startswith("base:") for t in dag.tags), dag_id
        assert dag.doc_md and "###" in dag.doc_md, dag_id
        # a real data interval, not Airflow 3's zero-width cron default
        assert isinstance(dag.timetable, CronDataIntervalTimetable), dag_id
        if "import" in dag.tags:  # import to school (F25): SIMS 7 bases only (F3), one task
            assert "sims7" in dag.tags and [t.task_id for t in dag.tasks] == ["return_to_school"], dag_id
            continue
        tasks = [t.task_id for t in dag.tasks]
        assert tasks[0] == "extract"
        # contacts come with the messages that carry them (snapshot, changed data)
        assert ("contacts" in tasks) == bool({"snapshot", "changed_data"} & set(dag.tags)), dag_id


def _run(code: str, **env) -> str:
    full_env = dict(os.environ, **env)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, cwd=PROJECT_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_dag_file_has_no_heavy_imports():
    out = _run("""
        import runpy, sys
        import airflow.sdk, airflow.timetables.interval  # what Airflow itself loads
        names = ("pandas", "lxml", "psycopg", "requests", "great_expectations", "jsonschema", "pgserver", "yaml")
        before = {m for m in names if m in sys.modules}
        runpy.run_path("dags/b2b_generated.py")
        heavy = [m for m in names if m in sys.modules and m not in before and m != "yaml"]
        print(",".join(heavy) or "none")
    """)
    assert out == "none"


def test_parsing_context_builds_only_the_requested_dag():
    cat = load_catalogue()
    target = sorted(s.dag_id for s in cat.dag_specs(include_inactive=False) if s.task.direction == "export")[-1]
    out = _run("""
        import runpy
        from airflow.sdk import DAG
        ns = runpy.run_path("dags/b2b_generated.py")
        print(",".join(sorted(k for k, v in ns.items() if isinstance(v, DAG))))
    """, _AIRFLOW_PARSING_CONTEXT_DAG_ID=target)
    assert out == target
