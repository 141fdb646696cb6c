"""validate_blocks (GX on each distinct value once, verdicts remembered) against the plain way:
one Great Expectations pass over every row of every block type (each row alone where GX raises on
the column: a value GX raises on alone fails), on blocks with hostile values, JSON objects included."""
import json
import os
import random
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from b2b.blocks import BLOCK_TYPES
from b2b.ingest import validation
from b2b.ingest.validation import load_suite, validate_blocks
from b2b.reconcile.attendance import change_problems

AS_OF = date(2026, 10, 5)
ROOT = Path(__file__).resolve().parent.parent

HOSTILE = ["", " ", "NaN", "nan", "None", "null", "N/A", "0", "1", "-1", "Zoë", "名前", "x" * 5000, "M\u0000",
           "ct1 2ab", "CT1 2AB", "GIR 0AA", "2026-02-30", "2016-01-26", "26/01/2016", "F886200326001",
           "A886200326001", "//LL/", "//%/", None, None, 0, 1, 25, 26, -1, 1.0, 2.5, -0.0, float("nan"), True,
           False, ["M"], [], {"M": 1}, {}, {"code": None}]
# numbers for between-expectations, and now and then a value GX cannot compare with them (text, a JSON
# object): GX raises for the whole column then, and each value it raises on alone fails its expectation
NUMERIC = [None, 0, 1, 2, 20, 21, -1, 1.0, 1.5, -0.0, float("nan"), True, False, None, 3, 7, 20, 1]
UNCOMPARABLE = ["X", "5", "", {"r": 1}, ["1"]]


def hostile(rng, good, numeric=False):
    if rng.random() < 0.5:
        return rng.choice(good)
    if numeric:
        return rng.choice(UNCOMPARABLE) if rng.random() < 0.1 else rng.choice(NUMERIC)
    return rng.choice(HOSTILE)


def item(rng, suite, numeric_cols):
    out = {}
    for e in suite["expectations"]:
        col = e["kwargs"]["column"]
        good = [v for v in e["kwargs"].get("value_set", []) if not isinstance(v, bool)][:5] or ["X"]
        out[col] = hostile(rng, [1, 2, 20] if col in numeric_cols else good, col in numeric_cols)
    for col in suite["columns"]:
        out.setdefault(col, hostile(rng, ["2026-01-05", "Kent", 2026], col in numeric_cols))
    if rng.random() < 0.2:
        out.pop(rng.choice(suite["columns"]))
    return out


def hostile_blocks(seed, n=300):
    rng = random.Random(seed)
    blocks = []
    for i in range(n):
        bt = rng.choice(BLOCK_TYPES)
        suite = load_suite(bt)
        numeric = {e["kwargs"]["column"] for e in suite["expectations"]
                   if e["type"] == "expect_column_values_to_be_between"}
        if suite["rows"] == "block":
            content = item(rng, suite, numeric)
            content.update({"upn": hostile(rng, ["F886200326001", "A886200326001", "B886200126231"]),
                            "dob": hostile(rng, ["2016-01-26", "1990-01-01", "2019-07-16"])}
                           if bt == "student" else {})
            if bt == "attendance" and rng.random() < 0.6:
                content["changes"] = [{"code": hostile(rng, ["/", "L", "%", "N"]),
                                       "date": hostile(rng, ["2026-10-01", "2026-10-03", "2027-10-01", "2025-07-22"]),
                                       "session": hostile(rng, ["AM", "PM", "pm"])}
                                      for _ in range(rng.randint(0, 3))]
        else:
            content = {suite["rows"]: [item(rng, suite, numeric) for _ in range(rng.randint(0, 3))]}
        blocks.append({"file_id": 1 + i // 40, "ordinal": i, "base_id": "8862001", "block_type": bt,
                       "student_guid": f"g{i // 3}", "content": content})
    return blocks


