"""A large run's CPU work spread over the machine's cores by ``fork`` (issue 15).

:func:`ordered_map` runs ``fn(0) … fn(n - 1)`` in forked child processes and yields the
results in order, as ``map`` would. The children are forked from the caller (when the map
starts, and as one leaves another), so they see everything it has built (an LA's prepared
children, blocking's index) without copying or pickling it: the operating system shares those
pages until one side writes them (the collector's objects are frozen first, so its passes do
not write them).
Only each result travels back, pickled through a pipe.

Why not :mod:`multiprocessing`: its ``Pool`` and ``Process`` refuse to start children from a
daemonic process, and an Airflow task may run in one (LocalExecutor's workers); and a child
here must leave by ``os._exit`` — never by the interpreter's exit, which would run the
parent's ``atexit`` handlers and close its database connection from the child.

* Child ``w`` of ``k`` computes items ``w, w + k, w + 2k, …`` in that order, at most
  ``per_child`` of them; then it leaves and a new child is forked for the next ones. What a
  child allocates lands in pages it still shares with the parent, and copies them: a child
  that lives through many items ends up holding a copy of much of the parent (issue 15: two
  children deciding 300k x 250k's parts held ~880 MB between them; two items each, ~1,010 MB
  for the whole tree). The parent reads item ``i`` from slot ``i % k``; a child waits on its
  pipe until its result is read, so at most one result per child is in flight (memory stays
  bounded).
* An error in a child ends the map with :class:`ForkedError` naming the item, the error's type
  and its message; a child that dies (killed, out of memory) ends it with the item and the
  signal. The other children are stopped and reaped, whatever ends the map (an error, or the
  caller closing the generator).
"""
from __future__ import annotations

import gc
import os
import pickle
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

#: environment variable: how many processes a large run's matcher uses (1: no fork)
PROCESSES_ENV = "B2B_MATCH_PROCESSES"
#: at most this many processes by default, whatever the machine has
MAX_DEFAULT = 4


class ForkedError(RuntimeError):
    """A child of :func:`ordered_map` failed or died."""


def processes() -> int:
    """Processes to use: ``$B2B_MATCH_PROCESSES`` when set (a whole number >= 1), else the
    cores this process may run on, at most :data:`MAX_DEFAULT`."""
    given = os.environ.get(PROCESSES_ENV, "").strip()
    if given:
        try:
            n = int(given)
        except ValueError:
            raise ValueError(f"{PROCESSES_ENV}={given!r}: expected a whole number of processes, 1 or more") from None
        if n < 1:
            raise ValueError(f"{PROCESSES_ENV}={given!r}: expected a whole number of processes, 1 or more")
        return n
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # (not Linux)
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT))


def available() -> bool:
    """Whether this platform can fork (POSIX)."""
    return hasattr(os, "fork")


def ordered_map(fn: Callable[[int], Any], n: int, procs: int, per_child: int | None = None) -> Iterator[Any]:
    """``fn(i)`` for ``i`` in ``range(n)``, computed in forked children, at most ``procs`` at
    once, each computing at most ``per_child`` items (None: as many as come its way), yielded
    in order (see the module's text). ``procs`` <= 1 or ``n`` <= 1: computed here, no fork."""
    procs = min(procs, n)
    if procs <= 1 or not available():
        for i in range(n):
            yield fn(i)
        return
    if per_child is not None and per_child < 1:
        raise ValueError(f"per_child={per_child}: expected 1 or more items per process")
    # slot w's children compute items w, w + procs, w + 2 procs, ...: (pid, pipe, its last item)
    slots: list[tuple[int, Any, int] | None] = [None] * procs
    gc.collect()
    _trim()
    try:
        for w in range(procs):
            slots[w] = _start(fn, range(w, n, procs)[:per_child], slots)
        for i in range(n):
            w = i % procs
            pid, pipe, last = slots[w]  # type: ignore[misc]
            try:
                tag, value = pickle.load(pipe)
            except (EOFError, pickle.UnpicklingError, OSError):
                raise ForkedError(f"item {i}: its process ({pid}) ended without a result ({_ended(pid)})") from None
            if tag != "ok":
                raise ForkedError(f"item {i}: {value}")
            if i == last:  # its child leaves: reaped, and the slot's next items go to a new child
                slots[w] = None
                pipe.close()
                _ended(pid)
                if i + procs < n:
                    slots[w] = _start(fn, range(i + procs, n, procs)[:per_child], slots)
            yield value
    finally:
        for slot in slots:
            if slot is not None:
                slot[1].close()
                _reap(slot[0])
        gc.unfreeze()


def _start(fn: Callable[[int], Any], items: range, slots: list) -> tuple[int, Any, int]:
    """Fork the child computing ``items`` in order: (its pid, the pipe its results come by,
    its last item)."""
    gc.freeze()  # (the collector's passes in a child would write every shared object's header)
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        _child(fn, items, write_fd, [read_fd] + [slot[1] for slot in slots if slot is not None])
    os.close(write_fd)
    return pid, os.fdopen(read_fd, "rb"), items[-1]


def _child(fn: Callable[[int], Any], items: range, write_fd: int, inherited: list) -> None:
    """A child's life: its items computed and sent in order; it leaves by ``os._exit``."""
    code = 0
    try:
        parent = os.getppid()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # (the parent's handler is the parent's)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _die_with_parent()
        if os.getppid() != parent:  # (the parent died before that took effect)
            return
        for f in inherited:  # (its own pipe's and the other children's read ends: the parent's)
            try:
                os.close(f if isinstance(f, int) else f.fileno())
            except OSError:
                pass
        with os.fdopen(write_fd, "wb") as out:
            for i in items:
                try:
                    data = pickle.dumps(("ok", fn(i)), protocol=pickle.HIGHEST_PROTOCOL)
                except BaseException as e:  # noqa: BLE001 (sent to the parent, which raises it)
                    data = pickle.dumps(("error", f"{type(e).__name__}: {e}"))
                    code = 1
                out.write(data)
                out.flush()
                if code:
                    break
    except BaseException:  # noqa: BLE001 (the parent gone: its pipe closed)
        code = 1
    finally:
        os._exit(code)


def _trim() -> None:
    """Linux (glibc): the C heap's free pages given back (``malloc_trim``), so that what a
    child allocates there is its own new memory, not a copy of a page the parent still holds.
    Elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # (not glibc: musl has none)
        pass


def _die_with_parent() -> None:
    """Linux: this process is killed when the one that forked it dies (``prctl``'s
    PR_SET_PDEATHSIG), so a parent killed outright (SIGKILL, its task's timeout) leaves no
    child computing for nothing. Elsewhere nothing: a child then ends when it next writes to
    the closed pipe."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _ended(pid: int) -> str:
    """How a child whose pipe closed ended (reaped here: it closes the pipe only as it
    leaves), in words."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return "already reaped"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by {signal.Signals(sig).name}" + (": out of memory?" if sig == signal.SIGKILL else "")
    return f"exit status {os.WEXITSTATUS(status)}"


def _reap(pid: int) -> None:
    """Stop a child if it still runs, and reap it."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    except (ChildProcessError, ProcessLookupError):
        pass
