"""Hash filter stage (F7/F15/F20, B2BHCACHE): a block unchanged since its last import is skipped."""
from __future__ import annotations

from typing import TYPE_CHECKING

from b2b.config.settings import Settings
from b2b.context import RunContext, log_stage, run_files

if TYPE_CHECKING:
    from psycopg import Connection


def hash_filter(conn: Connection, ctx: RunContext, settings: Settings) -> dict:
    """Hash every block of the run; mark 'skipped' those equal to the cached hash (F7/F20).

    The cached hash of a (base, student, block type) is the newest hash-cache entry from
    an *earlier* window, so reruns and backfills see the cache as it was for them, and only
    from a run that succeeded as a whole (``committed`` by its last stage, ``b2b.ops.runs``):
    a run that failed after ``load`` never hides a changed block from the next run.
    """
    with conn.transaction():
        files = run_files(conn, ctx)
        # One write per block, driven by the block's primary key and, per block, the cache's key
        # index: no join whose plan could flip to a nested loop over every stored block when the
        # statistics lag behind a fast-growing raw.inbound_block (the earlier self-join took 88 s
        # instead of 1 s for 25 schools' snapshots).
        # (every block of the run is rewritten, so the counts come from the rows it returns)
        counts: dict[str, int] = dict(conn.execute(
            """WITH marked AS (
               UPDATE raw.inbound_block b
                  SET (hash, disposition) = (
                      SELECT x.h, CASE WHEN %(cache)s AND x.h = (
                                           SELECT c.hash FROM ops.hash_cache c
                                            WHERE c.base_id = b.base_id AND c.student_guid = b.student_guid
                                              AND c.block_type = b.block_type AND c.window_order < %(order)s
                                              AND c.committed
                                            ORDER BY c.window_order DESC LIMIT 1)
                                       THEN 'skipped' ELSE 'pending' END
                        FROM (SELECT encode(sha256(convert_to(b.content::text, 'UTF8')), 'hex') AS h) x)
                WHERE b.file_id = ANY(%(files)s)
            RETURNING b.disposition)
               SELECT disposition, count(*) FROM marked GROUP BY disposition""",
            {"files": files, "order": ctx.window_order, "cache": settings.b2bhcache}).fetchall())
        result = {"blocks": sum(counts.values()), "skipped_by_cache": counts.get("skipped", 0),
                  "to_process": counts.get("pending", 0), "cache_enabled": settings.b2bhcache}
        log_stage(conn, ctx, "hash_filter", result,
                  f"hash filter: {result['blocks']} blocks, {result['skipped_by_cache']} unchanged since "
                  f"last import, {result['to_process']} to process"
                  + ("" if settings.b2bhcache else " (B2BHCACHE off)"))
    return result


