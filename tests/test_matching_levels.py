"""Comparisons as labelled levels (issue 13 part 5): every field's level and weight in the
explanation, the one "same value" rule for differing fields, and the legacy rule's frame."""
import json

import pandas as pd
from stdnum.gb.upn import calc_check_digit

from b2b.blocks import COMPARED_BY_NAME
from b2b.matching import COMPARISONS, CORE_COLUMNS, INCOMING_COLUMNS, PARTS, Weights, legacy_match, match
from b2b.matching.decide import FRAME_COMPARED

UPN_A = calc_check_digit("886200124001") + "886200124001"


def la(pid, forename, surname, dob, **kw):
    row = dict(person_id=pid, upn=None, guid=None, forename=forename, middle_names=None, surname=surname,
               gender="F", dob=dob, postcode="CT1 2AB", address_line1="1 Green Road")
    return row | kw


def school(iid, forename, surname, dob, **kw):
    row = dict(incoming_id=iid, base_id="8862001", upn=None, guid=f"g-{iid}", forename=forename, middle_names=None,
               surname=surname, gender="F", dob=dob, postcode="CT1 2AB", address_line1="1 Green Road")
    return row | kw


def run(core, inc, fn=match):
    out = fn(pd.DataFrame(core, columns=CORE_COLUMNS), pd.DataFrame(inc, columns=INCOMING_COLUMNS))
    return {r["incoming_id"]: r for r in out.to_dict("records")}


def test_every_comparison_is_a_level_list_from_missing_to_a_catch_all():
    names = set(Weights.names())
    for comp in COMPARISONS:
        assert comp.levels[-1].when is None, comp.field          # the last level takes every other pair
        assert all(lv.when is not None for lv in comp.levels[:-1]), comp.field
        assert len(set(comp.labels)) == len(comp.labels), comp.field
        assert all(lv.weight is None or lv.weight in names for lv in comp.levels)
    assert PARTS == [c.field for c in COMPARISONS]


def test_explanation_records_each_fields_level_and_weight_including_missing_and_initial_only():
    core = [la("P1", "Amelia", "Jones", "2016-03-04", upn=UPN_A, middle_names="Rose")]
    inc = [school("s1", "Anna", "Jones", "2016-03-04", upn=UPN_A, postcode=None)]
    e = json.loads(run(core, inc)["s1"]["explanation"])
    f = e["fields"]
    assert set(f) == set(PARTS)
    assert f["forename"] == {"level": "initial only", "weight": Weights().forename_initial}
    assert f["postcode"] == {"level": "missing", "weight": 0.0}
    assert f["middle_names"] == {"level": "missing", "weight": 0.0}
    assert f["upn"] == {"level": "valid, equal", "weight": Weights().upn_agree}
    assert f["dob"]["level"] == "exact" and f["surname"]["level"] == "exact"
    assert e["score"] == round(sum(v["weight"] for v in f.values()), 2)


def test_differing_fields_use_the_registrys_same_value_rule():
    # "JONES" = "Jones" and "ct12ab" = "CT1 2AB" under b2b.blocks.same_value: no conflict
    core = [la("P1", "Amelia", "JONES", "2016-03-04", upn=UPN_A, postcode="ct12ab")]
    r = run(core, [school("s1", "Amelia", "Jones", "2016-03-04", upn=UPN_A)])["s1"]
    assert (r["status"], r["conflicting_fields"]) == ("matched", "")
    # a different gender code is a difference the conflicts stage records too
    r = run([la("P1", "Amelia", "Jones", "2016-03-04", upn=UPN_A, gender="M")],
            [school("s1", "Amelia", "Jones", "2016-03-04", upn=UPN_A)])["s1"]
    assert (r["status"], r["conflicting_fields"]) == ("matched_with_conflicts", "gender")


def test_differing_fields_are_registry_compared_fields():
    assert all(f in COMPARED_BY_NAME for f in FRAME_COMPARED)


def test_legacy_rule_returns_the_same_frame_as_ours():
    core = [la("P1", "Amelia", "Jones", "2016-03-04", upn=UPN_A)]
    inc = [school("s1", "Amelia", "Jones", "2016-03-04", upn=UPN_A), school("s2", "Zoe", "Brown", "2015-01-01")]
    ours, legacy = run(core, inc), run(core, inc, legacy_match)
    assert set(ours["s1"]) == set(legacy["s1"])
    assert json.loads(legacy["s1"]["explanation"]) == {"legacy_rule": "upn_3_of_4"}
    assert (legacy["s2"]["status"], json.loads(legacy["s2"]["explanation"])) == ("unmatched", {"legacy_rule": "none"})
    assert json.loads(ours["s2"]["explanation"]) == {"candidates": 0}  # every output is explained


