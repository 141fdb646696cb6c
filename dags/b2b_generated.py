"""One DAG per (base, scheduled task) in the B2B task catalogue.

The catalogue is ``$B2B_CATALOGUE`` or ``include/catalogue/demo.yaml``. It is validated
here (schema and rules, as ``b2b config check``): an invalid catalogue raises ONE import
error listing every problem by base, task and field, and no DAG of this file is built —
never a silently dropped or replaced DAG. Parsing stays cheap: no database, network or
heavy import (a catalogue that already passed is not validated again), DAGs are generated
in sorted order, and when Airflow parses for a single DAG (a task run) only that DAG is built.
"""
from airflow.sdk import get_parsing_context

from b2b.config.catalogue import load_catalogue
from b2b.config.dag_files import enabled as split_into_files
from b2b_operators.factory import build_dags

if not split_into_files():  # else dags/b2b_catalogue/ holds them, by bucket of bases (b2b/config/dag_files.py)
    globals().update(build_dags(load_catalogue(validate="once"), only_dag_id=get_parsing_context().dag_id))
