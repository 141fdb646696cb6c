"""Decisions: one status per incoming record from its scored candidates.

- ``matched`` / ``matched_with_conflicts``: best score >= ``auto``, ahead of the next
  eligible candidate by ``margin``, forename and DOB compatible, and corroborated by a UPN,
  GUID, address/postcode or middle-name agreement (name + DOB alone is what a namesake
  elsewhere shares); the compared fields whose values differ are listed (the one "same
  value" rule of :mod:`b2b.blocks`, as the conflicts stage uses);
- ``possible``: best score >= ``possible`` but not safe to link (an officer confirms);
- ``unmatched``: no candidate scores enough.

Officer decisions are inputs: a GUID an officer linked matches that child (rule
``officer_link``); a rejected (GUID, child) pair is never proposed again.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from b2b.blocks import CONFLICT_FIELDS
from b2b.matching.blocking import candidate_pairs
from b2b.matching.comparisons import (
    COMPARISONS,
    DOB_COMPATIBLE,
    PARTS,
    TermFrequencies,
    Weights,
    at,
    label_of,
    score_pairs,
)
from b2b.matching.normalise import INCOMING_COLUMNS, prepare
from b2b.matching.train import load_weights

STATUSES = ("matched", "matched_with_conflicts", "possible", "unmatched")
CHUNK = 1_000_000
#: the compared fields (b2b.blocks.COMPARED) the matcher's frames carry, in the registry's order
FRAME_COMPARED = tuple(f for f in CONFLICT_FIELDS if f in INCOMING_COLUMNS)


@dataclass(frozen=True)
class MatchConfig:
    auto: float = 20.0        # auto-link at or above (with margin, forename and corroboration)
    possible: float = 12.0    # propose to an officer at or above
    margin: float = 5.0       # best must beat the next candidate by this much to auto-link
    guidmatch: bool = True    # F16
    weights: Weights = field(default_factory=load_weights)  # the reviewed file include/matching/weights.json
    block_cap: int = 500      # ignore blocking values shared by more LA records than this
    dob_required: bool = True  # False for carers (F14): a school contact has no DOB; a missing one does not stop a link


@dataclass(frozen=True)
class PreparedCore:
    """LA records prepared once (:func:`prepare_core`): the comparison columns (``prep``) and the
    raw compared fields the differing-fields rule reads (``raw``), row-aligned. Pass it to
    :func:`match` / :func:`candidates` in place of the LA frame; :meth:`take` selects a subset
    (the DAG path's candidates of one school part) without normalising anything again."""

    raw: Any
    prep: Any

    def __len__(self) -> int:
        return len(self.prep)

    def take(self, rows: Any) -> PreparedCore:
        """The records at these positions (an int array or a boolean mask), in that order."""
        import numpy as np

        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return PreparedCore(self.raw.iloc[rows].reset_index(drop=True), self.prep.iloc[rows].reset_index(drop=True))


def prepare_core(core_df: Any) -> PreparedCore:
    """The LA side of :func:`match` prepared once (normalised names, UPN kinds, DOB forms,
    postcode keys): preparing is row by row, so ``prepare_core(df).take(rows)`` is exactly the
    preparation of ``df.iloc[rows]`` — a run matching many parts against one LA prepares it once."""
    core_df = core_df.reset_index(drop=True)
    raw = core_df[[f for f in FRAME_COMPARED if f in core_df.columns]]
    prep = prepare(core_df, "person_id")
    # only what blocking, scoring and deciding read (not the stripped raw text columns)
    return PreparedCore(raw, prep.drop(columns=[c for c in _PREP_UNREAD if c in prep.columns]))


#: prepared columns nothing after :func:`prepare` reads (their normalised forms are read instead)
_PREP_UNREAD = ("forename", "middle_names", "surname", "postcode", "address_line1")


def _core_sides(core_df: Any) -> tuple[Any, Any]:
    """(raw LA frame, prepared LA frame) of a DataFrame or a :class:`PreparedCore`."""
    if isinstance(core_df, PreparedCore):
        return core_df.raw, core_df.prep
    core_df = core_df.reset_index(drop=True)
    return core_df, prepare(core_df, "person_id")


def match(core_df: Any, incoming_df: Any, cfg: MatchConfig | None = None, *, links: Any = None, rejected: Any = None,
          min_age: int | None = None, as_of: Any = None, tf: TermFrequencies | None = None) -> Any:
    """Decide every incoming record. Returns a DataFrame with one row per incoming record:
    ``incoming_id, status, person_id, rule, score, conflicting_fields, explanation``.

    ``min_age`` (with ``as_of``): LA records younger than this are never candidates — the
    carer rule CARER_MIN (F14): a child can be matched as a carer only from that age.

    ``links``: DataFrame (base_id, guid, person_id, linked_by) of GUID links (F16);
    ``linked_by = 'officer'`` ones are decisive. ``rejected``: DataFrame (base_id, guid,
    person_id) of pairs an officer rejected (never proposed again). ``tf``: the LA's name
    frequencies (default: counted on ``core_df``, which must then be the whole LA).
    ``core_df`` may be a :class:`PreparedCore` (:func:`prepare_core`): the same decisions,
    without preparing the LA records again.
    """
    import numpy as np
    import pandas as pd

    cfg = cfg or MatchConfig()
    core_df, core = _core_sides(core_df)
    incoming_df = incoming_df.reset_index(drop=True)
    inc = prepare(incoming_df, "incoming_id")
    empty_links = pd.DataFrame(columns=["base_id", "guid", "person_id", "linked_by"])
    links = empty_links if links is None or not len(links) else links.astype(str)
    n = len(inc)
    out = pd.DataFrame({"incoming_id": inc["id"], "status": "unmatched", "person_id": "", "rule": "none",
                        "score": 0.0, "conflicting_fields": "", "explanation": '{"candidates": 0}'})
    if not n or not len(core):
        return out
    use_links = links if cfg.guidmatch else None
    tf = tf or TermFrequencies.from_frame(core)
    pairs = candidate_pairs(core, inc, cfg, use_links)
    s = pd.concat([score_pairs(core, inc, pairs.iloc[k:k + CHUNK], cfg, use_links, tf)
                   for k in range(0, max(len(pairs), 1), CHUNK)], ignore_index=True)
    s["person_id"] = core["id"].values[s["ci"].values]
    if min_age is not None:
        import datetime as _dt

        ref = pd.Timestamp(as_of or _dt.date.today())
        born = core["dob"].values[s["ci"].values]
        cutoff = ref - pd.DateOffset(years=min_age)
        s = s[~(pd.to_datetime(born) > cutoff)]  # unknown DOB: kept
    if rejected is not None and len(rejected):
        rej = set(zip(rejected["base_id"].astype(str), rejected["guid"].astype(str), rejected["person_id"].astype(str)))
        keep = [(b, g, p) not in rej for b, g, p in zip(inc["base_id"].values[s["ii"].values],
                                                        inc["guid"].values[s["ii"].values], s["person_id"])]
        s = s[np.array(keep, dtype=bool)]
    # candidates whose forename and DOB are compatible rank first: a twin or sibling whose UPN
    # the school typed by mistake may score higher on the UPN, but is not the child
    # (a DOB only near the LA's counts when the UPN or GUID also agrees)
    identifier = at(s, "upn", "valid, equal", "equal, temporary") | at(s, "guid", "linked")
    # (or the same home with the very forename: siblings are born months apart)
    dob_ok = at(s, "dob", *DOB_COMPATIBLE) | (at(s, "dob", "within 31 days") & (identifier | s["home_strong"].values))
    if not cfg.dob_required:
        dob_ok = dob_ok | at(s, "dob", "missing")
    # unknown twins: two records of one school with one surname, DOB and address are twins
    # (whether the LA knows both or not); each must match on its forename, not the shared fields
    twin = batch_twins(inc)[s["ii"].values]
    s["eligible"] = s["forename_ok"].values & dob_ok & ~(twin & ~s["forename_strong"].values)
    # the household guard: another DOB-compatible candidate (a twin, a sibling) whose forename
    # is exactly the record's stops a link on any other forename level (nickname, typo, typed);
    # only a candidate that could itself be the child (>= the possible band): a twin or sibling
    # of the household shares surname, DOB and address and scores far above it, a stranger who
    # only shares the forename and a DOB does not
    s["exact_other"] = at(s, "forename", "exact") & dob_ok & (s["score"].values >= cfg.possible)
    s = s.sort_values(["ii", "eligible", "score", "person_id"], ascending=[True, False, False, True])
    best = s.groupby("ii", sort=False).head(1).set_index("ii").reindex(range(n))
    el = s[s["eligible"]]
    el = el[el.groupby("ii", sort=False).cumcount() == 1]
    runner = el.set_index("ii")["score"].reindex(range(n)).fillna(-np.inf).values
    n_good = s[s["score"] >= cfg.possible].groupby("ii").size().reindex(range(n)).fillna(0).astype(int).values
    has = best["ci"].notna().values
    score = best["score"].fillna(0).values
    eligible = best["eligible"].fillna(False).astype(bool).values
    fn_ok = best["forename_ok"].fillna(False).astype(bool).values
    corro = best["corroborated"].fillna(False).astype(bool).values
    # corroboration that counts (a valid permanent UPN with DOB and surname or forename) is
    # enough at the "possible" score: common names (term frequencies) do not hold it back
    # the same home with the very forename and DOB (no identifier needed) likewise
    strong = best["upn_strong"].fillna(False).astype(bool).values | best["home_strong"].fillna(False).astype(bool).values
    below, ambiguous = score < np.where(strong, cfg.possible, cfg.auto), score - runner < cfg.margin
    exact_any = s.groupby("ii")["exact_other"].any().reindex(range(n), fill_value=False).values.astype(bool)
    weak_fn = ~best["forename_strong"].fillna(False).astype(bool).values
    best_lv = best.fillna({f + "_lv": -1 for f in PARTS}).astype({f + "_lv": int for f in PARTS})
    exact_fn = at(best_lv, "forename", "exact")
    household = has & ~exact_fn & exact_any
    safe = has & ~below & ~ambiguous & eligible & corro & ~household
    # one LA child auto-linked from two records of one school in the batch (a twin the LA does
    # not know, or the same pupil twice): the one record whose forename is exactly the child's
    # keeps the link when the others' are not; otherwise none does; the others go to an officer.
    # (Two schools may both hold a child: dual registration links each.)
    best_ci = best["ci"].fillna(-1).astype(int).values
    claim = pd.DataFrame({"base": inc["base_id"].values if "base_id" in inc else "", "ci": best_ci,
                          "exact": exact_fn})
    sub = claim[safe]
    agg = sub.groupby(["base", "ci"])["exact"].agg(["size", "sum"]).reset_index()
    keyed = claim.merge(agg, on=["base", "ci"], how="left")
    twice = safe & (keyed["size"].fillna(0).values > 1) & ~((keyed["sum"].fillna(0).values == 1) & exact_fn)
    # across schools too: a child claimed with its exact forename by one record is not linked
    # to another school's record whose forename is only a form or a typo of it (a twin the LA
    # does not know, on another roll: "Leon" beside the LA's "Leo"); two exact claims are a
    # dual registration and both link
    exact_claim = claim[safe & exact_fn]["ci"].unique()
    twice = twice | (safe & ~exact_fn & np.isin(best_ci, exact_claim))
    safe = safe & ~twice
    in_twins = batch_twins(inc)
    # the possible band holds a candidate one explainable discrepancy from the record; a
    # forename that is neither the name, a form of it, a typing error nor its initial weighs
    # against the child (forename_disagree) and, with no UPN or GUID agreeing, what is left is
    # what a twin or sibling shares (surname, DOB, address): another child — unmatched, the
    # nearest candidate still explained (why_not_possible)
    stranger = has & ~safe & at(best_lv, "forename", "different") & \
        ~(at(best_lv, "upn", "valid, equal", "equal, temporary") | at(best_lv, "guid", "linked"))
    maybe = has & ~safe & (score >= cfg.possible) & ~stranger
    # officer links are decisive
    officer_ci = np.full(n, -1)
    if cfg.guidmatch and len(links):
        officer = links[links["linked_by"] == "officer"]
        pos = {p: k for k, p in enumerate(core["id"])}
        okey = {(b, g): pos[p] for b, g, p in zip(officer["base_id"], officer["guid"], officer["person_id"]) if p in pos}
        officer_ci = np.array([okey.get((b, g), -1) for b, g in zip(inc["base_id"], inc["guid"])])
    by_officer = officer_ci >= 0
    ci = np.where(by_officer, officer_ci, best["ci"].fillna(-1).astype(int).values)
    linked = by_officer | safe
    shown = linked | maybe
    differ = differing(core_df, incoming_df, ci, shown)
    out["status"] = np.select([linked & (differ != ""), linked, maybe], ["matched_with_conflicts", "matched", "possible"],
                              "unmatched")
    out["person_id"] = np.where(shown, core["id"].values[np.maximum(ci, 0)], "")
    out["rule"] = np.select([by_officer, shown], ["officer_link", "weights"], "none")
    out["score"] = np.where(by_officer, np.nan, np.round(score, 2))
    out["conflicting_fields"] = np.where(shown, differ, "")
    out["explanation"] = _explanations(best, runner, n_good, by_officer, maybe, below, ambiguous, fn_ok, eligible,
                                       corro, {"twin_in_batch": in_twins & weak_fn,
                                               "better_forename_elsewhere": household, "claimed_twice": twice},
                                       np.where(shown, differ, ""), stranger & (score >= cfg.possible))
    return out


def batch_twins(inc: Any) -> Any:
    """Incoming records that share school, surname, DOB and address (postcode, else address
    line) with another record of the batch: twins, whether the LA knows both or not."""
    import numpy as np

    place = inc["pc"].where(inc["pc"] != "", inc["addr"])
    ok = (inc["sn"] != "") & (inc["dob_s"] != "") & (place != "")
    key = inc["base_id"] + "|" + inc["sn"] + "|" + inc["dob_s"] + "|" + place if "base_id" in inc else \
        inc["sn"] + "|" + inc["dob_s"] + "|" + place
    return (ok & key.where(ok).duplicated(keep=False) & ok).values.astype(bool) if len(inc) else np.zeros(0, bool)


def differing(core_df: Any, incoming_df: Any, ci: Any, rows: Any) -> Any:
    """';'-joined compared fields whose values differ (both present) for the chosen pairs, by
    the one "same value" rule of :func:`b2b.blocks.same_value` — the rule the conflicts stage
    writes ``differing_fields`` with on the DAG path."""
    import numpy as np
    import pandas as pd

    from b2b.blocks import normalise

    n = len(incoming_df)
    names = np.array([""] * n, dtype=object)
    take = np.flatnonzero(rows)
    if not len(take):
        return names
    from b2b.matching import small

    if len(take) <= small.SMALL_DIFFERING:  # a few chosen pairs: value by value (issue 15)
        return small.differing_rows(core_df, incoming_df, ci, take, FRAME_COMPARED)

    def norm(f: str, values: Any) -> Any:
        """The registry's normalisation, once per distinct value; None for a missing value."""
        v = pd.Series(values, dtype=object)
        if f == "dob":
            v = pd.Series(pd.to_datetime(v, errors="coerce").dt.date, dtype=object)
        v = v.where(v.notna() & (v != ""), None)
        return v.map({x: normalise(f, x) for x in v.dropna().unique()}).to_numpy(dtype=object)

    for f in FRAME_COMPARED:
        if f not in core_df.columns or f not in incoming_df.columns:
            continue
        a = norm(f, core_df[f].to_numpy(dtype=object)[ci[take]])
        b = norm(f, incoming_df[f].to_numpy(dtype=object)[take])
        d = pd.notna(a) & pd.notna(b) & (a != b)
        hit = take[d]
        names[hit] = np.where(names[hit] == "", f, names[hit] + ";" + f)
    return names


def _explanations(best: Any, runner: Any, n_good: Any, by_officer: Any, maybe: Any, below: Any, ambiguous: Any, fn_ok: Any, eligible: Any, corro: Any, guards: Any, differ: Any, stranger: Any) -> Any:
    """One JSON object per incoming record: per field its level label and weight (``fields``),
    the non-zero weights (``weights``), score, runner-up, the compared fields that differ
    (``differing_fields``), for a possible ``why_not_auto``, and for an unmatched record whose
    nearest candidate scores in the possible band ``why_not_possible``."""
    import json
    import math

    out = []
    vals = best[PARTS].fillna(0).values
    lvs = best[[f + "_lv" for f in PARTS]].fillna(-1).astype(int).values
    scores = best["score"].values
    for k in range(len(best)):
        if by_officer[k]:
            out.append(json.dumps({"officer_link": True, **({"differing_fields": differ[k].split(";")}
                                                             if differ[k] else {})}, sort_keys=True))
            continue
        if scores[k] != scores[k]:  # no candidate at all
            out.append('{"candidates": 0}')
            continue
        d = {"weights": {p: float(v) for p, v in zip(PARTS, vals[k]) if v},
             "fields": {c.field: {"level": label_of(c.field, lv), "weight": float(v)}
                        for c, lv, v in zip(COMPARISONS, lvs[k], vals[k])},
             "score": round(float(scores[k]), 2),
             "runner_up": None if math.isinf(runner[k]) else round(float(runner[k]), 2),
             "candidates_over_possible": int(n_good[k])}
        if differ[k]:
            d["differing_fields"] = differ[k].split(";")
        if maybe[k]:
            d["why_not_auto"] = [r for r, bad in (("below_auto", below[k]), ("ambiguous", ambiguous[k]),
                                                  ("forename_differs", not fn_ok[k]),
                                                  ("uncorroborated", not corro[k]),
                                                  ("dob_differs", fn_ok[k] and not eligible[k]
                                                   and not guards["twin_in_batch"][k]))
                                if bad] + [g for g, hit in guards.items() if hit[k]]
        if stranger[k]:
            d["why_not_possible"] = ["forename_differs"]
        out.append(json.dumps(d, sort_keys=True))
    return out


def candidates(core_df: Any, incoming_df: Any, cfg: MatchConfig | None = None, *, links: Any = None, top: int = 3,
               tf: TermFrequencies | None = None) -> Any:
    """The best ``top`` candidates per incoming record with their per-field weights (officer view)."""
    cfg = cfg or MatchConfig()
    _, core = _core_sides(core_df)
    inc = prepare(incoming_df.reset_index(drop=True), "incoming_id")
    pairs = candidate_pairs(core, inc, cfg, links)
    s = score_pairs(core, inc, pairs, cfg, links, tf or TermFrequencies.from_frame(core))
    s["person_id"] = core["id"].values[s["ci"].values]
    s["incoming_id"] = inc["id"].values[s["ii"].values]
    s = s.sort_values(["ii", "score"], ascending=[True, False]).groupby("ii").head(top)
    return s.drop(columns=["ci", "ii"]).reset_index(drop=True)
