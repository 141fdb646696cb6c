"""Point Airflow at this project: its home, DAGs, plugins, metadata DB and connections.

Used by ``make airflow``, ``b2b demo`` and the end-to-end tests. Must run before the
first ``import airflow`` of the process, because Airflow reads its config at import.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from b2b import PROJECT_ROOT
from b2b.db import b2b_home


def project_airflow_settings(home: Path | None = None) -> dict[str, str]:
    home = Path(home or os.environ.get("AIRFLOW_HOME") or b2b_home() / "airflow")
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "plugins")]),
    }


def connection_env(connections: dict[str, dict]) -> dict[str, str]:
    """``{conn_id: airflow-json}`` -> ``AIRFLOW_CONN_<ID>`` environment variables."""
    return {f"AIRFLOW_CONN_{cid.upper()}": json.dumps(c) for cid, c in connections.items()}


def prepare_airflow_env(*, quiet: bool = False) -> dict[str, str]:
    """Set the environment for this process (and its children) and migrate Airflow's metadata DB."""
    from b2b import db

    settings = project_airflow_settings()
    os.environ.update(settings)
    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    if quiet:
        os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("B2B_DATABASE_URL", db.database_url())
    migrate_airflow_db()
    return dict(os.environ)


def migrate_airflow_db() -> None:
    """``airflow db migrate`` once per Airflow home (a marker file remembers it)."""
    home = Path(os.environ["AIRFLOW_HOME"])
    marker = home / ".b2b-migrated"
    if marker.exists() and (home / "airflow.db").exists():
        return
    airflow = Path(sys.executable).with_name("airflow")
    proc = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, env=os.environ)
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stderr[-2000:]}")
    marker.write_text("ok\n")
