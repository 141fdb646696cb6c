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
    SURNAME_COMPATIBLE,
    TermFrequencies,
    Weights,
    at,
    label_of,
    score_pairs,
)
from b2b.matching.normalise import INCOMING_COLUMNS, prepare
from b2b.matching.small import Frame
from b2b.matching.train import load_weights

STATUSES = ("matched", "matched_with_conflicts", "possible", "unmatched")
CHUNK = 1_000_000
#: pairs scored together for a large DAG run's part (:class:`PreparedCore` with ``blocks``):
#: beside the run's prepared LA its memory is the stage's peak (at 300k x 250k, ~450k pairs
#: per part: 416 MB above the steady state in chunks of 1M, 269 MB in chunks of 200k, no slower)
PART_CHUNK = 200_000
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
    # a name and DOB too rare in the LA for a namesake to be expected, held by one LA child only,
    # carries a link without identifiers (rare_name_and_dob). Off by default: safe at real
    # populations' namesake rate (about 0.25 false links per 10,000 records), not at a bench's
    # that plants namesakes far above it (issue 14; docs/matching.md)
    rare_name: bool = False
    # the school the LA's record says the child attends (core ``base_id``), when it is the
    # record's own school, corroborates the very forename and DOB (at_the_las_school), and a
    # namesake born days away held at another school is another child (another_school_another_day);
    # False for an LA whose school field is not kept up to date (the LA setting SCHOOL_EVIDENCE)
    school_evidence: bool = True


class PreparedRows(Frame):
    """A few records prepared (:func:`prepare_arrays`) as row-aligned numpy columns: the
    columns :func:`b2b.matching.normalise.prepare` gives, without a DataFrame (issue 15: a
    school run's handful of records paid ~20k pandas calls per 200 runs building and reading
    frames). It reads as the prepared frame does where the small paths read it (blocking's
    dictionaries, :class:`b2b.matching.small.ArrayPairs`, the decision rules): ``f[col]``
    (``.values``, ``.to_numpy()``, ``.tolist()``), ``in``, ``len``, ``columns``, ``index``
    (positions), ``assign``, ``take``. ``tests/test_matching_arrays.py`` checks every decision
    against the DataFrame path."""

    @property
    def index(self) -> _Positions:
        return _Positions(len(self))

    def assign(self, **cols: Any) -> PreparedRows:
        import numpy as np

        return PreparedRows({**self.cols, **{c: np.asarray(v) for c, v in cols.items()}})

    def take(self, rows: Any) -> PreparedRows:
        return PreparedRows({c: v[rows] for c, v in self.cols.items()})


class _Positions:
    """The index of a :class:`PreparedRows`: its row positions (a RangeIndex's reads)."""

    is_unique = True

    def __init__(self, n: int) -> None:
        self.n = n

    def tolist(self) -> list[int]:
        return list(range(self.n))

    def get_indexer(self, labels: Any) -> Any:
        import numpy as np

        return np.asarray(labels, dtype=np.intp)


def prepare_arrays(df: Any, id_col: str) -> Any:
    """:func:`b2b.matching.normalise.prepare` of a few records as :class:`PreparedRows` (the
    same columns and values, numpy arrays); the prepared DataFrame where the small path does not
    apply (no records, more than ``normalise.SMALL_ROWS``, a value it leaves to pandas)."""
    import numpy as np

    from b2b.matching import normalise

    cols = normalise._prepare_rows(df, id_col, columns=True) if 0 < len(df) <= normalise.SMALL_ROWS else None
    if cols is None:
        return prepare(df, id_col)
    out = {}
    for c, v in cols.items():
        if isinstance(v, list):  # (text: lists of str)
            a = np.array(v, dtype=object)
            if a.ndim != 1:  # (a list of sequences: one object each)
                a = np.empty(len(v), dtype=object)
                for k, x in enumerate(v):
                    a[k] = x
            out[c] = a
        else:  # numpy arrays, a DatetimeIndex, Series and pandas' string arrays: as DataFrame.to_numpy gives them
            a = np.asarray(v)
            out[c] = a if a.dtype.kind != "U" else a.astype(object)
    return PreparedRows(out)


class PreparedCore:
    """LA records prepared once (:func:`prepare_core`): the comparison columns (``prep``) and the
    raw compared fields the differing-fields rule reads (``raw``), row-aligned. Pass it to
    :func:`match` / :func:`candidates` in place of the LA frame; :meth:`take` selects a subset
    (the DAG path's candidates of one school part) without normalising anything again.

    A few records (a school run's candidates) are prepared as :class:`PreparedRows`
    (``arrays``), which :func:`match` reads; ``prep``, the DataFrame, is then built only when
    read (the same frame: ``prepare`` of ``raw``)."""

    def __init__(self, raw: Any, prep: Any = None, blocks: Any = None, rows: Any = None, *,
                 arrays: PreparedRows | None = None) -> None:
        assert prep is not None or arrays is not None
        self.raw, self._prep, self.arrays = raw, prep, arrays
        #: a large run's parts (issue 15): the blocking index over every row, built once
        #: (:class:`b2b.matching.blocking.LAIndex`), and the rows (positions) this call pairs:
        #: the same decisions as ``take(rows)``, without copying the rows or rebuilding blocking
        self.blocks, self.rows = blocks, rows

    @property
    def prep(self) -> Any:
        if self._prep is None:
            self._prep = prepare(self.raw, "person_id")
        return self._prep

    def __len__(self) -> int:
        return len(self.arrays) if self.arrays is not None else len(self._prep)

    def take(self, rows: Any) -> PreparedCore:
        """The records at these positions (an int array or a boolean mask), in that order."""
        import numpy as np

        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        raw = self.raw.iloc[rows].reset_index(drop=True)
        if self._prep is None:
            return PreparedCore(raw, arrays=self.arrays.take(rows) if self.arrays is not None else None)
        return PreparedCore(raw, self._prep.iloc[rows].reset_index(drop=True))


def prepare_core(core_df: Any) -> PreparedCore:
    """The LA side of :func:`match` prepared once (normalised names, UPN kinds, DOB forms,
    postcode keys): preparing is row by row, so ``prepare_core(df).take(rows)`` is exactly the
    preparation of ``df.iloc[rows]`` — a run matching many parts against one LA prepares it once."""
    from b2b.matching import small

    core_df = core_df.reset_index(drop=True)
    if len(core_df) <= small.SMALL_DECIDE:  # a school run's few candidates: no copies (extra columns are not read)
        prep = prepare_arrays(core_df, "person_id")
        return PreparedCore(core_df, arrays=prep) if isinstance(prep, PreparedRows) else PreparedCore(core_df, prep)
    prep = prepare(core_df, "person_id")
    raw = core_df[[f for f in FRAME_COMPARED if f in core_df.columns]]
    # only what blocking, scoring and deciding read (not the stripped raw text columns)
    return PreparedCore(raw, prep.drop(columns=[c for c in _PREP_UNREAD if c in prep.columns]))


#: prepared columns nothing after :func:`prepare` reads (their normalised forms are read instead)
_PREP_UNREAD = ("forename", "middle_names", "surname", "postcode", "address_line1")


