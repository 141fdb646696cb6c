"""Matching under combined noise (issue 14): each of the issue's noise kinds alone and in pairs.

The simulator's matching dataset (``simulator/matching_data.py``) gives each school record one
trap or one kind of noise at most. Real records can carry two at once: a keyboard slip in a
family that also moved, a new surname with a DOB a digit out. This bench takes the dataset's
clean true pairs whose school record and LA record hold the same valid UPN, and gives each
a noise kind or a pair of kinds on different fields:

* forename: a neighbouring key (``slip``), two letters swapped (``transposition``), any letter
  replaced (``substitution``, "Jgll"), a vowel replaced (``vowel``, "Poul"), a letter dropped
  (``deletion``), a nickname or the full name (``nickname``, the ``nicknames`` package);
* DOB: one digit (``dob_digit``), day and month swapped (``dob_swap``);
* surname: another family name (``surname_change``), double-barrelled (``hyphenated``);
* address: another LA home (``moved``), none (``no_address``); the GUID: none (``no_guid``);
* how values are typed: capitals and stray spaces (``shouting``), apostrophes and hyphens
  (``punctuation``), a surname decoded with the wrong code page (``mojibake``), a postcode
  without its space (``postcode_format``), a street abbreviated (``street_abbreviated``), no
  DOB (``no_dob``).

Every other record of the dataset (its twins, siblings and namesakes) stays as the simulator
made it, so a noisy record still meets the traps. Prints, with and without identifiers, the
automatic recall of the noisy records, their false links and queue share, and the combinations
that link least.

    python bench/bench_noise.py                 # 15k school records x 30k LA records
    python bench/bench_noise.py --per 100 --worst 20
"""
from __future__ import annotations

import argparse
import itertools
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(ROOT / "bench")]

LETTERS = "abcdefghijklmnopqrstuvwxyz"
#: the record's columns each noise field touches (two kinds combine only on different columns)
FIELDS = {"forename": {"forename"}, "surname": {"surname"}, "forename2": {"forename", "surname"}, "dob": {"dob"},
          "address": {"postcode", "address_line1"}, "postcode": {"postcode"}, "address_line1": {"address_line1"},
          "guid": {"guid"}}
SURNAMES = ("Smith", "Patel", "Khan", "Walker", "Hughes", "Wood", "Begum", "Turner", "Okafor", "Nowak")


def _forename_noise(rng: random.Random, nicknamer):
    from simulator.matching_data import _slip  # (the simulator's own slips: a neighbouring key, two swapped)

    def at(name: str, lo: int = 1) -> int:
        return rng.randrange(lo, len(name)) if len(name) > lo else 0

    def slip(n: str) -> str:
        return _slip(n, str(rng.random()), "keyboard_slip") if len(n) > 1 else n

    def transposition(n: str) -> str:
        return _slip(n, str(rng.random()), "transposition") if len(n) > 2 else n

    def substitution(n: str) -> str:
        low = n.lower()
        k = at(low)
        return (low[:k] + rng.choice([c for c in LETTERS if c != low[k]]) + low[k + 1:]).capitalize()

    def vowel(n: str) -> str:
        low = n.lower()
        ks = [k for k, c in enumerate(low) if c in "aeiou" and k > 0]
        if not ks:
            return n
        k = rng.choice(ks)
        return (low[:k] + rng.choice([v for v in "aeiou" if v != low[k]]) + low[k + 1:]).capitalize()

    def deletion(n: str) -> str:
        low = n.lower()
        if len(low) < 4:
            return n
        k = at(low)
        return (low[:k] + low[k + 1:]).capitalize()

    def nickname(n: str) -> str:
        forms = sorted(nicknamer.nicknames_of(n.lower()) | nicknamer.canonicals_of(n.lower()))
        return rng.choice(forms).capitalize() if forms else n

    return {"slip": slip, "transposition": transposition, "substitution": substitution, "vowel": vowel,
            "deletion": deletion, "nickname": nickname}


