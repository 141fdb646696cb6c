"""The match stage runs with fewer cyclic garbage collections (issue 15): the collector's
youngest threshold raised while it runs, every threshold put back as it was afterwards."""
import gc

import pytest

from b2b.reconcile import match_stage


def test_the_stage_raises_the_young_threshold_and_puts_every_threshold_back_even_on_error():
    before = gc.get_threshold()
    seen = []

    @match_stage._fewer_collections
    def stage(fail: bool, inner: bool = False) -> None:
        seen.append(gc.get_threshold())
        if inner:
            stage(False)  # a stage within a stage: the thresholds back only when the outer one ends
            seen.append(gc.get_threshold())
        if fail:
            raise RuntimeError("boom")

    try:
        gc.set_threshold(700, 11, 12)
        stage(False, inner=True)
        assert seen == [(match_stage.GC_YOUNG_THRESHOLD, 11, 12)] * 3
        assert gc.get_threshold() == (700, 11, 12)
        with pytest.raises(RuntimeError):
            stage(True)
        assert gc.get_threshold() == (700, 11, 12)
        gc.set_threshold(0, 11, 12)  # collection switched off by the process: left off
        stage(False)
        assert seen[-1] == (0, 11, 12) and gc.get_threshold() == (0, 11, 12)
    finally:
        gc.set_threshold(*before)

