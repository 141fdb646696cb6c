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
    FORENAME_STRONG,
    HOME_ADDRESS,
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
    # a household that moved together corroborates name + DOB (moved_together): "with_upn" only for
    # a record with a valid permanent UPN (an LA namesake family would mostly hold UPNs that
    # disagree), "always" also without one (a namesake family is then not told apart), or "off"
    moved_household: str = "with_upn"


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
    from b2b.matching import small

    core_df = core_df.reset_index(drop=True)
    prep = prepare(core_df, "person_id")
    if len(core_df) <= small.SMALL_DECIDE:  # a school run's few candidates: no copies (extra columns are not read)
        return PreparedCore(core_df, prep)
    raw = core_df[[f for f in FRAME_COMPARED if f in core_df.columns]]
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
    links = None if links is None or not len(links) else links.astype(str)  # (no links: None, as blocking reads it)
    n = len(inc)
    if not n or not len(core):
        return pd.DataFrame({"incoming_id": inc["id"], "status": "unmatched", "person_id": "", "rule": "none",
                             "score": 0.0, "conflicting_fields": "", "explanation": '{"candidates": 0}'})
    use_links = links if cfg.guidmatch else None
    from b2b.matching import small

    if tf is None:  # a few LA records (the carers' of one run): counted in Python
        tf = small.term_frequencies(core) if len(core) <= small.SMALL_DECIDE else TermFrequencies.from_frame(core)
    pairs = candidate_pairs(core, inc, cfg, use_links)
    parts = [score_pairs(core, inc, pairs.iloc[k:k + CHUNK], cfg, use_links, tf, frame=False)
             for k in range(0, max(len(pairs), 1), CHUNK)]
    s = parts[0] if len(parts) == 1 else \
        pd.concat([pd.DataFrame(x.cols) if isinstance(x, small.Frame) else x for x in parts], ignore_index=True)
    # a few pairs (a school's run) are decided on numpy arrays (issue 15), more on pandas
    if isinstance(s, small.Frame) != (len(s) <= small.SMALL_DECIDE):
        s = pd.DataFrame(s.cols) if isinstance(s, small.Frame) else small.Frame.of(s)
    ids = core["id"].to_numpy(dtype=object)  # (text as Python objects once: pandas' str columns are Arrow arrays)
    s["person_id"] = ids[s["ci"].values]
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
    in_twins = batch_twins(inc)
    twin = in_twins[s["ii"].values]
    s["eligible"] = s["forename_ok"].values & dob_ok & ~(twin & ~s["forename_strong"].values)
    # the household guard: another DOB-compatible candidate (a twin, a sibling) whose forename
    # is exactly the record's stops a link on any other forename level (nickname, typo, typed);
    # only a candidate that could itself be the child (>= the possible band): a twin or sibling
    # of the household shares surname, DOB and address and scores far above it, a stranger who
    # only shares the forename and a DOB does not
    s["exact_other"] = at(s, "forename", "exact") & dob_ok & (s["score"].values >= cfg.possible)
    # per record: its best pair (eligible first, then score, then LA id), the runner-up's score
    # (the second eligible pair), the pairs in the possible band, and the household guard's hit
    rows, runner, n_good, exact_any = small.rank(s, n, cfg.possible) if isinstance(s, small.Frame) \
        else _rank_frame(s, n, cfg.possible)
    best = best_pairs(s, rows)  # the best pair's columns per record (none: ci -1, levels -1, False, 0)
    has = rows >= 0
    best_ci = best["ci"].values  # the best candidate's position, -1 for none
    score = best["score"].values
    eligible = best["eligible"].values
    fn_ok = best["forename_ok"].values
    corro = best["corroborated"].values
    # corroboration that counts (a valid permanent UPN with DOB and surname or forename) is
    # enough at the "possible" score: common names (term frequencies) do not hold it back
    # the same home with the very forename and DOB (no identifier needed) likewise
    strong = best["upn_strong"].values | best["home_strong"].values
    # a household that moved together: two children of one school home, each the very name and
    # DOB of a different LA child of one (other) LA home — corroboration that counts (issue 14)
    best_lv = best
    # (never against an identifier: two valid permanent UPNs that differ are two children)
    moved = ~corro & moved_together(inc, core, best_ci, eligible & name_and_dob_exact(best_lv)
                                    & ~at(best_lv, "upn", "different valid permanent")
                                    & ((inc["upn_kind"].values == "valid") | (cfg.moved_household == "always"))) \
        if cfg.moved_household != "off" else np.zeros(n, bool)
    corro, strong = corro | moved, strong | moved
    # the margin is over the candidates that are corroborated too: a runner-up sharing name and
    # DOB only (a namesake elsewhere) does not make a corroborated best ambiguous (issue 14)
    runner_c = runner_up_corroborated(s, best_ci, n)
    # (corroborated by more than the postcode sector: thousands of homes share one)
    beyond_sector = at(best_lv, "postcode", "unit") | \
        at(best_lv, "address_line1", *HOME_ADDRESS, "same street, other number") | at(best_lv, "middle_names", "equal") | \
        at(best_lv, "upn", "valid, equal", "equal, temporary") | at(best_lv, "guid", "linked") | moved
    over_corro = corro & beyond_sector & eligible & (runner_c < runner)
    below, ambiguous = score < np.where(strong, cfg.possible, cfg.auto), \
        score - np.where(over_corro, runner_c, runner) < cfg.margin
    weak_fn = ~best["forename_strong"].values
    exact_fn = at(best_lv, "forename", "exact")
    household = has & ~exact_fn & exact_any
    safe = has & ~below & ~ambiguous & eligible & corro & ~household
    # one LA child auto-linked from two records of one school in the batch (a twin the LA does
    # not know, or the same pupil twice): the one record whose forename is exactly the child's
    # keeps the link when the others' are not; otherwise none does; the others go to an officer.
    # (Two schools may both hold a child: dual registration links each.)
    base = inc["base_id"].values if "base_id" in inc else np.full(n, "", dtype=object)
    twice = claimed_twice(base, best_ci, safe, exact_fn)
    safe = safe & ~twice
    # the possible band holds a candidate one explainable discrepancy from the record; a
    # forename that is neither the name, a form of it, a typing error nor its initial weighs
    # against the child (forename_disagree) and, with no UPN or GUID agreeing, what is left is
    # what a twin or sibling shares (surname, DOB, address): another child — unmatched, the
    # nearest candidate still explained (why_not_possible)
    stranger = has & ~safe & at(best_lv, "forename", "different") & \
        ~(at(best_lv, "upn", "valid, equal", "equal, temporary") | at(best_lv, "guid", "linked"))
    # issue 14 (the queue): two more nearest candidates that are another child, not a question
    not_possible = {"forename_differs": stranger,
                    "claimed_by_twin": has & ~safe & ~stranger & claimed_by_batch_twin(
                        base, best_ci, safe, exact_fn, in_twins),
                    "upn_differs": has & ~safe & ~stranger & other_upn_only(best_lv, corro) &
                    ~upn_held_elsewhere(inc["upn"].values, core["upn"].values)}
    not_possible["claimed_elsewhere"] = has & ~safe & ~stranger & ~not_possible["claimed_by_twin"] & \
        claimed_at_another_school(base, best_ci, safe, exact_fn, resembling_name_only(best_lv))
    elsewhere = np.logical_or.reduce(list(not_possible.values()))
    maybe = has & ~safe & (score >= cfg.possible) & ~elsewhere
    # officer links are decisive
    officer_ci = np.full(n, -1)
    if cfg.guidmatch and links is not None:
        officer = links[links["linked_by"] == "officer"]
        pos = {p: k for k, p in enumerate(ids.tolist())}
        okey = {(b, g): pos[p] for b, g, p in zip(officer["base_id"], officer["guid"], officer["person_id"]) if p in pos}
        officer_ci = np.array([okey.get((b, g), -1) for b, g in zip(inc["base_id"], inc["guid"])])
    by_officer = officer_ci >= 0
    ci = np.where(by_officer, officer_ci, best_ci)
    linked = by_officer | safe
    shown = linked | maybe
    differ = differing(core_df, incoming_df, ci, shown)
    return pd.DataFrame({
        "incoming_id": inc["id"].values,
        "status": np.select([linked & (differ != ""), linked, maybe], ["matched_with_conflicts", "matched", "possible"],
                            "unmatched"),
        "person_id": np.where(shown, ids[np.maximum(ci, 0)], ""),
        "rule": np.select([by_officer, shown], ["officer_link", "weights"], "none"),
        "score": np.where(by_officer, np.nan, np.round(score, 2)),
        "conflicting_fields": np.where(shown, differ, ""),
        "explanation": _explanations(best, has, runner, n_good, by_officer, maybe, below, ambiguous, fn_ok, eligible,
                                     corro, {"twin_in_batch": in_twins & weak_fn,
                                             "better_forename_elsewhere": household, "claimed_twice": twice},
                                     np.where(shown, differ, ""),
                                     {k: v & (score >= cfg.possible) for k, v in not_possible.items()}, moved,
                                     over_corro)})


