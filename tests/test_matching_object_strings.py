"""The match stage runs with pandas' text as Python objects (``b2b.matching.object_strings``,
issue 15): the switch changes how pandas stores text, never a decision, and is always undone.
(``tests/test_match_stage.py`` compares the stage's rows, decided inside the switch, with
``b2b.matching.match`` outside it, row by row.)"""
import pandas as pd
import pytest

from b2b.matching import MatchConfig, match, object_strings
from b2b.reconcile import match_stage


def _infers_objects() -> bool:
    return pd.Series(["a", "b"]).dtype == object


def test_inside_text_is_kept_as_objects_and_the_option_comes_back_even_after_an_error():
    assert not _infers_objects()  # pandas 3's default: Arrow strings
    with object_strings():
        assert _infers_objects()
        assert pd.DataFrame({"x": ["a"]})["x"].dtype == object
    assert not _infers_objects()
    with pytest.raises(RuntimeError), object_strings():
        raise RuntimeError("a failing stage")
    assert not _infers_objects()
    with object_strings(), object_strings():  # nested: the outer one's setting stays until it ends
        pass
    assert not _infers_objects()


def test_the_match_stage_runs_inside_it(monkeypatch):
    seen = []
    monkeypatch.setattr(match_stage, "match_carers", lambda *a, **k: seen.append(_infers_objects()) or {})

    class Stop(Exception):
        pass

    def stop(*a, **k):
        seen.append(_infers_objects())
        raise Stop

    monkeypatch.setattr(match_stage, "run_files", stop)

    class Conn:
        def transaction(self):
            from contextlib import nullcontext

            return nullcontext()

    with pytest.raises(Stop):
        match_stage.match(Conn(), None, None)
    assert seen == [True]
    assert not _infers_objects()


@pytest.fixture(scope="module")
def data():
    from simulator.matching_data import match_dataset

    core, inc, _, _ = match_dataset(1_500, 3_000, seed=21, schools=6)
    return core, inc


@pytest.mark.parametrize("size", [3, 40, 400, None])
def test_the_matcher_decides_the_same_with_objects_or_arrow_strings(data, size):
    """Small batches (a school run: the array paths) and the whole batch (the pandas paths),
    with identifiers and without: every column of every decision, explanations included."""
    core, inc = data
    batch = inc if size is None else inc.iloc[100:100 + size]
    for drop in ((), ("upn", "guid")):
        c, b = core.copy(), batch.copy()
        for col in drop:
            c[col], b[col] = None, None
        arrow = match(c, b, MatchConfig())
        with object_strings():
            objects = match(pd.DataFrame(c.to_dict("list")), pd.DataFrame(b.to_dict("list")), MatchConfig())
        assert objects["status"].dtype == object and arrow["status"].dtype != object
        assert list(objects.columns) == list(arrow.columns) and len(objects) == len(b)
        for col in arrow.columns:
            assert objects[col].tolist() == arrow[col].tolist() or \
                pd.Series(objects[col].tolist()).equals(pd.Series(arrow[col].tolist())), col


def test_no_records_are_prepared_and_decided_with_objects_too(data):
    """A run's carers without LA candidates, a school without students: nothing to prepare.
    With text kept as objects pandas types an empty column's map float64 (no ``.str``): the
    frame of no records is still built, with the columns the Arrow path gives, and deciding
    against no LA records leaves every record unmatched."""
    from b2b.matching import normalise

    core, inc = data
    normalise._EMPTY.clear()  # (a frame of no records built earlier in this process would hide it)
    with object_strings():
        for df, id_col in ((core.iloc[:0], "person_id"), (inc.iloc[:0], "incoming_id")):
            empty = normalise.prepare(pd.DataFrame({c: pd.Series([], dtype=object) for c in df.columns}), id_col)
            assert len(empty) == 0
            assert list(empty.columns) == list(normalise._prepare_frame(df, id_col).columns)
        out = match(core.iloc[:0], inc.iloc[:5], MatchConfig(guidmatch=False, dob_required=False))
    assert out["status"].tolist() == ["unmatched"] * 5


def test_arrow_strings_inside_object_strings_and_back():
    """A run of several parts (an LA's first load) decides its parts with pandas' Arrow strings
    (``arrow_strings``, inside the stage's ``object_strings``); each switch is undone on the way out."""
    from b2b.matching import arrow_strings

    with object_strings():
        assert _infers_objects()
        with arrow_strings():
            assert not _infers_objects()
        assert _infers_objects()
        with pytest.raises(RuntimeError), arrow_strings():
            raise RuntimeError("a failing part")
        assert _infers_objects()
    assert not _infers_objects()


def test_a_run_of_several_parts_decides_them_with_arrow_strings(monkeypatch):
    from b2b.config.settings import Settings

    seen = []
    monkeypatch.setattr(match_stage, "_decide_parts", lambda *a, **k: seen.append(_infers_objects()))
    monkeypatch.setattr(match_stage, "run_files", lambda conn, ctx: [1])
    monkeypatch.setattr(match_stage, "PendingFrequencies", lambda incoming: None)

    class Stop(Exception):
        pass

    def carers(*a, **k):
        raise Stop

    monkeypatch.setattr(match_stage, "match_carers", carers)

    class Conn:
        def transaction(self):
            from contextlib import nullcontext

            return nullcontext()

        pipeline = transaction

        def execute(self, *a, **k):  # (a cursor with nothing to say: no outgrown statistics, no contacts)
            return type("Cursor", (), {"fetchone": lambda self: (None,), "fetchall": lambda self: [], "rowcount": 0})()

    for students, objects in ((3, True), (45, False)):
        frame = pd.DataFrame({"base_id": [f"b{k % 3}" for k in range(students)]})
        monkeypatch.setattr(match_stage, "_incoming", lambda rows, frame=frame: frame)
        monkeypatch.setattr(match_stage, "PART_STUDENTS", 10)
        with pytest.raises(Stop):
            match_stage.match(Conn(), type("Ctx", (), {"window_end": None})(), Settings())
        assert seen.pop() is objects
