"""Load stage: the run's new, valid blocks into typed staging tables, with the hash cache, in one transaction."""
from __future__ import annotations

from typing import TYPE_CHECKING

from b2b.blocks import BLOCKS, STAGING_TABLES, load_sql
from b2b.context import RunContext, log_stage, scalar

if TYPE_CHECKING:
    from psycopg import Connection, Cursor


def load(conn: Connection, ctx: RunContext, *, fail_after: str | None = None) -> dict:
    """Load the run's pending blocks into staging and record them in the hash cache — one transaction.

    The cache entries are written uncommitted: they count for later runs only once this run's
    last stage has committed them (``b2b.ops.runs.finish_run``).

    If anything fails, staging, cache and dispositions stay exactly as they were, so the
    retry processes the same blocks. ``fail_after`` (a staging table name) makes the load
    raise after that table: tests use it to prove the rollback.
    """
    from b2b.reconcile import attendance, stale_stats

    with conn.transaction():
        # the run's files, and whether an earlier attempt of this stage loaded them (it marks them);
        # with the check of the attendance tables' statistics (one round trip: they are analysed,
        # when outgrown, before the attendance statements plan on them)
        with conn.pipeline():
            outgrown = stale_stats.check(conn, attendance.GROWING_TABLES)
            status: dict[int, str] = dict(conn.execute(
                """SELECT file_id, status FROM raw.inbound_file
                    WHERE dag_id = %s AND window_end = %s AND status IN ('parsed', 'loaded')""",
                (ctx.dag_id, ctx.window_end)).fetchall())
        outgrown.analyse()
        files = list(status)
        # statements sent in pipelines: the server runs them back to back (a changed-data run's
        # cost is mostly round trips); a result is waited for only where the next step needs it
        with conn.pipeline():
            # one loader per base at a time: the cache of one base is read and written here
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('b2b.load.' || %s))", (ctx.base_id,))
            if "loaded" in status.values():  # an earlier successful attempt of this stage: undo it, then redo
                for table in STAGING_TABLES:
                    conn.execute(f"DELETE FROM staging.{table} WHERE file_id = ANY(%s)", (files,))
                conn.execute("DELETE FROM core.attendance_marks WHERE file_id = ANY(%s)", (files,))
                conn.execute("DELETE FROM ops.hash_cache WHERE file_id = ANY(%s)", (files,))
                conn.execute("""UPDATE raw.inbound_block SET disposition = 'pending'
                                WHERE file_id = ANY(%s) AND disposition = 'loaded'""", (files,))
            # the block types the run has to load (a changed-data run brings few of them)
            pending = set(scalar(conn, """SELECT coalesce(array_agg(DISTINCT block_type), '{}')
                                            FROM raw.inbound_block
                                           WHERE file_id = ANY(%s) AND disposition = 'pending'""", (files,)))
        inserted: dict[str, Cursor] = {}
        with conn.pipeline():
            for block in BLOCKS:  # one INSERT … SELECT per block type, built from the registry
                if block.name in pending:
                    inserted[block.staging] = conn.execute(load_sql(block), {"files": files})
                if fail_after == block.staging:
                    raise RuntimeError(f"injected failure after loading staging.{block.staging}")
        counts = {block.staging: inserted[block.staging].rowcount if block.staging in inserted else 0
                  for block in BLOCKS}
        counts["attendance_marks"] = attendance.store_marks(conn, ctx, files, months=ctx.months)
        with conn.pipeline():
            # the loaded blocks marked and entered in the hash cache in one pass over the run's blocks
            marked = conn.execute(
                """WITH marked AS (
                       UPDATE raw.inbound_block SET disposition = 'loaded'
                        WHERE file_id = ANY(%s) AND disposition = 'pending'
                    RETURNING file_id, ordinal, base_id, student_guid, block_type, hash)
                   INSERT INTO ops.hash_cache (file_id, ordinal, base_id, student_guid, block_type, hash,
                                               window_order)
                   SELECT file_id, ordinal, base_id, student_guid, block_type, hash, %s FROM marked""",
                (files, ctx.window_order))
            conn.execute("UPDATE raw.inbound_file SET status = 'loaded' WHERE file_id = ANY(%s)", (files,))
        loaded = marked.rowcount
        result = {"loaded": loaded, "rows": counts}
        log_stage(conn, ctx, "load", result,
                  f"load: {loaded} blocks into staging ({', '.join(f'{k} {v}' for k, v in counts.items() if v)})")
    return result


