"""F41 least privilege: each role logs in with its password and can do exactly its job.

The roles come from migration 0015; ``b2b.db.ensure_roles`` gives them passwords (stored
0600 under B2B_HOME) and, on the embedded server, requires password authentication for them.
"""
from __future__ import annotations

import os

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from b2b import db as b2bdb
from b2b.ops import officer
from tests.conftest import TEST_HOME
from tests.test_chain import BASE, DAY1, page, run_chain
from tests.test_officer import AMY, WEIGHTS

EMBEDDED = not os.environ.get("B2B_TEST_DATABASE_URL")
DENIED = psycopg.errors.InsufficientPrivilege


@pytest.fixture
def roles(db_url, tmp_path):
    with psycopg.connect(db_url, autocommit=True) as admin:
        assert b2bdb.ensure_roles(admin, home=tmp_path, pgdata=TEST_HOME / "pgdata" if EMBEDDED else None) \
            == list(b2bdb.ROLES)
    passwords = b2bdb.role_passwords(tmp_path)

    def connect(role: str, password: str | None = None, **kw):
        return psycopg.connect(make_conninfo(db_url, user=role, password=password or passwords[role]), **kw)

    return connect


@pytest.fixture
def lists(db, roles):
    """A Possible match waiting for an officer (as in tests/test_officer.py)."""
    db.execute("""INSERT INTO core.child (person_id, forename, surname, gender, dob, postcode)
                  VALUES ('P1', 'Amy', 'Twist', 'F', '2016-05-05', 'CT1 2AB'),
                         ('P2', 'Amy', 'Twist', 'F', '2016-05-05', 'ME4 1AA')""")
    db.commit()
    from tests.test_chain import ctx

    run_chain(db, ctx(DAY1), [page("student", [("g-amy", AMY)])], WEIGHTS)
    db.commit()
    return roles


def test_passwords_are_generated_once_and_stored_private(tmp_path):
    first = b2bdb.role_passwords(tmp_path)
    assert set(first) == set(b2bdb.ROLES) and len(set(first.values())) == 4
    assert b2bdb.role_passwords(tmp_path) == first
    path = b2bdb.roles_file(tmp_path)
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700


@pytest.mark.skipif(not EMBEDDED, reason="pg_hba.conf of the embedded server")
def test_roles_need_their_password(roles):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        roles("b2b_analyst", "wrong")
    with roles("b2b_analyst") as conn:
        assert conn.execute("SELECT session_user").fetchone() == ("b2b_analyst",)


def test_no_role_is_a_superuser_and_the_pipeline_owns_the_schemas(db, roles):
    assert db.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'b2b\\_%%' AND rolsuper").fetchone() == (0,)
    owners = dict(db.execute("""SELECT nspname, pg_get_userbyid(nspowner) FROM pg_namespace
                                 WHERE nspname IN ('raw', 'staging', 'core', 'results', 'ops')""").fetchall())
    assert set(owners.values()) == {"b2b_pipeline"}
    foreign = db.execute("""SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                             WHERE n.nspname IN ('raw', 'staging', 'core', 'results', 'ops')
                               AND c.relkind IN ('r', 'v') AND pg_get_userbyid(c.relowner) <> 'b2b_pipeline'""")
    assert foreign.fetchone() == (0,)


def test_pipeline_runs_the_chain_without_superuser(db, roles):
    from tests.test_chain import ctx

    with roles("b2b_pipeline") as conn:
        assert b2bdb.upgrade(conn) == []
        conn.execute("INSERT INTO core.child (person_id, forename, surname, gender, dob) "
                     "VALUES ('P7', 'Amy', 'Twist', 'F', '2016-05-05')")
        run_chain(conn, ctx(DAY1), [page("student", [("g-amy", AMY)])], WEIGHTS)
        conn.commit()
    assert db.execute("SELECT person_id FROM results.current_match WHERE student_guid = 'g-amy'").fetchone() \
        == ("P7",)


def test_pipeline_loads_la_records_imports_by_hand_and_enforces_retention(db, roles, tmp_path):
    from datetime import UTC, datetime, timedelta

    from b2b.config.settings import Settings
    from b2b.ingest.manual import ingest_file
    from b2b.ops.core_load import load_children_file, load_gazetteer_file
    from b2b.ops.maintenance import enforce_retention
    from tests.test_la_ready import CHILD_HEADER, children, write_csv

    with roles("b2b_pipeline", autocommit=True) as conn:
        assert load_children_file(conn, write_csv(tmp_path / "c.csv", CHILD_HEADER, children()))["new"] == 3
        assert load_gazetteer_file(conn, write_csv(tmp_path / "g.csv", ["uprn", "postcode"],
                                                   [["1", "CT1 2AB"]]))["addresses"] == 1
        (tmp_path / "bad.xml").write_bytes(b"<x")
        assert ingest_file(conn, tmp_path / "bad.xml", "8862001", report_dir=tmp_path)["status"] == "suspense"
        counts = enforce_retention(conn, Settings(), now=datetime.now(UTC) + timedelta(days=400), home=tmp_path)
        assert counts["payloads"] == 1
        assert counts["child_change_rows"] >= 1  # the pipeline's own login prunes core.child's noted changes
    assert db.execute("SELECT loaded_by FROM core.load_run ORDER BY load_id").fetchall() == [
        ("b2b_pipeline",), ("b2b_pipeline",)]


