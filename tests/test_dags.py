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
    expected += ["b2b__core__refresh", "b2b__manual_import", "b2b__reports__weekly"]  # the LA's own DAGs
    assert sorted(dagbag.dag_ids) == sorted(expected)
    inactive = [s.dag_id for s in cat.dag_specs() if not s.active]
    assert not set(inactive) & set(dagbag.dag_ids)


def test_dags_are_well_formed(dagbag):
    from airflow.timetables.interval import CronDataIntervalTimetable

    for dag_id, dag in dagbag.dags.items():
        assert dag_id.startswith("b2b__")
        if "maintenance" in dag.tags or "la" in dag.tags or "reports" in dag.tags:
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
        if tasks == ["run"]:  # TASK_GRANULARITY run (issue 15): one task, the stages in order
            tasks = list(dag.tasks[0].stages)
        assert tasks[0] == "extract" and tasks[-1] == "commit"
        # contacts come with the messages that carry them (snapshot, changed data)
        assert ("contacts" in tasks) == bool({"snapshot", "changed_data"} & set(dag.tags)), dag_id


def _run(code: str, **env) -> str:
    full_env = dict(os.environ, **env)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, cwd=PROJECT_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_dag_file_has_no_heavy_imports():
    load_catalogue(validate="once")  # a catalogue is validated (JSON Schema) once, then parses cheaply
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


def test_display_names_show_school_and_task(dagbag):
    cat = load_catalogue()
    for spec in cat.dag_specs(include_inactive=False):
        dag = dagbag.dags[spec.dag_id]
        assert spec.base.name in dag.dag_display_name and spec.task.name in dag.dag_display_name, spec.dag_id
        assert all(t.task_display_name and t.task_display_name != t.task_id for t in dag.tasks), spec.dag_id
    assert dagbag.dags["b2b__maintenance__clear_conflicts"].dag_display_name.startswith("Maintenance")


def test_dag_docs_are_generated_from_the_operators_that_run(dagbag):
    """Each stage's line in the docs is its operator's docstring, so the docs cannot drift from the
    code (no hand-written "GUID, UPN + 3 of 4"); the LA settings in force are listed."""
    import inspect

    from b2b.config.settings import Settings

    for dag_id, dag in dagbag.dags.items():
        if {"maintenance", "import", "la", "reports"} & set(dag.tags):  # export DAGs: one line per stage
            continue
        doc = dag.doc_md
        assert "3 of 4" not in doc and "all 4" not in doc, dag_id
        from b2b_operators.pipeline import STAGE_CLASSES

        by_stage = {cls.stage: cls for cls in STAGE_CLASSES}
        tasks = dag.topological_sort()  # TASK_GRANULARITY run: one task, its stages listed as it runs them
        steps = [(s, by_stage[s]) for s in tasks[0].stages] if [t.task_id for t in tasks] == ["run"] else \
            [(t.task_id, type(t)) for t in tasks]
        for n, (name, cls) in enumerate(steps, 1):
            first = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split()).replace("``", "`")
            assert first and f"{n}. **`{name}`** — {first}" in doc, (dag_id, name)
        for field in Settings.__dataclass_fields__:
            assert f"`{field.upper()}`" in doc, (dag_id, field)
        assert "`MATCHER` | `weights`" in doc


def test_asset_graph_stages_produce_assets_and_maintenance_consumes_them(dagbag):
    """Export stages declare what they update; Clear Conflicts is scheduled on the conflicts and the
    LA's current child view (and daily); the serialised DAGs keep the graph (what the UI shows)."""
    from airflow.serialization.serialized_objects import DagSerialization

    from b2b_operators import assets

    producers: dict[str, set[str]] = {}
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            for a in task.outlets or []:
                producers.setdefault(a.name, set()).add(f"{dag_id}.{task.task_id}")
    cat = load_catalogue()
    for spec in cat.dag_specs(include_inactive=False):
        if spec.task.direction != "export":
            continue
        dfe = spec.base.dfe
        one = dagbag.dags[spec.dag_id].task_ids == ["run"]  # TASK_GRANULARITY run: its one task produces all

        def task(stage: str, dag_id: str = spec.dag_id, one: bool = one) -> str:
            return f"{dag_id}.{'run' if one else stage}"

        assert task("load") in producers[f"b2b_staging_{dfe}"]
        assert task("extract") in producers[f"b2b_received_{dfe}"]
        for name, stage in (("b2b_anomalies", "validate"), ("b2b_conflicts", "conflicts"), ("b2b_matches", "match"),
                            ("b2b_child_current", "apply")):
            assert task(stage) in producers[name], (spec.dag_id, name)
    clear = dagbag.dags["b2b__maintenance__clear_conflicts"]
    serialized = DagSerialization.to_dict(clear)
    text = str(serialized)
    for a in (assets.CONFLICTS, assets.CHILD_CURRENT):
        assert a.uri in text and a.name in text
    roundtrip = DagSerialization.from_dict(serialized)
    assert type(roundtrip.timetable).__name__ == "AssetOrTimeSchedule"
    deps = {key.name for key, _ in roundtrip.timetable.asset_condition.iter_assets()}
    assert deps == {"b2b_conflicts", "b2b_child_current"}
    # Delete Files keeps its cron: it purges by age, so it needs the run's data interval
    assert type(dagbag.dags["b2b__maintenance__delete_files"].timetable).__name__ == "CronDataIntervalTimetable"
