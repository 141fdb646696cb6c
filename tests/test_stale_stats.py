"""The stages after match analyse the run tables an LA's first snapshot has outgrown
(``b2b.reconcile.stale_stats``, issue 15): a table holding far more rows than its statistics
say (planned on as if nearly empty, key probes became scans of the whole table per record)
is analysed by the stage that joins it, before its statements; one that has not grown is
left alone. (The match stage's own test: tests/test_match_stage.py.)"""
from datetime import UTC, datetime

import pytest

from tests.support import linked_children

ROWS = 3000
OTHER_FILE = """INSERT INTO raw.inbound_file (base_id, task_key, dag_id, run_id, window_end, window_order, seq, source,
                                              data_filter, label, content_type, size_bytes, sha256, status)
                VALUES ('9990001', 'snapshot', 'b2b__9990001__snapshot', 'r0', '2026-10-03 17:00+00',
                        '20261003170000|b2b__9990001__snapshot', 1, 'sims7', 'snapshot', 'export', 'application/xml',
                        1, 'x', 'loaded')
                RETURNING file_id"""

#: per stage: the run table inflated (one its statements join), and the rows that inflate it
#: (another base's file, %(file)s; ROWS of them, k = 1..ROWS)
INFLATE = {
    "conflicts": ("results.conflict_observation",
                  """INSERT INTO results.conflict_observation (file_id, base_id, student_guid, person_id, field,
                                                               la_value, incoming_value, window_end)
                     SELECT %(file)s, '9990001', 'g' || k, 'P' || k, 'surname', 'a', 'b', '2026-10-03 17:00+00'
                       FROM generate_series(1, %(rows)s) k"""),
    "apply": ("core.child_applied",
              """WITH c AS (INSERT INTO core.child (person_id, forename, surname, dob)
                            SELECT 'P' || k, 'Fn', 'Sn', '2010-01-01' FROM generate_series(1, %(rows)s) k)
                 INSERT INTO core.child_applied (file_id, person_id, base_id, student_guid, window_order)
                 SELECT %(file)s, 'P' || k, '9990001', 'g' || k, '20261003170000|b2b__9990001__snapshot'
                   FROM generate_series(1, %(rows)s) k"""),
    "contacts": ("raw.inbound_file",
                 """INSERT INTO raw.inbound_file (base_id, task_key, dag_id, run_id, window_end, window_order, seq,
                                                  source, data_filter, label, content_type, size_bytes, sha256, status)
                    SELECT '9990001', 'snapshot', 'b2b__9990001__snapshot', 'r' || k, '2026-10-03 17:00+00',
                           '20261003170000|b2b__9990001__snapshot', 1 + k, 'sims7', 'snapshot', 'export',
                           'application/xml', 1, 'x', 'loaded'
                      FROM generate_series(1, %(rows)s - 1) k"""),
    "attendance": ("core.attendance_marks",
                   """INSERT INTO core.attendance_marks (file_id, base_id, student_guid, academic_year, window_order,
                                                         marks)
                      SELECT %(file)s, '9990001', 'g' || k, 2026, '20261003170000|b2b__9990001__snapshot', '/\\'
                        FROM generate_series(1, %(rows)s) k"""),
}


def _run(stage: str, db, ctx) -> None:
    from b2b import pipeline

    if stage == "attendance":  # (the attendance statements run in the load stage, which checks their tables)
        pipeline.load(db, ctx)
    else:
        getattr(pipeline, stage)(db, ctx)


