"""The warehouse behind PgBouncer in session mode (docs/speed.md: a changed-data run through a
task's new connection then gets a warm backend; issue 15).

A real PgBouncer (Debian's package: ``make test`` installs it when missing) in front of the
test server; the pipeline role logs in through it with its own password (SCRAM, the role's
stored secret). Two school runs, each on a new client connection as each Airflow task opens
one, get the same server backend, leave no session state on it for the next client (no
temporary table, planner setting or advisory lock outlives a run) and write exactly what the
same runs write on direct connections.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from b2b import db as b2bdb
from b2b.config.settings import Settings
from tests.conftest import TEST_HOME
from tests.test_chain import ADDR, CORE_CHILDREN, DAY1, EMMA, JOE, ctx, page, run_chain, snapshot_tables

EMBEDDED = not os.environ.get("B2B_TEST_DATABASE_URL")
PGBOUNCER = shutil.which("pgbouncer") or next(
    (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if Path(p).exists()), None)
pytestmark = pytest.mark.skipif(PGBOUNCER is None, reason="Debian's pgbouncer is not installed (make test installs it)")

#: what a run could leave on its backend for the next client of a pooled connection
SESSION_STATE = """SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()),
                          (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
                          current_setting('enable_hashjoin'), current_setting('enable_mergejoin'),
                          current_setting('enable_nestloop'), current_setting('max_parallel_workers_per_gather')"""

DAYS = [(DAY1, [page("student", [("g-joe", JOE), ("g-emma", EMMA)]), page("address", [("g-joe", ADDR)])]),
        (DAY1.replace(day=6), [page("student", [("g-joe", {**JOE, "forename": "Joe", "ncy": "6"})])])]


@pytest.fixture
def two_databases(pg_admin_url, pg_template, tmp_path):
    """Two fresh databases with the same LA children, and the roles' passwords (``tmp_path``)."""
    names = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        b2bdb.ensure_roles(admin, home=tmp_path, pgdata=TEST_HOME / "pgdata" if EMBEDDED else None)
        for name in names:
            admin.execute(f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    urls = [make_conninfo(pg_admin_url, dbname=name) for name in names]
    for url in urls:
        with psycopg.connect(url) as conn:
            conn.execute(CORE_CHILDREN)
    yield urls
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        for name in names:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_pgbouncer(server_url: str, role: str, folder: Path) -> tuple[subprocess.Popen, str]:
    """PgBouncer in session mode (one server connection) in front of ``server_url``'s database,
    ``role`` authenticated with its stored SCRAM secret; its files and socket in ``folder`` (one
    its own user can reach); the process and the database's address through it (without the
    password)."""
    params = conninfo_to_dict(server_url)
    with psycopg.connect(server_url) as admin:
        secret = admin.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()[0]
    assert secret.startswith("SCRAM-SHA-256$")
    port = 20000 + uuid.uuid4().int % 30000
    (folder / "users.txt").write_text(f'"{role}" "{secret}"\n')
    (folder / "pgbouncer.ini").write_text("\n".join([
        "[databases]",
        f"b2b = host={params.get('host') or '127.0.0.1'} port={params.get('port') or 5432} dbname={params['dbname']}",
        "[pgbouncer]",
        "listen_addr =", f"unix_socket_dir = {folder}", f"listen_port = {port}",
        "auth_type = scram-sha-256", f"auth_file = {folder / 'users.txt'}",
        "pool_mode = session", "server_reset_query = DISCARD ALL", "default_pool_size = 1",
        f"logfile = {folder / 'pgbouncer.log'}", ""]))
    command = [PGBOUNCER, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:  # PgBouncer refuses to run as root: as the server's own user
        owner = (TEST_HOME / "pgdata").owner() if EMBEDDED else "nobody"
        shutil.chown(folder, owner)
        for f in folder.iterdir():
            shutil.chown(f, owner)
        command[1:1] = ["-u", owner]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while not (folder / f".s.PGSQL.{port}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log = (folder / "pgbouncer.log").read_text() if (folder / "pgbouncer.log").exists() else ""
            pytest.fail(f"pgbouncer did not start: {proc.stderr.read().decode() if proc.stderr else ''} {log}")
        time.sleep(0.05)
    return proc, make_conninfo("", host=str(folder), port=port, dbname="b2b", user=role)


def test_school_runs_through_pgbouncer_share_a_warm_backend_and_leave_it_clean(two_databases, tmp_path):
    pooled_db, direct_db = two_databases
    password = b2bdb.role_passwords(tmp_path)["b2b_pipeline"]
    # (not under tmp_path: when the tests run as root, PgBouncer runs as the server's user, who
    # cannot reach pytest's private folders)
    folder = Path(tempfile.mkdtemp(prefix="b2b-pgbouncer-"))
    folder.chmod(0o755)
    proc, via_bouncer = start_pgbouncer(pooled_db, "b2b_pipeline", folder)
    try:
        backends = []
        for end, messages in DAYS:  # each run a new client connection, as each Airflow task's
            with psycopg.connect(via_bouncer, password=password) as conn:
                before = conn.execute(SESSION_STATE).fetchone()
                backends.append(conn.execute("SELECT pg_backend_pid(), current_user").fetchone())
                run_chain(conn, ctx(end), messages, Settings())
                conn.commit()
                assert conn.execute(SESSION_STATE).fetchone() == before == (0, 0, "on", "on", "on", before[5])
        # the second task's connection got the first's backend (warm), as the pipeline role
        assert backends[0] == backends[1] and backends[0][1] == "b2b_pipeline"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
    for end, messages in DAYS:
        with psycopg.connect(make_conninfo(direct_db, user="b2b_pipeline", password=password)) as conn:
            run_chain(conn, ctx(end), messages, Settings())
            conn.commit()
    with psycopg.connect(pooled_db) as pooled, psycopg.connect(direct_db) as direct:
        got, want = snapshot_tables(pooled), snapshot_tables(direct)
        assert got == want
        assert [r[:4] for r in got["match"]] == [("8862003", "g-emma", "P2", "possible"),
                                                 ("8862003", "g-joe", "P1", "matched_with_conflicts"),
                                                 ("8862003", "g-joe", "P1", "matched_with_conflicts")]
