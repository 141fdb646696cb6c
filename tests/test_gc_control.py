"""The one control of the cyclic garbage collector (``b2b.gc_control``, issue 15): pauses and
raised young thresholds nest, in one thread or several, and the collector is left as it was
before the outermost entry, also when the work inside raises."""
import gc
import threading

import pytest

from b2b import gc_control


@pytest.fixture
def collector():
    """The collector as the test found it, put back afterwards (the setting is the process's)."""
    enabled, thresholds = gc.isenabled(), gc.get_threshold()
    gc.enable()
    gc.set_threshold(700, 11, 12)
    yield
    gc.set_threshold(*thresholds)
    (gc.enable if enabled else gc.disable)()


def state():
    return gc.isenabled(), gc.get_threshold()


def test_a_pause_inside_a_raised_threshold_and_the_reverse_restore_the_state_before_the_outermost(collector):
    with gc_control.young_threshold(50_000):
        assert state() == (True, (50_000, 11, 12))
        with gc_control.paused():
            assert state() == (False, (50_000, 11, 12))
        assert state() == (True, (50_000, 11, 12))  # the pause ends: the threshold still raised
    assert state() == (True, (700, 11, 12))
    with gc_control.paused():
        with gc_control.young_threshold(50_000):
            assert state() == (False, (50_000, 11, 12))
        assert state() == (False, (700, 11, 12))  # still paused: the outer entry is under way
    assert state() == (True, (700, 11, 12))


def test_the_highest_threshold_asked_for_holds_until_its_entry_ends(collector):
    with gc_control.young_threshold(10_000):
        with gc_control.young_threshold(50_000):
            assert gc.get_threshold() == (50_000, 11, 12)
        assert gc.get_threshold() == (10_000, 11, 12)
        with gc_control.young_threshold(500):  # (never lowered below what the process had)
            assert gc.get_threshold() == (10_000, 11, 12)
    assert gc.get_threshold() == (700, 11, 12)


def test_the_state_is_restored_when_the_work_inside_raises(collector):
    @gc_control.young_threshold(50_000)
    def stage(fail: bool) -> None:
        with gc_control.paused():
            if fail:
                raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        stage(True)
    assert state() == (True, (700, 11, 12))
    with pytest.raises(RuntimeError), gc_control.paused(), gc_control.young_threshold(50_000):
        raise RuntimeError("boom")
    assert state() == (True, (700, 11, 12))
    stage(False)  # (the decorator is reusable, and re-entrant)
    assert state() == (True, (700, 11, 12))


def test_a_collector_the_process_switched_off_stays_off(collector):
    gc.disable()
    with gc_control.young_threshold(50_000), gc_control.paused():
        assert not gc.isenabled()
    assert state() == (False, (700, 11, 12))
    gc.enable()
    gc.set_threshold(0, 11, 12)  # (a young threshold of 0: collection off)
    with gc_control.young_threshold(50_000):
        assert gc.get_threshold() == (0, 11, 12)
    assert gc.get_threshold() == (0, 11, 12)


def test_entries_in_two_threads_restore_the_state_only_when_the_last_one_leaves(collector):
    inside, release = threading.Event(), threading.Event()

    def other() -> None:
        with gc_control.paused():
            inside.set()
            release.wait(10)

    t = threading.Thread(target=other)
    t.start()
    assert inside.wait(10)
    with gc_control.young_threshold(50_000):
        assert state() == (False, (50_000, 11, 12))
    assert state() == (False, (700, 11, 12))  # the other thread's pause is still under way
    release.set()
    t.join(10)
    assert state() == (True, (700, 11, 12))
