"""PipelineOperator: a whole export run in ONE Airflow task (the LA setting ``TASK_GRANULARITY: run``).

Airflow's fixed cost per task (scheduling, a worker process, parsing the DAG file, the
execution API round trips) is paid once per run instead of once per stage (issue 15,
``bench/bench_scheduler.py``). Each stage is still the same code as the stage operators'
(their ``run_stage``, in the order of ``b2b.pipeline``), writes its own ``ops.task_log`` row
(so ``ops.run_summary`` and the review screens show every stage) and gets its own collapsible
section in the task log with its counts and seconds.

What the stage DAG guarantees holds here too: the base's lease is taken once, in window
order, before extract; the cache entries and the watermark count only after the last stage
(``commit``); a failure releases the lease (the failure callback of every stage operator);
a retry re-runs the whole window from extract, which every stage makes idempotent (each first
removes what an earlier attempt of the same run derived).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from b2b_operators.base import B2BStageOperator
from b2b_operators.chain import (
    ApplyOperator,
    CommitOperator,
    ConflictsOperator,
    ContactsOperator,
    HashFilterOperator,
    LoadOperator,
    MatchOperator,
    ValidateOperator,
)
from b2b_operators.extract import ExtractOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from psycopg import Connection

    from b2b.context import RunContext

#: the stage operators whose ``run_stage`` the run calls, in order (contacts only for the
#: filters that carry contacts: ``factory.CONTACT_FILTERS``)
STAGE_CLASSES: tuple[type[B2BStageOperator], ...] = (
    ExtractOperator, HashFilterOperator, ValidateOperator, LoadOperator, MatchOperator, ConflictsOperator,
    ApplyOperator, ContactsOperator, CommitOperator)


class PipelineOperator(ExtractOperator):
    """The whole run in one task: extract, hash filter, validate, load, match, conflicts, apply
    (contacts for snapshots and changed data) and commit, each stage logged on its own
    (``ops.task_log`` and a section of this task's log)."""

    stage = "run"
    ui_color = "#d4e6f1"

    def __init__(self, *, stages: tuple[str, ...] | list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        known = {cls.stage: cls for cls in STAGE_CLASSES}
        unknown = [s for s in stages if s not in known]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}")
        self.stages = [s for s in known if s in stages]  # always in the chain's order

    def run_stage(self, conn: Connection, ctx: RunContext, context: Context) -> dict:
        """Each stage in order; the first failure stops the run (and fails the task)."""
        by_name = {cls.stage: cls for cls in STAGE_CLASSES}
        done: dict[str, Any] = {}
        for name in self.stages:
            self.log.info("::group::%s", name)
            t0 = time.perf_counter()
            try:
                counts = by_name[name].run_stage(self, conn, ctx, context)
            finally:
                seconds = round(time.perf_counter() - t0, 3)
                self.log.info("::endgroup::")
            self.log.info("base %s %s: %s (%.2f s)", self.base_id, name, counts, seconds)
            done[name] = {"counts": counts, "seconds": seconds}
        return done
