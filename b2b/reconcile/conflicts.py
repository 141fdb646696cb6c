"""Conflicts stage (F17, F20): fields where a matched student's school value differs from the LA's."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psycopg import Connection

from b2b.blocks import ADDRESS_COMPARED, BY_NAME, STUDENT_COMPARED, compare_sql
from b2b.context import RunContext, log_stage, one, run_files
from b2b.reconcile import stale_stats

#: the run tables the stage's statements join, which an LA's first snapshot outgrows
#: (``stale_stats``): the staging rows of the run's files, their students' decisions as of the
#: window (``results.match``), and the observations (by file, by person for the open ones)
GROWING_TABLES = stale_stats.growing("staging.student", "staging.address", "results.match",
                                     "results.conflict_observation")


def _link_as_of(alias: str) -> str:
    """Join the child a school student (rows ``alias``) is linked to as of the run window:
    the newest match decision up to this window, when it is a link (not possible/unmatched).
    An index lookup per student on results.match (base_id, student_guid, window_order)."""
    return (f"JOIN LATERAL (SELECT lm.person_id, lm.status FROM results.match lm "
            f"WHERE lm.base_id = {alias}.base_id AND lm.student_guid = {alias}.student_guid "
            f"AND lm.window_order <= %(order)s ORDER BY lm.window_order DESC LIMIT 1) m "
            f"ON m.status IN ('matched', 'matched_with_conflicts')")


# an observation not settled by an officer or Clear Conflicts (the same test as the results.conflict view;
# written against the observations so it uses their indexes instead of grouping every conflict)
_UNRESOLVED = """NOT EXISTS (SELECT 1 FROM results.conflict_resolution r
                              WHERE r.person_id = o.person_id AND r.field = o.field
                                AND r.la_value IS NOT DISTINCT FROM o.la_value
                                AND r.incoming_value IS NOT DISTINCT FROM o.incoming_value)"""

# an observation of this window or an earlier one (window end, then DAG id): what a run sees must not
# depend on later windows, present when an earlier window is rerun (issue 9, item 13)
_AS_OF = """(o.window_end < %(end)s OR o.window_end = %(end)s
              AND coalesce((SELECT f.dag_id FROM raw.inbound_file f WHERE f.file_id = o.file_id), '') <= %(dag)s)"""


def conflicts(conn: Connection, ctx: RunContext) -> dict:
    """Record each field where a matched student's incoming value differs from the LA's (F17).

    Observations are per file; ``results.conflict`` folds identical ones from repeated
    imports into one row with first/last seen and times seen (F20).
    """
    with conn.transaction():
        with conn.pipeline():  # (the run tables' statistics checked with the files' read: one round trip)
            outgrown = stale_stats.check(conn, GROWING_TABLES)
            files = run_files(conn, ctx)
        outgrown.analyse()
        # statements sent in a pipeline: the server runs them back to back (the counts wait for all)
        with conn.pipeline():
            conn.execute("DELETE FROM results.conflict_observation WHERE file_id = ANY(%s)", (files,))
            params = {"files": files, "end": ctx.window_end, "order": ctx.window_order}
            # one statement per block that carries compared fields (student, address), from the registry
            for block, names in (("student", STUDENT_COMPARED), ("address", ADDRESS_COMPARED)):
                values = ", ".join(compare_sql(f, f"c.{f}", f"s.{f}") for f in names)
                conn.execute(
                    f"""INSERT INTO results.conflict_observation (file_id, base_id, student_guid, person_id, field,
                                                                  la_value, incoming_value, window_end)
                        SELECT s.file_id, s.base_id, s.student_guid, m.person_id, v.field, v.la_value, v.inc_value,
                               %(end)s
                          FROM staging.{BY_NAME[block].staging} s
                          {_link_as_of('s')}
                          JOIN core.child c ON c.person_id = m.person_id
                         CROSS JOIN LATERAL (VALUES {values}) AS v(field, la_value, inc_value, same)
                         WHERE s.file_id = ANY(%(files)s) AND v.la_value IS NOT NULL AND v.inc_value IS NOT NULL
                           AND NOT v.same""", params)
            # the run's match decisions: conflicts open for the child as of this window ->
            # matched_with_conflicts; the explanation names the fields that differ: exactly the
            # run's observations (one comparison rule, b2b.blocks, for conflicts and explanations).
            # One statement, and only the decisions that change are written (a snapshot's
            # students mostly have no conflict: rewriting all of them cost a row version each);
            # a student's observations by the primary key (the run's files are its base's), not
            # by the base's index, which grows with every window's observations.
            conn.execute(
                f"""UPDATE results.match m
                       SET status = d.status, explanation = d.explanation
                      FROM (SELECT m2.file_id, m2.student_guid,
                                   CASE WHEN EXISTS (SELECT 1 FROM results.conflict_observation o
                                                      WHERE o.person_id = m2.person_id AND {_UNRESOLVED}
                                                        AND {_AS_OF})
                                        THEN 'matched_with_conflicts' ELSE 'matched' END AS status,
                                   CASE WHEN f.fields IS NULL THEN m2.explanation - 'differing_fields'
                                        ELSE jsonb_set(m2.explanation, '{{differing_fields}}', f.fields)
                                   END AS explanation
                              FROM results.match m2
                             CROSS JOIN LATERAL (
                                   SELECT jsonb_agg(DISTINCT o.field ORDER BY o.field) AS fields
                                     FROM results.conflict_observation o
                                    WHERE o.file_id = ANY(%(files)s) AND o.student_guid = m2.student_guid) f
                             WHERE m2.file_id = ANY(%(files)s)
                               AND m2.status IN ('matched', 'matched_with_conflicts')) d
                     WHERE m.file_id = d.file_id AND m.student_guid = d.student_guid
                       AND (m.status, m.explanation) IS DISTINCT FROM (d.status, d.explanation)""",
                {"files": files, "end": ctx.window_end, "dag": ctx.dag_id})
            observed, students, open_for_base = one(conn,
                f"""SELECT (SELECT count(*) FROM results.conflict_observation WHERE file_id = ANY(%(files)s)),
                           (SELECT count(DISTINCT (base_id, student_guid)) FROM results.conflict_observation
                             WHERE file_id = ANY(%(files)s)),
                           (SELECT count(DISTINCT (o.person_id, o.field, o.la_value, o.incoming_value))
                              FROM results.conflict_observation o
                             WHERE o.base_id = %(base)s AND {_UNRESOLVED} AND {_AS_OF})""",
                {"files": files, "base": ctx.base_id, "end": ctx.window_end, "dag": ctx.dag_id})
        counts = {"conflicts": observed, "students_with_conflicts": students, "open_conflicts_base": open_for_base}
        log_stage(conn, ctx, "conflicts", counts,
                  f"conflicts: {observed} field differences for {students} students; "
                  f"{open_for_base} open for this base")
    return counts