def _rank_frame(s: Any, n: int, possible: float) -> tuple[Any, Any, Any, Any]:
    """:func:`b2b.matching.small.rank` on a DataFrame of scored pairs (pandas group-bys, for
    many pairs): per incoming record its best pair's row position in ``s`` (-1 none), the
    runner-up's score (-inf none), the pairs scoring at least ``possible``, any ``exact_other``."""
    import numpy as np
    import pandas as pd

    # (only the columns ranked and counted: a copy of every column would be the stage's peak memory)
    s = pd.DataFrame({"ii": s["ii"].values, "eligible": s["eligible"].values, "score": s["score"].values,
                      "person_id": s["person_id"].values, "exact_other": s["exact_other"].values,
                      "row_": np.arange(len(s))})
    s = s.sort_values(["ii", "eligible", "score", "person_id"], ascending=[True, False, False, True])
    rows = s.groupby("ii", sort=False).head(1).set_index("ii")["row_"].reindex(range(n)).fillna(-1) \
        .astype(np.int64).values
    el = s[s["eligible"]]
    el = el[el.groupby("ii", sort=False).cumcount() == 1]
    runner = el.set_index("ii")["score"].reindex(range(n)).fillna(-np.inf).values
    n_good = s[s["score"] >= possible].groupby("ii").size().reindex(range(n)).fillna(0).astype(int).values
    exact_any = s.groupby("ii")["exact_other"].any().reindex(range(n), fill_value=False).values.astype(bool)
    return rows, runner, n_good, exact_any


