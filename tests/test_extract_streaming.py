"""Issue 15: the extract stage writes a big valid SIMS 7 message in chunks while it is parsed
(a worker thread parses, the connection's thread COPYs). What it stores must be exactly what
writing the whole message at once stores, and when the fast path gives up after chunks were
written (an invalid pupil late in the message, the wrong base), or the run fails, nothing of
those chunks may remain."""
from __future__ import annotations

import re
import threading
from datetime import UTC, datetime

import pytest

from b2b.ingest import extract
from b2b.ingest.extract import ReceivedMessage, RunContext, _Chunk, _Prepared, _prepared, _Start, store_messages
from tests.test_parse_identity import _simulator_messages

UNTIL = datetime(2026, 10, 5, 17, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def message() -> tuple[str, bytes]:
    return max(_simulator_messages(), key=lambda m: len(m[1]))


def _ctx(base: str, run: str = "r1") -> RunContext:
    return RunContext(base_id=base, task_key="snapshot", dag_id=f"b2b__{base}__snapshot__{run}", run_id=run,
                      source="sims7", data_filter="snapshot", window_start=None, window_end=UNTIL)


def _state(db, dag_id: str) -> tuple:
    files = db.execute("""SELECT seq, label, status, error, pupils, blocks, sha256, size_bytes FROM raw.inbound_file
                           WHERE dag_id = %s ORDER BY seq""", (dag_id,)).fetchall()
    blocks = db.execute("""SELECT b.ordinal, b.base_id, b.block_type, b.student_guid, b.content::text
                             FROM raw.inbound_block b JOIN raw.inbound_file f USING (file_id)
                            WHERE f.dag_id = %s ORDER BY f.seq, b.ordinal""", (dag_id,)).fetchall()
    rejected = db.execute("""SELECT r.ordinal, r.rule, r.field, r.detail, r.report FROM raw.rejected_block r
                              JOIN raw.inbound_file f USING (file_id) WHERE f.dag_id = %s
                              ORDER BY r.ordinal""", (dag_id,)).fetchall()
    logs = db.execute("""SELECT level, message, counts, file_id IS NULL FROM ops.task_log WHERE dag_id = %s
                          ORDER BY log_id""", (dag_id,)).fetchall()
    return files, blocks, rejected, logs


def _store_both_ways(db, monkeypatch, base: str, msgs: list[ReceivedMessage]) -> tuple[tuple, tuple]:
    """(state written whole, state written in chunks of 7 blocks) of the same messages."""
    monkeypatch.setattr(extract, "CHUNK_BLOCKS", 10 ** 9)
    whole_ctx = _ctx(base, "whole")
    store_messages(db, whole_ctx, msgs)
    monkeypatch.setattr(extract, "CHUNK_BLOCKS", 7)
    chunked_ctx = _ctx(base, "chunked")
    store_messages(db, chunked_ctx, msgs)
    return _state(db, whole_ctx.dag_id), _state(db, chunked_ctx.dag_id)


def test_a_big_message_comes_in_chunks_of_blocks_then_its_outcome(message, monkeypatch):
    dfe, content = message
    monkeypatch.setattr(extract, "CHUNK_BLOCKS", 50)
    first, start, *items = list(_prepared(_ctx(dfe), [ReceivedMessage("export", content, "application/xml")],
                                          True, "UTF8"))
    # the worker has the message (None), starts it on the fast path (its file row can be written now)
    assert first is None and isinstance(start, _Start) and start.msg.content == content
    *chunks, last = items
    assert len(chunks) >= 3 and all(isinstance(c, _Chunk) for c in chunks)
    assert isinstance(last, _Prepared) and last.streamed and last.body == b""
    lines = b"".join(c.body for c in chunks).splitlines()
    assert [int(line.split(b"\t")[1]) for line in lines] == list(range(1, len(last.blocks) + 1))


def test_chunked_writing_stores_what_writing_the_message_whole_stores(db, message, monkeypatch):
    dfe, content = message
    whole, chunked = _store_both_ways(db, monkeypatch, dfe, [ReceivedMessage("export", content, "application/xml")])
    assert chunked == whole
    files, blocks, _rejected, _logs = chunked
    assert files[0][2] == "parsed" and files[0][5] == len(blocks) > 100


def test_a_pupil_found_invalid_after_chunks_were_written_is_rejected_alone(db, message, monkeypatch):
    dfe, content = message
    # the LAST pupil's DOB is impossible: libxml2 finds it after most blocks were written
    i = content.rindex(b"<DOB>")
    bad = content[:i] + re.sub(rb"<DOB>[^<]*</DOB>", b"<DOB>1999-02-30</DOB>", content[i:], count=1)
    whole, chunked = _store_both_ways(db, monkeypatch, dfe, [ReceivedMessage("export", bad, "application/xml")])
    assert chunked == whole
    files, blocks, rejected, _logs = chunked
    assert files[0][2] == "parsed" and files[0][5] == len(blocks)
    assert [(r[1], r[2]) for r in rejected] == [("pupil_schema", "DOB")]
    assert rejected[0][0] == len(blocks)  # the anchor of the rejected pupil, after every kept block


def test_a_message_from_another_base_found_at_its_end_goes_to_suspense_without_blocks(db, message, monkeypatch):
    dfe, content = message
    other = "8869999" if dfe != "8869999" else "8869998"
    whole, chunked = _store_both_ways(db, monkeypatch, other, [ReceivedMessage("export", content, "application/xml")])
    assert chunked == whole
    files, blocks, _rejected, _logs = chunked
    assert files[0][2] == "suspense" and "expected " + other in files[0][3] and blocks == []


def test_a_failure_after_a_chunked_message_leaves_nothing_and_stops_the_worker(db, message, monkeypatch):
    dfe, content = message
    monkeypatch.setattr(extract, "CHUNK_BLOCKS", 7)

    def messages():
        yield ReceivedMessage("export", content, "application/xml")
        yield ReceivedMessage("export 2", content, "application/xml")
        raise ConnectionError("school went away")

    ctx = _ctx(dfe)
    with pytest.raises(ConnectionError):
        store_messages(db, ctx, messages())
    db.rollback()
    assert db.execute("SELECT count(*) FROM raw.inbound_file WHERE dag_id = %s", (ctx.dag_id,)).fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM raw.inbound_block").fetchone()[0] == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("extract-")]


def test_a_database_error_while_chunks_are_written_stops_the_worker_and_keeps_nothing(db, message, monkeypatch):
    dfe, content = message
    monkeypatch.setattr(extract, "CHUNK_BLOCKS", 7)
    ctx = _ctx(dfe)
    # the first chunk's COPY fails (a block type the table refuses) while the worker is still parsing
    monkeypatch.setattr(extract, "_copy_text", lambda v: "nonsense" if v == "student" else v)
    import psycopg

    with pytest.raises(psycopg.errors.CheckViolation):
        store_messages(db, ctx, [ReceivedMessage("export", content, "application/xml")])
    db.rollback()
    assert db.execute("SELECT count(*) FROM raw.inbound_file WHERE dag_id = %s", (ctx.dag_id,)).fetchone()[0] == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("extract-")]