def _core_sides(core_df: Any, arrays: bool = False) -> tuple[Any, Any]:
    """(raw LA frame, prepared LA frame) of a DataFrame or a :class:`PreparedCore`; with
    ``arrays``, the prepared records as :class:`PreparedRows` where they can be."""
    if isinstance(core_df, PreparedCore):
        return core_df.raw, core_df.arrays if arrays and core_df.arrays is not None else core_df.prep
    core_df = core_df.reset_index(drop=True)
    return core_df, (prepare_arrays if arrays else prepare)(core_df, "person_id")


def match(core_df: Any, incoming_df: Any, cfg: MatchConfig | None = None, *, links: Any = None, rejected: Any = None,
          min_age: int | None = None, as_of: Any = None, tf: TermFrequencies | None = None,
          claimed: Any = None, reuse: dict | None = None, claims_elsewhere: Any = None) -> Any:
    """Decide every incoming record. Returns a DataFrame with one row per incoming record:
    ``incoming_id, status, person_id, rule, score, conflicting_fields, explanation``.

    ``min_age`` (with ``as_of``): LA records younger than this are never candidates — the
    carer rule CARER_MIN (F14): a child can be matched as a carer only from that age.

    ``links``: DataFrame (base_id, guid, person_id, linked_by) of GUID links (F16);
    ``linked_by = 'officer'`` ones are decisive. ``rejected``: DataFrame (base_id, guid,
    person_id) of pairs an officer rejected (never proposed again). ``tf``: the LA's name
    frequencies (default: counted on ``core_df``, which must then be the whole LA).
    ``core_df`` may be a :class:`PreparedCore` (:func:`prepare_core`): the same decisions,
    without preparing the LA records again. ``claimed``: LA children (person ids) that
    records outside this call claim (the DAG path: other schools' runs, other parts): as a
    record of the batch claiming them, they stop a link on overwhelming evidence alone or on
    a forename typed at home. ``reuse``: a dict the prepared records and scored pairs are kept
    in, and read from by a later call with the same arguments but ``claimed`` and
    ``claims_elsewhere`` (the DAG path decides a part again once it knows the other parts'
    claims). ``claims_elsewhere``: LA children that other schools' records outside this call
    link automatically under their exact forename: as such a claim in the batch, they make a
    record whose forename only resembles the child's another child (``claimed_elsewhere``).
    """
    import numpy as np
    import pandas as pd

    from b2b.matching import blocking

    cfg = cfg or MatchConfig()
    blocks = core_df if isinstance(core_df, PreparedCore) and core_df.blocks is not None else None
    given = core_df
    incoming_df = incoming_df.reset_index(drop=True)
    # a few records on both sides (a school run, its carers): both prepared as numpy columns
    # (PreparedRows), as blocking's dictionaries and the array paths read them (issue 15)
    arrays = blocks is None and not (reuse and "inc" in reuse) and \
        len(core_df) + len(incoming_df) <= blocking.SMALL_ROWS
    if isinstance(core_df, PreparedCore) or len(core_df):
        core_df, core = _core_sides(core_df, arrays)
    else:  # no LA records (a run's contacts without candidates): nothing to prepare, every record unmatched
        core = PreparedRows({"id": np.empty(0, dtype=object)})
    inc = reuse["inc"] if reuse and "inc" in reuse else \
        (prepare_arrays if arrays else prepare)(incoming_df, "incoming_id")
    links = None if links is None or not len(links) else links.astype(str)  # (no links: None, as blocking reads it)
    n = len(inc)
    if not n or not len(core) or (blocks is not None and blocks.rows is not None and not len(blocks.rows)):
        return pd.DataFrame({"incoming_id": inc["id"], "status": "unmatched", "person_id": "", "rule": "none",
                             "score": 0.0, "conflicting_fields": "", "explanation": '{"candidates": 0}'})
    use_links = links if cfg.guidmatch else None
    from b2b.matching import small

    tf = tf or TermFrequencies.from_frame(
        pd.DataFrame({c: core[c] for c in ("fn", "sn")}) if isinstance(core, PreparedRows) else core)
    if reuse and "s" in reuse:
        s = reuse["s"].copy(deep=False)
    else:
        pairs = blocks.blocks.pairs(inc, cfg, use_links, blocks.rows) if blocks is not None else \
            candidate_pairs(core, inc, cfg, use_links)
        if len(pairs) > small.SMALL_PAIRS and (isinstance(core, PreparedRows) or isinstance(inc, PreparedRows)):
            # (so many pairs are scored on pandas Series: the prepared DataFrames, the same pairs)
            core = given.prep if isinstance(given, PreparedCore) else prepare(core_df, "person_id")
            inc = prepare(incoming_df, "incoming_id")
        chunk = PART_CHUNK if blocks is not None else CHUNK
        parts = [score_pairs(core, inc, pairs.iloc[k:k + chunk], cfg, use_links, tf, frame=False)
                 for k in range(0, max(len(pairs), 1), chunk)]
        s = parts[0] if len(parts) == 1 else \
            pd.concat([pd.DataFrame(x.cols) if isinstance(x, small.Frame) else x for x in parts], ignore_index=True)
        # a few pairs (a school's run) are decided on numpy arrays (issue 15), more on pandas
        if isinstance(s, small.Frame) != (len(s) <= small.SMALL_DECIDE):
            s = pd.DataFrame(s.cols) if isinstance(s, small.Frame) else small.Frame.of(s)
        if reuse is not None and isinstance(s, pd.DataFrame):  # (columns added below stay out of it)
            reuse.update(inc=inc, s=s.copy(deep=False))
    # (text as Python objects once: pandas' str columns are Arrow arrays; a large run's parts share
    # the LA's, made once: 300k ids were ~40 ms and 20 MB a part)
    ids = blocks.blocks.id_objects() if blocks is not None else core["id"].to_numpy(dtype=object)
    # the LA rows claimed outside this call (``claimed``), by position
    # (a set's lookups: np.isin sorts the whole LA's ids as Python objects, ~0.16 s a call at 300k)
    claimed_row = _held(ids, claimed) if claimed is not None and len(claimed) else None
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
    else:
        # no DOB on one side (an old LA record, a school's missing field) with a valid permanent
        # UPN that agrees and the child's own forename and surname: the UPN is the child's alone;
        # a brother or sister whose UPN the school typed by mistake has a forename of their own
        # (the very forename: a sibling may be named after the child's middle name); with the
        # very forename, whatever the surname (a new family name, as with a DOB: upn_strong)
        dob_ok = dob_ok | (at(s, "dob", "missing") & at(s, "upn", "valid, equal")
                           & (at(s, "forename", "exact", "exact, mis-decoded")
                              | (at(s, "forename", "swapped with surname") & at(s, "surname", *SURNAME_COMPATIBLE))))
    # unknown twins: two records of one school with one surname, DOB and address are twins
    # (whether the LA knows both or not); each must match on its forename, not the shared fields
    in_twins = batch_twins(inc)
    twin = in_twins[s["ii"].values]
    s["eligible"] = s["forename_ok"].values & dob_ok & ~(twin & ~s["forename_strong"].values)
    # issue 14 (the queue without identifiers): a forename one keystroke from the child's, at the
    # very home, where neither the LA home nor the batch holds a second child born that day
    slip = keystroke_slips(s, core, inc)
    _, at_home, shared, unseen = _typed_home_inputs(s, inc, tf)
    s["typed_home"] = typed_forename_at_home(s, at_home, shared, unseen, slip)
    if claimed_row is not None:  # the child claimed outside this call: as a claim in the batch
        s["typed_home"] = s["typed_home"].values & ~claimed_row[s["ci"].values]
    s["slip"] = slip
    # (overwhelming evidence without the very forename asks the same: no LA twin, no twin on a roll)
    s["other_child_near"] = (np.asarray(at_home) > 1) | np.asarray(shared, bool)
    # and a name and DOB (or near it) that the middle name confirms: a twin has a forename of its
    # own, a sibling another DOB, a namesake elsewhere rarely the same middle name
    s["middle_counts"] = middle_name_counts(s, slip) & ~(twin & ~s["forename_strong"].values)
    s["eligible"] = s["eligible"].values | s["typed_home"].values | s["middle_counts"].values
    # the school the LA holds for the child is the record's own, with the very name and DOB: a
    # namesake elsewhere is at another school (or none), a twin or sibling there has a forename
    # or DOB of its own. Per pair, so that a second child of that name and DOB whom the LA also
    # holds at the school is a corroborated runner-up (two such: an officer's question); twins on
    # the roll share name parts, DOB and school: there only the very forename
    if cfg.school_evidence and min_age is None and "base_id" in core and "base_id" in inc:
        s["at_school"] = at_the_las_school(s, core["base_id"].values, inc["base_id"].values) & \
            (~twin | at(s, "forename", "exact", "exact, mis-decoded"))
        s["corroborated"] = s["corroborated"].values | s["at_school"].values
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
    if min_age is not None:
        # carers (F14): a contact has no DOB, UPN or GUID; its very forename and surname at the
        # very home (postcode unit and address line), the gender not against it, count likewise
        # (a same-named LA person of the household scores alike: the margin sends it to an
        # officer; the contact's own student is never its candidate: match_stage.match_carers)
        strong = strong | (best["home"].values & at(best, "forename", "exact") & at(best, "surname", "exact")
                           & ~at(best, "gender", "different"))
    # a household that moved together: two children of one school home, each the very name and
    # DOB of a different LA child of one (other) LA home — corroboration that counts (issue 14)
    best_lv = best
    # (never against an identifier: two valid permanent UPNs that differ are two children)
    moved = ~corro & moved_together(inc, core, best_ci, eligible & name_and_dob_exact(best_lv)
                                    & ~at(best_lv, "upn", "different valid permanent")
                                    & ((inc["upn_kind"].values == "valid") | (cfg.moved_household == "always"))) \
        if cfg.moved_household != "off" else np.zeros(n, bool)
    # issue 14 (the queue without identifiers): a name and DOB so rare in the LA that a namesake
    # is not to be expected, held by one LA child only; and the typed forename at the very home
    rare, expected = rare_name_and_dob(*_rare_name_inputs(s, inc, best_lv, best_ci, eligible, in_twins, tf, n)) \
        if cfg.rare_name else (np.zeros(n, bool), np.full(n, np.nan))
    typed_home = best["typed_home"].values
    middle = best["middle_counts"].values
    at_school = best["at_school"].values if "at_school" in best.columns else np.zeros(n, bool)
    strong = strong | at_school
    best_identifier = at(best_lv, "upn", "valid, equal", "equal, temporary") | at(best_lv, "guid", "linked")
    corro, strong = corro | moved | rare, strong | moved | rare | typed_home | middle
    # the margin is over the candidates that are corroborated too: a runner-up sharing name and
    # DOB only (a namesake elsewhere) does not make a corroborated best ambiguous (issue 14)
    runner_c = runner_up_corroborated(s, best_ci, n)
    # (corroborated by more than the postcode sector: thousands of homes share one)
    beyond_sector = at(best_lv, "postcode", "unit") | \
        at(best_lv, "address_line1", *HOME_ADDRESS, "same street, other number") | at(best_lv, "middle_names", "equal") | \
        best_identifier | moved | at_school
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
    # (``claims_elsewhere``: children other schools' records outside this call claim exactly)
    outside = _held(ids[np.maximum(best_ci, 0)], claims_elsewhere) & (best_ci >= 0) \
        if claims_elsewhere is not None and len(claims_elsewhere) else None
    twice = claimed_twice(base, best_ci, safe, exact_fn, outside)
    safe = safe & ~twice
    # issue 14 part 2: with no compatible forename, overwhelming evidence of the same person
    # (overwhelming_evidence): no twin in the batch or the LA's household, no other record
    # claiming the child, far ahead of any other candidate
    runner_any = runner_any_other(s, rows, n)
    # a forename that is not the child's own (mistyped, missing) when another child could be
    # there: a twin the LA knows at the home, or a twin or the child's better claim in the batch
    near = best["other_child_near"].values & ~at(best_lv, "forename", *FORENAME_STRONG)
    over = has & ~safe & ~twice & ~near & overwhelming_evidence(best_lv, score, runner_any, cfg,
                                                       lambda m: forename_is_name(
                                                           inc["fn"].values, tf, m, core["fn"].values[best_ci],
                                                           best["slip"].values),
                                                       pupils=min_age is None) & \
        ~in_twins & ~exact_name_elsewhere(s, best_ci, n) & \
        ~claimed_by_another_record(best_ci, ~(at(best_lv, "dob", "different") & (score < cfg.possible)))
    if claimed_row is not None:
        over = over & ~claimed_row[np.maximum(best_ci, 0)]
    safe = safe | over
    # the possible band holds a candidate one explainable discrepancy from the record; a
    # forename that is neither the name, a form of it, a typing error nor its initial weighs
    # against the child (forename_disagree) and, with no UPN or GUID agreeing, what is left is
    # what a twin or sibling shares (surname, DOB, address): another child — unmatched, the
    # nearest candidate still explained (why_not_possible)
    stranger = has & ~safe & at(best_lv, "forename", "different") & ~best_identifier
    # issue 14 (the queue): two more nearest candidates that are another child, not a question
    not_possible = {"forename_differs": stranger,
                    "claimed_by_twin": has & ~safe & ~stranger & claimed_by_batch_twin(
                        base, best_ci, safe, exact_fn, in_twins),
                    "upn_differs": has & ~safe & ~stranger & other_upn_only(best_lv, corro) &
                    ~upn_held_elsewhere(inc["upn"].values, core["upn"].values)}
    not_possible["claimed_elsewhere"] = has & ~safe & ~stranger & ~not_possible["claimed_by_twin"] & \
        claimed_at_another_school(base, best_ci, safe, exact_fn, resembling_name_only(best_lv), outside)
    if "at_school" in best.columns:  # (the school the LA holds is read: school_evidence, pupils)
        not_possible["held_at_another_school"] = has & ~safe & ~stranger & ~best_identifier & \
            another_school_another_day(best_lv, core["base_id"].values[np.maximum(best_ci, 0)], base)
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
    # deciding again (``reuse``): the fields that differ only for records whose chosen child or
    # its showing changed (the rest as the first call found them)
    if reuse is not None and "ci" in reuse:
        same_pick = (reuse["ci"] == ci) & (reuse["shown"] == shown)
        differ = np.where(same_pick, reuse["differ"], differing(core_df, incoming_df, ci, shown & ~same_pick))
    else:
        differ = differing(core_df, incoming_df, ci, shown)
        if reuse is not None:
            reuse.update(ci=ci, shown=shown, differ=differ)
    explanation_args = (best, has, runner, n_good, by_officer, maybe, below, ambiguous, fn_ok, eligible, corro | over,
                        {"twin_in_batch": in_twins & weak_fn, "better_forename_elsewhere": household,
                         "claimed_twice": twice},
                        np.where(shown, differ, ""),
                        {k: v & (score >= cfg.possible) for k, v in not_possible.items()}, moved,
                        over_corro, over, {"rare_name": np.where(rare, expected, np.nan),
                                           "typed_forename_at_home": typed_home,
                                           "middle_name_counts": middle & ~best_identifier,
                                           "at_the_las_school": at_school & ~best_identifier})
    if reuse is not None and "explained" in reuse:  # only records whose explanation's inputs changed
        explained = reuse["explained"]
        same = _same_rows(explained[0], explanation_args)
        explanation = _explanations(*explanation_args, only=np.flatnonzero(~same), before=explained[1])
    else:
        explanation = _explanations(*explanation_args)
        if reuse is not None:
            reuse["explained"] = (explanation_args, explanation)
    return pd.DataFrame({
        "incoming_id": inc["id"].values,
        "status": np.select([linked & (differ != ""), linked, maybe], ["matched_with_conflicts", "matched", "possible"],
                            "unmatched"),
        "person_id": np.where(shown, ids[np.maximum(ci, 0)], ""),
        "rule": np.select([by_officer, shown], ["officer_link", "weights"], "none"),
        "score": np.where(by_officer, np.nan, np.round(score, 2)),
        "conflicting_fields": np.where(shown, differ, ""),
        "explanation": explanation})


