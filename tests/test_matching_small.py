"""The matcher's small-input paths (issue 15) against its pandas paths, on the simulator's
matching data (twins, namesakes, a sibling's UPN, typos, ...) made messier still: many random
small batches, as per-school runs give them, decide exactly as the pandas paths do — the
prepared frames, the candidate pairs (and their order), every decision and explanation."""
import random
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from b2b.matching import blocking, normalise, small
from b2b.matching.decide import MatchConfig, match, prepare_core


def messy_match_data(core_n: int = 500, inc_n: int = 1_000, seed: int = 9, *, typed: int = 60, rng_seed: int = 3,
                     no_dob: tuple[int, int] = (40, 1), odd: tuple[str, str, int, int] = ("postcode", "  ct1  2ab ", 20, 2)):
    """The simulator's matching data made messier, as schools and LAs type it: ``typed`` school
    values padded, accented, lower-cased or missing; ``no_dob`` (how many, sample seed) LA
    records without a DOB and ``odd`` (column, value, how many, sample seed) LA values typed
    oddly; dates as the database gives them (the matcher's small-path tests share it)."""
    from simulator.matching_data import match_dataset

    core, inc, truth, _ = match_dataset(core_n, inc_n, seed=seed, schools=4)
    rng = random.Random(rng_seed)
    inc = inc.copy()
    for k in rng.sample(range(len(inc)), typed):
        col = rng.choice(["forename", "surname", "postcode", "upn", "gender", "middle_names", "address_line1",
                          "dob"])
        v = inc.at[k, col]
        inc.at[k, col] = rng.choice([None, "", "  ", f"  {v} ", str(v).lower() if v else v,
                                     (str(v) + "é") if col in ("forename", "surname") and v else v])
    core = core.copy()
    no_dob_ids = core.sample(no_dob[0], random_state=no_dob[1])["person_id"]
    core.loc[core["person_id"].isin(no_dob_ids), "dob"] = None
    # half of those children's school records without a UPN, in a home the LA does not know: the
    # name alone, the possible band (with a valid UPN agreeing, no DOB does not stop a link)
    without = [k for k, i in enumerate(inc["incoming_id"]) if truth.get(i) in set(no_dob_ids)][::2]
    inc.loc[without, ["upn", "postcode", "address_line1"]] = [None, "TN4 8AB", "9 New Lane"]
    core.loc[core.sample(odd[2], random_state=odd[3]).index, odd[0]] = odd[1]
    core["dob"] = pd.to_datetime(core["dob"], errors="coerce").dt.date  # what the database gives
    return core.reset_index(drop=True), inc.reset_index(drop=True), truth


@pytest.fixture(scope="module")
def data():
    return messy_match_data()


@pytest.fixture
def pandas_only(monkeypatch):
    """Run the matcher's pandas paths only (what large batches take)."""

    def use() -> None:
        monkeypatch.setattr(blocking, "SMALL_ROWS", -1)
        monkeypatch.setattr(normalise, "SMALL_ROWS", -1)
        monkeypatch.setattr(small, "SMALL_PAIRS", -1)
        monkeypatch.setattr(small, "SMALL_DIFFERING", -1)
        monkeypatch.setattr(small, "SMALL_DECIDE", -1)

    return use


def batches(core, inc, n, seed):
    rng = random.Random(seed)
    for _ in range(n):
        size = rng.choice([1, 2, 3, 5, 8, 20, 60])
        k = rng.randrange(len(inc) - size)
        yield inc.iloc[k:k + size].reset_index(drop=True)


