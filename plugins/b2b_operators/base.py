"""What every B2B stage operator shares: the run window and a warehouse connection."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from psycopg import Connection

    from b2b.context import RunContext


@contextmanager
def airflow_errors() -> Iterator[None]:
    """Map the project's error tree (``b2b.errors``) to Airflow, in one place: an error a retry
    cannot help (bad credentials, a bad catalogue or file, a broken cap) fails the task at once
    with ``AirflowFailException``; a transient one (``retryable``) is raised for Airflow to retry."""
    from airflow.sdk.exceptions import AirflowFailException

    from b2b.errors import B2BError

    try:
        yield
    except B2BError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(str(exc)) from exc


class B2BStageOperator(BaseOperator):
    """Base for the pipeline's stages: one (base, task) and the run's data interval.

    Subclasses implement :meth:`run_stage` with the Airflow-free domain code; this class
    turns Airflow's data interval into the run window (``b2b.windows``), opens the
    warehouse connection (autocommit: each stage manages its own transaction), and
    logs the counts it returns.
    """

    stage = "stage"

    def __init__(self, *, base_id: str, base_kind: str, task_key: str, data_filter: str,
                 attendance: str | None = None, months: int | None = None, migrated_on: date | None = None,
                 settings: dict | None = None, warehouse_conn_id: str = "b2b_warehouse", **kwargs: Any) -> None:
        kwargs.setdefault("on_failure_callback", release_on_failure)
        super().__init__(**kwargs)
        self.base_id = base_id
        self.base_kind = base_kind
        self.task_key = task_key
        self.data_filter = data_filter
        self.attendance = attendance
        self.months = months
        self.migrated_on = migrated_on
        self.settings = dict(settings or {})
        self.warehouse_conn_id = warehouse_conn_id

    #: the first stage of a run (extract) registers it, records an F5 gap, migrates the warehouse
    opens_run = False
    #: every stage of an export run holds its base's lease (``b2b.ops.runs``); not a return to school
    run_control = True

    def run_context(self, context: Context, conn: Connection | None = None) -> Any:
        """The run window: Airflow's data interval, or for a manual run without a logical date
        (Airflow 3's default for ``airflow dags trigger`` / REST) the run's ``run_after``; a
        changed-data run starts at its (base, task) watermark when that is earlier (F5), and a
        rerun asks for exactly what its first attempt asked for."""
        from b2b.config.catalogue import ensure_enabled
        from b2b.config.windows import is_incremental, plan_window
        from b2b.context import RunContext
        from b2b.ops import runs

        ensure_enabled(self.base_id)  # F40: a switched-off base's DAGs refuse to run (DisabledError)
        interval_start: Any = context.get("data_interval_start")
        interval_end: Any = context.get("data_interval_end")
        if interval_end is None:  # no logical date: a manual run covers watermark .. now (run_after)
            interval_start, interval_end = None, context["dag_run"].run_after
        mark = runs.watermark(conn, self.base_id, self.task_key) if conn is not None else None
        window = plan_window(self.data_filter, self.attendance, interval_start, interval_end, self.migrated_on, mark)
        ctx = RunContext(base_id=self.base_id, task_key=self.task_key, dag_id=self.dag_id,
                         run_id=context["run_id"], source=self.base_kind, data_filter=self.data_filter,
                         window_start=window.since, window_end=window.until, attendance=self.attendance,
                         months=self.months)
        if conn is not None and is_incremental(self.data_filter, self.attendance):
            found, since = runs.recorded_start(conn, self.dag_id, window.until)
            if found and since is not None:
                ctx = replace(ctx, window_start=since)
            elif self.opens_run and window.gap_from is not None and window.since is not None:
                runs.record_gap(conn, ctx, window.gap_from, window.since)
        return ctx

    def take_base(self, conn: Connection, ctx: RunContext, context: Context) -> None:
        """Hold the base's run lease before the stage runs (``b2b.ops.runs``): the first stage
        takes it in window order; a later stage of the same run holds it already. While another
        run has the base, the task waits a little, then is rescheduled (its worker slot freed),
        for at most ``LEASE_WAIT`` in all."""
        from datetime import UTC, datetime

        from airflow.sdk.exceptions import AirflowRescheduleException

        from b2b.errors import RunLeaseError
        from b2b.ops import runs

        try:
            waited = runs.begin_run(conn, ctx, context.get("data_interval_start"),
                                    predecessor_pending=lambda: previous_run_pending(context),
                                    wait=runs.WAIT_IN_TASK, give_up=False)
        except RunLeaseError as exc:
            if runs.waiting_for(conn, ctx) < runs.LEASE_WAIT:
                self.log.info("base %s: waiting for %s; rescheduled", self.base_id, exc.message.split(" for ", 1)[-1])
                raise AirflowRescheduleException(datetime.now(UTC) + runs.RESCHEDULE_AFTER) from None
            runs.fail_run(conn, ctx.base_id, ctx.dag_id, ctx.window_end)
            raise
        if waited["waited_seconds"]:
            self.log.info("base %s: run %s took the base's lease after %ss", self.base_id, ctx.window_order,
                          waited["waited_seconds"])

    def chain_settings(self) -> Any:
        from b2b.config.settings import Settings

        return Settings.from_env(Settings.from_mapping(self.settings))

    def connect(self) -> Any:
        from b2b_hooks.warehouse import WarehouseHook

        conn = WarehouseHook(self.warehouse_conn_id).get_conn()
        conn.autocommit = True
        return conn

    def run_stage(self, conn: Connection, ctx: RunContext, context: Context) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def execute(self, context: Context) -> dict:
        with airflow_errors():
            with self.connect() as conn:
                if self.opens_run:
                    from b2b import db

                    db.upgrade(conn)  # before the run tables are read
                ctx = self.run_context(context, conn)
                if self.run_control:
                    self.take_base(conn, ctx, context)
                t0 = time.perf_counter()
                counts = self.run_stage(conn, ctx, context)
                seconds = round(time.perf_counter() - t0, 3)
        self.log.info("base %s %s: %s (%.2f s)", self.base_id, self.stage, counts, seconds)
        # the return value (XCom) carries the stage's own seconds: bench/bench_scheduler.py
        # subtracts them from the run's wall time to get Airflow's cost per task
        return {**counts, "seconds": seconds} if isinstance(counts, dict) else counts


def previous_run_pending(context: Context) -> str:
    """What the run waits for before its first stage: the DAG's previous run (by logical date)
    while it is running — a backfill starts its runs together, in any order. A previous run
    still *queued* is not waited for: it cannot start while this one runs (``max_active_runs``),
    so waiting for it would deadlock (a manual run of an earlier date queued behind a scheduled one)."""
    from datetime import UTC, datetime

    from b2b.ops.runs import STALE_LEASE

    ti = context.get("ti")
    previous = ti.get_previous_dagrun() if ti is not None and hasattr(ti, "get_previous_dagrun") else None
    if previous is None or str(getattr(previous, "state", "")).split(".")[-1].lower() != "running":
        return ""
    started = getattr(previous, "start_date", None)
    if started is not None and datetime.now(UTC) - started > STALE_LEASE:
        return ""  # a run left behind long ago (timed out) does not hold the others
    return f"the previous run {previous.run_id} of {previous.dag_id}"


def release_on_failure(context: Context) -> None:
    """Failure callback of every stage: a run that failed for good is marked failed and gives
    its base's lease back, so the base's next run goes ahead (and asks from the watermark)."""
    from b2b.ops import runs
    from b2b_hooks.warehouse import WarehouseHook

    task = context["task"]
    if not isinstance(task, B2BStageOperator) or not task.run_control:
        return
    end = context.get("data_interval_end") or context["dag_run"].run_after
    conn = WarehouseHook(task.warehouse_conn_id).get_conn()
    conn.autocommit = True
    with conn:
        runs.fail_run(conn, task.base_id, task.dag_id, end)
