"""What every B2B stage operator shares: the run window and a warehouse connection."""
from __future__ import annotations

from datetime import date

from airflow.sdk import BaseOperator


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
                 settings: dict | None = None, warehouse_conn_id: str = "b2b_warehouse", **kwargs) -> None:
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

    def run_context(self, context):
        from b2b.extract import RunContext
        from b2b.windows import extract_window

        since, until = extract_window(self.data_filter, self.attendance, context["data_interval_start"],
                                      context["data_interval_end"], self.migrated_on)
        return RunContext(base_id=self.base_id, task_key=self.task_key, dag_id=self.dag_id,
                          run_id=context["run_id"], source=self.base_kind, data_filter=self.data_filter,
                          window_start=since, window_end=until, attendance=self.attendance, months=self.months)

    def chain_settings(self):
        from b2b.chain import Settings

        return Settings(**self.settings)

    def connect(self):
        from b2b_hooks.warehouse import WarehouseHook

        conn = WarehouseHook(self.warehouse_conn_id).get_conn()
        conn.autocommit = True
        return conn

    def run_stage(self, conn, ctx, context) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def execute(self, context) -> dict:
        ctx = self.run_context(context)
        with self.connect() as conn:
            counts = self.run_stage(conn, ctx, context)
        self.log.info("base %s %s: %s", self.base_id, self.stage, counts)
        return counts
