"""What every stage shares: which run this is (``RunContext``) and the one task-log writer (F9).

A stage works on one run window — the files one DAG run stored, keyed by ``dag_id`` and
``window_end`` — and writes its ``ops.task_log`` rows through :func:`log_stage` /
:func:`log_stage_file` (a stage's row is replaced when the stage reruns, so a retry never
doubles the log).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class RunContext:
    """Which run of which (base, task) this is; the window comes from Airflow."""

    base_id: str
    task_key: str
    dag_id: str
    run_id: str
    source: str  # sims7 | sims_primary
    data_filter: str
    window_start: datetime | None
    window_end: datetime
    attendance: str | None = None  # the attendance filter of an attendance task (F22)
    months: int | None = None      # its month filter (F24)

    @property
    def window_order(self) -> str:
        """Sortable key of this run window: UTC end, then DAG id (ties between DAGs)."""
        return f"{self.window_end.astimezone(UTC):%Y%m%d%H%M%S}|{self.dag_id}"


def one(conn: Any, sql: Any, params: Any = None) -> tuple[Any, ...]:
    """The single row a query returns (an aggregate, ``RETURNING``); a missing row is a bug."""
    row = conn.execute(sql, params).fetchone()
    if row is None:
        raise LookupError("query returned no row")
    return tuple(row)


def scalar(conn: Any, sql: Any, params: Any = None) -> Any:
    """The first column of the single row a query returns."""
    return one(conn, sql, params)[0]


def run_files(conn: Any, ctx: RunContext) -> list[int]:
    """The parsed (not suspended) files of this run window."""
    return [r[0] for r in conn.execute(
        """SELECT file_id FROM raw.inbound_file
            WHERE dag_id = %s AND window_end = %s AND status IN ('parsed', 'loaded')""",
        (ctx.dag_id, ctx.window_end))]


def log_stage(conn: Any, ctx: RunContext, stage: str, counts: dict, message: str, level: str = "info") -> None:
    """The run-level task-log row of a stage (replaced when the stage reruns)."""
    log_stage_file(conn, ctx, stage, None, counts, message, level)


def log_stage_file(conn: Any, ctx: RunContext, stage: str, file_id: int | None, counts: dict, message: str,
                   level: str = "info", *, replace: bool = True) -> None:
    """A task-log row of a stage for one file (or the whole run when ``file_id`` is None).

    ``replace`` (the default) first removes the same stage's row for the same file of an
    earlier attempt; the extract stage, which clears its window's rows itself, passes False.
    """
    # one statement: the earlier attempt's row goes and the new one comes in together
    gone = ("""WITH gone AS (DELETE FROM ops.task_log WHERE dag_id = %(dag)s AND window_end = %(end)s
                                AND stage = %(stage)s AND file_id IS NOT DISTINCT FROM %(file)s::bigint) """
            if replace else "")
    conn.execute(
        gone + """INSERT INTO ops.task_log (base_id, task_key, dag_id, run_id, window_start, window_end,
                                            file_id, stage, level, message, counts)
                  VALUES (%(base)s, %(task)s, %(dag)s, %(run)s, %(start)s, %(end)s, %(file)s, %(stage)s,
                          %(level)s, %(message)s, %(counts)s)""",
        {"base": ctx.base_id, "task": ctx.task_key, "dag": ctx.dag_id, "run": ctx.run_id,
         "start": ctx.window_start, "end": ctx.window_end, "file": file_id, "stage": stage, "level": level,
         "message": message, "counts": json.dumps(counts, default=str)})