#: a record's best-pair value when it has no candidate, by column kind: no level (-1, also the
#: position ``ci``), no weight or score (0.0), no flag (False)
_NO_PAIR = {"i": -1, "u": -1, "f": 0.0, "b": False}


def best_pairs(s: Any, rows: Any) -> Any:
    """Every numeric or flag column of the scored pairs ``s`` at ``rows`` (one per incoming
    record; -1 for none, which gets :data:`_NO_PAIR`), as row-aligned arrays
    (:class:`b2b.matching.small.Frame`): ``best["eligible"].values`` and ``at(best, ...)`` for
    a rule; the same on both paths."""
    import numpy as np

    from b2b.matching.small import Frame

    has = rows >= 0
    take = rows[has]
    cols = {}
    for col in s.columns:
        values = s[col].to_numpy()
        if values.dtype.kind in _NO_PAIR:
            out = np.full(len(rows), _NO_PAIR[values.dtype.kind], dtype=values.dtype)
            out[has] = values[take]
            cols[col] = out
    return Frame(cols)


def claimed_twice(base: Any, best_ci: Any, safe: Any, exact_fn: Any) -> Any:
    """One LA child auto-linked (``safe``) from two records of one school in the batch (a twin
    the LA does not know, or the same pupil twice): the one record whose forename is exactly
    the child's (``exact_fn``) keeps the link when the others' are not; otherwise none does;
    the others go to an officer (``claimed_twice``). Across schools too: a child claimed with
    its exact forename by one record is not linked to another school's record whose forename is
    only a form or a typo of it (a twin the LA does not know, on another roll: "Leon" beside
    the LA's "Leo"); two exact claims are a dual registration and both link. Inputs per
    incoming record, row-aligned: school, nearest candidate position, linked automatically,
    forename level exact."""
    from collections import Counter

    import numpy as np

    keys = list(zip(np.asarray(base, dtype=object).tolist(), np.asarray(best_ci).tolist()))
    safe, exact_fn = np.asarray(safe, dtype=bool), np.asarray(exact_fn, dtype=bool)
    size: Counter = Counter()
    exact: Counter = Counter()
    for k, ok, ex in zip(keys, safe.tolist(), exact_fn.tolist()):
        if ok:
            size[k] += 1
            exact[k] += ex
    exact_claim = {c for (_, c), ok, ex in zip(keys, safe.tolist(), exact_fn.tolist()) if ok and ex}
    return np.array([ok and ((size[k] > 1 and not (exact[k] == 1 and ex)) or (not ex and k[1] in exact_claim))
                     for k, ok, ex in zip(keys, safe.tolist(), exact_fn.tolist())], dtype=bool).reshape(len(keys))


