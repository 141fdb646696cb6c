"""b2b.forked: a large run's work over the machine's cores (issue 15). Results in order, each
child's failure or death named by item, every child reaped however the map ends, and the
parent's database connection untouched by the children."""
import os
import signal

import pytest


def children():
    """This process's children, running or not yet reaped (zombies)."""
    import psutil

    return psutil.Process().children()


def test_results_come_in_order_from_forked_processes():
    from b2b import forked

    parent = os.getpid()
    got = list(forked.ordered_map(lambda i: (i * i, os.getpid()), 7, 3))
    assert [v for v, _ in got] == [i * i for i in range(7)]
    pids = {p for _, p in got}
    assert parent not in pids and len(pids) == 3  # three children, round robin
    assert children() == []


def test_a_child_computes_at_most_per_child_items_then_a_new_one_goes_on():
    from b2b import forked

    got, at_once = [], []
    for v in forked.ordered_map(lambda i: (i * i, os.getpid()), 7, 3, per_child=2):
        got.append(v)
        at_once.append(len(children()))
    assert [v for v, _ in got] == [i * i for i in range(7)]
    pid = [p for _, p in got]
    # slot 0: items 0 and 3 in one child, item 6 in a new one; slots 1 and 2: (1, 4), (2, 5)
    assert pid[0] == pid[3] != pid[6] and pid[1] == pid[4] and pid[2] == pid[5]
    assert len(set(pid)) == 4 and os.getpid() not in pid
    assert max(at_once) <= 3  # (never more than ``procs`` at once)
    assert children() == []
    with pytest.raises(ValueError, match="per_child=0"):
        list(forked.ordered_map(lambda i: i, 3, 2, per_child=0))


def test_one_process_or_one_item_runs_here_without_a_fork():
    from b2b import forked

    parent = os.getpid()
    assert list(forked.ordered_map(lambda i: os.getpid(), 3, 1)) == [parent] * 3
    assert list(forked.ordered_map(lambda i: os.getpid(), 1, 4)) == [parent]


def test_an_error_in_a_child_names_its_item_and_every_child_is_reaped():
    from b2b import forked

    def fn(i):
        if i == 4:
            raise ValueError("no such part")
        return i

    got = []
    with pytest.raises(forked.ForkedError, match=r"item 4: ValueError: no such part"):
        for v in forked.ordered_map(fn, 9, 2):
            got.append(v)
    assert got == [0, 1, 2, 3]
    assert children() == []


def test_a_child_that_dies_is_named_with_its_signal():
    from b2b import forked

    def fn(i):
        if i == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer would
        return i

    with pytest.raises(forked.ForkedError, match=r"item 2: its process \(\d+\) ended without a result "
                                                 r"\(killed by SIGKILL: out of memory\?\)"):
        list(forked.ordered_map(fn, 5, 2))
    assert children() == []


def test_a_map_left_early_stops_and_reaps_its_children():
    import time

    from b2b import forked

    def slow(i):
        if i:
            time.sleep(60)
        return i

    it = forked.ordered_map(slow, 6, 2)
    assert next(it) == 0
    t = time.monotonic()
    it.close()
    assert time.monotonic() - t < 10  # stopped, not waited for
    assert children() == []


def test_children_leave_the_parents_database_connection_and_exit_handlers_alone(db_url, tmp_path):
    """A child leaves by os._exit: a child leaving by the interpreter's exit would run the
    parent's atexit handlers and close its connection to PostgreSQL from the child."""
    import atexit

    import psycopg

    from b2b import forked

    mark = tmp_path / "atexit-ran"
    handler = lambda: mark.write_text(str(os.getpid()))  # noqa: E731
    atexit.register(handler)
    try:
        with psycopg.connect(db_url) as conn:
            pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert list(forked.ordered_map(lambda i: i, 4, 2)) == [0, 1, 2, 3]
            with pytest.raises(forked.ForkedError):
                list(forked.ordered_map(lambda i: 1 / 0, 2, 2))
            assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == pid
    finally:
        atexit.unregister(handler)
    assert not mark.exists()


def test_processes_from_the_environment(monkeypatch):
    from b2b import forked

    monkeypatch.setenv(forked.PROCESSES_ENV, "3")
    assert forked.processes() == 3
    for bad in ("0", "-1", "two", "1.5"):
        monkeypatch.setenv(forked.PROCESSES_ENV, bad)
        with pytest.raises(ValueError, match=forked.PROCESSES_ENV):
            forked.processes()
    monkeypatch.delenv(forked.PROCESSES_ENV)
    assert 1 <= forked.processes() <= min(forked.MAX_DEFAULT, len(os.sched_getaffinity(0)))


def test_children_die_with_a_parent_killed_outright():
    """A parent killed by SIGKILL (a task's timeout) runs no cleanup; its children die with it
    rather than compute on for nothing (PR_SET_PDEATHSIG)."""
    import time

    import psutil

    from b2b import forked

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the parent to be killed
        os.close(r)

        def fn(i):
            os.write(w, f"{os.getpid()}\n".encode())
            time.sleep(120)

        try:
            list(forked.ordered_map(fn, 2, 2))
        finally:
            os._exit(0)
    os.close(w)
    buf = b""
    while buf.count(b"\n") < 2:
        buf += os.read(r, 100)
    os.close(r)
    kids = [int(x) for x in buf.split()]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)

    def alive(k):
        try:
            return psutil.Process(k).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 10
    while any(alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(k) for k in kids)
