"""What every B2B stage operator shares: the run window and a warehouse connection."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

from airflow.sdk import BaseOperator


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
        from b2b.config.catalogue import ensure_enabled
        from b2b.config.windows import extract_window
        from b2b.context import RunContext

        ensure_enabled(self.base_id)  # F40: a switched-off base's DAGs refuse to run (DisabledError)

        since, until = extract_window(self.data_filter, self.attendance, context["data_interval_start"],
                                      context["data_interval_end"], self.migrated_on)
        return RunContext(base_id=self.base_id, task_key=self.task_key, dag_id=self.dag_id,
                          run_id=context["run_id"], source=self.base_kind, data_filter=self.data_filter,
                          window_start=since, window_end=until, attendance=self.attendance, months=self.months)

    def chain_settings(self):
        from b2b.config.settings import Settings

        return Settings.from_env(Settings.from_mapping(self.settings))

    def connect(self):
        from b2b_hooks.warehouse import WarehouseHook

        conn = WarehouseHook(self.warehouse_conn_id).get_conn()
        conn.autocommit = True
        return conn

    def run_stage(self, conn, ctx, context) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def execute(self, context) -> dict:
        with airflow_errors():
            ctx = self.run_context(context)
            with self.connect() as conn:
                counts = self.run_stage(conn, ctx, context)
        self.log.info("base %s %s: %s", self.base_id, self.stage, counts)
        return counts