def upn_held_elsewhere(upn: Any, core_upn: Any) -> Any:
    """Records whose UPN an LA candidate or another record of the batch holds (a blank UPN
    counts as held when two records are blank): their UPN does not speak for them (a brother's
    or sister's typed in error) — the condition :func:`other_upn_only` is asked with."""
    from collections import Counter

    import numpy as np

    upn = np.asarray(upn, dtype=object).tolist()
    held = set(np.asarray(core_upn, dtype=object).tolist()) - {""}
    seen = Counter(upn)
    return np.array([u in held or seen[u] > 1 for u in upn], dtype=bool).reshape(len(upn))


def runner_up_corroborated(s: Any, best_ci: Any, n: int) -> Any:
    """Per incoming record the best score among its *other* eligible candidates that are
    corroborated beyond name + DOB (-inf when none): the runner-up a corroborated best must beat
    by the margin. An uncorroborated runner-up shares name and DOB only — the namesake
    elsewhere; for it to be the child while the best is not, a namesake would have to share the
    record's home, street or middle name as well (the caller asks more of the best than the
    postcode sector: at 256k records the bench met a namesake in the school's new sector). Inputs: the scored pairs
    (``ii``, ``ci``, ``score``, ``eligible``, ``corroborated``) and each record's best
    candidate position."""
    import numpy as np

    ok = s["eligible"].values & s["corroborated"].values & (s["ci"].values != best_ci[s["ii"].values])
    out = np.full(n, -np.inf)
    np.maximum.at(out, s["ii"].values[ok].astype(np.int64), s["score"].values[ok].astype(float))
    return out


def name_and_dob_exact(lv: Any) -> Any:
    """Pairs (``<field>_lv`` columns) whose forename is the name or a form of it, surname and
    DOB exact, and gender not different: what :func:`moved_together` asks of each child."""
    return at(lv, "forename", *FORENAME_STRONG) & at(lv, "surname", "exact") & at(lv, "dob", "exact") & \
        ~at(lv, "gender", "different")


