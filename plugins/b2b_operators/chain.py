"""Stage operators of the processing chain; each delegates to ``b2b.pipeline`` (Airflow-free).

The first paragraph of each operator's docstring is what the DAG docs show for its stage
(``factory.stages_doc``), so keep it true to what ``run_stage`` calls.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from b2b_operators.base import B2BStageOperator

if TYPE_CHECKING:
    from airflow.sdk import Context
    from psycopg import Connection

    from b2b.context import RunContext

#: libraries whose INFO lines would drown the stage's own line in the task log
QUIET_LOGGERS = ("great_expectations",)


def quiet_libraries() -> None:
    """Task logs keep our stage lines only: libraries log warnings and errors, not INFO."""
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class HashFilterOperator(B2BStageOperator):
    """Skip blocks unchanged since their last import (hash cache, F7/F15/F20; off when the LA's
    ``B2BHCACHE`` setting is off)."""

    stage = "hash_filter"
    ui_color = "#e8daef"

    def run_stage(self, conn: Connection, ctx: RunContext, context: Context) -> Any:
        from b2b import pipeline as chain

        return chain.hash_filter(conn, ctx, self.chain_settings())


class LoadOperator(B2BStageOperator):
    """Load the run's new, valid blocks into the school's staging tables and record their hashes
    (the cache), in one transaction."""

    stage = "load"
    ui_color = "#d5f5e3"

    def run_stage(self, conn: Connection, ctx: RunContext, context: Context) -> Any:
        from b2b import pipeline as chain

        return chain.load(conn, ctx)


class MatchOperator(B2BStageOperator):
    """Link each student loaded in this run to an LA child with the matcher chosen by the LA's ``MATCHER``
    setting (``b2b.matching``: scored field weights, or the vendor's legacy rule): matched students are
    linked, possible ones queued for an officer, the rest left unmatched (``results.match``)."""

    stage = "match"
    ui_color = "#fdebd0"

    def run_stage(self, conn: Connection, ctx: RunContext, context: Context) -> Any:
        from b2b import pipeline as chain

        return chain.match(conn, ctx, self.chain_settings())


class ConflictsOperator(B2BStageOperator):
    """Record fields where a matched student's school data differs from the LA's (F17, F20)."""

    stage = "conflicts"
    ui_color = "#fadbd8"

    def run_stage(self, conn: Connection, ctx: RunContext, context: Context) -> Any:
        from b2b import pipeline as chain

        return chain.conflicts(conn, ctx)


class ApplyOperator(B2BStageOperator):
    """Make matched students' non-conflicting school data current in the LA's view
    (``core.child_current``, F6)."""

    stage = "apply"
    ui_color = "#d6eaf8"

    def run_stage(self, conn: Connection, ctx: RunContext, context: Context) -> Any:
        from b2b import pipeline as chain

        return chain.apply(conn, ctx)


class ValidateOperator(B2BStageOperator):
    """Check the run's new blocks with the Great Expectations suite of each block type
    (``include/schemas``): failures become anomalies (``results.anomaly``), blocks failing an
    error-level expectation are not loaded, structurally broken files go to suspense."""

    stage = "validate"
    ui_color = "#fcf3cf"

    def run_stage(self, conn: Connection, ctx: RunContext, context: Context) -> Any:
        from b2b import pipeline as chain
        from b2b.db import b2b_home

        quiet_libraries()
        return chain.validate(conn, ctx, b2b_home() / "reports" / "validation")


class ContactsOperator(B2BStageOperator):
    """Turn the contacts of current students into accounts: map them, reject the unusable ones
    (``results.rejected_contact``) and disable those no longer sent (F34–F38)."""

    stage = "contacts"
    ui_color = "#d1f2eb"

    def run_stage(self, conn: Connection, ctx: RunContext, context: Context) -> Any:
        from b2b.reconcile import contacts

        return contacts.sync(conn, ctx)


class CommitOperator(B2BStageOperator):
    """The run's last task: its hash-cache entries count from now on, the (base, task) watermark
    moves to the window end (F5), and the base's lease goes to the next run (``b2b.ops.runs``)."""

    stage = "commit"
    ui_color = "#eaeded"

    def run_stage(self, conn: Connection, ctx: RunContext, context: Context) -> Any:
        from b2b import pipeline as chain

        return chain.commit(conn, ctx)
