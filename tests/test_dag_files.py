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
