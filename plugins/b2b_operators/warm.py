"""The modules every export task imports when it runs, imported once in the scheduler so that
LocalExecutor's forked task processes start with them (``plugins/airflow_local_settings.py``).

DAG files stay cheap to parse: nothing here is imported by a DAG file; only the scheduler (and a
test) calls :func:`warm_imports`.
"""
from __future__ import annotations

import importlib
import time

#: what the stages import inside ``execute()``, heaviest first
WARM_MODULES = (
    "great_expectations",
    "great_expectations.data_context.types.base",
    "great_expectations.expectations.expectation_configuration",
    "pandas",
    "pyarrow.pandas_compat",
    "stdnum",
    "rapidfuzz",
    "lxml.etree",
    "psycopg",
    "b2b.pipeline",
    "b2b.ingest.validation",
    "b2b.ingest.extract",
    "b2b.matching",
    "b2b.reconcile.match_stage",
    "b2b.reconcile.contacts",
    "b2b_operators.base",
    "b2b_operators.pipeline",
)


def warm_imports(modules: tuple[str, ...] = WARM_MODULES) -> dict[str, float]:
    """Import ``modules``; seconds per module (a module that fails to import is skipped)."""
    took: dict[str, float] = {}
    for name in modules:
        t = time.perf_counter()
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        took[name] = round(time.perf_counter() - t, 3)
    return took