def _same_rows(before: tuple, after: tuple) -> Any:
    """Per record, whether every per-record input of :func:`_explanations` is the same in two
    argument tuples (arrays, dicts of arrays, the best pairs' columns; NaN equal to NaN)."""
    import numpy as np

    def arrays(args: Any) -> list:
        out = []
        for a in args:
            if isinstance(a, dict):
                out += arrays(a.values())
            elif hasattr(a, "cols"):  # the best pairs (small.Frame)
                out += arrays(a.cols.values())
            else:
                out.append(np.asarray(a))
        return out

    first, second = arrays(before), arrays(after)
    same = np.ones(len(second[0]), bool)
    for a, b in zip(first, second, strict=True):
        eq = a == b
        if a.dtype.kind == "f":
            eq |= np.isnan(a) & np.isnan(b)
        same &= eq
    return same


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


def claimed_twice(base: Any, best_ci: Any, safe: Any, exact_fn: Any, outside: Any = None) -> Any:
    """One LA child auto-linked (``safe``) from two records of one school in the batch (a twin
    the LA does not know, or the same pupil twice): the one record whose forename is exactly
    the child's (``exact_fn``) keeps the link when the others' are not; otherwise none does;
    the others go to an officer (``claimed_twice``). Across schools too: a child claimed with
    its exact forename by one record is not linked to another school's record whose forename is
    only a form or a typo of it (a twin the LA does not know, on another roll: "Leon" beside
    the LA's "Leo"); two exact claims are a dual registration and both link. Inputs per
    incoming record, row-aligned: school, nearest candidate position, linked automatically,
    forename level exact; ``outside``: per record, its nearest child is so claimed by another
    school's record outside the batch (the DAG path: a run's other parts)."""
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
    if outside is not None:
        exact_claim |= {c for (_, c), out in zip(keys, np.asarray(outside, dtype=bool).tolist()) if out}
    return np.array([ok and ((size[k] > 1 and not (exact[k] == 1 and ex)) or (not ex and k[1] in exact_claim))
                     for k, ok, ex in zip(keys, safe.tolist(), exact_fn.tolist())], dtype=bool).reshape(len(keys))


