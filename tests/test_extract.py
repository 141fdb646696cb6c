"""The extract stage against real PostgreSQL: store, parse, log; reruns replace; failures are atomic."""
from datetime import UTC, datetime, timezone

import pytest

from b2b.ingest.extract import ReceivedMessage, RunContext, store_messages
from tests.test_messages import GOOD, _page

END = datetime(2026, 10, 5, 17, 0, tzinfo=UTC)
START = datetime(2026, 10, 4, 17, 0, tzinfo=UTC)


def ctx(source="sims7", run_id="r1", **kw):
    base = dict(base_id="8862001", task_key="changed_data", dag_id="b2b__8862001__changed_data", run_id=run_id,
                source=source, data_filter="changed_data", window_start=START, window_end=END)
    base.update(kw)
    return RunContext(**base)


def xml(content=GOOD):
    return ReceivedMessage("export", content, "application/xml")


def table_state(db):
    files = db.execute("""SELECT base_id, seq, label, status, pupils, blocks, sha256, error
                          FROM raw.inbound_file ORDER BY seq""").fetchall()
    blocks = db.execute("""SELECT b.ordinal, b.block_type, b.student_guid, b.content
                           FROM raw.inbound_block b ORDER BY b.ordinal""").fetchall()
    logs = db.execute("SELECT stage, level, message, counts - 'bytes' FROM ops.task_log ORDER BY log_id").fetchall()
    return files, blocks, logs


def test_stores_file_blocks_and_task_log(db):
    s = store_messages(db, ctx(), [xml()], validate=False)
    assert (s.files, s.failed, s.pupils, s.blocks) == (1, 0, 2, 5)
    files, blocks, logs = table_state(db)
    assert files[0][:6] == ("8862001", 1, "export", "parsed", 2, 5)
    assert [b[1] for b in blocks] == ["student", "address", "contacts", "sen", "attendance"]
    assert blocks[0][3]["upn"] == "A886200126001"
    payload = db.execute("SELECT payload FROM raw.inbound_file").fetchone()[0]
    assert bytes(payload) == GOOD
    assert [(l[0], l[1]) for l in logs] == [("extract", "info"), ("extract", "info")]
    assert logs[-1][3]["blocks"] == 5 and logs[-1][3]["files"] == 1
    # logs carry counts and ids, never names
    assert all("Bloggs" not in l[2] and "Joe" not in l[2] for l in logs)


def test_rerun_of_same_window_replaces_not_doubles(db):
    store_messages(db, ctx(run_id="first"), [xml()], validate=False)
    first = table_state(db)
    store_messages(db, ctx(run_id="second"), [xml()], validate=False)
    assert table_state(db) == first
    assert db.execute("SELECT count(*) FROM raw.inbound_file").fetchone()[0] == 1
    # a different window is kept alongside
    store_messages(db, ctx(window_start=END, window_end=END.replace(day=6)), [xml()], validate=False)
    assert db.execute("SELECT count(*) FROM raw.inbound_file").fetchone()[0] == 2


def test_bad_file_goes_to_suspense_without_blocks(db):
    good_page = ReceivedMessage("sen p1/2", _page(), "application/json", group="sen")
    bad_page = ReceivedMessage("sen p2/2", b"{broken", "application/json", group="sen")
    s = store_messages(db, ctx(source="sims_primary", base_id="8862003"), [good_page, bad_page])
    assert (s.files, s.failed, s.blocks) == (2, 1, 1)
    rows = db.execute("SELECT seq, status, error FROM raw.inbound_file ORDER BY seq").fetchall()
    assert rows[0][1] == "parsed" and rows[1][1] == "suspense" and "not valid JSON" in rows[1][2]
    assert db.execute("""SELECT count(*) FROM raw.inbound_block b JOIN raw.inbound_file f USING (file_id)
                         WHERE f.seq = 2""").fetchone()[0] == 0
    levels = [r[0] for r in db.execute("SELECT level FROM ops.task_log ORDER BY log_id")]
    assert levels == ["info", "error", "error"]


def test_failure_mid_run_leaves_nothing(db):
    def messages():
        yield ReceivedMessage("sen p1/2", _page(), "application/json", group="sen")
        raise ConnectionError("school went away")

    with pytest.raises(ConnectionError):
        store_messages(db, ctx(source="sims_primary"), messages())
    db.rollback()
    assert db.execute("SELECT count(*) FROM raw.inbound_file").fetchone()[0] == 0
    # F9: the failure itself is recorded, outside the rolled-back transaction (one row, no data)
    rows = db.execute("SELECT level, file_id, message FROM ops.task_log").fetchall()
    assert rows == [("error", None, "extract failed: ConnectionError: unexpected ConnectionError")]


def test_failed_rerun_keeps_previous_attempt(db):
    store_messages(db, ctx(source="sims_primary"), [ReceivedMessage("sen p1/1", _page(), "application/json", "sen")])

    def broken():
        raise TimeoutError("timed out")
        yield  # pragma: no cover

    with pytest.raises(TimeoutError):
        store_messages(db, ctx(source="sims_primary", run_id="retry"), broken())
    db.rollback()
    assert db.execute("SELECT run_id, status FROM raw.inbound_file").fetchall() == [("r1", "parsed")]


def test_attainment_message_over_2mb_is_refused_and_kept_in_suspense(db):
    from b2b.ingest.extract import ATTAINMENT_MAX_BYTES

    pad = b"<!-- " + b"x" * (ATTAINMENT_MAX_BYTES + 10) + b" -->"
    big = GOOD.replace(b"</B2BMessage>", pad + b"</B2BMessage>")
    c = ctx(data_filter="attainment")
    s = store_messages(db, c, [ReceivedMessage("export", big, "application/xml")], validate=False)
    assert (s.files, s.failed, s.blocks) == (1, 1, 0)
    status, error, size, kept = db.execute(
        "SELECT status, error, size_bytes, payload IS NOT NULL FROM raw.inbound_file").fetchone()
    assert status == "suspense" and "over the 2 MB limit (F19)" in error and size > ATTAINMENT_MAX_BYTES and kept
    assert db.execute("SELECT count(*) FROM raw.inbound_block").fetchone()[0] == 0
    log = db.execute("SELECT level, message FROM ops.task_log WHERE file_id IS NOT NULL").fetchall()
    assert log and log[0][0] == "error" and "2 MB" in log[0][1]
    # the same size is fine for a snapshot
    s = store_messages(db, ctx(data_filter="snapshot", run_id="r2"), [ReceivedMessage("export", big,
                                                                                      "application/xml")],
                       validate=False)
    assert s.failed == 0 and s.blocks > 0
