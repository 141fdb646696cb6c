"""The warehouse dies in the middle of a stage (``pg_ctl stop -m immediate``), comes back, and
the stage is retried: the tables end as if nothing had happened (issue 9: nothing lost,
nothing doubled). A server of its own, so the other tests' server is never touched."""
import threading
import time

import psycopg
import pytest

from b2b import db as b2bdb
from b2b import pipeline
from b2b.config.settings import Settings
from b2b.ingest.extract import store_messages
from tests.test_chain import ADDR, DAY1, JOE, ctx, page

LEGACY = Settings(matcher="legacy")
TABLES = {
    "staging": "SELECT student_guid, upn, forename, dob FROM staging.student ORDER BY 1",
    "address": "SELECT student_guid, postcode FROM staging.address ORDER BY 1",
    "cache": "SELECT student_guid, block_type, hash, committed FROM ops.hash_cache ORDER BY 1, 2",
    "blocks": "SELECT student_guid, block_type, disposition FROM raw.inbound_block ORDER BY 1, 2",
    "files": "SELECT label, status FROM raw.inbound_file ORDER BY 1",
    "match": "SELECT student_guid, person_id, status FROM results.match ORDER BY 1",
    "conflict": "SELECT person_id, field, la_value, incoming_value, times_seen FROM results.conflict ORDER BY 1, 2",
    "log": "SELECT stage, level, counts FROM ops.task_log WHERE file_id IS NULL AND stage <> 'load' ORDER BY stage",
}
CORE = """INSERT INTO core.child (person_id, upn, forename, surname, gender, dob, paon, street, postcode)
          VALUES ('P1', 'F886200326001', 'Joseph', 'Bloggs', 'M', '2016-01-26', '1', 'Green Abbey Road', 'CT1 9ZZ')"""


@pytest.fixture
def own_server(tmp_path):
    import pgserver

    pgdata = tmp_path / "pgdata"
    url = b2bdb.embedded_url(pgdata)
    server = pgserver.get_server(str(pgdata), cleanup_mode=None)
    yield server, url
    b2bdb.stop_embedded(pgdata)


def _fresh(url: str, name: str) -> str:
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    out = make_conninfo(url, dbname=name)
    with psycopg.connect(out, autocommit=True) as conn:
        b2bdb.upgrade(conn)
        conn.execute(CORE)
    return out


def _before_load(conn) -> None:
    c = ctx()
    store_messages(conn, c, [page("student", [("g-joe", JOE)]), page("address", [("g-joe", ADDR)])])
    pipeline.hash_filter(conn, c, LEGACY)
    pipeline.validate(conn, c, "/tmp/b2b-test-reports")


def _after_load(conn) -> dict:
    c = ctx()
    pipeline.match(conn, c, LEGACY)
    pipeline.conflicts(conn, c)
    pipeline.apply(conn, c)
    pipeline.commit(conn, c)
    return {k: conn.execute(q).fetchall() for k, q in TABLES.items()}


def test_the_server_killed_in_the_middle_of_load_then_restarted_and_retried_loses_and_doubles_nothing(own_server):
    from pgserver._commands import pg_ctl

    server, url = own_server
    clean_url, crash_url = _fresh(url, "clean_run"), _fresh(url, "crashed_run")
    with psycopg.connect(clean_url, autocommit=True) as conn:
        _before_load(conn)
        pipeline.load(conn, ctx())
        clean = _after_load(conn)

    with psycopg.connect(crash_url, autocommit=True) as conn:
        _before_load(conn)
    # hold the run's file rows, so the load stops inside its transaction just before its last
    # write (every staging row and cache entry already inserted), then kill the server there
    holder = psycopg.connect(crash_url)
    holder.execute("SELECT 1 FROM raw.inbound_file FOR UPDATE")
    failure: list[BaseException] = []

    def load() -> None:
        try:
            with psycopg.connect(crash_url, autocommit=True) as conn:
                pipeline.load(conn, ctx())
        except BaseException as exc:  # noqa: BLE001 - the crash is what we wait for
            failure.append(exc)

    worker = threading.Thread(target=load)
    worker.start()
    with psycopg.connect(crash_url, autocommit=True) as watch:
        deadline = time.monotonic() + 120  # a busy CI machine can take a while to get there
        while time.monotonic() < deadline:
            waiting = watch.execute("""SELECT count(*) FROM pg_stat_activity
                                        WHERE wait_event_type = 'Lock' AND query LIKE 'UPDATE raw.inbound_file%%'"""
                                    ).fetchone()[0]
            if waiting:
                break
            time.sleep(0.05)
        assert waiting, "the load never reached its last write"
    pg_ctl(["stop", "-m", "immediate", "-w"], pgdata=server.pgdata, user=server.system_user)
    worker.join(timeout=30)
    assert failure and isinstance(failure[0], psycopg.OperationalError)
    try:
        holder.close()
    except psycopg.Error:
        pass

    _restart(server, crash_url)  # crash recovery: the half-done load transaction is gone
    with psycopg.connect(crash_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM staging.student").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM ops.hash_cache").fetchone()[0] == 0
        pipeline.load(conn, ctx())  # the retry
        pipeline.load(conn, ctx())  # and a second retry of a stage that had succeeded
        crashed = _after_load(conn)
    assert crashed == clean
    assert crashed["conflict"] == [("P1", "forename", "Joseph", "Joe", 1), ("P1", "postcode", "CT1 9ZZ", "CT1 2AB", 1)]


def _restart(server, url: str, seconds: float = 180) -> None:
    """Start the killed server and wait until it accepts connections. Crash recovery ends with
    a checkpoint, which on a busy machine outlasts pgserver's 10-second ``pg_ctl`` wait (the
    postmaster goes on recovering): wait for it rather than fail."""
    import subprocess

    deadline = time.monotonic() + seconds
    while True:
        try:
            server.ensure_postgres_running()
            with psycopg.connect(url, connect_timeout=10):
                return
        except (subprocess.TimeoutExpired, psycopg.OperationalError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