def _held(ids: Any, wanted: Any) -> Any:
    """Per element of ``ids`` (an object array), whether it is one of ``wanted``."""
    import numpy as np

    w = wanted if isinstance(wanted, (set, frozenset)) else set(wanted)
    return np.fromiter(map(w.__contains__, ids.tolist()), dtype=bool, count=len(ids))


def upn_held_elsewhere(upn: Any, core_upn: Any) -> Any:
    """Records whose UPN an LA candidate or another record of the batch holds (a blank UPN
    counts as held when two records are blank): their UPN does not speak for them (a brother's
    or sister's typed in error) — the condition :func:`other_upn_only` is asked with."""
    from collections import Counter

    import numpy as np
    import pandas as pd

    upn = np.asarray(upn, dtype=object).tolist()
    if len(core_upn) <= 5_000:  # (a school run's candidates: a set, not a Series' isin, ~0.1 ms)
        mine = set(upn)
        held = {u for u in np.asarray(core_upn, dtype=object).tolist() if u in mine} - {""}
    else:
        core_upn = pd.Series(core_upn)  # (only the LA's UPNs the batch holds: the isin is in C, not a set of the LA)
        held = set(core_upn[core_upn.isin(set(upn)).to_numpy(dtype=bool)].tolist()) - {""}
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


def exact_name_elsewhere(s: Any, best_ci: Any, n: int) -> Any:
    """Per incoming record: an LA child *other than its best candidate* holds exactly the
    record's forename with a compatible DOB and scores in the possible band (``exact_other``):
    a twin or sibling of that name (the guard :func:`overwhelming_evidence` is taken with). The
    best candidate itself holding the record's very forename is no other child: counting it (as
    the household guard's ``exact_any`` does, which only asks it of a best whose forename is
    weaker) kept overwhelming evidence from ever carrying the very forename with its DOB at the
    child's place (issue 14: a changed surname at the same postcode)."""
    import numpy as np

    ok = np.asarray(s["exact_other"].values, bool) & (s["ci"].values != best_ci[s["ii"].values])
    out = np.zeros(n, dtype=bool)
    out[np.asarray(s["ii"].values)[ok].astype(np.int64)] = True
    return out


#: postcode levels that place the record at the LA child's postcode (or one typed character from it)
_OVER_POSTCODE = ("unit", "typed error")
#: surname levels that are the child's surname, mistyped or swapped with the forename
_OVER_SURNAME = ("exact", "part of double-barrel", "swapped with forename", "typo", "typed error")


