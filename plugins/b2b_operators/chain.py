"""Stage operators of the processing chain; each delegates to ``b2b.pipeline`` (Airflow-free)."""
from __future__ import annotations

from b2b_operators.base import B2BStageOperator


class HashFilterOperator(B2BStageOperator):
    """Mark blocks unchanged since their last import as skipped (F7/F15/F20, B2BHCACHE)."""

    stage = "hash_filter"
    ui_color = "#e8daef"

    def run_stage(self, conn, ctx, context):
        from b2b import pipeline as chain

        return chain.hash_filter(conn, ctx, self.chain_settings())


class LoadOperator(B2BStageOperator):
    """Load the run's new, valid blocks into staging, with the hash cache, in one transaction."""

    stage = "load"
    ui_color = "#d5f5e3"

    def run_stage(self, conn, ctx, context):
        from b2b import pipeline as chain

        return chain.load(conn, ctx)


class MatchOperator(B2BStageOperator):
    """Link each incoming student to an LA child with the matcher (``b2b.matching``), or queue / leave it."""

    stage = "match"
    ui_color = "#fdebd0"

    def run_stage(self, conn, ctx, context):
        from b2b import pipeline as chain

        return chain.match(conn, ctx, self.chain_settings())


class ConflictsOperator(B2BStageOperator):
    """Record fields where a matched student's school data differs from the LA's (F17, F20)."""

    stage = "conflicts"
    ui_color = "#fadbd8"

    def run_stage(self, conn, ctx, context):
        from b2b import pipeline as chain

        return chain.conflicts(conn, ctx)


class ApplyOperator(B2BStageOperator):
    """Make matched students' non-conflicting school data current in the LA view (F6)."""

    stage = "apply"
    ui_color = "#d6eaf8"

    def run_stage(self, conn, ctx, context):
        from b2b import pipeline as chain

        return chain.apply(conn, ctx)


class ValidateOperator(B2BStageOperator):
    """Great Expectations suites per block type; failures become anomalies (GX imported in execute)."""

    stage = "validate"
    ui_color = "#fcf3cf"

    def run_stage(self, conn, ctx, context):
        from b2b import pipeline as chain
        from b2b.db import b2b_home

        return chain.validate(conn, ctx, b2b_home() / "reports" / "validation")


class ContactsOperator(B2BStageOperator):
    """Contacts of current students as accounts: mapping, rejections, disabling (F34–F38)."""

    stage = "contacts"
    ui_color = "#d1f2eb"

    def run_stage(self, conn, ctx, context):
        from b2b.reconcile import contacts

        return contacts.sync(conn, ctx)


class CommitOperator(B2BStageOperator):
    """The run's last task: its hash-cache entries count from now on, the (base, task) watermark
    moves to the window end (F5), and the base's lease goes to the next run (``b2b.ops.runs``)."""

    stage = "commit"
    ui_color = "#eaeded"

    def run_stage(self, conn, ctx, context):
        from b2b import pipeline as chain

        return chain.commit(conn, ctx)