def noise_kinds(rng: random.Random, core) -> dict:
    """{kind: (field, fn(record dict) -> None)}: each kind edits one field of a record in place."""
    import pandas as pd
    from nicknames import NickNamer

    homes = core[["postcode", "address_line1"]].dropna().drop_duplicates().to_numpy().tolist()

    def on(col: str, fn):
        def edit(r: dict) -> None:
            if r[col]:
                r[col] = fn(r[col])
        return edit

    def dob_digit(d: str) -> str:
        for _ in range(10):
            k = rng.choice([2, 3, 5, 6, 8, 9])
            out = d[:k] + str((int(d[k]) + rng.choice((1, -1))) % 10) + d[k + 1:]
            if pd.to_datetime(out, errors="coerce") is not pd.NaT:
                return out
        return d

    def dob_swap(d: str) -> str:
        y, m, day = d.split("-")
        return f"{y}-{day}-{m}" if int(day) <= 12 and m != day else d

    def moved(r: dict) -> None:
        r["postcode"], r["address_line1"] = rng.choice(homes)

    def no_address(r: dict) -> None:
        r["postcode"] = r["address_line1"] = None

    def no_guid(r: dict) -> None:
        r["guid"] = None

    kinds = {k: ("forename", on("forename", fn)) for k, fn in _forename_noise(rng, NickNamer()).items()}
    kinds.update({
        "dob_digit": ("dob", on("dob", dob_digit)), "dob_swap": ("dob", on("dob", dob_swap)),
        "surname_change": ("surname", on("surname", lambda s: rng.choice([x for x in SURNAMES if x != s]))),
        "hyphenated": ("surname", on("surname", lambda s: f"{s}-{rng.choice(SURNAMES)}" if rng.random() < 0.5
                                     else f"{rng.choice(SURNAMES)}-{s}")),
        "moved": ("address", moved), "no_address": ("address", no_address), "no_guid": ("guid", no_guid)})
    # data-entry forms of the same values: capitals and stray spaces, punctuation in names, a
    # name decoded with the wrong code page, a postcode without its space, a street abbreviated
    kinds.update({
        "shouting": ("forename2", lambda r: r.update(forename=f"  {r['forename'].upper()} ",
                                                     surname=(r["surname"] or "").upper() + " ")),
        "punctuation": ("surname", on("surname", lambda s: s.replace("'", "").replace("-", " ") if ("'" in s or "-" in s)
                                      else (f"O'{s}" if rng.random() < 0.5 else s[:len(s) // 2] + "-" + s[len(s) // 2:]))),
        "mojibake": ("surname", on("surname", lambda s: s[:1] + s[1:].replace("e", "Ã©", 1).replace("o", "Ã¶", 1))),
        "postcode_format": ("postcode", on("postcode", lambda p: p.replace(" ", "").lower())),
        "street_abbreviated": ("address_line1", on("address_line1", lambda a: a.replace(" Road", " Rd")
                                                   .replace(" Street", " St").replace(" Avenue", " Ave")
                                                   .replace(" Lane", " Ln") if any(w in a for w in (" Road", " Street", " Avenue", " Lane"))
                                                   else a.upper())),
        "no_dob": ("dob", lambda r: r.update(dob=None))})
    return kinds


def noisy_dataset(n_incoming: int, n_core: int, seed: int, per: int):
    """(core, incoming, truth, kinds, {incoming_id: combination}) with ``per`` records per combination."""
    from b2b.upn import is_valid
    from simulator.matching_data import match_dataset

    core, inc, truth, kinds = match_dataset(n_incoming, n_core, seed=seed)
    rng = random.Random(seed)
    noise = noise_kinds(rng, core)
    combos = [(k,) for k in noise] + [(a, b) for a, b in itertools.combinations(noise, 2)
                                      if FIELDS[noise[a][0]].isdisjoint(FIELDS[noise[b][0]])]
    la_upn = dict(zip(core["person_id"], core["upn"]))
    pool = [k for k, (iid, u) in enumerate(zip(inc["incoming_id"], inc["upn"]))
            if kinds.get(iid) in ("clean", "sibling") and truth.get(iid) and u and is_valid(u)
            and la_upn.get(truth[iid]) == u]
    rng.shuffle(pool)
    if len(pool) < per * len(combos):
        per = len(pool) // len(combos)
    rows = inc.to_dict("records")
    given = {}
    for n, combo in enumerate(combos):
        for k in pool[n * per:(n + 1) * per]:
            for kind in combo:
                noise[kind][1](rows[k])
            given[rows[k]["incoming_id"]] = combo
    import pandas as pd
    return core, pd.DataFrame(rows, columns=inc.columns), truth, kinds, given


def report(label: str, out, truth: dict, given: dict, worst: int) -> dict:
    by = defaultdict(Counter)
    for iid, status, pid in zip(out["incoming_id"], out["status"], out["person_id"]):
        if iid not in given:
            continue
        linked = status in ("matched", "matched_with_conflicts")
        right = pid == truth[iid]
        by[given[iid]]["auto" if linked and right else "false" if linked else
                       "queue" if status == "possible" else "unmatched"] += 1
    total = sum(by.values(), Counter())
    n = sum(total.values())
    print(f"noise: {label}: {n:,} noisy records in {len(by)} combinations: auto recall {total['auto'] / n:.4f}, "
          f"false links {total['false']}, queue {100 * total['queue'] / n:.2f}%, unmatched {total['unmatched']}")
    rows = sorted(((c["auto"] / max(sum(c.values()), 1), "+".join(k), c) for k, c in by.items()))
    for share, name, c in rows[:worst]:
        print(f"    {share:.2f}  {name:<28} {dict(c)}")
    return {"recall": total["auto"] / n, "false": total["false"], "queue": total["queue"] / n}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--incoming", type=int, default=15_000)
    ap.add_argument("--core", type=int, default=30_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--per", type=int, default=60, help="noisy records per combination")
    ap.add_argument("--worst", type=int, default=8, help="combinations to list, least linked first")
    args = ap.parse_args(argv)

    from bench_matching import strip_ids

    from b2b.matching import match

    core, inc, truth, _, given = noisy_dataset(args.incoming, args.core, args.seed, args.per)
    report("ids", match(core, inc), truth, given, args.worst)
    report("no ids", match(*strip_ids(core, inc)), truth, given, args.worst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