@pytest.mark.parametrize("stage", sorted(INFLATE))
def test_a_stage_analyses_a_run_table_outgrowing_its_statistics_and_not_again_until_it_grows(db, stage):
    from b2b.context import RunContext

    table, inflate = INFLATE[stage]

    def stats():
        db.execute("SELECT pg_stat_force_next_flush()")
        db.commit()  # (statistics views are read as of the transaction's first look)
        return db.execute("SELECT coalesce(s.analyze_count, 0), c.reltuples FROM pg_stat_user_tables s "
                          "JOIN pg_class c ON c.oid = s.relid WHERE s.schemaname || '.' || s.relname = %s",
                          (table,)).fetchone()

    # (autovacuum kept off the table: the stage is what analyses it here)
    db.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    db.execute(f"ANALYZE {table}")  # (empty: the statistics of a base's first runs)
    file_id = db.execute(OTHER_FILE).fetchone()[0]
    db.execute(inflate, {"file": file_id, "rows": ROWS})
    db.commit()
    analysed, planner_rows = stats()
    assert planner_rows <= 0  # the planner believes the table empty
    ctx = RunContext(base_id="8862001", task_key="snapshot", dag_id="b2b__8862001__snapshot", run_id="r",
                     source="sims7", data_filter="snapshot", window_start=None,
                     window_end=datetime(2026, 10, 4, 17, tzinfo=UTC))
    _run(stage, db, ctx)
    assert stats() == (analysed + 1, ROWS)  # analysed by the stage: the planner knows its rows
    _run(stage, db, ctx)  # (and not again while it has not grown)
    assert stats() == (analysed + 1, ROWS)


def test_the_check_names_only_outgrown_tables_and_one_transaction_at_a_time_analyses(db, db_url):
    """The check's answer: the outgrown tables with their key columns, as one ANALYZE list, to
    the transaction that takes the try-lock; NULL to a concurrent one (it goes on unblocked)."""
    import psycopg

    from b2b.reconcile import stale_stats

    tables = stale_stats.growing("results.match", "core.child_link", "core.child_applied")
    db.execute("ANALYZE core.child_applied, core.child_link")
    linked_children(db, "9990001", 1500)
    db.commit()
    with psycopg.connect(db_url) as other:
        with other.transaction():
            assert stale_stats.check(other, tables).cursor.fetchone()[0] == \
                "core.child_link (base_id, student_guid, person_id, file_id)"
            # while that transaction holds the lock, another one is told to go on without analysing
            assert stale_stats.check(db, tables).analyse() is None
            db.rollback()
    with db.transaction():
        assert stale_stats.check(db, tables).analyse() == "core.child_link (base_id, student_guid, person_id, file_id)"
    db.execute("SELECT pg_stat_force_next_flush()")
    db.commit()
    with db.transaction():
        assert stale_stats.check(db, tables).analyse() is None  # (analysed: no longer outgrown)


def test_the_stages_after_match_wait_for_four_times_the_rows_the_match_stage_for_half_again(db):
    """Growth past the statistics: 1.5x for the match stage (its plans were seen to flip), 4x
    for the stages after it (fewer analyses while an LA's first snapshot fills the tables)."""
    from b2b.reconcile import stale_stats

    tables = stale_stats.growing("core.child_link")
    linked_children(db, "9990001", 1500)
    db.commit()
    db.execute("ANALYZE core.child_link")
    db.execute("""INSERT INTO core.child_link (base_id, student_guid, person_id, linked_by)
                  SELECT '9990002', student_guid, person_id, 'la' FROM core.child_link""")  # 2x the rows
    db.execute("SELECT pg_stat_force_next_flush()")
    db.commit()
    with db.transaction():
        assert stale_stats.check(db, tables).cursor.fetchone()[0] is None
        assert stale_stats.check(db, tables, growth=stale_stats.MATCH_GROWTH).cursor.fetchone()[0] == \
            "core.child_link (base_id, student_guid, person_id, file_id)"


def test_no_table_a_composite_foreign_key_references_is_analysed_by_the_check(db):
    """Statistics of such a table taken while every file is a common value made each foreign-key
    check of a new file's rows read the whole file (the load stage 6x slower in the stage bench
    once raw.inbound_block was analysed): the check never lists one (``stale_stats``)."""
    from b2b.reconcile import stale_stats

    referenced = {r[0] for r in db.execute(
        """SELECT confrelid::regclass::text FROM pg_constraint
            WHERE contype = 'f' AND cardinality(confkey) > 1""")}
    assert "raw.inbound_block" in referenced  # (the case that was seen)
    assert not referenced & set(stale_stats.KEY_COLUMNS)