def overwhelming_evidence(lv: Any, score: Any, runner_any: Any, cfg: Any, fn_is_name: Any,
                          pupils: bool = True) -> Any:
    """Nearest candidates (``<field>_lv`` columns, row-aligned with ``score`` and the best
    score among the record's other candidates, ``runner_any``) that are not safe by the
    ordinary rule but whose evidence is overwhelming (issue 14 part 2: no identifiers; a
    forename mistyped beyond a slip, replaced or missing; a missing or wrong DOB; a moved or
    retyped address):

    * the place: the postcode unit (or one typed character from it), or the address line
      (or its house number with the street retyped) whatever the postcode;
    * the name: the forename (or a form of it, or the names swapped) with the exact DOB, the
      surname whatever it is (a new surname, a typo); or no forename at all with the surname
      (mistyped, or swapped) and the exact DOB;
    * or, matching pupils to the LA's children (``pupils``: not carers, whose namesake at home
      is a parent or a grown-up child; ``cfg.dob_required``), the very forename and surname at the same home
      (postcode unit and address) with a DOB wrong, or at the place with no DOB: no two
      children of one home share a full name;
    * nothing against it: no different gender, no different valid permanent UPN; at least the
      possible band (but for the full name at home), and ``margin`` ahead of every other
      candidate.

    ``fn_is_name(mask)``: for the records of ``mask``, their forename is a name (the LA's
    children hold it, or the name lists of :func:`~b2b.matching.normalise.name_list`; asked
    only where it decides). A forename that is another name, even
    one a typo away, is never carried by this rule: within one home the forename is what tells
    twins apart, and a twin the LA does not know, alone in a run, carries a real name. A
    forename mistyped into no name at all is the child's own. The caller also only takes this when
    the batch holds no twin of the record (:func:`batch_twins`), the LA no other candidate with
    the record's exact forename and a compatible DOB (the household guard), and no other record
    of the batch the same child (:func:`claimed_by_another_record`); the DAG path adds the same
    across runs (a child already linked to another school's record)."""
    import numpy as np

    place = at(lv, "postcode", *_OVER_POSTCODE) | at(lv, "address_line1", *HOME_ADDRESS)
    home = at(lv, "postcode", *_OVER_POSTCODE) & at(lv, "address_line1", *HOME_ADDRESS)
    dob = at(lv, "dob", "exact")
    fn_strong = at(lv, "forename", *FORENAME_STRONG)
    # the forename is the child's (or a form of it), missing, or mistyped into no name at all
    # ("Jgll", "Bridegt"): never another name, even one a typo away ("Jaden"), which is what a
    # twin the LA does not know carries
    rest = place & ~at(lv, "gender", "different") & ~at(lv, "upn", "different valid permanent") \
        & (np.asarray(score) - np.asarray(runner_any) >= cfg.margin)
    by_name = (at(lv, "surname", *_OVER_SURNAME) | fn_strong) & dob & (np.asarray(score) >= cfg.possible) & rest
    typo = by_name & at(lv, "forename", "typo", "typed error")
    misspelt = typo & ~fn_is_name(typo) if typo.any() else typo
    named = (fn_strong | at(lv, "forename", "missing")) & by_name | misspelt
    # the very forename and the exact DOB at the child's very home (postcode and address line)
    # whatever the surname and the score (a new surname and a retyped postcode can leave it below
    # the possible band): a twin has another forename, a sibling another DOB
    named = named | (home & at(lv, "forename", "exact", "exact, mis-decoded") & dob & rest)
    if pupils and cfg.dob_required:  # children: a full name is unique within a home (whatever score the DOB leaves)
        full_name = fn_strong & at(lv, "surname", "exact", "swapped with forename") & rest
        named = named | (home & full_name & at(lv, "dob", *DOB_COMPATIBLE, "within 31 days", "different")) \
            | (full_name & at(lv, "dob", "missing"))
        # no DOB, at the very home: the very forename with the surname mistyped, or the surname with
        # the forename misspelt into no name (issue 14, FEBRL 4): with no DOB only the forename
        # tells the children of one home apart, and neither is another child's name
        no_dob = home & at(lv, "dob", "missing") & rest
        typo_nd = no_dob & at(lv, "forename", "typo", "typed error") & at(lv, "surname", "exact")
        named = named | (no_dob & at(lv, "forename", "exact", "exact, mis-decoded")
                         & at(lv, "surname", *SURNAME_COMPATIBLE)) | \
            ((typo_nd & ~fn_is_name(typo_nd)) if typo_nd.any() else typo_nd)
    return named


def forename_is_name(fn: Any, tf: Any, mask: Any, child_fn: Any, slip: Any) -> Any:
    """For the records of ``mask``: their (prepared) forename may be a name, not the child's
    (``child_fn``, row-aligned) misspelt (:func:`~b2b.matching.normalise.may_be_a_name`, with the
    LA's forename counts and the keystroke ``slip`` flags); True elsewhere."""
    import numpy as np

    from b2b.matching.normalise import may_be_a_name, spelt_as_no_name

    out = np.ones(len(fn), dtype=bool)
    counts = tf.counts.get("fn", {}) if tf is not None else {}
    for k in np.flatnonzero(mask).tolist():
        out[k] = may_be_a_name(fn[k], child_fn[k], counts, bool(slip[k]))
        # sounding as the child's forename does is no name either when it is spelt as no name is
        # ("Lachln" for "Lachlan": issue 14, FEBRL 4); held by an LA child or listed: a name.
        # (Spelt against the shipped name list only: the DAG path's counts hold the run's names,
        # not the LA's, so runs of the LA's forenames would decide otherwise than b2b match.)
        if out[k] and fn[k] and counts.get(fn[k], 0) == 0:
            out[k] = not spelt_as_no_name(fn[k])
    return out


def runner_any_other(s: Any, rows: Any, n: int) -> Any:
    """Per incoming record the best score among its candidates other than its best pair
    (``rows``: the best pair's row in ``s``, -1 none; -inf when there is no other), on either
    kind of scored pairs."""
    import numpy as np

    ii = np.asarray(s["ii"].values, dtype=np.int64)
    score = np.asarray(s["score"].values, dtype=float)
    other = np.ones(len(ii), dtype=bool)
    other[rows[rows >= 0]] = False
    out = np.full(n, -np.inf)
    np.maximum.at(out, ii[other], score[other])
    return out


def claimed_by_another_record(best_ci: Any, claims: Any = None) -> Any:
    """Records whose nearest LA child is also another record's nearest (a twin the LA does not
    know on another roll, a duplicate): neither is linked on overwhelming evidence alone.

    ``claims`` (per record; default all): the records whose nearest child counts as a claim. The
    caller leaves out a record whose DOB is *different* from its nearest child's and that scores
    below the possible band (issue 14): it is neither a twin (twins share the DOB) nor the child
    with its DOB mistyped (that shares the name and home and scores in the band); it is a third
    person whose nearest LA record happens to be this child, and counting it kept the child's own
    record in review (FEBRL 4: claimers at -17 to -3 bits). The DAG path counts alike: another
    part's or run's record claims a child only when it is shown (possible or linked)."""
    import numpy as np

    ci = np.asarray(best_ci)
    ok = ci >= 0
    counted = ok if claims is None else ok & np.asarray(claims, dtype=bool)
    vals, counts = np.unique(ci[counted], return_counts=True)
    # (a record is claimed by another when the child's counted claims, less its own, are one or more)
    n_claims = dict(zip(vals.tolist(), counts.tolist()))
    own = counted.tolist()
    return ok & np.fromiter((n_claims.get(c, 0) - own[k] > 0 for k, c in enumerate(ci.tolist())), dtype=bool,
                            count=len(ci))
