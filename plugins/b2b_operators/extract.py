"""ExtractOperator: fetch one run window from a school's MIS and store it (thin wrapper).

All the work is in ``b2b.ingest.extract`` (Airflow-free); this module only picks the hook for
the base's MIS and reports counts. Heavy imports happen inside ``execute()`` so DAG
parsing stays cheap.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from b2b_operators.base import B2BStageOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from psycopg import Connection

    from b2b.context import RunContext

PRIMARY_GROUPS_BY_FILTER = {
    "snapshot": ("student", "address", "contacts", "sen", "exclusions"),
    "changed_data": ("student", "address", "contacts", "sen", "exclusions"),
    "attendance": ("attendance",),
}


class ExtractOperator(B2BStageOperator):
    """Extract a base's data for the run window into ``raw.inbound_file`` / ``raw.inbound_block``.

    :param conn_id: Airflow connection with the school's credentials (F12 / F1).
    :param group_type: ``ncy``, ``lac`` or ``leavers`` (F23); ``ncys`` None = all.
    :param fail_on_bad_file: fail the task (after storing everything) when a file went to suspense.
    """

    stage = "extract"
    ui_color = "#d6eaf8"
    opens_run = True  # registers the run and takes the base's lease (b2b.ops.runs)

    def __init__(self, *, conn_id: str, group_type: str = "ncy", ncys: Sequence[str] | None = None,
                 hierarchies: Sequence[str] = (), fail_on_bad_file: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.group_type = group_type
        self.ncys = list(ncys) if ncys else None
        self.hierarchies = list(hierarchies)
        self.fail_on_bad_file = fail_on_bad_file

    def hook_limits(self) -> dict:
        """The per-message deadline and caps (``Settings``, overridable by ``B2B_*`` variables)."""
        s = self.chain_settings()
        return {"message_deadline_s": s.message_deadline_s, "max_message_bytes": s.max_message_bytes,
                "max_pages": s.max_pages}

    def messages(self, since: Any, until: Any) -> Iterator[Any]:
        """The messages the school sends for this window, one at a time."""
        from b2b.ingest.extract import ReceivedMessage

        limits = self.hook_limits()
        if self.base_kind == "sims7":
            from b2b_hooks.sims7 import Sims7Hook

            msg = Sims7Hook(sims7_conn_id=self.conn_id, **limits).export(
                self.base_id, filter=self.data_filter, until=until, since=since, group=self.group_type,
                ncys=self.ncys, attendance=self.attendance, months=self.months,
                hierarchies=self.hierarchies or None)
            yield ReceivedMessage("export", msg.content, msg.content_type)
            return
        from b2b_hooks.sims_primary import SimsPrimaryHook

        hook = SimsPrimaryHook(sims_primary_conn_id=self.conn_id, **limits)
        for group in PRIMARY_GROUPS_BY_FILTER[self.data_filter]:
            # F23: the task's student group goes to the school (a LAC task fetches LAC only)
            for page in hook.iter_pages(group, until=until, since=since, ncys=self.ncys,
                                        student_group=self.group_type):
                yield ReceivedMessage(f"{group} p{page.page}/{page.total_pages}", page.content,
                                      "application/json", group=group)

    def definition(self) -> dict:
        """What the school's task asks for (compared run to run, F19b)."""
        schedule = getattr(getattr(self, "dag", None), "timetable", None)
        return {"filter": self.data_filter, "group": self.group_type, "ncys": self.ncys,
                "attendance": self.attendance, "months": self.months, "hierarchies": self.hierarchies,
                "schedule": getattr(schedule, "summary", None)}

    def run_stage(self, conn: Connection, ctx: RunContext, context: Context) -> dict:
        from b2b.errors import IngestError
        from b2b.ingest.extract import store_messages

        self.log.info("base %s %s: window %s .. %s", self.base_id, self.data_filter,
                      ctx.window_start.isoformat() if ctx.window_start else "(all)", ctx.window_end.isoformat())
        # the warehouse was migrated by execute() (opens_run) before the run tables were read
        from b2b.ops.alerts import check_task_definition

        alert = check_task_definition(conn, self.base_id, self.task_key, self.definition())
        if alert:
            self.log.warning("F19b: base %s task %s changed since its last run: %s", self.base_id, self.task_key,
                             ", ".join(alert["changed"]))
        summary = store_messages(conn, ctx, self.messages(ctx.window_start, ctx.window_end))
        if summary.failed and self.fail_on_bad_file:
            # a bad file stays bad: fail now (no retry fetching it again), everything is stored
            raise IngestError(f"{summary.failed} of {summary.files} file(s) put in suspense "
                              f"(file ids {[e[0] for e in summary.errors]}); reasons are in ops.task_log",
                              base=self.base_id)
        return summary.counts()
