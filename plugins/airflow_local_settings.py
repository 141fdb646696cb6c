"""Airflow local settings for B2B:Student (Airflow imports this module in every one of its
processes at start; the plugins folder is on ``sys.path``).

It warms the **scheduler** (and a Celery worker): LocalExecutor forks its worker processes from
the scheduler, and each task process is forked from a worker (Linux; a Celery worker forks its
tasks from itself), so a module imported there is already in memory in every task. The pipeline's heavy imports, above all Great Expectations (about 6
CPU-seconds), are paid once when the scheduler starts instead of in every task that validates
(issue 15: the per-run fixed cost). Nothing else is configured here; an LA with settings of its
own can import this module from theirs. ``B2B_AIRFLOW_WARM=0`` turns the warm-up off.
"""
from __future__ import annotations

import os
import sys


def _warm_scheduler() -> None:
    if os.environ.get("B2B_AIRFLOW_WARM", "1").lower() in ("0", "false", "no", "off"):
        return
    # LocalExecutor forks tasks from the scheduler; a Celery worker forks them from itself
    if os.path.basename(sys.argv[0]) != "airflow" or not (sys.argv[1:2] == ["scheduler"]
                                                          or sys.argv[1:3] == ["celery", "worker"]):
        return
    try:
        from b2b_operators.warm import warm_imports

        warm_imports()
    except Exception as exc:  # a failed warm-up costs speed, never the scheduler
        print(f"b2b: scheduler warm-up skipped: {type(exc).__name__}: {exc}", file=sys.stderr)


_warm_scheduler()