#: birth cohorts the LA's child records are taken to span when the chance of a namesake born the
#: same day is estimated (:func:`rare_name_and_dob`): fewer than the real span (0 to 18 or more),
#: so the LA's births per day are over-estimated — the estimate errs towards a namesake
RARE_NAME_COHORTS = 14
#: the most expected namesakes (same forename, surname and DOB) of one record among the LA's
#: children for its name and DOB alone to carry an automatic link (:func:`rare_name_and_dob`)
RARE_NAME_MAX_EXPECTED = 5e-4
#: name frequencies counted over fewer LA children than this say nothing about how rare a name is
RARE_NAME_MIN_LA = 5_000


def _rare_name_inputs(s: Any, inc: Any, best_lv: Any, best_ci: Any, eligible: Any, in_twins: Any, tf: Any,
                      n: int) -> tuple[Any, Any, Any, Any, Any, Any, int]:
    """The row-aligned arrays :func:`rare_name_and_dob` reads, from the scored pairs ``s`` (every
    LA child sharing the record's name or its DOB and surname initial is a candidate: the
    forename + surname and DOB blocking keys) and the LA's name frequencies ``tf``."""
    import numpy as np

    ii = s["ii"].values
    # LA children that could be this record's child by name and DOB (the name or a form, typo,
    # typed error; a compatible surname and DOB): it must be exactly one
    alike = at(s, "forename", *FORENAME_STRONG, "typo", "typed error") & at(s, "surname", *SURNAME_COMPATIBLE) & \
        at(s, "dob", *DOB_COMPATIBLE)
    n_alike = np.bincount(ii[alike], minlength=n)[:n]
    full = at(s, "forename", "exact") & at(s, "surname", "exact")
    n_full = np.bincount(ii[full], minlength=n)[:n]
    fn_counts, sn_counts = tf.counts.get("fn", {}), tf.counts.get("sn", {})
    c_fn = np.array([fn_counts.get(v, 0) for v in inc["fn"].values], dtype=float)
    c_sn = np.array([sn_counts.get(v, 0) for v in inc["sn"].values], dtype=float)
    n_la = tf.totals.get("fn", (0, 0))[0]
    # the same name and DOB twice in the batch (two schools' records, or two namesakes): not this rule's
    if isinstance(inc, PreparedRows):
        from collections import Counter

        keys = list(zip(inc["fn"].tolist(), inc["sn"].tolist(), inc["dob_s"].tolist()))
        seen = Counter(keys)
        dup = np.array([seen[k] > 1 for k in keys], dtype=bool).reshape(len(keys))
    else:
        key = inc["fn"] + "|" + inc["sn"] + "|" + inc["dob_s"]
        dup = key.duplicated(keep=False).values
    return best_lv, eligible & ~in_twins & ~dup & (best_ci >= 0), n_alike, n_full, c_fn, c_sn, n_la


def rare_name_and_dob(best_lv: Any, ok: Any, n_alike: Any, n_full: Any, c_fn: Any, c_sn: Any,
                      n_la: int) -> tuple[Any, Any]:
    """A name and DOB rare enough to carry a link without any other agreement (issue 14, term
    frequencies as Splink weighs them): ``(mask, expected namesakes)`` per incoming record.

    A record's nearest candidate has exactly its forename, surname and DOB (gender not
    different, middle name not different, no two valid permanent UPNs that differ), and is the
    only LA child whose name and DOB resemble the record's (``n_alike == 1``). If the LA did not
    know the child (the record is a newcomer), that candidate would be a namesake born the same
    day; the expected number of such namesakes is the LA's holders of the full name — estimated
    as ``c_fn * c_sn / n_la`` (forename and surname counts over all ``n_la`` LA children), or the
    LA's actual holders ``n_full`` if more (names of one origin go together) — times the chance
    one was born that day, 1 / (365.25 x :data:`RARE_NAME_COHORTS`). When that is at most
    :data:`RARE_NAME_MAX_EXPECTED`, a link is made: with about 1 record in 20 a newcomer, that is
    at most 0.25 false links per 10,000 records. (Real populations: about 1 child in 1,000 of a
    large LA shares full name and DOB with another, nearly all of them on common names.) Never
    from fewer than :data:`RARE_NAME_MIN_LA` LA children.

    A twin shares surname, DOB and home but not the forename; a sibling not the DOB: neither
    has the very name and DOB. ``ok``: the pair is eligible, the record is in no batch twin pair
    and no other record of the batch has its name and DOB (:func:`_rare_name_inputs`)."""
    import numpy as np

    ok = np.asarray(ok, dtype=bool)
    expected = np.maximum(np.asarray(c_fn, float) * np.asarray(c_sn, float) / max(n_la, 1),
                          np.asarray(n_full, float)) / (365.25 * RARE_NAME_COHORTS)
    same = at(best_lv, "forename", "exact") & at(best_lv, "surname", "exact") & at(best_lv, "dob", "exact") & \
        ~at(best_lv, "gender", "different") & ~at(best_lv, "middle_names", "different") & \
        ~at(best_lv, "upn", "different valid permanent")
    rare = ok & same & (np.asarray(n_alike) == 1) & (expected <= RARE_NAME_MAX_EXPECTED) & (n_la >= RARE_NAME_MIN_LA)
    return rare, expected


#: a UK keyboard's letter rows: keys next to each other in a row, or above/below, are neighbours
_KEY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _key_neighbours() -> dict[str, set[str]]:
    """Each letter's neighbouring keys: beside it in its row, and the two touching it in the row
    above (same column and one right) and below (same column and one left) — the rows are staggered."""
    pos = {ch: (r, c) for r, row in enumerate(_KEY_ROWS) for c, ch in enumerate(row)}
    near = {(0, -1), (0, 1), (-1, 0), (-1, 1), (1, -1), (1, 0)}
    return {a: {b for b, (rb, cb) in pos.items() if (rb - ra, cb - ca) in near} for a, (ra, ca) in pos.items()}


KEY_NEIGHBOURS = _key_neighbours()


def keystroke_slip(typed: str, name: str) -> bool:
    """``typed`` is ``name`` mistyped: a letter (not the first) replaced by a neighbouring key
    ("Ben" -> "Bwn"; two such letters from five letters: "Freya" -> "Fretq", as the typed-error
    level allows two edits from five letters), or two neighbouring letters swapped ("Ben" ->
    "Bne"). Names parents give twins are not such pairs ("Jaden"/"Jayden", "Fin"/"Finn",
    "Amy"/"Ami", "Leo"/"Leon", "Thea"/"Theo")."""
    if not typed or not name or len(typed) != len(name) or typed == name or typed[0] != name[0]:
        return False
    diff = [k for k, (a, b) in enumerate(zip(typed, name)) if a != b]
    if len(diff) == 2 and diff[1] == diff[0] + 1 and typed[diff[0]] == name[diff[1]] and \
            typed[diff[1]] == name[diff[0]]:
        return True  # a transposition
    return len(diff) <= (2 if len(name) >= 5 else 1) and \
        all(typed[k] in KEY_NEIGHBOURS.get(name[k], ()) for k in diff)


