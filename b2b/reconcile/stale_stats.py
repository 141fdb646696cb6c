"""The run tables' outgrown statistics, analysed by the stages that read them (issue 15).

An LA's first snapshot fills the run tables (``staging.*``, ``results.*``, the ``core`` rows
derived per run) far faster than autovacuum analyses them: statements planned on statistics
taken when a table was nearly empty (one file, one base) turned key probes into scans of the
whole table per record (the match stage's GUID guard's self-join of ``results.match``
0.2-0.35 s a school run at 50 schools, growing every run; the carers' read joined to
``core.child_link`` and ``staging.contact`` up to 7 s). So each stage from load on (load for
its attendance statements; match, conflicts, apply, contacts) sends, in its first round trip,
:func:`check` of the run tables its heavy statements join, and analyses
(:meth:`Outgrown.analyse`) those the planner no longer knows, before those statements.

A table is outgrown when it holds more rows (and at least 1,000) than :data:`GROWTH` times
what the planner believes (``pg_class.reltuples``, -1 when never analysed; an analysis of
some columns sets it, though it leaves ``n_mod_since_analyze`` as it was, so that counter
cannot be the test): four times for the stages after match, whose plans were not seen to flip
(at half again their analyses cost ~7 ms a school run at 200 schools); half again for the
match stage, whose statements were (:data:`MATCH_GROWTH`). Only the key and join columns
(:data:`KEY_COLUMNS`) are analysed: the row count and their statistics are what the plans
need; wide columns (explanations, a block's content, the staging tables' values) would make
each analysis several times dearer (up to 1 s).

One transaction at a time analyses (a try-lock: the others go on with the statistics there
are, never queueing). Every stage takes the same lock (:data:`LOCK`): an ``ANALYZE`` inside a
transaction holds its table's lock until the transaction ends, so two stages analysing the
same table at once (``results.match`` is read by match, conflicts and apply) would queue on
each other. An analysis changes plans only, never what a statement writes.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg import Connection

#: every transaction that analyses outgrown run tables holds this try-lock (see the module doc)
LOCK = "b2b.analyse_outgrown"
#: outgrown: more rows than this many times what the planner believes (and at least 1,000);
#: a table is analysed ~5 times while an LA's first snapshot fills it from 1,000 to 250k rows
GROWTH = 4.0
#: the match stage's (its GUID guard and carers' reads were seen to flip on stale statistics):
#: ~14 analyses over the same growth
MATCH_GROWTH = 1.5

#: the run tables an LA's first snapshot outgrows, and the columns their readers probe, join
#: or filter on (what is analysed)
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "results.match": ("file_id", "base_id", "student_guid", "person_id", "status", "rule", "window_order"),
    "core.child_link": ("base_id", "student_guid", "person_id", "file_id"),
    "staging.student": ("file_id", "base_id", "student_guid"),
    "staging.address": ("file_id", "base_id", "student_guid"),
    "staging.attendance": ("file_id", "base_id", "student_guid"),
    "results.conflict_observation": ("file_id", "base_id", "student_guid", "person_id", "field"),
    "raw.inbound_file": ("file_id", "base_id", "dag_id", "status", "window_order"),
    "core.child_applied": ("file_id", "person_id", "window_order"),
    "core.child_applied_address": ("file_id", "person_id", "window_order"),
    "core.child_sen": ("file_id", "person_id", "window_order"),
    "core.child_exclusion": ("file_id", "person_id", "window_order"),
    "core.attendance_marks": ("file_id", "base_id", "student_guid", "academic_year", "window_order"),
    "core.contact_link": ("base_id", "person_id", "student_guid"),
}


#: (Not listed, and so never analysed here: the tables a composite foreign key references,
#: ``raw.inbound_block`` (file_id, ordinal) from staging and the hash cache, ``core.contact``
#: (base_id, person_id) from its links. Statistics taken while every file (base) is one of the
#: common values estimate a new file's rows at one, and each foreign-key check of a row of it
#: then probed the (file_id, block_type) index and filtered on ordinal, reading the whole file:
#: the load stage 6x slower in the stage bench after raw.inbound_block was analysed. Autovacuum
#: analyses it too, so migration 0048 leads that index with block_type, 0049 leads
#: core.contact's username index with the username, and the checks keep the primary keys
#: (tests/test_foreign_key_plans.py). An analysis here would still buy nothing: the
#: load's and apply's statements read the run's blocks by (block_type, file_id)
#: whatever the statistics, and contacts reads a student's latest blocks by index probes,
#: written so that their plans do not depend on statistics.)


def growing(*tables: str) -> dict[str, str]:
    """A stage's map of run tables to the column list analysed (``"(a, b)"``), from :data:`KEY_COLUMNS`."""
    return {t: "(" + ", ".join(KEY_COLUMNS[t]) + ")" for t in tables}


#: the outgrown tables of a map (names, column lists) as one ``ANALYZE`` list, when this
#: transaction is the one to analyse them (the try-lock); NULL otherwise. (The live-row count
#: of ``pg_stat_user_tables.n_live_tup``, read for the listed tables only: the view reads every
#: table's counters and takes ~0.4 ms to plan; this, ~0.2 ms to plan and run.)
STALE_STATISTICS = """SELECT CASE WHEN count(*) > 0 AND pg_try_advisory_xact_lock(hashtext(%s))
                              THEN string_agg(t.name || ' ' || t.cols, ', ') END
                         FROM unnest(%s::text[], %s::text[]) AS t(name, cols)
                         JOIN pg_class c ON c.oid = to_regclass(t.name)
                        WHERE pg_stat_get_live_tuples(c.oid) > greatest(1000, %s * c.reltuples)"""


class Outgrown:
    """The check of one map of run tables, sent (:func:`check`), and its analysis."""

    def __init__(self, conn: Connection, cursor: Any) -> None:
        self.conn, self.cursor = conn, cursor

    def analyse(self) -> str | None:
        """Analyse the outgrown tables' key columns (reads the check's answer: call it once the
        check's round trip is done, before the statements it is for). The ``ANALYZE`` list, or
        None when none are outgrown or another transaction is analysing."""
        row = self.cursor.fetchone()
        outgrown = row[0] if row else None
        if outgrown:
            self.conn.execute(f"ANALYZE {outgrown}")
        return outgrown


def check(conn: Connection, tables: Mapping[str, str], growth: float = GROWTH) -> Outgrown:
    """Send the check of ``tables`` (:func:`growing`) on ``conn`` and return it unread: in a
    pipeline it goes out with the stage's next statement whose result is read (no round trip of
    its own; ~0.2 ms of the server's time)."""
    return Outgrown(conn, conn.execute(STALE_STATISTICS, (LOCK, list(tables), list(tables.values()), growth)))
