"""A school run of a few students sends the match stage's statements in pipelines and writes its
few decisions by one INSERT of array literals instead of COPY (``match_stage._write_rows``,
issue 15): the same rows as COPY writes, and a run replayed writes exactly what it wrote,
nothing lost or doubled. (The tests raise ``SMALL_WRITE_ROWS`` so that whole schools take that
path.)"""
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from b2b.reconcile import match_stage
from tests.support import load_bench_dataset, school_with_la_adults

ROOT = Path(__file__).resolve().parent.parent


def _a_file(db) -> int:
    return db.execute(
        """INSERT INTO raw.inbound_file (base_id, task_key, dag_id, run_id, window_end, window_order, seq, source,
                                         data_filter, label, content_type, size_bytes, sha256, status)
           VALUES ('8862001', 'changed_data', 'b2b__8862001__changed_data', 'r', now(), 'w', 1, 'sims7',
                   'changed_data', 'export', 'application/xml', 0, '-', 'loaded') RETURNING file_id""").fetchone()[0]


TRICKY = ["", "NULL", "null", '"', "\\", '\\"', "{a,b}", " padded ", "O'Brien", "Ǆé ∅", "x" * 300, "a\tb", "a\nb"]


def test_a_few_rows_are_inserted_exactly_as_copy_writes_them(db, monkeypatch):
    fid = _a_file(db)
    scores = [None, 0.0, 23.45, -3.5, 12.345678901234567, 1e-7, 99999.99, 20.0, 7.1, 1 / 3, 2.0 ** 40, 0.1 + 0.2,
              5e-324]
    expl = ['{"candidates": 0}', '{"a": "quote \\" backslash \\\\ tab \\t"}', '{"u": "\\u00e9∅"}', "{}",
            '{"n": 1.50, "list": [1, 2.0, "x"]}']
    match_rows = [(fid, "8862001", f"g{k}{t}", None if k % 3 else t, ("matched", "possible", "unmatched")[k % 3],
                   "weights", scores[k % len(scores)], bool(k % 2), None if k % 4 == 0 else k, "w|dag",
                   expl[k % len(expl)]) for k, t in enumerate(TRICKY)]
    carer_rows = [(fid, "8862001", f"c{k}{t}", f"g{k}", None if k % 2 else f"P{k}", None if k % 2 else "adult",
                   "unmatched", "none", scores[k % len(scores)], expl[k % len(expl)]) for k, t in enumerate(TRICKY)]

    def written():
        return (db.execute("""SELECT file_id, base_id, student_guid, person_id, status, rule, score, hidden, age_years,
                                     window_order, explanation, score::text, explanation::text
                                FROM results.match ORDER BY student_guid""").fetchall(),
                db.execute("""SELECT file_id, base_id, contact_id, student_guid, person_id, person_kind, status, rule,
                                     score, explanation, score::text FROM results.carer_match
                               ORDER BY contact_id""").fetchall())

    monkeypatch.setattr(match_stage, "SMALL_WRITE_ROWS", 1_000)  # (every row by INSERT)
    with db.transaction():
        with db.pipeline():  # (as the stage sends them)
            match_stage._write_rows(db, "results.match", match_stage._MATCH_COLUMNS, match_rows)
            match_stage._write_rows(db, "results.carer_match", match_stage._CARER_MATCH_COLUMNS, carer_rows)
        inserted = written()
        db.execute("DELETE FROM results.match; DELETE FROM results.carer_match")
        monkeypatch.setattr(match_stage, "SMALL_WRITE_ROWS", 0)  # (every row by COPY)
        match_stage._write_rows(db, "results.match", match_stage._MATCH_COLUMNS, match_rows)
        match_stage._write_rows(db, "results.carer_match", match_stage._CARER_MATCH_COLUMNS, carer_rows)
        copied = written()
    assert len(inserted[0]) == len(inserted[1]) == len(TRICKY)
    assert inserted == copied


@pytest.fixture(scope="module")
def dataset():
    from simulator.matching_data import match_dataset

    return match_dataset(300, 300, seed=9, schools=1)


