"""Import-to-school (F25, F28): build the LA's corrections for one school and deliver them."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from b2b_operators.base import B2BStageOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from psycopg import Connection

    from b2b.context import RunContext


class ReturnToSchoolOperator(B2BStageOperator):
    """Build the B2BReturn message for the base's NCY group, send it through the SIMS 7 hook,
    record the school's answer (``raw.outbound_file``, ``results.returned_field``, task log)."""

    stage = "return_to_school"
    run_control = False  # reads results only: no base lease (b2b.ops.runs)
    ui_color = "#fae5d3"
    template_fields = ("conn_id",)

    def __init__(self, *, conn_id: str, la_code: str, ncys: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.la_code = la_code
        self.ncys = list(ncys) if ncys else None

    def run_stage(self, conn: Connection, ctx: RunContext, context: Context) -> Any:
        from b2b.outbound import returns
        from b2b_hooks.sims7 import Sims7Hook

        outbound_id, body, pupils = returns.prepare(conn, ctx, self.la_code, self.ncys)
        if not pupils:
            return returns.record_delivery(conn, ctx, outbound_id, {"applied": 0, "refused": []}, None)
        try:
            answer = Sims7Hook(self.conn_id).import_return(ctx.base_id, body)
        except Exception as exc:
            returns.record_delivery(conn, ctx, outbound_id, None, str(exc))
            raise
        return returns.record_delivery(conn, ctx, outbound_id, answer, None)