def test_small_prepare_gives_the_pandas_frame(data, pandas_only):
    core, inc, _ = data
    fast = [normalise.prepare(core, "person_id"), normalise.prepare(inc, "incoming_id"),
             normalise.prepare(inc.iloc[3:5], "incoming_id")]
    pandas_only()
    big = [normalise.prepare(core, "person_id"), normalise.prepare(inc, "incoming_id"),
           normalise.prepare(inc.iloc[3:5], "incoming_id")]
    for a, b in zip(fast, big):
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_no_records_prepare_as_the_pandas_frame_and_each_call_gets_its_own(data):
    """A school run without students, or carers without candidates, prepares no records: the
    frame pandas builds (columns and dtypes), kept once per input shape (~20-30 ms each time
    before), and a copy per call, so a caller adding a column does not change the next one's."""
    core, inc, _ = data
    for df, id_col in ((core.iloc[:0], "person_id"), (inc.iloc[:0], "incoming_id")):
        first = normalise.prepare(df, id_col)
        pd.testing.assert_frame_equal(first, normalise._prepare_frame(df, id_col), check_exact=True)
        first["added"] = []
        again = normalise.prepare(df, id_col)
        assert "added" not in again.columns
        pd.testing.assert_frame_equal(again, normalise._prepare_frame(df, id_col), check_exact=True)


def test_small_prepare_leaves_non_ascii_upns_to_pandas(data):
    _, inc, _ = data
    odd = inc.iloc[:2].copy()
    odd["upn"] = ["a12ß", None]
    assert normalise._prepare_rows(odd, "incoming_id") is None


def test_small_blocking_finds_the_pandas_pairs_in_the_same_order(data):
    core, inc, _ = data
    pcore = normalise.prepare(core, "person_id")
    cfg = MatchConfig(block_cap=3)  # a low cap: some blocks are skipped on both paths
    links = pd.DataFrame({"base_id": inc["base_id"][:30], "guid": inc["guid"][:30],
                          "person_id": pcore["id"].sample(30, random_state=4).values, "linked_by": "match"})
    for batch in batches(core, inc, 25, 1):
        pinc = normalise.prepare(batch, "incoming_id")
        for c in (cfg, MatchConfig(), MatchConfig(guidmatch=False)):
            fast = blocking._pairs_small(pcore, pinc, c, links)
            blocking_big = blocking.SMALL_ROWS
            try:
                blocking.SMALL_ROWS = -1
                big = blocking.candidate_pairs(pcore, pinc, c, links)
            finally:
                blocking.SMALL_ROWS = blocking_big
            pd.testing.assert_frame_equal(fast, big)
            assert len(big) or len(batch) < 3


def test_namesakes_pair_only_by_postcode_birthday_or_a_missing_dob():
    """Forename + surname alone is a key only when a record has no DOB (issue 15): a namesake
    of another age and home is no candidate; the same names at the same postcode, on the same
    birthday (a year typed wrong), born in the December before the other's birth year (days
    apart across a new year), or without a DOB on either side are, on both joins."""
    core = pd.DataFrame([
        dict(person_id="home", forename="Ava", surname="Hill", dob="2014-02-03", postcode="CT1 2AB"),
        dict(person_id="birthday", forename="Ava", surname="Hill", dob="2015-03-04", postcode="ME1 1AA"),
        dict(person_id="other", forename="Ava", surname="Hill", dob="2016-07-08", postcode="ME2 2BB"),
        dict(person_id="no-dob", forename="Ava", surname="Hill", dob=None, postcode="ME3 3CC"),
        dict(person_id="december", forename="Ava", surname="Hill", dob="2018-12-28", postcode="ME4 4DD"),
    ], columns=["person_id", "upn", "guid", "forename", "middle_names", "surname", "gender", "dob", "postcode",
                "address_line1"])
    inc = pd.DataFrame([
        dict(incoming_id="a", base_id="1", forename="Ava", surname="Hill", dob="2019-03-04", postcode="CT1 2AB"),
        dict(incoming_id="b", base_id="1", forename="Ava", surname="Hill", dob=None, postcode="TN1 1AA"),
        dict(incoming_id="c", base_id="1", forename="Ava", surname="Hill", dob="2016-12-30", postcode="TN2 2BB"),
    ], columns=["incoming_id", "base_id", "upn", "guid", "forename", "middle_names", "surname", "gender", "dob",
                "postcode", "address_line1"])
    pcore, pinc = normalise.prepare(core, "person_id"), normalise.prepare(inc, "incoming_id")
    fast = blocking._pairs_small(pcore, pinc, MatchConfig(), None)
    pd.testing.assert_frame_equal(fast, blocking.candidate_pairs(pcore, pinc, MatchConfig()))
    try:
        small_rows, blocking.SMALL_ROWS = blocking.SMALL_ROWS, -1
        big = blocking.candidate_pairs(pcore, pinc, MatchConfig())
    finally:
        blocking.SMALL_ROWS = small_rows
    pd.testing.assert_frame_equal(fast, big)
    got = {(pinc["id"][i], pcore["id"][c]) for c, i in zip(big["ci"], big["ii"])}
    # "a" (2019) and the LA's December 2018 child; "c" (December 2016) and the LA's 2017 child
    assert got == {("a", "home"), ("a", "birthday"), ("a", "no-dob"), ("a", "december"),
                   ("b", "home"), ("b", "birthday"), ("b", "other"), ("b", "no-dob"), ("b", "december"),
                   ("c", "no-dob"), ("c", "other")}


