"""The match stage runs with fewer cyclic garbage collections (issue 15): the collector's
youngest threshold raised while it runs (``b2b.gc_control``), every threshold put back as it
was afterwards. (The nesting and error cases of the control: tests/test_gc_control.py.)"""
import gc
from datetime import UTC, datetime


def test_the_match_stage_runs_with_the_young_threshold_raised_and_puts_it_back(db):
    from b2b.config.settings import Settings
    from b2b.context import RunContext
    from b2b.reconcile import match_stage

    # the server tells the client when the stage writes its task-log row: the client's
    # collector settings are read then, while the stage runs
    db.execute("""CREATE FUNCTION public.tell() RETURNS trigger LANGUAGE plpgsql
                  AS $$BEGIN RAISE NOTICE 'stage running'; RETURN NULL; END$$""")
    db.execute("""CREATE TRIGGER tell AFTER INSERT ON ops.task_log
                  FOR EACH STATEMENT EXECUTE FUNCTION public.tell()""")
    db.commit()
    seen: list[tuple[int, ...]] = []
    db.add_notice_handler(lambda diag: seen.append(gc.get_threshold()))
    ctx = RunContext(base_id="8862001", task_key="snapshot", dag_id="b2b__8862001__snapshot", run_id="r",
                     source="sims7", data_filter="snapshot", window_start=None,
                     window_end=datetime(2026, 10, 4, 17, tzinfo=UTC))
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 11, 12)
        match_stage.match(db, ctx, Settings())
        assert seen == [(match_stage.GC_YOUNG_THRESHOLD, 11, 12)]
        assert gc.get_threshold() == (700, 11, 12)
    finally:
        gc.set_threshold(*before)