def reference(blocks, as_of):
    """One GX pass over every row: each block type as one DataFrame, its whole suite at once."""
    import great_expectations as gx
    import pandas as pd
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration
    from stdnum.gb import upn

    context = gx.get_context(mode="ephemeral")
    batch = context.data_sources.add_pandas("ref").add_dataframe_asset("rows").add_batch_definition_whole_dataframe("b")
    anomalies, invalid, alone = [], set(), []
    by_type = {}
    for b in blocks:
        by_type.setdefault(b["block_type"], []).append(b)
    for bt in sorted(by_type):
        suite = load_suite(bt)
        rows, owner = [], []
        for bi, b in enumerate(by_type[bt]):
            c = b["content"]
            for it in [c] if suite["rows"] == "block" else c.get(suite["rows"], []):
                row = {k: validation._none_if_nan(it.get(k)) for k in suite["columns"]}
                if bt == "attendance":
                    row["change_codes"] = ("".join(str(ch.get("code") or "") for ch in c["changes"])
                                           if "changes" in c else None)
                    found = change_problems(c["changes"], c.get("academic_year"), as_of) if "changes" in c else None
                    for col, f in validation.CHANGE_FIELDS.items():
                        row[col] = found and found[f]
                if bt == "student":
                    row["upn_check_ok"] = None if row["upn"] in (None, "") else upn.is_valid(str(row["upn"]))
                    row["dob_age"] = validation._age(row["dob"], as_of)
                    row["start_date_ok"] = validation._is_date(row["start_date"])
                rows.append(row)
                owner.append(bi)
        if not rows:
            continue
        df = pd.DataFrame(rows, dtype=object)
        df["_row"] = range(len(rows))
        gsuite = gx.ExpectationSuite(name=f"ref_{bt}")
        for i, e in enumerate(suite["expectations"]):
            gsuite.add_expectation_configuration(ExpectationConfiguration(type=e["type"], kwargs=e["kwargs"],
                                                                          meta={"i": i}))
        res = batch.get_batch(batch_parameters={"dataframe": df}).validate(
            gsuite, result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["_row"]})
        failed, raised = {}, []
        for er in res.results:
            i = er.expectation_config.meta["i"]
            if validation._raised(er.exception_info):
                raised.append(i)
                continue
            failed[i] = sorted(int(r["_row"]) for r in er.result.get("unexpected_index_list") or [])
        alone += [(bt, suite["expectations"][i]["type"]) for i in raised]
        if raised:  # GX raised on the whole column: each row judged alone, raising alone is failing
            wide, gsuite = {}, gx.ExpectationSuite(name=f"ref_{bt}_alone")
            for i in raised:
                e = suite["expectations"][i]
                failed[i] = []
                for r, row in enumerate(rows):
                    wide[f"c{i}_{r}"] = [row[e["kwargs"]["column"]]]
                    gsuite.add_expectation_configuration(ExpectationConfiguration(
                        type=e["type"], kwargs=dict(e["kwargs"], column=f"c{i}_{r}"), meta={"i": i, "r": r}))
            df = pd.DataFrame(wide, dtype=object)
            res = batch.get_batch(batch_parameters={"dataframe": df}).validate(gsuite, result_format="COMPLETE")
            for er in res.results:
                m = er.expectation_config.meta
                if validation._raised(er.exception_info) or not er.success:
                    failed[m["i"]].append(m["r"])
            for i in raised:
                failed[i].sort()
        for i, e in enumerate(suite["expectations"]):
            meta = e["meta"]
            seen = set()
            for r in failed[i]:
                b = by_type[bt][owner[r]]
                v = rows[r].get(meta["field"], rows[r][e["kwargs"]["column"]])
                try:
                    hash(v)
                    same = v
                except TypeError:
                    same = ("json", json.dumps(v, sort_keys=True, default=str))
                if (owner[r], same) in seen:
                    continue
                seen.add((owner[r], same))
                anomalies.append((b["file_id"], b["ordinal"], bt, meta["rule"], meta["field"],
                                  None if v is None else str(v), meta["severity"]))
                if meta["severity"] == "error":
                    invalid.add((b["file_id"], b["ordinal"]))
    return anomalies, invalid, alone


def outcome(r):
    return ([(a.file_id, a.ordinal, a.block_type, a.rule, a.field, a.value, a.severity) for a in r.anomalies],
            r.invalid_blocks)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_hostile_values_give_the_anomalies_of_one_gx_pass_over_every_row(seed):
    blocks = hostile_blocks(seed)
    *expected, alone = reference(blocks, AS_OF)
    expected = tuple(expected)
    assert expected[0], "the hostile blocks should fail some rules"
    assert alone, "GX should raise on some column of the hostile blocks"
    validation._verdicts.clear()
    cold = validate_blocks(blocks, run_label="t", as_of=AS_OF)
    assert not cold.suspended
    assert outcome(cold) == expected
    warm = validate_blocks(blocks, run_label="t", as_of=AS_OF)  # every value's verdict remembered now
    assert outcome(warm) == expected
    # the same values again, split over runs in another order
    validation._verdicts.clear()
    half = len(blocks) // 2
    parts = [validate_blocks(blocks[half:], run_label="t", as_of=AS_OF),
             validate_blocks(blocks[:half], run_label="t", as_of=AS_OF)]
    anomalies = sorted(a for p in parts for a in outcome(p)[0])
    assert anomalies == sorted(expected[0]) and set().union(*(p.invalid_blocks for p in parts)) == expected[1]


def test_a_value_where_a_scalar_belongs_is_an_anomaly_not_a_crash():
    r = validate_blocks([{"file_id": 1, "ordinal": 1, "base_id": "8862001", "block_type": "student",
                          "student_guid": "g", "content": {"upn": "F886200326001", "surname": "B", "forename": "J",
                                                           "dob": "2016-01-26", "gender": ["M"]}}],
                        run_label="t", as_of=AS_OF)
    assert [(a.rule, a.value) for a in r.anomalies] == [("gender_code", "['M']")] and r.invalid_blocks == {(1, 1)}


def test_a_run_whose_values_were_all_judged_before_does_not_import_gx(db, db_url):
    blocks = hostile_blocks(7, n=60)
    validation._verdicts.clear()  # this process has not judged them either
    first = validate_blocks(blocks, run_label="t", as_of=AS_OF, verdicts=db)  # judged, verdicts stored
    db.commit()
    script = f"""
import json, sys
from datetime import date
from b2b import db
from b2b.ingest.validation import validate_blocks
blocks = json.loads(sys.stdin.read())
with db.connect({db_url!r}) as conn:
    r = validate_blocks(blocks, run_label="t", as_of=date(2026, 10, 5), verdicts=conn)
print(json.dumps({{"gx": "great_expectations" in sys.modules, "pandas": "pandas" in sys.modules,
                  "anomalies": [[a.file_id, a.ordinal, a.rule, a.value] for a in r.anomalies]}}))
"""
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{ROOT / 'plugins'}")
    out = subprocess.run([sys.executable, "-c", script], input=json.dumps(blocks, allow_nan=True), env=env,
                         capture_output=True, text=True, check=True, cwd=ROOT)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["gx"] is False and got["pandas"] is False
    assert got["anomalies"] == [[a.file_id, a.ordinal, a.rule, a.value] for a in first.anomalies]
