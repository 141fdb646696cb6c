"""The weekly per-school anomaly report DAG (F32, F33, F42): ``b2b__reports__weekly``.

Each Monday morning it purges reports older than 30 days, closes the "school was wrong"
answers the schools' latest exports now agree with, builds ``B2BreportWeekNN`` for every
school with differences (``b2b.outbound.reports``) and emails each school a notice through
the Airflow SMTP connection ``b2b_smtp`` (apache-airflow-providers-smtp). Kept cheap to
parse: the domain code and the SMTP hook are imported inside ``execute``.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, BaseOperator
from airflow.timetables.interval import CronDataIntervalTimetable

if TYPE_CHECKING:
    from airflow.sdk import Context

    from b2b.config.catalogue import Catalogue

DAG_ID = "b2b__reports__weekly"
SCHEDULE = "0 6 * * 1"
#: where schools download and send back their reports (the review plugin's school page)
DEFAULT_PAGE_URL = "http://localhost:8080/b2b/school/"


class SchoolReportsOperator(BaseOperator):
    """Build this week's school reports and email each school a notice.

    :param schools: ``{dfe: school name}`` of the bases to report on.
    :param smtp_conn_id: the Airflow SMTP connection the notices go through.
    :param page_url: the school page named in the notice (``$B2B_SCHOOL_PAGE_URL`` by default).
    """

    ui_color = "#e8f4fd"

    def __init__(self, *, schools: dict[str, str], smtp_conn_id: str = "b2b_smtp",
                 warehouse_conn_id: str = "b2b_warehouse", page_url: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.schools = dict(schools)
        self.smtp_conn_id = smtp_conn_id
        self.warehouse_conn_id = warehouse_conn_id
        self.page_url = page_url

    def execute(self, context: Context) -> dict:
        from html import escape

        from airflow.providers.smtp.hooks.smtp import SmtpHook

        from b2b import db
        from b2b.outbound import reports
        from b2b_hooks.warehouse import WarehouseHook
        from b2b_operators.base import airflow_errors

        page_url = self.page_url or os.environ.get("B2B_SCHOOL_PAGE_URL") or DEFAULT_PAGE_URL
        end = context["data_interval_end"]
        assert end is not None  # a scheduled weekly run always has its interval
        day = end.date()
        with airflow_errors(), WarehouseHook(self.warehouse_conn_id).get_conn() as conn:
            conn.autocommit = True
            db.upgrade(conn)
            purged = reports.purge(conn)
            built = reports.build_all(conn, day, self.schools)
            sent = 0
            if built:
                with SmtpHook(smtp_conn_id=self.smtp_conn_id) as hook:
                    def send(to: str, subject: str, body: str) -> None:
                        hook.send_email_smtp(to=to, subject=subject, html_content=f"<pre>{escape(body)}</pre>")

                    sent = reports.notify(conn, built, self.schools, send, page_url)
        counts = {"reports": len(built), "students": sum(b.students for b in built),
                  "differences": sum(b.items for b in built), "notices": sent, "purged": purged}
        self.log.info("school reports: %s", counts)  # counts only: no personal data in the log
        return counts


def build_report_dags(catalogue: Catalogue, only_dag_id: str | None = None) -> dict[str, DAG]:
    """The weekly report DAG (empty when Airflow asks for another DAG)."""
    import pendulum

    if only_dag_id and only_dag_id != DAG_ID:
        return {}
    la = catalogue.la
    tz = pendulum.timezone(la.timezone)
    schools = {dfe: b.name for dfe, b in sorted(catalogue.bases.items())}
    with DAG(
        dag_id=DAG_ID,
        description="Weekly per-school anomaly reports (F32/F33) and their email notices (F42)",
        schedule=CronDataIntervalTimetable(SCHEDULE, timezone=tz),
        start_date=pendulum.datetime(2026, 9, 1, tz=tz),
        catchup=False,
        max_active_runs=1,
        default_args={"owner": "b2b", "retries": 2, "retry_delay": timedelta(minutes=5)},
        tags=["b2b", "reports"],
        doc_md=("### Weekly school reports (F32/F33/F42)\n\n" + (__doc__ or "") +
                "\n\nSee docs/reports.md for the report, the spreadsheet and the round trip."),
        is_paused_upon_creation=True,
    ) as dag:
        SchoolReportsOperator(task_id="school_reports", schools=schools)
    return {DAG_ID: dag}
