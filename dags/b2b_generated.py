"""One DAG per (base, scheduled task) in the B2B task catalogue.

The catalogue is ``$B2B_CATALOGUE`` or ``include/catalogue/demo.yaml``. It is validated
here (schema and rules, as ``b2b config check``): an invalid catalogue raises ONE import
error listing every problem by base, task and field, and no DAG of this file is built —
never a silently dropped or replaced DAG. Parsing stays cheap: no database, network or
heavy import (a catalogue that already passed is not validated again), DAGs are generated
in sorted order, and when Airflow parses for a single DAG (a task run) only that DAG is built.
"""
from pathlib import Path

from airflow.sdk import get_parsing_context

from b2b.config.catalogue import load_catalogue
from b2b.config.dag_files import enabled as split_into_files
from b2b_operators.factory import build_dags

# while dags/b2b_catalogue/ (next to this file) holds the split files (b2b/config/dag_files.py), they define the DAGs
if not split_into_files(Path(__file__).resolve().parent / "b2b_catalogue"):
    globals().update(build_dags(load_catalogue(validate="once"), only_dag_id=get_parsing_context().dag_id))
