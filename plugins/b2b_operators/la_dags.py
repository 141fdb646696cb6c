"""The LA's own DAGs (issue 10): its records in from a drop folder, and manual import (F39).

* ``b2b__core__refresh`` — nightly: loads what the LA's systems dropped in
  ``$B2B_HOME/inbound/core/`` (``children*.csv``, ``gazetteer*.csv``, optional
  ``mapping.yaml``; formats in ``b2b.ops.core_load``) — ``b2b core load`` does the same by hand.
* ``b2b__manual_import`` — every 15 minutes: imports the message files officers put in
  ``$B2B_HOME/inbound/xml/<DfE>/`` through the same stages as a scheduled run (seed 001's
  "XML Transfer Base"; ``b2b.ingest.manual``) — ``b2b ingest FILE --base DFE`` does one by hand.

Processed files move to ``done/``; refused ones to ``suspense/`` with a ``.reason.txt`` and the
task fails with the reasons (after the other files). Kept cheap to parse: no I/O here.
"""
from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, BaseOperator
from airflow.timetables.interval import CronDataIntervalTimetable

if TYPE_CHECKING:
    from airflow.sdk import Context

    from b2b.config.catalogue import La

LA_DAGS = {
    "b2b__core__refresh": (
        "core_refresh",
        "30 1 * * *",
        "The LA's records in (nightly)",
        "### The LA's records in\n\nLoads the files the LA's systems dropped in `$B2B_HOME/inbound/core/`: "
        "`gazetteer*.csv` (LLPG extract → `core.address_gazetteer`), then `children*.csv` (→ `core.child` with "
        "every version in `core.child_version`, MIS GUID links → `core.child_link`), with `mapping.yaml` from the "
        "folder for exports that name columns differently. A full extract marks children it no longer holds "
        "inactive (never deleted). A file with a bad row is refused whole: moved to `suspense/` with the row and "
        "field of each problem; loaded files move to `done/`. Formats: `b2b core load --help`.",
    ),
    "b2b__manual_import": (
        "manual_import",
        "*/15 * * * *",
        "Manual import of message files (F39)",
        "### Manual import (F39)\n\nImports each message file in `$B2B_HOME/inbound/xml/<DfE>/` (SIMS 7 XML or "
        "SIMS Primary JSON page) through the same stages as a scheduled run: store, parse, hash filter, validate, "
        "load, match, conflicts, apply, contacts. Run window: DAG id `b2b__<DfE>__manual_import`, window end = "
        "the moment of import. Hostile or broken files go to `suspense/` with the reason (nothing loaded), "
        "imported ones to `done/`; a file already imported is recognised by its SHA-256. The filter comes from "
        "the file name (`…_changed_data_…`, `…_attendance_…`, `…_attainment_…`, else snapshot). Bases "
        "switched off in the catalogue (F40) are left waiting. One file by hand: `b2b ingest --help`.",
    ),
}


class LaFolderOperator(BaseOperator):
    """Process one of the LA's inbound folders (``action``: ``core_refresh`` or ``manual_import``)."""

    ui_color = "#e8f8f5"

    def __init__(self, *, action: str, warehouse_conn_id: str = "b2b_warehouse", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if action not in ("core_refresh", "manual_import"):
            raise ValueError(f"unknown action {action!r}")
        self.action = action
        self.warehouse_conn_id = warehouse_conn_id

    def execute(self, context: Context) -> dict:
        from b2b import db
        from b2b.errors import IngestError
        from b2b_hooks.warehouse import WarehouseHook
        from b2b_operators.base import airflow_errors

        with airflow_errors(), WarehouseHook(self.warehouse_conn_id).get_conn() as conn:
            conn.autocommit = True
            db.upgrade(conn)
            if self.action == "core_refresh":
                from b2b.ops.core_load import refresh_from_folder

                out = refresh_from_folder(conn)
            else:
                from b2b.ingest.manual import ingest_folder

                out = ingest_folder(conn)
                for reason in out["reasons"]:
                    self.log.warning("manual import: %s", reason)
                if out["suspense"]:
                    raise IngestError(f"{out['suspense']} of {out['files']} file(s) put in suspense: "
                                      + " | ".join(out["reasons"]))
        self.log.info("%s: %s", self.action, out)
        return out


def build_la_dags(la: La, only_dag_id: str | None = None) -> dict[str, DAG]:
    import pendulum

    tz = pendulum.timezone(la.timezone)
    dags = {}
    for dag_id, (action, schedule, description, doc) in LA_DAGS.items():
        if only_dag_id and only_dag_id != dag_id:
            continue
        with DAG(dag_id=dag_id, description=description,
                 schedule=CronDataIntervalTimetable(schedule, timezone=tz),
                 start_date=pendulum.datetime(2026, 9, 1, tz=tz), catchup=False, max_active_runs=1,
                 default_args={"owner": "b2b", "retries": 1, "retry_delay": timedelta(minutes=5)},
                 tags=["b2b", "la"], doc_md=doc, dagrun_timeout=timedelta(hours=2),
                 is_paused_upon_creation=True) as dag:
            LaFolderOperator(task_id=action, action=action)
        dags[dag_id] = dag
    return dags