def keystroke_slips(s: Any, core: Any, inc: Any) -> Any:
    """Per scored pair, whether the school's forename is the LA child's mistyped
    (:func:`keystroke_slip`); checked only where a rule could use it (the forename level a typo
    or typed error, the DOB exact or day/month swapped, the very home or the middle name agreeing)."""
    import numpy as np

    out = np.zeros(len(s), bool)
    rows = np.flatnonzero(at(s, "forename", "typo", "typed error") & at(s, "dob", "exact", "day and month swapped") &
                          (s["home"].values | at(s, "middle_names", "equal")))
    if len(rows):
        typed, name = inc["fn"].values[s["ii"].values[rows]], core["fn"].values[s["ci"].values[rows]]
        out[rows] = [keystroke_slip(t, m) for t, m in zip(typed, name)]
    return out


def _typed_home_inputs(s: Any, inc: Any, tf: Any) -> tuple[Any, Any, Any, Any]:
    """The pair-aligned arrays :func:`typed_forename_at_home` reads, from the scored pairs ``s``."""
    from collections import Counter

    import numpy as np
    import pandas as pd

    from b2b.matching import small

    ii = s["ii"].values
    n = len(inc)
    # the record's candidates at its postcode with a surname and DOB like its own: the child, or
    # a twin the LA knows (a sibling is born months apart)
    born_here = at(s, "postcode", "unit") & at(s, "surname", "exact", "typo", "typed error") & \
        at(s, "dob", *DOB_COMPATIBLE, "within 31 days")
    at_home = np.bincount(ii[born_here], minlength=n)[:n][ii]
    # two records anywhere in the batch with one surname, DOB and home (any school), or of one
    # school with one surname and DOB (whatever the addresses: a school may update one twin's
    # home and not the other's): twins, or one child twice — the typed name is then not the only reading
    if n <= small.SMALL_DECIDE:  # a school run's few records: in Python, not ~15 Series operations
        sn, dob, pc, addr = (inc[k].values.tolist() for k in ("sn", "dob_s", "pc", "addr"))
        school = [str(b) for b in inc["base_id"].values.tolist()] if "base_id" in inc else [""] * n
        home = [(a, b, c, d) if c != "" and d != "" else None for a, b, c, d in zip(sn, dob, pc, addr)]
        roll = [(a, b, c) if b != "" and c != "" else None for a, b, c in zip(school, sn, dob)]
        seen = Counter(home) + Counter(roll)  # (the two kinds of key never equal: 4 and 3 parts)
        shared = np.array([(h is not None and seen[h] > 1) or (r is not None and seen[r] > 1)
                           for h, r in zip(home, roll)], dtype=bool)[ii]
    else:
        place = inc["pc"] + "|" + inc["addr"]
        key = (inc["sn"] + "|" + inc["dob_s"] + "|" + place).where((inc["pc"] != "") & (inc["addr"] != ""))
        school = inc["base_id"].astype(str) if "base_id" in inc else pd.Series("", index=inc.index)
        same_school = (school + "|" + inc["sn"] + "|" + inc["dob_s"]).where((inc["sn"] != "") & (inc["dob_s"] != ""))
        shared = ((key.notna() & key.duplicated(keep=False)) |
                  (same_school.notna() & same_school.duplicated(keep=False))).values[ii]
    # another record of the batch (any school, any address) holds the LA child's very name (or
    # a form of it), surname and DOB: that record is the child's better claim, this one its twin
    # or a second record to look at (a family that moved with one twin's record updated)
    very = at(s, "forename", *FORENAME_STRONG) & at(s, "surname", "exact") & at(s, "dob", "exact")
    claimed = np.isin(s["ci"].values, s["ci"].values[very])
    shared = shared | claimed
    fn_counts = tf.counts.get("fn", {})
    unseen = np.array([not fn_counts.get(v) for v in inc["fn"].values.tolist()], dtype=bool)[ii]
    return s, at_home, shared, unseen


def middle_name_counts(lv: Any, slip: Any) -> Any:
    """Pairs whose middle name agrees (both hold one, the same) with the very forename (or a
    form of it, or the forename mistyped by a keystroke: ``slip``, :func:`keystroke_slips`), a
    compatible surname (exact, part, typo, typed error), the DOB exact or with day and month
    swapped, gender not different: corroboration that counts without identifiers, as the UPN
    does (issue 14: moved children whose LA record holds a surname typed in error, whose school
    swapped day and month). A twin has a forename of its own (a keystroke slip is not a name
    parents give), a sibling another DOB; a namesake elsewhere would also need the same middle
    name — and the same DOB: a DOB one digit or a few days out is not accepted here, since each
    widens the namesake's chance some forty-fold (at 301,638 LA children the bench met five such
    namesakes, sharing forename, middle name and surname, a year or a few days apart). Input:
    the pairs' ``<field>_lv`` columns."""
    import numpy as np

    return at(lv, "middle_names", "equal") & (at(lv, "forename", *FORENAME_STRONG) | np.asarray(slip, bool)) & \
        at(lv, "dob", "exact", "day and month swapped") & at(lv, "surname", *SURNAME_COMPATIBLE) & \
        ~at(lv, "gender", "different")


def typed_forename_at_home(lv: Any, at_home: Any, shared: Any, unseen: Any, slip: Any) -> Any:
    """Pairs where the school's forename is the LA child's mistyped by one keystroke, at the very
    home, with nothing else that could be another child (issue 14): the pair's forename level is
    a typo or typed error and :func:`keystroke_slip` holds; surname and DOB exact, gender and
    middle name not different; the same home (postcode unit and address line); the record's
    forename is held by no LA child (``unseen``: a slip, not a name — "Bwn", "Mxa", "Fretq");
    the LA has no other child at that postcode with that surname and a DOB within 31 days
    (``at_home == 1``: no twin the LA knows); and no other record of the batch shares the
    record's surname, DOB and home (at any school) or its school, surname and DOB (at any
    address), nor is a candidate of the LA child by its very name, surname and DOB (any school,
    any address): ``~shared``, no twin on a roll. A twin has a
    name of its own, which parents choose: a real name, not a keystroke from its twin's. Inputs:
    the pairs' ``<field>_lv`` columns and ``home``, and per pair ``at_home``, ``shared``,
    ``unseen`` (:func:`_typed_home_inputs`) and ``slip`` (:func:`keystroke_slips`)."""
    import numpy as np

    return at(lv, "forename", "typo", "typed error") & at(lv, "surname", "exact") & at(lv, "dob", "exact") & \
        ~at(lv, "gender", "different") & ~at(lv, "middle_names", "different") & np.asarray(lv["home"], bool) & \
        (np.asarray(at_home) == 1) & ~np.asarray(shared, bool) & np.asarray(unseen, bool) & np.asarray(slip, bool)


def name_and_dob_exact(lv: Any) -> Any:
    """Pairs (``<field>_lv`` columns) whose forename is the name or a form of it, surname and
    DOB exact, and gender not different: what :func:`moved_together` asks of each child."""
    return at(lv, "forename", *FORENAME_STRONG) & at(lv, "surname", "exact") & at(lv, "dob", "exact") & \
        ~at(lv, "gender", "different")


