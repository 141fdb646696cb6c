"""The embedded server's lifecycle: `b2b db stop`, the test session and `make clean` leave no
server running, whatever pgserver's handle list (`.handle_pids.json`) says."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid

import pytest

from b2b import PROJECT_ROOT
from b2b import db as b2bdb
from tests.conftest import TEST_HOME

ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "plugins")]))


@pytest.fixture
def home():
    """A scratch B2B home (under .b2b/test: the server's own user must be able to reach it)."""
    path = TEST_HOME / f"lifecycle-{uuid.uuid4().hex[:8]}"
    path.mkdir(parents=True)
    yield path
    for pgdata in b2bdb.embedded_data_dirs(path):
        b2bdb.stop_embedded(pgdata)
    shutil.rmtree(path, ignore_errors=True)


def _start_in_another_process(home) -> int:
    """Start the home's embedded server from a process that then exits (as `b2b demo` does):
    the server keeps running and the process's handle stays in the list, stale."""
    code = "from b2b import db; db.embedded_url(); print('up')"
    subprocess.run([sys.executable, "-c", code], env=dict(ENV, B2B_HOME=str(home)), check=True,
                   capture_output=True, text=True, timeout=120)
    pid = b2bdb._postmaster_pid(home / "pgdata")
    assert pid and b2bdb._alive(pid)
    return pid


def _b2b(home, *args):
    return subprocess.run([sys.executable, "-m", "b2b.cli", *args], env=dict(ENV, B2B_HOME=str(home)),
                          capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)


def test_db_stop_stops_the_server_despite_stale_handle_pids(home):
    pid = _start_in_another_process(home)
    handles = home / "pgdata" / ".handle_pids.json"
    handles.write_text(json.dumps(json.loads(handles.read_text()) + [2_999_999]))  # a dead process too
    out = _b2b(home, "db", "stop")
    assert out.returncode == 0, out.stderr
    assert f"process {pid}) stopped" in out.stdout
    assert not b2bdb._alive(pid)
    assert json.loads(handles.read_text()) == []
    again = _b2b(home, "db", "stop")
    assert again.returncode == 0 and "was not running" in again.stdout


def test_db_stop_if_unused_says_which_live_process_still_holds_the_server(home):
    pid = _start_in_another_process(home)
    handles = home / "pgdata" / ".handle_pids.json"
    handles.write_text(json.dumps([os.getpid()]))  # this test process: alive
    out = _b2b(home, "db", "stop", "--if-unused")
    assert out.returncode == 1
    assert "left running" in out.stderr and str(os.getpid()) in out.stderr
    assert b2bdb._alive(pid)
    out = _b2b(home, "db", "stop")  # without --if-unused it stops, and says who was using it
    assert out.returncode == 0 and "stopped (it was in use by" in out.stdout
    assert not b2bdb._alive(pid)


def test_db_stop_cleans_a_stale_postmaster_pid(home):
    pid = _start_in_another_process(home)
    assert _b2b(home, "db", "stop").returncode == 0
    (home / "pgdata" / "postmaster.pid").write_text(f"{pid}\n")  # left behind by a crash
    out = _b2b(home, "db", "stop")
    assert out.returncode == 0 and "stale postmaster.pid" in out.stdout
    assert not (home / "pgdata" / "postmaster.pid").exists()


def test_a_test_session_leaves_no_server_running(home):
    (home / "t").mkdir()
    (home / "t" / "test_one.py").write_text(textwrap.dedent("""
        def test_uses_the_database(db):
            assert db.execute("SELECT 1").fetchone() == (1,)
    """))
    env = dict(ENV, B2B_HOME=str(home))
    env.pop("B2B_TEST_DATABASE_URL", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
                           "--rootdir", str(home / "t"), str(home / "t" / "test_one.py")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pgdata = home / "test" / "pgdata"
    assert (pgdata / "PG_VERSION").exists(), "the session did not use its own embedded server"
    pid = b2bdb._postmaster_pid(pgdata)
    assert pid is None or not b2bdb._alive(pid)


def test_make_clean_stops_the_server_before_deleting_its_data(home):
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    pid = _start_in_another_process(home)
    proc = subprocess.run(["make", "-s", "-C", str(PROJECT_ROOT), "clean", f"B2B_HOME={home}"],
                          capture_output=True, text=True, timeout=120, env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert "stopped" in proc.stdout
    assert not b2bdb._alive(pid)
    assert not home.exists()
    home.mkdir()  # for the fixture's teardown
