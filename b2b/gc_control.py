"""The one control of Python's cyclic garbage collector (issue 15).

Stages that build many acyclic objects (parsed blocks, a run's values, the matcher's key
tuples) run with fewer collections: every few hundred allocations the collector walks the
young objects, and each full collection everything the process keeps alive (Airflow's, GX's),
for nothing, as those objects are freed by reference counting. Two modes:

* :func:`paused`: no cyclic collection at all (extract, the fast XML path, validate);
* :func:`young_threshold`: the youngest generation's threshold raised to at least a value,
  the older generations' as they were (the match stage).

The collector's settings are the process's, and stages may run in several threads at once,
so both modes share ONE nesting count under a lock: the state before the outermost entry
(enabled or not, the thresholds) is what every exit returns to once nothing is under way,
whichever thread leaves last and however the modes nest (a pause within a raised threshold,
or the reverse), also when a stage raises. While entries are under way the strongest asks
win: collection off while any pause is, the highest young threshold asked for otherwise. A
collector the process had switched off (disabled, or a young threshold of 0) stays off.

Both are context managers and decorators (``@young_threshold(50_000)``).
"""
from __future__ import annotations

import gc
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()


class _State:
    """Entries under way (both modes), and the collector's state before the outermost one."""
    entries = 0
    pauses = 0
    raised: Counter[int] = Counter()  # young thresholds asked for -> entries asking
    enabled: bool = True
    thresholds: tuple[int, ...] = ()


def _settle() -> None:
    """The collector set as the entries under way ask (the lock held)."""
    before = _State.thresholds
    if not _State.entries:
        gc.set_threshold(*before)
        if _State.enabled:
            gc.enable()
        else:
            gc.disable()
        return
    if _State.pauses:
        gc.disable()
    elif _State.enabled:
        gc.enable()
    young, *older = before
    if young and _State.raised:  # (0: collection switched off by the process, left so)
        gc.set_threshold(max(young, *_State.raised), *older)
    else:
        gc.set_threshold(*before)


@contextmanager
def _entry(young: int | None) -> Iterator[None]:
    with _lock:
        if not _State.entries:
            _State.enabled, _State.thresholds = gc.isenabled(), gc.get_threshold()
        _State.entries += 1
        if young is None:
            _State.pauses += 1
        else:
            _State.raised[young] += 1
        _settle()
    try:
        yield
    finally:
        with _lock:
            _State.entries -= 1
            if young is None:
                _State.pauses -= 1
            else:
                _State.raised[young] -= 1
                if not _State.raised[young]:
                    del _State.raised[young]
            _settle()


@contextmanager
def paused() -> Iterator[None]:
    """No cyclic garbage collection inside (see the module docstring)."""
    with _entry(None):
        yield


@contextmanager
def young_threshold(at_least: int) -> Iterator[None]:
    """The youngest generation's threshold at least ``at_least`` inside (see the module docstring)."""
    with _entry(at_least):
        yield