def decide_both(core, batch, pandas_only, monkeypatch, **kw):
    fast = match(core, batch, **kw)
    with monkeypatch.context() as m:
        m.setattr(blocking, "SMALL_ROWS", -1)
        m.setattr(normalise, "SMALL_ROWS", -1)
        m.setattr(small, "SMALL_PAIRS", -1)
        m.setattr(small, "SMALL_DIFFERING", -1)
        m.setattr(small, "SMALL_DECIDE", -1)
        big = match(core, batch, **kw)
    return fast, big


def reasons(decided) -> set[str]:
    """Every decision rule an explanation names: why_not_auto / why_not_possible reasons, the
    household and margin notes, officer links."""
    import json

    out: set[str] = set()
    for e in decided["explanation"]:
        d = json.loads(e)
        out |= set(d.get("why_not_auto", [])) | {"not_possible:" + r for r in d.get("why_not_possible", [])}
        out |= {k for k in ("household", "margin_over", "officer_link", "at_the_las_school") if k in d}
    return out


def test_array_pairs_give_every_level_and_weight_of_the_series_path(data, monkeypatch):
    """Each comparison's level and weight per candidate pair (numpy arrays vs pandas Series)."""
    from b2b.matching.comparisons import TermFrequencies, score_pairs

    core, inc, _ = data
    pcore = normalise.prepare(core, "person_id")
    pinc = normalise.prepare(inc, "incoming_id")
    tf = TermFrequencies.from_frame(pcore)
    links = pd.DataFrame({"base_id": inc["base_id"][:30], "guid": inc["guid"][:30],
                          "person_id": pcore["id"].sample(30, random_state=4).values, "linked_by": "match"})
    # the candidates, and random pairs for the levels candidates seldom reach
    rng = np.random.default_rng(5)
    pairs = pd.concat([blocking.candidate_pairs(pcore, pinc, MatchConfig(), links),
                       pd.DataFrame({"ci": rng.integers(0, len(pcore), 3_000), "ii": rng.integers(0, len(pinc), 3_000)})],
                      ignore_index=True)
    assert len(pairs) <= small.SMALL_PAIRS
    for cfg in (MatchConfig(), MatchConfig(guidmatch=False)):
        arrays = score_pairs(pcore, pinc, pairs, cfg, links, tf)
        with monkeypatch.context() as m:
            m.setattr(small, "SMALL_PAIRS", -1)
            series = score_pairs(pcore, pinc, pairs, cfg, links, tf)
        pd.testing.assert_frame_equal(arrays, series, check_exact=True)
        assert arrays["score"].nunique() > 20


