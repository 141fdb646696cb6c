"""B2B:Student domain logic, free of Airflow: catalogue, messages, blocks, loads, matching.

Everything here can be unit-tested and driven from the ``b2b`` command line;
the Airflow operators in ``plugins/b2b_operators`` are thin wrappers over it.
"""
from pathlib import Path

__version__ = "0.1.0"

#: Root of the project checkout (holds ``include/``, ``dags/``, ``plugins/``).
PROJECT_ROOT = Path(__file__).resolve().parent.parent
INCLUDE = PROJECT_ROOT / "include"