def moved_together(inc: Any, core: Any, best_ci: Any, ok: Any) -> Any:
    """A household that moved together (issue 14): records of one school sharing surname and
    home (postcode and address line) whose nearest candidates (``best_ci``, positions in
    ``core``; ``ok``: that pair is eligible with the very name and DOB, :func:`name_and_dob_exact`)
    are at least two *different* LA children sharing one LA home (postcode and address line)
    and surname. Each such record is corroborated beyond name + DOB: a namesake elsewhere has no
    sibling who is also a namesake at its address. A record whose candidate is also another
    record's nearest (a twin the LA does not know, a duplicate) does not count.

    Inputs, for a fast path: per incoming record the prepared ``base_id``, ``sn``, ``pc``,
    ``addr``, the best candidate's position (-1 none) and the ``ok`` flag; per LA record its
    prepared ``sn``, ``pc``, ``addr``. Only one school's records are compared with each other,
    so it holds part by part (the DAG path matches whole schools)."""
    from collections import Counter

    import numpy as np

    n = len(inc)
    if not n:
        return np.zeros(0, bool)
    ci = np.where(ok & (best_ci >= 0), best_ci, -1)
    take = np.flatnonzero(ci >= 0)
    out = np.zeros(n, bool)
    if not len(take):
        return out
    c = ci[take]
    base = inc["base_id"].values[take] if "base_id" in inc else np.full(len(take), "")
    i_sn, i_pc, i_addr = (inc[k].values[take].tolist() for k in ("sn", "pc", "addr"))
    c_sn, c_pc, c_addr = (core[k].values[c].tolist() for k in ("sn", "pc", "addr"))
    # (row, child, the school home, the LA home) of the records with both homes known
    rec = [(r, k, (str(b), sn, pc, ad), (csn, cpc, cad))
           for r, k, b, sn, pc, ad, csn, cpc, cad in zip(take.tolist(), c.tolist(), base.tolist(), i_sn, i_pc, i_addr,
                                                          c_sn, c_pc, c_addr)
           if pc != "" and ad != "" and cpc != "" and cad != ""]
    # a candidate claimed by two records of the home counts for neither (an unknown twin, a duplicate)
    claims = Counter((school, la, k) for _, k, school, la in rec)
    kept = [(r, school, la) for r, k, school, la in rec if claims[school, la, k] == 1]
    size = Counter((school, la) for _, school, la in kept)
    out[[r for r, school, la in kept if size[school, la] >= 2]] = True
    return out


def claimed_by_batch_twin(base: Any, best_ci: Any, safe: Any, exact_fn: Any, in_twins: Any) -> Any:
    """Records of a batch twin pair (:func:`batch_twins`: one school, surname, DOB and address)
    whose nearest LA child is linked automatically, under its exact forename, from another
    record of the same school, while their own forename is not exactly the child's: the school's
    roll proves two children, the LA knows one and it is taken — this record is the twin the LA
    does not know (``unmatched``, ``why_not_possible: ["claimed_by_twin"]``), not a question for
    an officer. Inputs are per incoming record, row-aligned: school (``base``), nearest LA
    candidate position (``best_ci``, -1 for none), linked automatically (``safe``), forename
    level exact (``exact_fn``), in a batch twin pair (``in_twins``)."""
    import numpy as np

    key = list(zip((str(b) for b in np.asarray(base, dtype=object).tolist()), np.asarray(best_ci).tolist()))
    taken = {k for k, hit in zip(key, (safe & exact_fn & in_twins).tolist()) if hit}
    return (in_twins & ~safe & ~exact_fn & (best_ci >= 0) & np.array([k in taken for k in key], dtype=bool)
            .reshape(len(key))).astype(bool) if len(key) else np.zeros(0, bool)


def resembling_name_only(lv: Any) -> Any:
    """Pairs (``<field>_lv`` columns) whose forename only resembles (a typo, a typed error, the
    initial: not the name nor a form of it) and that no UPN or GUID ties."""
    return at(lv, "forename", "typo", "typed error", "initial only") & \
        ~(at(lv, "upn", "valid, equal", "equal, temporary") | at(lv, "guid", "linked"))


def claimed_at_another_school(base: Any, best_ci: Any, safe: Any, exact_fn: Any, resembling: Any) -> Any:
    """Records whose nearest LA child is linked automatically, under its exact forename, from
    another school's record, while their own forename only resembles the child's and no
    identifier ties them (``resembling``, :func:`resembling_name_only`): a twin the LA never
    knew on another school's roll ("Jaden" beside the LA's Jayden), not the child —
    ``unmatched``, ``why_not_possible: ["claimed_elsewhere"]``. (A form of the name — the
    child's own nickname at a second school — stays an officer's question, ``claimed_twice``.)
    Inputs per incoming record, row-aligned: school, nearest candidate position (-1 none),
    linked automatically, forename level exact, ``resembling``. Sees only the schools matched
    together (the DAG path: one part of whole schools)."""
    from collections import Counter

    import numpy as np

    if not len(best_ci):
        return np.zeros(0, bool)
    rec = list(zip((str(b) for b in np.asarray(base, dtype=object).tolist()), np.asarray(best_ci).tolist()))
    claims = {k for k, hit in zip(rec, (safe & exact_fn).tolist()) if hit}
    schools = Counter(c for _, c in claims)  # schools claiming each child exactly
    # (less one when this record's school is one of them)
    others = np.array([schools[c] - ((b, c) in claims) for b, c in rec], dtype=np.int64)
    return resembling & ~safe & (best_ci >= 0) & (others > 0)