def test_the_gil_changes_hands_often_while_the_worker_parses_and_the_interval_comes_back_after(
        db, message, monkeypatch):
    import sys

    dfe, content = message
    before = sys.getswitchinterval()
    seen: list[float] = []

    def messages():  # pulled in the connection's thread while the worker parses
        yield ReceivedMessage("export", content, "application/xml")
        seen.append(sys.getswitchinterval())
        yield ReceivedMessage("export 2", content, "application/xml")
        seen.append(sys.getswitchinterval())
        raise ConnectionError("school went away")

    with pytest.raises(ConnectionError):
        store_messages(db, _ctx(dfe), messages())
    db.rollback()
    assert seen == [extract.GIL_SWITCH_S] * 2 and sys.getswitchinterval() == before
    store_messages(db, _ctx(dfe, "r2"), [ReceivedMessage("export", content, "application/xml")])
    assert sys.getswitchinterval() == before


def test_the_cyclic_collector_is_paused_while_a_run_is_written_and_back_after_even_on_failure(db, message):
    import gc

    dfe, content = message
    seen: list[bool] = []

    def messages(fail: bool):
        seen.append(gc.isenabled())  # pulled in the connection's thread, inside the run
        yield ReceivedMessage("export", content, "application/xml")
        if fail:
            raise ConnectionError("school went away")

    store_messages(db, _ctx(dfe), messages(False))
    assert seen == [False] and gc.isenabled()
    with pytest.raises(ConnectionError):
        store_messages(db, _ctx(dfe, "r2"), messages(True))
    db.rollback()
    assert seen == [False, False] and gc.isenabled()


def test_messages_put_in_suspense_leave_no_garbage_cycles_while_the_collector_is_paused(db, message):
    """The collector is paused for the run: a failed message must not leave cycles holding its
    partial tree or its error (they would live until the run ends)."""
    import gc

    dfe, content = message
    broken = [ReceivedMessage(f"export {i}", content[: 5000 + 1000 * i], "application/xml") for i in range(3)]
    gc.collect()
    summary = store_messages(db, _ctx(dfe), broken)
    assert summary.failed == 3
    assert gc.collect() == 0  # nothing unreachable was left behind