def test_train_reports_learned_weights_bounded_by_the_hand_weights(tmp_path):
    """``b2b match --train``: EM over the blocked pairs, every weighted level reported, each learned
    weight within [0.5, 1.5] x its hand weight; the file it writes loads as the matcher's weights."""
    import csv
    import subprocess
    import sys

    from b2b.matching.train import load_weights

    names = ["Amelia", "Oscar", "Isla", "Noah", "Freya", "Leo", "Ruby", "Jack", "Evie", "Harry"]
    surnames = ["Jones", "Hill", "Patel", "Smith", "Brown", "Khan", "Wood", "Reed"]
    core, inc = [], []
    for k in range(80):
        body = f"8862001{k:05d}"
        u = calc_check_digit(body) + body
        fn, sn = names[k % 10], surnames[k % 8]
        dob = f"201{k % 8}-0{k % 9 + 1}-1{k % 10}"
        core.append(la(f"P{k}", fn, sn, dob, upn=u))
        inc.append(school(f"s{k}", fn if k % 7 else fn + "a", sn, dob, upn=u if k % 5 else None))
    for path, rows, cols in ((tmp_path / "core.csv", core, CORE_COLUMNS), (tmp_path / "inc.csv", inc, INCOMING_COLUMNS)):
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, cols)
            w.writeheader()
            w.writerows(rows)
    res = subprocess.run([sys.executable, "-m", "b2b.cli", "match", "--train", "--core", str(tmp_path / "core.csv"),
                          "--incoming", str(tmp_path / "inc.csv"), "--weights-out", str(tmp_path / "w.json")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "learned" in res.stdout and "valid, equal" in res.stdout
    learned, hand = json.loads((tmp_path / "w.json").read_text())["weights"], Weights()
    for name, v in learned.items():
        h = getattr(hand, name)
        assert min(0.5 * h, 1.5 * h) <= v <= max(0.5 * h, 1.5 * h), name
    assert load_weights(tmp_path / "w.json").upn_agree == learned["upn_agree"]


def test_the_matcher_ships_with_the_reviewed_weights_file():
    from b2b.matching import MatchConfig
    from b2b.matching.train import WEIGHTS_FILE, load_weights

    assert WEIGHTS_FILE.exists()
    assert MatchConfig().weights == load_weights(WEIGHTS_FILE)


def test_term_frequency_a_rare_surname_agreeing_counts_more_than_a_common_one():
    from b2b.matching.comparisons import TermFrequencies

    core = [la(f"S{k}", "Amelia", "Smith", "2016-03-04") for k in range(30)] + \
        [la("Q1", "Amelia", "Quennell", "2015-01-02")] + [la(f"O{k}", "Noah", f"Other{k}", "2014-01-01")
                                                           for k in range(30)]
    from b2b.matching.normalise import prepare

    tf = TermFrequencies.from_frame(prepare(pd.DataFrame(core, columns=CORE_COLUMNS), "person_id"))
    smith, rare = tf.adjustment("sn", ["smith", "quennell"])
    assert smith < 0 < rare and -1.0 <= smith and rare <= 2.0
    inc = [school("s", "Amelia", "Quennell", "2015-01-02")]
    e = json.loads(run(core, inc)["s"]["explanation"])
    assert e["fields"]["surname"]["weight"] == Weights().surname_exact + rare


def test_surname_typed_error_and_partial_address_levels():
    core = [la("P1", "Esme", "Lloyd", "2011-03-24", address_line1="24 Janice Field")]
    inc = [school("s", "Esme", "Llayd", "2011-03-24", address_line1="24 Janise Field", postcode="CT1 2AB")]
    f = json.loads(run(core, inc)["s"]["explanation"])["fields"]
    assert f["surname"] == {"level": "typed error", "weight": Weights().surname_typed}
    assert f["address_line1"] == {"level": "same number, street typed", "weight": Weights().address_street_typo}
    inc = [school("s", "Esme", "Lloyd", "2011-03-24", address_line1="25 Janice Field")]
    f = json.loads(run(core, inc)["s"]["explanation"])["fields"]
    assert f["address_line1"] == {"level": "same street, other number", "weight": Weights().address_street}


def test_address_parts_split_the_house_number_from_the_street():
    from b2b.matching.normalise import address_parts

    assert address_parts("12A Howe Way") == ("12a", "howeway")
    assert address_parts("Rose Cottage") == ("", "")  # a house name: no partial comparison
    assert address_parts(None) == ("", "")


def test_forename_and_surname_entered_the_other_way_round_link_but_never_a_twin():
    twins = [la("P1", "Amelia", "Jones", "2016-03-04", upn=UPN_A), la("P2", "Isla", "Jones", "2016-03-04")]
    got = run(twins, [school("s", "Jones", "Amelia", "2016-03-04", upn=UPN_A)])["s"]  # was possible (15 bits)
    f = json.loads(got["explanation"])["fields"]
    assert f["forename"] == {"level": "swapped with surname", "weight": Weights().forename_swapped}
    assert f["surname"] == {"level": "swapped with forename", "weight": Weights().surname_swapped}
    assert (got["status"], got["person_id"]) == ("matched_with_conflicts", "P1")
    # no identifier: the same home carries it (was unmatched); the twin's forename is not the swapped name
    got = run(twins, [school("s", "Jones", "Isla", "2016-03-04")])["s"]
    assert (got["status"], got["person_id"]) == ("matched_with_conflicts", "P2")
    # one name in both fields, or only one of the two swapped, is no swap
    f = json.loads(run([la("P1", "Jones", "Jones", "2016-03-04")], [school("s", "Jones", "Jones", "2016-03-04")])["s"]
                   ["explanation"])["fields"]
    assert f["forename"]["level"] == "exact"
    f = json.loads(run(twins, [school("s", "Jones", "Smith", "2016-03-04")])["s"]["explanation"])["fields"]
    assert f["forename"]["level"] != "swapped with surname"


def test_a_postcode_one_typed_character_away_is_a_level_and_corroborates_as_the_sector_does():
    core = [la("P1", "Esme", "Lloyd", "2011-03-24", postcode="CT1 2AB", address_line1="24 Janice Field")]
    r = run(core, [school("s", "Esme", "Lloyd", "2011-03-24", postcode="CT2 1AB", address_line1="Flat 3")])["s"]
    e = json.loads(r["explanation"])
    assert e["fields"]["postcode"] == {"level": "typed error", "weight": Weights().postcode_typed}
    assert r["status"].startswith("matched")  # before: possible, uncorroborated
    r = run(core, [school("s", "Esme", "Lloyd", "2011-03-24", postcode="ME4 4QA", address_line1="Flat 3")])["s"]
    assert r["status"] == "possible" and "uncorroborated" in json.loads(r["explanation"])["why_not_auto"]


def _text_pairs(n, seed):
    """Value pairs as the comparisons meet them: repeats, empties, the same text, one slip,
    a transposition, other lengths, accents, DOB texts one digit apart."""
    import random

    rng = random.Random(seed)
    base = ["amelia", "amelie", "jo", "", "rené", "renee", "20100101", "20100110", "20011001", "2010010",
            "ct12ab", "ct12ba", "howeway", "howway", "o", "ö"]

    def slip(x):
        if not x:
            return x
        k = rng.randrange(len(x))
        return rng.choice([x[:k] + x[k + 1:], x[:k] + "x" + x[k + 1:], x[:k] + x[k + 1:k + 2] + x[k:k + 1] + x[k + 2:]])

    a = [rng.choice(base) for _ in range(n)]
    b = [slip(x) if rng.random() < 0.5 else rng.choice(base) for x in a]
    return a, b


def test_per_distinct_judges_every_pair_as_the_predicate_does_on_object_and_arrow_text():
    """``per_distinct`` finds the distinct pairs on each column's codes and judges them by the
    predicate (its ``many`` form where it has one): every row as the predicate on that row."""
    import numpy as np

    from b2b.matching import comparisons as C

    a, b = _text_pairs(5_000, 1)
    for dtype in (object, "str"):
        sa, sb = pd.Series(a, dtype=dtype), pd.Series(b, dtype=dtype)
        for fn in (C._typed, C._typed1, C._one_digit, lambda x, y: C._jaro_winkler(x, y) >= 0.9):
            want = np.array([bool(fn(x, y)) for x, y in zip(a, b)])
            assert (C.per_distinct(sa, sb, fn) == want).all(), (dtype, fn)
    # a missing value (never in a prepared column) is judged as a value of its own
    for dtype in (object, "str"):
        got = C.per_distinct(pd.Series(["a", None, "a", "b"], dtype=dtype), pd.Series(["a", "b", "c", None], dtype=dtype),
                             lambda x, y: x == y)
        assert got.tolist() == [True, False, False, False]
    # the vectorised one-digit judgement is the scalar one, pair by pair
    x, y = np.array(a, dtype=object), np.array(b, dtype=object)
    assert (C._one_digit.many(x, y) == np.array([C._one_digit(p, q) for p, q in zip(a, b)])).all()
    assert C._one_digit.many(x, y).any()


def test_term_frequency_adjustments_are_the_same_for_many_values_as_for_a_few():
    """Above 1,000 values the adjustment is computed per distinct value by its code: the same
    bits as value by value, for object and Arrow text."""
    import numpy as np

    from b2b.matching.comparisons import TermFrequencies

    names = ["smith"] * 50 + ["jones"] * 20 + ["okonkwo"] + ["zephyr"] * 2
    tf = TermFrequencies.from_frame(pd.DataFrame({"fn": names, "sn": names}))
    values = (names + ["unknown", ""]) * 40
    few = np.concatenate([tf.adjustment("sn", values[k:k + 500]) for k in range(0, len(values), 500)])
    for dtype in (object, "str"):
        many = tf.adjustment("sn", pd.Series(values, dtype=dtype).values)
        assert len(values) > 1_000 and np.array_equal(many, few)
    assert few.min() < 0 < few.max()  # rare and common names both met