def other_upn_only(best_lv: Any, corro: Any) -> Any:
    """Nearest candidates that share name and DOB only (nothing else corroborates: no
    postcode, address, street or middle name) and whose valid permanent UPN differs from the
    record's valid permanent UPN: a namesake elsewhere, told apart by its identifier — another
    child, ``unmatched`` with ``why_not_possible: ["upn_differs"]``, not a question for an
    officer. The caller also requires that no LA child and no other record of the batch holds
    the record's UPN: a UPN typed in error (a brother's or sister's) does not speak for it. Inputs: the best
    candidates' levels (``<field>_lv`` columns) and their ``corroborated`` flag."""
    return at(best_lv, "upn", "different valid permanent") & ~corro


def batch_twins(inc: Any) -> Any:
    """Incoming records that share school, surname, DOB and address (postcode, else address
    line) with another record of the batch: twins, whether the LA knows both or not."""
    from collections import Counter

    import numpy as np

    base = inc["base_id"].values.tolist() if "base_id" in inc else None
    sn, dob, pc, addr = (inc[k].values.tolist() for k in ("sn", "dob_s", "pc", "addr"))
    key = [(base[r] if base is not None else None, s, d, p if p != "" else a) if s != "" and d != "" and
           (p != "" or a != "") else None for r, (s, d, p, a) in enumerate(zip(sn, dob, pc, addr))]
    seen = Counter(k for k in key if k is not None)
    return np.array([k is not None and seen[k] > 1 for k in key], dtype=bool).reshape(len(key))


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


def _explanations(best: Any, has: Any, runner: Any, n_good: Any, by_officer: Any, maybe: Any, below: Any, ambiguous: Any, fn_ok: Any, eligible: Any, corro: Any, guards: Any, differ: Any, not_possible: Any, moved: Any, over_corro: Any) -> Any:
    """One JSON object per incoming record: per field its level label and weight (``fields``),
    the non-zero weights (``weights``), score, runner-up, the compared fields that differ
    (``differing_fields``), for a possible ``why_not_auto``, and for an unmatched record whose
    nearest candidate scores in the possible band ``why_not_possible`` (``not_possible``: reason ->
    mask)."""
    import json
    import math

    import numpy as np

    out = []
    vals = np.column_stack([best[f].values for f in PARTS])
    lvs = np.column_stack([best[f + "_lv"].values for f in PARTS])
    scores = best["score"].values
    for k in range(len(best)):
        if by_officer[k]:
            out.append(json.dumps({"officer_link": True, **({"differing_fields": differ[k].split(";")}
                                                             if differ[k] else {})}, sort_keys=True))
            continue
        if not has[k]:  # no candidate at all
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
        if moved[k]:
            d["household"] = "moved together"
        if over_corro[k]:  # the runner-up shares name and DOB only: the margin is over the others
            d["margin_over"] = "corroborated candidates"
        if maybe[k]:
            d["why_not_auto"] = [r for r, bad in (("below_auto", below[k]), ("ambiguous", ambiguous[k]),
                                                  ("forename_differs", not fn_ok[k]),
                                                  ("uncorroborated", not corro[k]),
                                                  ("dob_differs", fn_ok[k] and not eligible[k]
                                                   and not guards["twin_in_batch"][k]))
                                if bad] + [g for g, hit in guards.items() if hit[k]]
        why_not = [r for r, hit in not_possible.items() if hit[k]]
        if why_not:
            d["why_not_possible"] = why_not
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
