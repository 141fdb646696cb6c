"""Matching benchmark (issue 5): our matcher against the legacy rule on data with known truth.

The simulator builds an LA (school records + LA child records with realistic noise and
the traps in ``simulator/matching_data.py``); both matchers decide every school record;
the benchmark prints, for each: time, precision, recall, false links (by kind of record),
and the size of the ``possible`` queue.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]


def evaluate(out, truth: dict, kinds: dict) -> dict:
    linked = out[out["status"].isin(["matched", "matched_with_conflicts"])]
    t = linked["incoming_id"].map(truth)
    correct = (linked["person_id"] == t).sum()
    false = linked[linked["person_id"] != t.fillna("")]
    known = sum(1 for v in truth.values() if v is not None)
    possible = int((out["status"] == "possible").sum())
    return {"linked": len(linked), "correct": int(correct), "false": len(false),
            "precision": correct / max(len(linked), 1), "recall": correct / max(known, 1),
            "possible": possible, "possible_share": possible / max(len(out), 1),
            "false_by_kind": dict(Counter(kinds[i] for i in false["incoming_id"]).most_common())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--incoming", type=int, default=250_000)
    ap.add_argument("--core", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args(argv)

    from b2b.matching import legacy_match, match
    from simulator.matching_data import match_dataset

    t = time.perf_counter()
    core, inc, truth, kinds = match_dataset(args.incoming, args.core, seed=args.seed)
    print(f"matching: {len(inc):,} school records vs {len(core):,} LA records built in {time.perf_counter() - t:.0f}s; "
          f"kinds: {dict(Counter(kinds.values()).most_common())}")
    results = {}
    for name, fn in (("legacy", lambda: legacy_match(core, inc)), ("ours", lambda: match(core, inc))):
        t = time.perf_counter()
        out = fn()
        secs = time.perf_counter() - t
        r = results[name] = evaluate(out, truth, kinds) | {"seconds": secs}
        print(f"matching: {name:<6} {secs:7.1f}s ({len(inc) / secs:,.0f} records/s)  precision {r['precision']:.5f}  "
              f"recall {r['recall']:.5f}  false links {r['false']}  possible {r['possible']} "
              f"({100 * r['possible_share']:.2f}%)")
        print(f"matching: {name:<6} false links by kind: {r['false_by_kind'] or 'none'}")
    lf, of = results["legacy"]["false"], results["ours"]["false"]
    print(f"matching: false links legacy/ours = {lf}/{of} ({'inf' if of == 0 else f'{lf / of:.1f}'}x fewer); "
          f"recall {results['legacy']['recall']:.4f} -> {results['ours']['recall']:.4f}; "
          f"possible queue {100 * results['ours']['possible_share']:.2f}% of incoming")
    return 0


if __name__ == "__main__":
    sys.exit(main())
