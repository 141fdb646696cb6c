"""The catalogue's DAGs split across generated files per bucket of bases (b2b/config/dag_files.py)."""
import sys
from pathlib import Path

import pytest
import yaml

from b2b import PROJECT_ROOT
from b2b.config.catalogue import CatalogueError, load_catalogue
from b2b.config.dag_files import write_dag_files

sys.path.insert(0, str(PROJECT_ROOT / "bench"))
from gen_catalogue import generate  # noqa: E402


def _dag_ids(folder: Path) -> dict[str, str]:
    """dag_id -> file name, parsing the folder the way the dag-processor does."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(folder))
    assert bag.import_errors == {}
    return {d: Path(dag.fileloc).name for d, dag in bag.dags.items()}


def test_split_files_define_exactly_the_catalogues_dags_once(tmp_path):
    from b2b_operators.factory import build_dags

    cat = tmp_path / "catalogue.yaml"
    cat.write_text(yaml.safe_dump(generate(12, 3), sort_keys=False))
    counts = write_dag_files(cat, tmp_path / "dags", buckets=5)
    assert counts["written"] == len(list((tmp_path / "dags").glob("*.py"))) and counts["removed"] == 0
    found = _dag_ids(tmp_path / "dags")
    assert sorted(found) == sorted(build_dags(load_catalogue(cat, validate=False)))
    assert sum(d.startswith("b2b__maintenance__") for d in found) == len(
        [d for d in build_dags(load_catalogue(cat, validate=False)) if d.startswith("b2b__maintenance__")])


def test_an_edit_to_one_base_rewrites_only_its_file_and_an_invalid_catalogue_writes_nothing(tmp_path):
    data = generate(12, 3)
    cat = tmp_path / "catalogue.yaml"
    cat.write_text(yaml.safe_dump(data, sort_keys=False))
    folder = tmp_path / "dags"
    write_dag_files(cat, folder, buckets=5)
    before = {p.name: p.read_text() for p in folder.glob("*.py")}
    data["bases"][4]["name"] = "Renamed School"
    cat.write_text(yaml.safe_dump(data, sort_keys=False))
    assert write_dag_files(cat, folder, buckets=5) == {"written": 1, "unchanged": len(before) - 1, "removed": 0}
    changed = [p.name for p in folder.glob("*.py") if p.read_text() != before[p.name]]
    assert len(changed) == 1 and "Renamed School" in (folder / changed[0]).read_text()
    after = {p.name: p.read_text() for p in folder.glob("*.py")}
    data["tasks"][0]["schedule"] = "not cron"
    cat.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(CatalogueError, match="schedule"):
        write_dag_files(cat, folder, buckets=5)
    assert {p.name: p.read_text() for p in folder.glob("*.py")} == after


def test_the_single_file_defines_nothing_while_the_split_folder_holds_files(tmp_path, monkeypatch):
    import shutil

    from b2b_operators.factory import build_dags

    cat = tmp_path / "catalogue.yaml"
    cat.write_text(yaml.safe_dump(generate(8, 2), sort_keys=False))
    monkeypatch.setenv("B2B_CATALOGUE", str(cat))
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(PROJECT_ROOT / "dags" / "b2b_generated.py", dags)
    expected = sorted(build_dags(load_catalogue(cat, validate=False)))
    single = _dag_ids(dags)
    assert sorted(single) == expected and set(single.values()) == {"b2b_generated.py"}
    write_dag_files(cat, dags / "b2b_catalogue", buckets=4)
    split = _dag_ids(dags)
    assert sorted(split) == expected  # the same DAG ids, none defined twice (a duplicate is an import error)
    assert all(f.startswith("b2b_bases_") for f in split.values())


def test_make_airflow_parses_the_split_files_of_its_own_home_with_the_dag_processor_settings(tmp_path):
    from b2b.cli.airflow_env import DAG_PROCESSOR_SETTINGS, split_dag_settings, watch_catalogue, write_split_dags

    settings = split_dag_settings(tmp_path / "airflow")
    assert settings["AIRFLOW__CORE__DAGS_FOLDER"] == str(tmp_path / "airflow" / "dags")
    assert settings["AIRFLOW__DAG_PROCESSOR__FILE_PARSING_SORT_MODE"] == "modified_time"
    assert int(DAG_PROCESSOR_SETTINGS["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"]) >= 3600
    data = generate(12, 2)
    cat = tmp_path / "catalogue.yaml"
    cat.write_text(yaml.safe_dump(data, sort_keys=False))
    folder = tmp_path / "airflow" / "dags"
    assert write_split_dags(folder, cat)["written"] > 1
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.py")}
    stop = watch_catalogue(folder, every=0.1, catalogue=cat)
    try:
        data["bases"][3]["name"] = "Edited School"
        cat.write_text(yaml.safe_dump(data, sort_keys=False))
        import time

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            changed = [p.name for p in folder.glob("*.py") if p.stat().st_mtime_ns != before[p.name]]
            if changed:
                break
            time.sleep(0.1)
        assert len(changed) == 1 and "Edited School" in (folder / changed[0]).read_text()
    finally:
        stop.set()


CHILD = """
import subprocess, sys, time
from pathlib import Path
kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
Path(sys.argv[1]).write_text(f"{kid.pid}")
time.sleep(600)
"""


def test_b2b_airflow_stops_every_process_it_started_on_sigterm(tmp_path):
    """`make airflow` killed (Ctrl-C, SIGTERM): standalone and what it started, even the processes
    in sessions of their own (task runners), stop with it."""
    import os
    import signal
    import subprocess
    import time

    import psutil

    pids = tmp_path / "pids"
    wrapper = ("import os, sys\nfrom b2b.cli.airflow_env import run_standalone\n"
               f"sys.exit(run_standalone(dict(os.environ), 10, [sys.executable, '-c', {CHILD!r}, {str(pids)!r}]))")
    proc = subprocess.Popen([sys.executable, "-c", wrapper], cwd=PROJECT_ROOT,
                            env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)))
    deadline = time.monotonic() + 60
    while not (pids.exists() and pids.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    standalone = psutil.Process(proc.pid).children()
    grandchild = psutil.Process(int(pids.read_text()))
    assert standalone and grandchild.is_running()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 128 + signal.SIGTERM
    for p in (*standalone, grandchild):
        try:
            assert p.wait(20) is not None or not p.is_running()
        except psutil.NoSuchProcess:
            pass
        assert not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
