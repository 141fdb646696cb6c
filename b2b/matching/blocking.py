"""Blocking: the candidate (LA record, incoming record) pairs worth comparing.

Several keys, each an equi-join of the two prepared frames, so a pair is found when any of
them agrees: UPN; GUID (and GUID links, F16); DOB with surname or forename initial; DOB with
day and month swapped; surname with birth year and initial; forename and surname with the
postcode, or with the birthday (day and month: a year typed wrong), or with a December DOB
and the next birth year (days apart across a new year), or alone when either record has no
DOB; postcode with birth year; each part of a double-barrelled surname with
birth year and initial. A key value shared by more than ``block_cap`` LA records is skipped
(it says nothing).

Forename + surname alone is not a key when both records have a DOB (issue 15): it paired
every namesake of any age, the largest set of a large LA's pairs (6 of 10 per record at 80k
children) and the one growing fastest with it, and a namesake whose DOB is neither the
record's, nor a form of it (swapped, a digit, the same birthday) is never a candidate the
decision can link (an incompatible DOB is not eligible; one within 31 days across a new
year only with an identifier, itself a key, or the same home, the postcode key above; the
December key keeps such a record in an officer's queue).

The keys are listed once (:data:`KEYS`); two joins read them: pandas merges for large
frames (``b2b match``, a snapshot's big parts) and dictionaries for small ones (a per-school
run: a merge's fixed cost is ~6 ms per key however few the rows), with the same pairs in the
same order (``tests/test_matching_small.py``).
"""
from __future__ import annotations

from typing import Any

#: (LA columns, incoming columns or None for the same) of each blocking key, in order; then
#: the surname parts key (:data:`PART_KEY`, on exploded ``sn_parts``) and, with GUID
#: matching, ``guid`` and the GUID links
KEYS: tuple[tuple[tuple[str, ...], tuple[str, ...] | None], ...] = (
    (("upn",), None),
    (("dob_s", "sn1"), None),
    (("dob_s", "fn1"), None),
    (("dob_s", "sn1"), ("dob_swap", "sn1")),
    (("sn", "year", "fn1"), None),
    (("fn", "sn", "pc"), None),
    (("fn", "sn", "md"), None),
    (("fn", "sn", "ny"), ("fn", "sn", "year")),
    (("fn", "sn", "year"), ("fn", "sn", "ny")),
    (("fn", "sn", "no_dob"), ("fn", "sn", "one")),
    (("fn", "sn", "one"), ("fn", "sn", "no_dob")),
    (("pc", "year"), None),
    # issue 14 (no identifiers): the postcode unit with an initial (a DOB or a name mistyped),
    # and forename and surname entered the other way round (the DOB with the other initial)
    (("pc", "sn1"), None),
    (("pc", "fn1"), None),
    (("dob_s", "sn1"), ("dob_s", "fn1")),
)
#: key columns blocking derives from the prepared ``dob_s`` (``YYYYMMDD`` or ""): the birthday
#: (``MMDD``); for a DOB in December the next year (0 otherwise: no key value), paired with the
#: other record's birth year (a DOB days away across a new year); "1" for a record without a
#: DOB, "1" for every record ("" is no key value)
DERIVED = {"md": lambda dob_s: dob_s[4:],
           "ny": lambda dob_s: int(dob_s[:4]) + 1 if dob_s[4:6] == "12" else 0,
           "no_dob": lambda dob_s: "" if dob_s else "1", "one": lambda dob_s: "1"}
#: each part (>= 2 letters) of a double-barrelled / hyphenated surname with birth year and initial
PART_KEY = ("part", "year", "fn1")
GUID_KEY = ("guid",)
#: frames of at most this many rows (LA + incoming) are joined with dictionaries (measured:
#: 2,000 + 400 rows 56 ms vs 141 ms by merges; about even at 8,000; 3x slower at 18,000)
SMALL_ROWS = 8_000


