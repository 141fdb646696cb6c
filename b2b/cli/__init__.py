"""The `b2b` command line (also the demo and the Airflow environment helpers)."""
from b2b.cli.main import main

__all__ = ["main"]
