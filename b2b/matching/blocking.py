"""Blocking: the candidate (LA record, incoming record) pairs worth comparing.

Several keys, each an equi-join of the two prepared frames, so a pair is found when any of
them agrees: UPN; GUID (and GUID links, F16); DOB with surname or forename initial; DOB with
day and month swapped; surname with birth year and initial; forename with surname; postcode
with birth year; each part of a double-barrelled surname with birth year and initial. A key
value shared by more than ``block_cap`` LA records is skipped (it says nothing).
"""
from __future__ import annotations

from typing import Any


def candidate_pairs(core: Any, inc: Any, cfg: Any, links: Any = None) -> Any:
    """(core row, incoming row) index pairs from every blocking key, deduplicated."""
    import numpy as np
    import pandas as pd

    frames = []

    def block(keys_core: Any, keys_inc: Any = None, core_df: Any = None, inc_df: Any = None) -> None:
        keys_inc = keys_inc or keys_core
        c = (core_df if core_df is not None else core)[keys_core].copy()
        c["ci"] = c.index
        i = (inc_df if inc_df is not None else inc)[keys_inc].copy()
        i["ii"] = i.index
        i.columns = keys_core + ["ii"]
        for k in keys_core:
            c = c[c[k].astype(str).ne("") & c[k].astype(str).ne("0")]
            i = i[i[k].astype(str).ne("") & i[k].astype(str).ne("0")]
        sizes = c.groupby(keys_core)["ci"].transform("size")
        c = c[sizes <= cfg.block_cap]
        frames.append(c.merge(i, on=keys_core)[["ci", "ii"]])

    block(["upn"])
    block(["dob_s", "sn1"])
    block(["dob_s", "fn1"])
    block(["dob_s", "sn1"], ["dob_swap", "sn1"])
    block(["sn", "year", "fn1"])
    block(["fn", "sn"])
    block(["pc", "year"])
    # surname parts (double-barrelled / hyphenated names) with birth year
    cp = core[["sn_parts", "year", "fn1"]].explode("sn_parts").rename(columns={"sn_parts": "part"})
    ip = inc[["sn_parts", "year", "fn1"]].explode("sn_parts").rename(columns={"sn_parts": "part"})
    cp["part"] = cp["part"].fillna("")
    ip["part"] = ip["part"].fillna("")
    cp = cp[cp["part"].str.len() >= 2]
    ip = ip[ip["part"].str.len() >= 2]
    block(["part", "year", "fn1"], core_df=cp, inc_df=ip)
    if cfg.guidmatch:
        block(["guid"])
        if links is not None and len(links):
            lk = links.merge(core[["id"]].reset_index().rename(columns={"index": "ci", "id": "person_id"}),
                             on="person_id")
            ii = inc[["base_id", "guid"]].reset_index().rename(columns={"index": "ii"})
            frames.append(lk.merge(ii, on=["base_id", "guid"])[["ci", "ii"]])
    pairs = pd.concat(frames, ignore_index=True).drop_duplicates()
    return pairs.astype({"ci": np.int64, "ii": np.int64}).reset_index(drop=True)
