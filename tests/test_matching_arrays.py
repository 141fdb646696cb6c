"""A school run's few records prepared as numpy columns (``decide.PreparedRows``, issue 15)
decide exactly as with the prepared DataFrames: every row, status, score and explanation, on
many random small batches with blanks, padding and accents, officer links and rejections,
claims from outside the batch, the rare-name rule, and carers; and with pandas' text as
Python objects (``future.infer_string`` off, as the match stage runs) alike."""
import datetime as dt
import random
import warnings

import numpy as np
import pandas as pd
import pytest

from b2b.matching import decide, normalise
from b2b.matching.comparisons import TermFrequencies
from b2b.matching.decide import MatchConfig, PreparedCore, PreparedRows, match, prepare_core
from tests.test_matching_small import messy_match_data


@pytest.fixture(scope="module")
def data():
    return messy_match_data(400, 800, seed=21, typed=80, rng_seed=8, no_dob=(30, 3),
                            odd=("address_line1", "  ", 15, 4))


def on_frames(monkeypatch, fn):
    """``fn()`` with the prepared records as DataFrames (the path before PreparedRows)."""
    with monkeypatch.context() as m:
        m.setattr(decide, "prepare_arrays", lambda df, id_col: normalise.prepare(df, id_col))
        return fn()


def batches(inc, n, seed):
    rng = random.Random(seed)
    for _ in range(n):
        size = rng.choice([1, 2, 3, 4, 6, 12, 40])
        k = rng.randrange(len(inc) - size)
        yield inc.iloc[k:k + size].reset_index(drop=True)


def test_prepared_rows_hold_the_prepared_frames_values(data):
    core, inc, _ = data
    for df, id_col in ((core, "person_id"), (inc, "incoming_id"), (inc.iloc[:3], "incoming_id")):
        rows, frame = decide.prepare_arrays(df, id_col), normalise.prepare(df, id_col)
        assert isinstance(rows, PreparedRows)
        assert rows.columns == list(frame.columns)
        for c in frame.columns:
            want = frame[c].to_numpy()
            got = rows[c].to_numpy()
            assert got.dtype == want.dtype or want.dtype == object, c
            assert len(got) == len(want) and all(a == b for a, b in zip(got.tolist(), want.tolist())), c


@pytest.mark.parametrize("object_strings", [False, True])
def test_students_decide_on_prepared_rows_as_on_frames(data, monkeypatch, object_strings):
    """Students: the LA part prepared once (PreparedCore) or per call, links by officers and by
    the matcher, rejections, children claimed outside the batch, the rare-name rule."""
    core, inc, truth = data
    whole = prepare_core(core)
    assert whole.arrays is not None
    tf = TermFrequencies.from_frame(normalise.prepare(core, "person_id"))
    seen: set[str] = set()
    for n, batch in enumerate(batches(inc, 40, 5)):
        known = [(b, g, truth[i]) for b, g, i in zip(batch["base_id"], batch["guid"], batch["incoming_id"])
                 if truth.get(i)]
        links = pd.DataFrame([(b, g, p, "officer" if (n + k) % 2 else "match") for k, (b, g, p) in enumerate(known[:2])],
                             columns=["base_id", "guid", "person_id", "linked_by"])
        rejected = pd.DataFrame(known[2:3], columns=["base_id", "guid", "person_id"])
        rows = np.unique(np.concatenate([np.flatnonzero(core["person_id"].isin([p for *_, p in known])),
                                         np.random.default_rng(n).choice(len(core), 150, replace=False)]))
        claimed = {p for *_, p in known[3:4]}
        kw = {"links": links, "rejected": rejected, "tf": tf, "claimed": claimed or None,
              "claims_elsewhere": claimed or None, "cfg": MatchConfig(rare_name=n % 3 == 0)}
        for la in (whole.take(rows), core.iloc[rows]):
            def decide_now(la=la, batch=batch, kw=kw):
                if object_strings:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")  # (the option is deprecated in pandas 3)
                        with pd.option_context("future.infer_string", False):
                            return match(la, batch, **kw)
                return match(la, batch, **kw)
            fast = decide_now()
            slow = on_frames(monkeypatch, decide_now)
            pd.testing.assert_frame_equal(fast, slow, check_exact=True)
            seen |= set(slow["status"]) | {r for r in slow["rule"]}
    assert {"matched", "possible", "unmatched", "officer_link", "weights"} <= seen


def test_carers_decide_on_prepared_rows_as_on_frames(data, monkeypatch):
    """Carers (F14): no DOB, UPN or GUID; a minimum age; the LA side prepared per call; an LA
    side with no records."""
    core, inc, _ = data
    cfg = MatchConfig(guidmatch=False, dob_required=False)
    for k, batch in enumerate(batches(inc, 20, 6)):
        batch = batch.assign(dob=None, upn=None, middle_names=None, guid=None)
        la = core.sample(200, random_state=k) if k % 5 else core.iloc[:0]
        kw = {"cfg": cfg, "min_age": 6, "as_of": dt.date(2026, 10, 5)}
        fast = match(la, batch, **kw)
        slow = on_frames(monkeypatch, lambda la=la, batch=batch, kw=kw: match(la, batch, **kw))
        pd.testing.assert_frame_equal(fast, slow, check_exact=True)


def test_prepared_core_builds_its_frame_only_when_read(data):
    core, _, _ = data
    whole = prepare_core(core.iloc[:50])
    assert isinstance(whole, PreparedCore) and whole._prep is None
    part = whole.take([3, 1, 7])
    assert part.arrays["id"].tolist() == core["person_id"].iloc[[3, 1, 7]].tolist()
    pd.testing.assert_frame_equal(part.prep, normalise.prepare(core.iloc[[3, 1, 7]].reset_index(drop=True),
                                                               "person_id"))