def test_small_batches_decide_as_the_pandas_path(data, pandas_only, monkeypatch):
    """Students: the whole LA prepared once (the DAG path), officer links and rejections."""
    from b2b.matching.comparisons import TermFrequencies

    core, inc, truth = data
    whole = prepare_core(core)
    tf = TermFrequencies.from_frame(whole.prep)
    statuses: set[str] = set()
    conflicts: set[str] = set()
    for n, batch in enumerate(batches(core, inc, 30, 2)):
        known = [(b, g, truth.get(i)) for b, g, i in zip(batch["base_id"], batch["guid"], batch["incoming_id"])
                 if truth.get(i)]
        links = pd.DataFrame([(b, g, p, "officer" if n % 3 == 0 else "match") for b, g, p in known[:2]],
                             columns=["base_id", "guid", "person_id", "linked_by"])
        rejected = pd.DataFrame([(b, g, p) for b, g, p in known[2:3]], columns=["base_id", "guid", "person_id"])
        # a part's candidates: a random slice of the LA around the batch's children
        rows = np.unique(np.concatenate([np.flatnonzero(whole.prep["id"].isin([p for *_, p in known])),
                                         np.random.default_rng(n).choice(len(whole), 200, replace=False)]))
        fast, big = decide_both(whole.take(rows), batch, pandas_only, monkeypatch, links=links, rejected=rejected,
                                 tf=tf)
        pd.testing.assert_frame_equal(fast, big, check_exact=True)
        statuses |= set(big["status"])
        conflicts |= {f for v in big["conflicting_fields"] for f in v.split(";") if f}
    assert {"matched", "matched_with_conflicts", "possible", "unmatched"} <= statuses
    assert {"forename", "surname", "postcode", "dob"} <= conflicts


def test_small_batches_of_carers_decide_as_the_pandas_path(data, pandas_only, monkeypatch):
    """Carers (F14): no DOB, no GUID matching, a minimum age, the LA frame prepared per call."""
    import datetime as dt

    core, inc, _ = data
    cfg = MatchConfig(guidmatch=False, dob_required=False)
    for batch in batches(core, inc, 15, 3):
        batch = batch.assign(dob=None, upn=None, middle_names=None)
        fast, big = decide_both(core.sample(300, random_state=len(batch)), batch, pandas_only, monkeypatch,
                                 cfg=cfg, min_age=6, as_of=dt.date(2026, 10, 5))
        pd.testing.assert_frame_equal(fast, big, check_exact=True)


def test_small_differing_fields_equal_the_pandas_path(data, monkeypatch):
    """The compared fields that differ for chosen pairs, value by value vs Series maps, with
    blank, padded, missing and accented values on both sides."""
    from b2b.matching.decide import differing

    core, inc, _ = data
    inc = inc.copy()
    inc.loc[inc.sample(25, random_state=7).index, "surname"] = "  "
    inc.loc[inc.sample(25, random_state=8).index, "postcode"] = " "
    rng = np.random.default_rng(6)
    ci = rng.integers(0, len(core), len(inc))
    rows = rng.random(len(inc)) < 0.8
    fast = differing(core, inc, ci, rows)
    monkeypatch.setattr(small, "SMALL_DIFFERING", -1)
    big = differing(core, inc, ci, rows)
    assert fast.tolist() == big.tolist()
    assert sum("surname" in v for v in big) > 20



@pytest.fixture(scope="module")
def schools():
    """Six whole schools against their LA, with the same pupil twice on one roll (claimed twice)."""
    from simulator.matching_data import match_dataset

    core, inc, truth, _ = match_dataset(1_500, 3_000, seed=9, schools=6)
    twice = inc[inc["incoming_id"].map(truth).notna()].sample(15, random_state=2)
    inc = pd.concat([inc, twice.assign(incoming_id=twice["incoming_id"] + "-again")], ignore_index=True)
    return core.reset_index(drop=True), inc, truth


