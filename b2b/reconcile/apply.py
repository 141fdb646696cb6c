"""Apply stage (F6): matched students' new school data for the LA's current view."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psycopg import Connection

from b2b.blocks import APPLIED_ADDRESS, SCHOOL_FIELDS, STUDENT_COMPARED
from b2b.context import RunContext, log_stage, run_files
from b2b.reconcile import stale_stats
from b2b.reconcile.conflicts import _link_as_of

APPLIED_FIELDS = STUDENT_COMPARED + SCHOOL_FIELDS

#: the run tables the stage's statements join, which an LA's first snapshot outgrows
#: (``stale_stats``): the staging rows of the run's files, their students' decisions as of the
#: window, and each child's latest earlier applied version (the list blocks are read from
#: raw.inbound_block, which is not analysed here: see ``stale_stats``)
GROWING_TABLES = stale_stats.growing("staging.student", "staging.address", "results.match", "core.child_applied",
                                     "core.child_applied_address", "core.child_sen", "core.child_exclusion")


# A whole list group (SEN needs, exclusions) of a matched child, as one jsonb value; a new
# version only when it differs from the child's latest earlier version (F6: SIMS Primary
# re-sends the whole group when any item changes).
_GROUP_SQL = """
    INSERT INTO core.{table} (file_id, person_id, base_id, student_guid, window_order{extra_cols}, {list_key})
    SELECT g.file_id, m.person_id, g.base_id, g.student_guid, %(order)s{extra_vals}, g.items
      FROM (SELECT b.file_id, b.base_id, b.student_guid, b.content,
                   coalesce((SELECT jsonb_agg(n ORDER BY {order})
                               FROM jsonb_array_elements(core.jsonb_list(b.content->'{list_key}')) n),
                            '[]'::jsonb) AS items
              FROM raw.inbound_block b
             WHERE b.file_id = ANY(%(files)s) AND b.block_type = '{block}' AND b.disposition = 'loaded') g
      {link_g}
      LEFT JOIN LATERAL (SELECT x.{list_key} AS items FROM core.{table} x
                          WHERE x.person_id = m.person_id AND x.window_order < %(order)s
                          ORDER BY x.window_order DESC LIMIT 1) p ON true
     WHERE p.items IS DISTINCT FROM g.items
    ON CONFLICT (file_id, person_id) DO NOTHING"""


def _apply_sql(table: str, staging: str, fields: tuple[str, ...]) -> str:
    cols = ", ".join(fields)
    s_cols = ", ".join(f"s.{f}" for f in fields)
    la_cols = ", ".join(f"c.{f}" for f in fields)
    prev_cols = ", ".join(f"p.{f}" for f in fields)
    return f"""
        INSERT INTO core.{table} (file_id, person_id, base_id, student_guid, window_order, {cols})
        SELECT s.file_id, m.person_id, s.base_id, s.student_guid, %(order)s, {s_cols}
          FROM staging.{staging} s
          {_link_as_of('s')}
          JOIN core.child c ON c.person_id = m.person_id
          LEFT JOIN LATERAL (SELECT * FROM core.{table} x
                              WHERE x.person_id = m.person_id AND x.window_order < %(order)s
                              ORDER BY x.window_order DESC LIMIT 1) p ON true
         WHERE s.file_id = ANY(%(files)s)
           AND CASE WHEN p.person_id IS NULL THEN ROW({s_cols}) IS DISTINCT FROM ROW({la_cols})
                    ELSE ROW({s_cols}) IS DISTINCT FROM ROW({prev_cols}) END
        ON CONFLICT (file_id, person_id) DO NOTHING"""


def apply(conn: Connection, ctx: RunContext) -> dict:
    """Record matched students' new school data for the LA's current view (F6).

    The LA's own record (``core.child``) is never edited here: the school's values go to
    ``core.child_applied`` / ``core.child_applied_address`` and ``core.child_current``
    overlays them (school-owned fields from the school; identity fields only where the LA
    holds none — a differing identity value is a conflict for an officer). A student whose
    data equals what the LA already shows adds nothing. Rows cascade from their file, so
    a rerun rebuilds them exactly.
    """
    with conn.transaction():
        with conn.pipeline():  # (the run tables' statistics checked with the files' read: one round trip)
            outgrown = stale_stats.check(conn, GROWING_TABLES)
            files = run_files(conn, ctx)
        outgrown.analyse()
        # statements sent in a pipeline: the server runs them back to back
        with conn.pipeline():
            # an earlier attempt's rows, in one statement (a new version is compared only with earlier windows')
            conn.execute("""WITH a AS (DELETE FROM core.child_applied WHERE file_id = ANY(%(files)s)),
                                 d AS (DELETE FROM core.child_applied_address WHERE file_id = ANY(%(files)s)),
                                 s AS (DELETE FROM core.child_sen WHERE file_id = ANY(%(files)s))
                            DELETE FROM core.child_exclusion WHERE file_id = ANY(%(files)s)""", {"files": files})
            params = {"files": files, "order": ctx.window_order}
            students_cur = conn.execute(_apply_sql("child_applied", "student", APPLIED_FIELDS), params)
            addresses_cur = conn.execute(_apply_sql("child_applied_address", "address", APPLIED_ADDRESS), params)
            link = _link_as_of("g")
            sen_cur = conn.execute(_GROUP_SQL.format(
                link_g=link, table="child_sen", block="sen", extra_cols=", start_date",
                extra_vals=", (g.content->>'start_date')::date", list_key="needs",
                order="(n->>'ranking')::int, n->>'type'"), params)
            excl_cur = conn.execute(_GROUP_SQL.format(
                link_g=link, table="child_exclusion", block="exclusions", extra_cols="", extra_vals="",
                list_key="exclusions", order="n->>'start_date', n->>'category'"), params)
        students, addresses, sen, excl = (c.rowcount for c in (students_cur, addresses_cur, sen_cur, excl_cur))
        counts = {"children_updated": students, "addresses_updated": addresses, "sen_groups_updated": sen,
                  "exclusion_groups_updated": excl}
        log_stage(conn, ctx, "apply", counts,
                  f"apply: new school data for {students} matched children, {addresses} addresses")
    return counts