def _run(url, dag_id):
    import psycopg

    from b2b.config.settings import Settings
    from b2b.context import RunContext

    end = datetime(2026, 10, 5, 17, tzinfo=UTC)
    ctx = RunContext(base_id="bench", task_key="snapshot", dag_id=dag_id, run_id="bench", source="sims7",
                     data_filter="snapshot", window_start=None, window_end=end)
    with psycopg.connect(url, autocommit=True) as conn:
        counts = match_stage.match(conn, ctx, Settings())
        rows = conn.execute(
            """SELECT file_id, base_id, student_guid, person_id, status, rule, score, hidden, age_years, window_order,
                      explanation FROM results.match ORDER BY file_id, student_guid""").fetchall()
        links = conn.execute("SELECT base_id, student_guid, person_id, linked_by, file_id FROM core.child_link "
                             "ORDER BY base_id, student_guid").fetchall()
        logged = conn.execute("SELECT count(*) FROM ops.task_log WHERE dag_id = %s AND stage = 'match'",
                              (dag_id,)).fetchone()[0]
    return counts, rows, links, logged


def test_a_school_run_replayed_writes_what_it_wrote_and_as_the_copy_path_writes_it(db_url, dataset, monkeypatch):
    """The pipelined run (decisions INSERTed with the guards, links and counts in one round
    trip) writes the same decisions, links and log row as the run whose every write is a COPY
    and every statement its own round trip; run again, it writes them again, once."""
    core, inc, _, _ = dataset
    dag_id = load_bench_dataset(core, inc, db_url)
    # (a run of a few students is pipelined: here every run, whatever its size)
    monkeypatch.setattr(match_stage, "SMALL_WRITE_ROWS", 1_000)
    first = _run(db_url, dag_id)
    again = _run(db_url, dag_id)
    assert first[0]["students"] == len(inc) == len(first[1]) and first[0]["matched"] > 0 and first[2]
    assert again == first and first[3] == 1
    monkeypatch.setattr(match_stage, "SMALL_WRITE_ROWS", 0)
    monkeypatch.setattr(match_stage, "SMALL_RUN_STUDENTS", 0)  # (temporary tables, COPY, no stage pipeline)
    assert _run(db_url, dag_id) == first


def test_a_school_runs_carers_decide_and_write_the_same_from_rows_as_from_frames(db, db_url, tmp_path, monkeypatch):
    """The carers of a school run are read as rows, and a frame is built only for the contacts
    that have a candidate (``CarerReads``, ``_Columns``): the run writes the very carer rows it
    writes when every contact is a frame, and again the same, once, when it is replayed."""
    import psycopg

    from b2b.config.settings import Settings
    from b2b.context import RunContext
    monkeypatch.setenv("B2B_HOME", str(tmp_path))
    school_with_la_adults(db, tmp_path)
    db.commit()
    dag_id, base_id, start, end = db.execute(
        "SELECT dag_id, base_id, window_start, window_end FROM raw.inbound_file ORDER BY file_id DESC LIMIT 1").fetchone()
    ctx = RunContext(base_id=base_id, task_key="snapshot", dag_id=dag_id, run_id="again", source="sims7",
                     data_filter="snapshot", window_start=start, window_end=end)

    monkeypatch.setattr(match_stage, "SMALL_WRITE_ROWS", 1_000)  # (the pipelined run: INSERTs)

    def run():
        with psycopg.connect(db_url, autocommit=True) as conn:
            counts = match_stage.match(conn, ctx, Settings())
            return counts["carers"], conn.execute(
                """SELECT file_id, base_id, contact_id, student_guid, person_id, person_kind, status, rule, score,
                          explanation FROM results.carer_match ORDER BY file_id, contact_id""").fetchall()

    rows_first = run()
    assert rows_first == run()  # (replayed: the same rows, once)
    carers, written = rows_first
    assert carers["contacts"] == len(written) > 0 and carers["matched"] > 0
    assert any(r[6] == "unmatched" and r[7] == "none" for r in written)  # (contacts without a candidate too)
    reads = match_stage.CarerReads

    class FromFrames(reads):
        def __init__(self, conn, contacts, *a, **k):
            import pandas as pd

            super().__init__(conn, pd.DataFrame(contacts, columns=match_stage._contact_columns()), *a, **k)

    monkeypatch.setattr(match_stage, "CarerReads", FromFrames)
    assert run() == rows_first
    monkeypatch.setattr(match_stage, "SMALL_WRITE_ROWS", 0)  # (and as COPY writes them, no pipelines)
    assert run() == rows_first