def at_the_las_school(s: Any, la_school: Any, school: Any) -> Any:
    """Pairs (``ii``, ``ci`` and ``<field>_lv`` columns) whose LA child the LA holds at the
    record's own school (``la_school``: per LA record the school its record names, "" for none;
    ``school``: per incoming record its school), with the very forename (or a form of it), the
    exact DOB, a surname consistent with the child's (exact, part of a double-barrel, a typo or
    typed error, swapped with the forename), gender not different and no two valid permanent
    UPNs that differ: corroboration that counts without identifiers (issue 14: a family that
    moved house keeps its school; the no-identifier queue was mostly such families). A namesake
    the LA holds elsewhere is at another school or none; a twin or sibling at the school has a
    forename or a DOB of its own. (Not a DOB a digit or days out: a child of that name born days
    from the record's is far likelier than one born the same day.)"""
    import numpy as np

    out = at(s, "forename", *FORENAME_STRONG) & at(s, "surname", *SURNAME_COMPATIBLE) & at(s, "dob", "exact") & \
        ~at(s, "gender", "different") & ~at(s, "upn", "different valid permanent")
    # (the schools compared at those pairs only: text compared per pair cost ~0.13 s a part of
    # ~450k pairs at 300k x 250k, on the path every large run takes)
    k = np.flatnonzero(out)
    held = np.asarray(la_school, dtype=object)[s["ci"].to_numpy()[k]]
    out[k] = (held != "") & (held == np.asarray(school, dtype=object)[s["ii"].to_numpy()[k]])
    return out


def another_school_another_day(lv: Any, held: Any, school: Any) -> Any:
    """Nearest candidates (``<field>_lv`` columns, per record) that are another child: the LA
    holds them at another school (``held``: the school the LA holds for each record's candidate,
    ``school``: the record's own; both known), born on another day than the record (a digit,
    days or day and month apart; not missing), living elsewhere (postcode beyond the sector,
    address not the street) and no middle name agreeing: a newcomer's namesake born days away,
    far commoner than the LA's own child with a DOB error, a move and a change of school all at
    once (issue 14: at 300k LA children without identifiers ~1,700 of the possible queue's
    5,700 records, about 10 of them the child)."""
    import numpy as np

    held = np.asarray(held, dtype=object)
    school = np.asarray(school, dtype=object)
    return (held != "") & (school != "") & (held != school) & \
        at(lv, "dob", "one digit", "within 31 days", "day and month swapped") & \
        at(lv, "postcode", "district", "different") & \
        at(lv, "address_line1", "not equal or missing") & ~at(lv, "middle_names", "equal")


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


def claimed_at_another_school(base: Any, best_ci: Any, safe: Any, exact_fn: Any, resembling: Any,
                              outside: Any = None) -> Any:
    """Records whose nearest LA child is linked automatically, under its exact forename, from
    another school's record, while their own forename only resembles the child's and no
    identifier ties them (``resembling``, :func:`resembling_name_only`): a twin the LA never
    knew on another school's roll ("Jaden" beside the LA's Jayden), not the child —
    ``unmatched``, ``why_not_possible: ["claimed_elsewhere"]``. (A form of the name — the
    child's own nickname at a second school — stays an officer's question, ``claimed_twice``.)
    Inputs per incoming record, row-aligned: school, nearest candidate position (-1 none),
    linked automatically, forename level exact, ``resembling``; ``outside``: the nearest child
    is so claimed by another school's record outside this call (the DAG path: a run's other
    parts of whole schools)."""
    from collections import Counter

    import numpy as np

    if not len(best_ci):
        return np.zeros(0, bool)
    rec = list(zip((str(b) for b in np.asarray(base, dtype=object).tolist()), np.asarray(best_ci).tolist()))
    claims = {k for k, hit in zip(rec, (safe & exact_fn).tolist()) if hit}
    schools = Counter(c for _, c in claims)  # schools claiming each child exactly
    # (less one when this record's school is one of them)
    others = np.array([schools[c] - ((b, c) in claims) for b, c in rec], dtype=np.int64)
    if outside is not None:
        others = others + np.asarray(outside, dtype=np.int64)
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
            from b2b.matching.normalise import dob_dates

            v = pd.Series(pd.Series(dob_dates(v)).dt.date, dtype=object)
        v = v.where(v.notna() & (v != ""), None)
        return v.map({x: normalise(f, x) for x in v.dropna().unique()}).to_numpy(dtype=object)

    for f in FRAME_COMPARED:
        if f not in core_df.columns or f not in incoming_df.columns:
            continue
        a = norm(f, core_df[f].take(ci[take]).to_numpy(dtype=object))  # (the chosen rows: not a whole LA column)
        b = norm(f, incoming_df[f].to_numpy(dtype=object)[take])
        d = pd.notna(a) & pd.notna(b) & (a != b)
        hit = take[d]
        names[hit] = np.where(names[hit] == "", f, names[hit] + ";" + f)
    return names


def _explanations(best: Any, has: Any, runner: Any, n_good: Any, by_officer: Any, maybe: Any, below: Any, ambiguous: Any, fn_ok: Any, eligible: Any, corro: Any, guards: Any, differ: Any, not_possible: Any, moved: Any, over_corro: Any, over: Any, queue_rules: Any = None, *, only: Any = None, before: Any = None) -> Any:
    """One JSON object per incoming record: per field its level label and weight (``fields``),
    the non-zero weights (``weights``), score, runner-up, the compared fields that differ
    (``differing_fields``), for a possible ``why_not_auto``, and for an unmatched record whose
    nearest candidate scores in the possible band ``why_not_possible`` (``not_possible``: reason ->
    mask). ``only``: the records to explain (positions), the others' explanations are ``before``'s."""
    import json
    import math

    import numpy as np

    out = list(before) if only is not None else [""] * len(best)
    vals = np.column_stack([best[f].values for f in PARTS])
    lvs = np.column_stack([best[f + "_lv"].values for f in PARTS])
    scores = best["score"].values
    for k in (range(len(best)) if only is None else only.tolist()):
        if by_officer[k]:
            out[k] = json.dumps({"officer_link": True, **({"differing_fields": differ[k].split(";")}
                                                          if differ[k] else {})}, sort_keys=True)
            continue
        if not has[k]:  # no candidate at all
            out[k] = '{"candidates": 0}'
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
        if queue_rules is not None:  # issue 14: the evidence that carried a record without identifiers
            if queue_rules["rare_name"][k] == queue_rules["rare_name"][k]:  # not NaN
                d["rare_name"] = {"expected_namesakes": float(f"{queue_rules['rare_name'][k]:.2g}")}
            for rule in ("typed_forename_at_home", "middle_name_counts", "at_the_las_school"):
                if queue_rules[rule][k]:
                    d[rule] = True
        if over_corro[k]:  # the runner-up shares name and DOB only: the margin is over the others
            d["margin_over"] = "corroborated candidates"
        if over[k]:  # linked without a compatible forename: what carried it
            d["overwhelming"] = "no twin in the batch or the household, no other record, far ahead of any other"
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
        out[k] = json.dumps(d, sort_keys=True)
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