def test_analyst_reads_core_and_results_but_no_raw_data_and_writes_nothing(lists):
    with lists("b2b_analyst", autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM core.child").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM results.possible_match").fetchone()[0] >= 1
        conn.execute("SELECT count(*) FROM ops.run_summary").fetchone()
        for query in ("SELECT payload FROM raw.inbound_file", "SELECT file_id FROM raw.inbound_file",
                      "SELECT content FROM raw.inbound_block", "SELECT * FROM staging.student",
                      "SELECT * FROM ops.hash_cache", "SELECT * FROM ops.la_setting",
                      "INSERT INTO core.child (person_id) VALUES ('X')", "UPDATE core.child SET forename = 'x'",
                      "DELETE FROM results.match", "INSERT INTO results.match_decision (base_id, student_guid, "
                      "person_id, decision, decided_by) VALUES ('1', 'g', 'P1', 'link', 'me')",
                      "SELECT results.officer_link('8862003', 'g-amy', 'P1')",
                      "CREATE TABLE core.mine (x int)"):
            with pytest.raises(DENIED):
                conn.execute(query)


def test_officer_acts_only_through_the_functions_which_record_the_login(db, lists):
    with lists("b2b_officer", autocommit=True) as conn:
        for query in ("UPDATE results.match SET status = 'matched'", "DELETE FROM core.child_link",
                      "INSERT INTO results.match_decision (base_id, student_guid, person_id, decision, decided_by) "
                      "VALUES ('1', 'g', 'P1', 'link', 'someone else')", "SELECT payload FROM raw.inbound_file",
                      "SELECT content FROM raw.inbound_block"):
            with pytest.raises(DENIED):
                conn.execute(query)
        assert officer.candidates(conn, BASE, "g-amy")  # reads the lists and the school record
        with pytest.raises(officer.OfficerError, match="only the review screens"):
            officer.confirm(conn, BASE, "g-amy", "P2", "a name I typed")
        assert officer.confirm(conn, BASE, "g-amy", "P2") == "b2b_officer"
    assert db.execute("SELECT decision, person_id, decided_by FROM results.match_decision").fetchall() == [
        ("confirm", "P2", "b2b_officer")]


def test_ui_login_records_the_web_user_it_acts_for(db, lists):
    with lists("b2b_ui", autocommit=True) as conn:
        assert officer.reject(conn, BASE, "g-amy", "P1", "jane.smith@la.example") == "jane.smith@la.example via b2b_ui"
        with pytest.raises(officer.OfficerError, match="printable"):
            officer.reject(conn, BASE, "g-amy", "P2", "bad\nname")
    assert db.execute("SELECT decided_by FROM results.match_decision").fetchall() == [
        ("jane.smith@la.example via b2b_ui",)]


@pytest.mark.skipif(not EMBEDDED, reason="pg_hba.conf of the embedded server")
def test_a_staff_members_own_login_in_the_officer_role_is_recorded_by_name(db, db_url, lists):
    admin = psycopg.connect(db_url, autocommit=True)
    admin.execute("DROP ROLE IF EXISTS test_alice")
    admin.execute("CREATE ROLE test_alice LOGIN PASSWORD 'alice-pw-1' IN ROLE b2b_officer")
    try:
        with psycopg.connect(make_conninfo(db_url, user="test_alice", password="alice-pw-1"),
                             autocommit=True) as conn:
            pid = officer.new_child(conn, BASE, "g-amy")
        assert db.execute("SELECT decided_by FROM results.match_decision WHERE person_id = %s",
                          (pid,)).fetchone() == ("test_alice",)
    finally:
        admin.execute("DROP ROLE test_alice")
        admin.close()


def test_cli_officer_commands_record_the_login_not_a_typed_name(db, db_url, lists, tmp_path, monkeypatch, capsys):
    from b2b.cli.main import main

    monkeypatch.setenv("B2B_DATABASE_URL", make_conninfo(db_url, user="b2b_officer",
                                                         password=b2bdb.role_passwords(tmp_path)["b2b_officer"]))
    assert main(["officer", "confirm", BASE, "g-amy", "P1", "--note", "same child"]) == 0
    assert "recorded as b2b_officer" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["officer", "confirm", BASE, "g-amy", "P1", "--by", "someone"])  # no such option any more
    assert db.execute("SELECT decided_by, note FROM results.match_decision").fetchall() == [
        ("b2b_officer", "same child")]


def test_passwords_given_in_the_environment_win(tmp_path, monkeypatch):
    monkeypatch.setenv("B2B_DB_PASSWORD_B2B_PIPELINE", "from-a-secret")
    got = b2bdb.role_passwords(tmp_path)
    assert got["b2b_pipeline"] == "from-a-secret" and len(got["b2b_analyst"]) > 20
    assert "from-a-secret" not in b2bdb.roles_file(tmp_path).read_text()