def candidate_pairs(core: Any, inc: Any, cfg: Any, links: Any = None) -> Any:
    """(core row, incoming row) index pairs from every blocking key, deduplicated."""
    if len(core) + len(inc) <= SMALL_ROWS:
        return _pairs_small(core, inc, cfg, links)
    import numpy as np
    import pandas as pd

    frames = []

    def columns(frame: Any, keys: list[str]) -> Any:
        """``frame[keys]``, the :data:`DERIVED` columns computed."""
        out = frame[[k for k in keys if k not in DERIVED]].copy()
        for k in keys:
            if k in DERIVED:
                out[k] = frame["dob_s"].map(DERIVED[k])
        return out[keys]

    def block(keys_core: list[str], keys_inc: list[str] | None = None, core_df: Any = None,
              inc_df: Any = None) -> None:
        keys_inc = keys_inc or keys_core
        c = columns(core_df if core_df is not None else core, keys_core)
        c["ci"] = c.index
        i = columns(inc_df if inc_df is not None else inc, keys_inc)
        i["ii"] = i.index
        i.columns = keys_core + ["ii"]
        for k in keys_core:
            c = c[c[k].astype(str).ne("") & c[k].astype(str).ne("0")]
            i = i[i[k].astype(str).ne("") & i[k].astype(str).ne("0")]
        sizes = c.groupby(keys_core)["ci"].transform("size")
        c = c[sizes <= cfg.block_cap]
        frames.append(c.merge(i, on=keys_core)[["ci", "ii"]])

    for kc, ki in KEYS:
        block(list(kc), list(ki) if ki else None)
    # surname parts (double-barrelled / hyphenated names) with birth year
    cp = core[["sn_parts", "year", "fn1"]].explode("sn_parts").rename(columns={"sn_parts": "part"})
    ip = inc[["sn_parts", "year", "fn1"]].explode("sn_parts").rename(columns={"sn_parts": "part"})
    cp["part"] = cp["part"].fillna("")
    ip["part"] = ip["part"].fillna("")
    cp = cp[cp["part"].str.len() >= 2]
    ip = ip[ip["part"].str.len() >= 2]
    block(list(PART_KEY), core_df=cp, inc_df=ip)
    if cfg.guidmatch:
        block(list(GUID_KEY))
        if links is not None and len(links):
            lk = links.merge(core[["id"]].reset_index().rename(columns={"index": "ci", "id": "person_id"}),
                             on="person_id")
            ii = inc[["base_id", "guid"]].reset_index().rename(columns={"index": "ii"})
            frames.append(lk.merge(ii, on=["base_id", "guid"])[["ci", "ii"]])
    pairs = pd.concat(frames, ignore_index=True).drop_duplicates()
    return pairs.astype({"ci": np.int64, "ii": np.int64}).reset_index(drop=True)


def _pairs_small(core: Any, inc: Any, cfg: Any, links: Any) -> Any:
    """:func:`candidate_pairs` by dictionaries: for each key in order, the LA rows in order
    (those whose key value is present and shared by at most ``block_cap`` LA rows), each with
    its incoming rows in order (a pandas inner merge's order), first occurrence kept."""
    import numpy as np
    import pandas as pd

    cols: dict[tuple[str, str], list] = {}

    def col(side: str, name: str) -> list:
        if (side, name) not in cols:
            if name in DERIVED:
                cols[side, name] = [DERIVED[name](v) for v in col(side, "dob_s")]
            else:
                cols[side, name] = (core if side == "c" else inc)[name].tolist()
        return cols[side, name]

    ci_idx = core.index.tolist()
    ii_idx = inc.index.tolist()
    seen: set[tuple[int, int]] = set()
    out_c: list[int] = []
    out_i: list[int] = []

    def join(ckeys: list, crows: list, ikeys: list, irows: list) -> None:
        """``crows[n]`` carries ``ckeys[n]`` (a tuple), likewise the incoming side."""
        by_key: dict[tuple, list[int]] = {}
        for k, r in zip(ikeys, irows):
            # every value present: the merge path's ``astype(str)`` neither "" nor "0" (key
            # values are text and whole numbers)
            if not ("" in k or "0" in k or 0 in k):
                by_key.setdefault(k, []).append(r)
        if not by_key:
            return
        # only the LA rows some incoming row shares its key with matter (their key is present
        # too): counted for the cap, in LA order; the rest of a large LA side is one lookup a row
        size: dict[tuple, int] = {}
        kept = []
        for k, r in zip(ckeys, crows):
            if k in by_key:
                size[k] = size.get(k, 0) + 1
                kept.append((k, r))
        for k, r in kept:
            hits = by_key[k]
            if size[k] > cfg.block_cap:
                continue
            for i in hits:
                if (r, i) not in seen:
                    seen.add((r, i))
                    out_c.append(r)
                    out_i.append(i)

    def keyed(side: str, names: tuple[str, ...]) -> list:
        return list(zip(*(col(side, n) for n in names)))

    for kc, ki in KEYS:
        join(keyed("c", kc), ci_idx, keyed("i", ki or kc), ii_idx)

    def exploded(side: str, idx: list) -> tuple[list, list]:
        keys, rows = [], []
        for parts, year, fn1, r in zip(col(side, "sn_parts"), col(side, "year"), col(side, "fn1"), idx):
            for p in (parts or [""]) if isinstance(parts, list | tuple) else [parts]:
                if isinstance(p, str) and len(p) >= 2:
                    keys.append((p, year, fn1))
                    rows.append(r)
        return keys, rows

    join(*exploded("c", ci_idx), *exploded("i", ii_idx))
    if cfg.guidmatch:
        join(keyed("c", GUID_KEY), ci_idx, keyed("i", GUID_KEY), ii_idx)
        if links is not None and len(links):
            pos: dict[Any, list[int]] = {}
            for p, r in zip(col("c", "id"), ci_idx):
                pos.setdefault(p, []).append(r)
            inc_rows: dict[tuple, list[int]] = {}
            for b, g, r in zip(col("i", "base_id"), col("i", "guid"), ii_idx):
                inc_rows.setdefault((b, g), []).append(r)
            for b, g, p in zip(links["base_id"].tolist(), links["guid"].tolist(), links["person_id"].tolist()):
                for r in pos.get(p, ()):
                    for i in inc_rows.get((b, g), ()):
                        if (r, i) not in seen:
                            seen.add((r, i))
                            out_c.append(r)
                            out_i.append(i)
    return pd.DataFrame({"ci": np.array(out_c, dtype=np.int64), "ii": np.array(out_i, dtype=np.int64)})