def test_whole_schools_decide_on_arrays_as_the_pandas_path(data, schools, pandas_only, monkeypatch):
    """Every decision rule on the array path: whole schools decided at once (twins the LA does
    not know, ambiguous runner-ups, the household guard, a child claimed twice or at another
    school, UPNs that differ, households that moved together, the school the LA holds, officer
    links and rejections),
    students and carers, against the pandas path's rows, statuses, scores and explanations."""
    import datetime as dt

    from b2b.matching.comparisons import TermFrequencies

    monkeypatch.setattr(small, "SMALL_DECIDE", 10 ** 9)  # the array path, however many pairs
    seen: set[str] = set()
    for core, inc, truth in (data, schools):
        whole = prepare_core(core)
        tf = TermFrequencies.from_frame(whole.prep)
        known = [(b, g, truth[i]) for b, g, i in zip(inc["base_id"], inc["guid"], inc["incoming_id"])
                 if truth.get(i)]
        links = pd.DataFrame([(b, g, p, "officer" if k % 2 else "match") for k, (b, g, p) in enumerate(known[:40])],
                             columns=["base_id", "guid", "person_id", "linked_by"])
        rejected = pd.DataFrame(known[40:60], columns=["base_id", "guid", "person_id"])
        runs = [(whole, inc, {"links": links, "rejected": rejected, "tf": tf}),
                (whole, inc, {"cfg": MatchConfig(moved_household="always"), "tf": tf}),
                # (the school the LA holds corroborates most moved families first: without it)
                (whole, inc, {"cfg": MatchConfig(moved_household="always", school_evidence=False), "tf": tf}),
                (whole, inc.assign(upn=None, guid=None), {"tf": tf}),
                (core, inc.assign(dob=None, upn=None, middle_names=None),
                 {"cfg": MatchConfig(guidmatch=False, dob_required=False), "min_age": 6,
                  "as_of": dt.date(2026, 10, 5)})]
        for c, batch, kw in runs:
            fast, big = decide_both(c, batch, pandas_only, monkeypatch, **kw)
            pd.testing.assert_frame_equal(fast, big, check_exact=True)
            seen |= reasons(big)
    assert {"ambiguous", "twin_in_batch", "claimed_twice", "below_auto", "uncorroborated", "officer_link",
            "margin_over", "household", "at_the_las_school", "not_possible:forename_differs", "not_possible:claimed_by_twin",
            "not_possible:upn_differs", "not_possible:claimed_elsewhere"} <= seen, seen


def test_the_school_rules_decide_on_arrays_as_the_pandas_path(pandas_only, monkeypatch):
    """The school the LA holds (issue 14): a moved child linked there, twins on the roll, two
    namesakes held there, a namesake born days away held at another school — both paths alike."""
    def la(pid, fn, sn, dob, base, pc="CT1 2AB", addr="1 Green Road"):
        return dict(person_id=pid, upn=None, guid=None, forename=fn, middle_names=None, surname=sn, gender="F",
                    dob=dob, postcode=pc, address_line1=addr, base_id=base)

    def rec(iid, fn, sn, dob, base="8862001"):
        return dict(incoming_id=iid, base_id=base, upn=None, guid=f"g-{iid}", forename=fn, middle_names=None,
                    surname=sn, gender="F", dob=dob, postcode="TN4 8AB", address_line1="12 New Street")

    core = pd.DataFrame([la("P1", "Freya", "Moss", "2016-03-04", "8862001"),
                         la("P2", "Elizabeth", "Hart", "2015-01-02", "8862001"),
                         la("P3", "Elizabeth", "Hart", "2015-01-02", "8862001", "ME15 6QX", "7 Elsewhere Road"),
                         la("P4", "Ruby", "Lane", "2014-05-15", "8862009"),
                         la("P5", "Ivy", "Cole", "2017-07-07", "8862001")])
    inc = pd.DataFrame([rec("moved", "Freya", "Moss-Whitfield", "2016-03-04"), rec("two", "Elizabeth", "Hart", "2015-01-02"),
                        rec("days", "Ruby", "Lane", "2014-05-05"), rec("ivy", "Ivy", "Cole", "2017-07-07"),
                        rec("twin", "Isla", "Cole", "2017-07-07")])
    fast, big = decide_both(core, inc, pandas_only, monkeypatch)
    pd.testing.assert_frame_equal(fast, big, check_exact=True)
    got = dict(zip(fast["incoming_id"], zip(fast["status"], fast["person_id"])))
    assert got == {"moved": ("matched_with_conflicts", "P1"), "two": ("possible", "P2"), "days": ("unmatched", ""),
                   "ivy": ("matched_with_conflicts", "P5"), "twin": ("unmatched", "")}, got
    assert {"at_the_las_school", "not_possible:held_at_another_school"} <= reasons(fast)


