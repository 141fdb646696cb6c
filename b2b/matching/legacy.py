"""The vendor rule, kept as the baseline the benchmark compares with (and for ``MATCHER: legacy``):
a linked GUID (GUIDMATCH on); else UPN plus 3 of the 4 identifiers (DOB, surname, gender,
forename) on exactly one LA record; else all 4 on exactly one record; else unmatched.

It returns the same frame as :func:`b2b.matching.match` (``score`` is empty: the rule has
none; the explanation names the rule that decided).
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass


def legacy_match(core_df: Any, incoming_df: Any, *, guidmatch: bool = True, links: Any = None) -> Any:
    """The vendor rule (baseline): GUID link; UPN + 3 of 4; all 4 on exactly one; else none."""
    import pandas as pd

    from b2b.matching.normalise import dob_dates

    core = core_df.reset_index(drop=True).copy()
    inc = incoming_df.reset_index(drop=True).copy()
    for df in (core, inc):
        for c in ("upn", "guid", "forename", "surname", "gender"):
            df[c] = df[c].where(df[c].notna(), "").astype(str)
        df["_fn"] = df["forename"].str.lower().str.strip()
        df["_sn"] = df["surname"].str.lower().str.strip()
        df["_dob"] = pd.Series(dob_dates(df["dob"]), index=df.index).dt.strftime("%Y-%m-%d").fillna("")
    out = pd.DataFrame({"incoming_id": inc["incoming_id"].astype(str), "status": "unmatched", "person_id": "",
                        "rule": "none"})
    decided = pd.Series(False, index=inc.index)
    if guidmatch:
        g = inc.reset_index().merge(core[core["guid"] != ""][["guid", "person_id"]], on="guid")
        if links is not None and len(links):
            lk = inc.reset_index().merge(links.astype(str)[["base_id", "guid", "person_id"]], on=["base_id", "guid"])
            g = pd.concat([lk[["index", "person_id"]], g[["index", "person_id"]]])
        g = g.drop_duplicates("index")
        _decide(out, decided, g["index"], g["person_id"], "guid")
    rest = inc[~decided].reset_index()
    u = rest[rest["upn"] != ""].merge(core[core["upn"] != ""], on="upn", suffixes=("", "_c"))
    u["agree"] = ((u["_dob"] == u["_dob_c"]) & (u["_dob"] != "")).astype(int) + (u["_sn"] == u["_sn_c"]).astype(int) \
        + (u["gender"] == u["gender_c"]).astype(int) + (u["_fn"] == u["_fn_c"]).astype(int)
    u = u[u["agree"] >= 3]
    one = u[u.groupby("index")["index"].transform("size") == 1]
    _decide(out, decided, one["index"], one["person_id_c" if "person_id_c" in one else "person_id"], "upn_3_of_4")
    rest = inc[~decided].reset_index()
    a = rest[rest["_dob"] != ""].merge(core, on=["_dob", "_sn", "gender", "_fn"], suffixes=("", "_c"))
    one = a[a.groupby("index")["index"].transform("size") == 1]
    _decide(out, decided, one["index"], one["person_id_c" if "person_id_c" in one else "person_id"], "all_4")
    out["score"] = float("nan")
    out["conflicting_fields"] = ""
    out["explanation"] = [json.dumps({"legacy_rule": r}) for r in out["rule"]]
    return out


def _decide(out: Any, decided: Any, idx: Any, person_ids: Any, rule: str) -> None:
    idx = list(idx)
    if not idx:
        return
    out.loc[idx, "status"] = "matched"
    out.loc[idx, "person_id"] = list(person_ids)
    out.loc[idx, "rule"] = rule
    decided.loc[idx] = True
