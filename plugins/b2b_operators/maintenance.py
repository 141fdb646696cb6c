"""MaintenanceOperator: the F18 maintenance tasks (thin wrapper over ``b2b.officer``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

ACTIONS = ("clear_conflicts", "delete_files", "clear_cached_data")


class MaintenanceOperator(BaseOperator):
    """Run one maintenance task on the warehouse.

    :param action: ``clear_conflicts`` (drop conflicts the LA has since resolved in its own
        data), ``delete_files`` (enforce the LA's retention per kind of data, F44) or
        ``clear_cached_data`` (flush the hash cache; ``base_id`` limits it to one base).
    """

    ui_color = "#fdebd0"

    def __init__(self, *, action: str, retention_days: int = 90, base_id: str | None = None,
                 warehouse_conn_id: str = "b2b_warehouse", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if action not in ACTIONS:
            raise ValueError(f"unknown maintenance action {action!r}; one of {', '.join(ACTIONS)}")
        self.action = action
        self.retention_days = retention_days
        self.base_id = base_id
        self.warehouse_conn_id = warehouse_conn_id

    def execute(self, context: Context) -> int:
        from b2b import db
        from b2b.ops import maintenance
        from b2b_hooks.warehouse import WarehouseHook
        from b2b_operators.base import airflow_errors

        with airflow_errors(), WarehouseHook(self.warehouse_conn_id).get_conn() as conn:
            conn.autocommit = True
            db.upgrade(conn)
            if self.action == "clear_conflicts":
                n = maintenance.clear_conflicts(conn, by=f"maintenance:{context['run_id']}")
            elif self.action == "delete_files":  # F44: every retention of the LA's current settings
                from b2b.config.catalogue import load_catalogue

                counts = maintenance.enforce_retention(conn, load_catalogue(validate=False).la.settings,
                                                       now=context.get("data_interval_end"))
                self.log.info("delete files: %s", counts)
                n = sum(counts.values())
            else:
                n = maintenance.clear_cached_data(conn, (context.get("params") or {}).get("base_id") or self.base_id)
        self.log.info("%s: %d row(s)", self.action, n)
        return n