def test_the_quick_paths_of_name_and_postcode_keys_give_the_general_rule():
    """``name_key``, ``name_parts`` and ``postcode_key`` answer plain ASCII values without a
    regular expression (issue 15); over random values (accents, apostrophes, hyphens, spaces,
    digits, upper case, non-strings) they equal the general rule."""
    import re

    rng = random.Random(3)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 '-éÖßıİ\t"
    values = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 9))) for _ in range(20000)]
    values += ["Smith", "SW1A 1AA", "sw1a1aa", "", None, float("nan"), 12, "Ǆ", "ß"]
    values += ["محمد", "Иван", "李", "ZZ99 3WZ", "NFA", "n/a"]
    for v in values:
        low = normalise._ascii_lower(v)
        other = normalise._other_script(v)  # (a name in another script keeps its own letters)
        assert normalise.name_key(v) == (re.sub(r"[^a-z]", "", low) or other), v
        assert normalise.name_parts(v) == ([p for p in re.split(r"[^a-z]+", low.replace("'", "")) if p]
                                           or ([other] if other else [])), v
        pc = re.sub(r"[^A-Z0-9]", "", str(v or "").upper())  # (a placeholder postcode is none)
        assert normalise.postcode_key(v) == ("" if pc.startswith("ZZ99") or not re.search(r"[0-9]", pc) else pc), v


def test_address_fields_and_the_ascii_fold_give_the_general_rule():
    """``_ascii_lower`` skips the accent fold for ASCII text, and ``address_fields`` folds an
    address line once for ``address_key`` and ``address_parts`` (issue 15): over random lines
    (house numbers with letters, commas, accents, upper case, non-strings) both equal the rule."""
    rng = random.Random(5)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,'-éÖßıİ\t"
    values = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 14))) for _ in range(20000)]
    values += [f"{rng.randrange(1, 300)}{rng.choice(['', 'a', 'B'])}{rng.choice([' ', ', ', ''])}Howe Wây"
               for _ in range(2000)]
    values += ["12A Howe Way", "  7 , Élan Court ", "Rose Cottage", "", None, float("nan"), 12, "Ǆ 3"]
    for v in values:
        general = "" if v is None or (isinstance(v, float) and v != v) else \
            str(v).lower().translate(normalise._FOLD).strip()
        assert normalise._ascii_lower(v) == general, v
        assert normalise.address_fields(v) == (normalise.address_key(v), *normalise.address_parts(v)), v


def test_is_missing_answers_as_pandas_does_for_every_kind_of_scalar():
    """``normalise.is_missing`` (and the differing-fields rule's ``small._missing``) skip pandas
    for the common types (issue 15): the answer stays pandas' own for every kind of value."""
    import datetime as dt

    import numpy as np

    from b2b.matching.normalise import is_missing

    values = [None, float("nan"), np.nan, np.float64("nan"), np.float32("nan"), pd.NaT, pd.NA, np.datetime64("NaT"),
              "", "x", " ", 0, 1, True, False, 1.5, np.float64(2.0), np.int64(3), dt.date(2020, 1, 2),
              dt.datetime(2020, 1, 2, 3), pd.Timestamp("2020-01-02"), np.datetime64("2020-01-02"), b"x", Decimal("1")]
    for v in values:
        assert bool(is_missing(v)) == bool(pd.isna(v)), repr(v)
        assert bool(small._missing(v)) == (bool(pd.isna(v)) or v == ""), repr(v)
