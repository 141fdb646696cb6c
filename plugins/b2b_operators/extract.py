"""ExtractOperator: fetch one run window from a school's MIS and store it (thin wrapper).

All the work is in ``b2b.extract`` (Airflow-free); this module only resolves the window
from Airflow's data interval, picks the hook for the base's MIS, and reports counts.
Heavy imports happen inside ``execute()`` so DAG parsing stays cheap.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date
from typing import Any

from airflow.sdk import BaseOperator

PRIMARY_GROUPS_BY_FILTER = {
    "snapshot": ("student", "address", "contacts", "sen", "exclusions"),
    "changed_data": ("student", "address", "contacts", "sen", "exclusions"),
    "attendance": ("attendance",),
}


class ExtractOperator(BaseOperator):
    """Extract a base's data for the run's data interval into ``raw.inbound_file`` / ``raw.inbound_block``.

    :param base_id: DfE number of the base (school).
    :param base_kind: ``sims7`` or ``sims_primary``.
    :param conn_id: Airflow connection with the school's credentials (F12 / F1).
    :param task_key: catalogue key of the scheduled task.
    :param data_filter: ``snapshot``, ``changed_data``, ``attendance`` or ``attainment``.
    """

    ui_color = "#d6eaf8"

    def __init__(self, *, base_id: str, base_kind: str, conn_id: str, task_key: str, data_filter: str,
                 group_type: str = "ncy", ncys: Sequence[str] | None = None, attendance: str | None = None,
                 months: int | None = None, hierarchies: Sequence[str] = (), migrated_on: date | None = None,
                 warehouse_conn_id: str = "b2b_warehouse", fail_on_bad_file: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.base_id = base_id
        self.base_kind = base_kind
        self.conn_id = conn_id
        self.task_key = task_key
        self.data_filter = data_filter
        self.group_type = group_type
        self.ncys = list(ncys) if ncys else None
        self.attendance = attendance
        self.months = months
        self.hierarchies = list(hierarchies)
        self.migrated_on = migrated_on
        self.warehouse_conn_id = warehouse_conn_id
        self.fail_on_bad_file = fail_on_bad_file

    def _messages(self, since, until) -> Iterator[Any]:
        from b2b.extract import ReceivedMessage

        if self.base_kind == "sims7":
            from b2b_hooks.sims7 import Sims7Hook

            msg = Sims7Hook(sims7_conn_id=self.conn_id).export(
                self.base_id, filter=self.data_filter, until=until, since=since, group=self.group_type,
                ncys=self.ncys, attendance=self.attendance, months=self.months,
                hierarchies=self.hierarchies or None)
            yield ReceivedMessage("export", msg.content, msg.content_type)
            return
        from b2b_hooks.sims_primary import SimsPrimaryHook

        hook = SimsPrimaryHook(sims_primary_conn_id=self.conn_id)
        for group in PRIMARY_GROUPS_BY_FILTER[self.data_filter]:
            for page in hook.iter_pages(group, until=until, since=since, ncys=self.ncys):
                yield ReceivedMessage(f"{group} p{page.page}/{page.total_pages}", page.content,
                                      "application/json", group=group)

    def execute(self, context) -> dict:
        from airflow.sdk.exceptions import AirflowException

        from b2b import db
        from b2b.extract import RunContext, store_messages
        from b2b.windows import extract_window
        from b2b_hooks.warehouse import WarehouseHook

        since, until = extract_window(self.data_filter, self.attendance, context["data_interval_start"],
                                      context["data_interval_end"], self.migrated_on)
        ctx = RunContext(base_id=self.base_id, task_key=self.task_key, dag_id=self.dag_id,
                         run_id=context["run_id"], source=self.base_kind, data_filter=self.data_filter,
                         window_start=since, window_end=until)
        self.log.info("base %s %s: window %s .. %s", self.base_id, self.data_filter,
                      since.isoformat() if since else "(all)", until.isoformat())
        with WarehouseHook(self.warehouse_conn_id).get_conn() as conn:
            db.upgrade(conn)
            summary = store_messages(conn, ctx, self._messages(since, until))
        self.log.info("base %s: %d file(s), %d failed, %d pupils, %d blocks %s", self.base_id, summary.files,
                      summary.failed, summary.pupils, summary.blocks, summary.blocks_by_type)
        if summary.failed and self.fail_on_bad_file:
            raise AirflowException(
                f"base {self.base_id}: {summary.failed} of {summary.files} file(s) put in suspense "
                f"(file ids {[e[0] for e in summary.errors]}); reasons are in ops.task_log")
        return summary.counts()
