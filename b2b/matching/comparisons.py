"""Comparisons as labelled levels (after Splink's comparison-level library).

Each compared field is a :class:`Comparison`: an ordered list of :class:`Level` s, each a
``(label, predicate, weight)``. For every candidate pair the first level whose predicate
holds is the pair's level for that field; its weight (bits of evidence, log2 m/u, from
:class:`Weights`) is added to the score, and its label goes into the explanation. The first
level of every field is ``missing`` (weight 0), the last one catches everything else.

Adding a comparison means adding one level list to :data:`COMPARISONS` (and its weights to
:class:`Weights`). A level marked ``compatible`` is evidence consistent with the same child
(the decision rule needs a compatible forename and DOB to auto-link).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import cache, cached_property
from typing import Any

from b2b.matching.normalise import forename_forms


@dataclass(frozen=True)
class Weights:
    """Field weights in bits (log2 of m/u, rounded); agreement levels best first."""

    upn_agree: float = 12.0          # both valid and equal
    upn_temp_agree: float = 6.0      # equal, one a temporary UPN
    upn_disagree: float = -6.0       # both valid permanent UPNs, different
    guid_agree: float = 12.0
    forename_exact: float = 6.0
    forename_equiv: float = 4.5      # nickname / diminutive / middle name used as forename
    forename_swapped: float = 4.5    # forename and surname entered the other way round
    forename_typo: float = 3.5       # Jaro-Winkler >= 0.9
    forename_typed: float = 1.0      # edit distance 1 (2 from 5 letters): a keyboard slip, a transposition
    forename_initial: float = 0.0
    forename_disagree: float = -6.0
    surname_exact: float = 7.0
    surname_variant: float = 5.0     # hyphen / double-barrel part
    surname_swapped: float = 5.0     # forename and surname entered the other way round
    surname_typo: float = 4.5
    surname_typed: float = 2.0       # edit distance 1 (2 from 5 letters): "Llayd"/"Lloyd", "Jnnes"/"Jones"
    surname_disagree: float = -6.0
    dob_exact: float = 8.0
    dob_swap: float = 5.0            # day and month swapped
    dob_digit: float = 4.5           # one digit different
    dob_near: float = 1.0            # within 31 days otherwise
    dob_disagree: float = -9.0
    gender_agree: float = 1.0
    gender_disagree: float = -4.0
    postcode_unit: float = 4.0
    postcode_sector: float = 2.0
    postcode_district: float = 1.0
    postcode_typed: float = 1.5      # one character typed or transposed: the same home mistyped
    postcode_disagree: float = -1.0
    address_agree: float = 2.0
    address_street_typo: float = 1.5  # the same house number, the street name typed differently
    address_street: float = 1.0       # the same street, another house number (a neighbour shares it)
    middle_agree: float = 1.5
    middle_disagree: float = -1.0

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


class Pairs:
    """The two sides of a batch of candidate pairs, row-aligned (``c`` LA, ``i`` incoming),
    with the comparison helpers the level predicates share (computed once, on demand)."""

    def __init__(self, c: Any, i: Any, cfg: Any, links: Any = None) -> None:
        self.c, self.i, self.cfg, self.links = c, i, cfg, links
        self.n = len(c)
        self.todo: Any = None  # the pairs still without a level (set by evaluate): the only ones compared

    def distinct(self, col: str, fn: Any, where: Any = None) -> Any:
        """``fn`` per distinct value pair of ``col``, on the pairs still to be levelled (and
        ``where``) only: the string comparisons are the costly part."""
        import numpy as np

        mask = self.todo if where is None else (np.asarray(where, dtype=bool) if self.todo is None
                                                 else self.todo & np.asarray(where, dtype=bool))
        if mask is None:
            return per_distinct(self.c[col], self.i[col], fn)
        out = np.zeros(self.n, dtype=bool)
        idx = np.flatnonzero(mask)
        if len(idx):
            out[idx] = per_distinct(self.c[col].iloc[idx], self.i[col].iloc[idx], fn)
        return out

    def missing(self, col: str) -> Any:
        return (self.c[col] == "") | (self.i[col] == "")

    def equal(self, col: str) -> Any:
        return (self.c[col] != "") & (self.c[col] == self.i[col])

    # -- UPN
    @cached_property
    def upn_eq(self) -> Any:
        return ~self.missing("upn") & (self.c["upn"] == self.i["upn"])

    @cached_property
    def upn_valid_both(self) -> Any:
        return ~self.missing("upn") & self.c["upn_kind"].isin(["valid", "temp"]) & \
            self.i["upn_kind"].isin(["valid", "temp"])

    @cached_property
    def upn_perm_both(self) -> Any:
        return ~self.missing("upn") & (self.c["upn_kind"] == "valid") & (self.i["upn_kind"] == "valid")

    # -- GUID
    @cached_property
    def guid_linked(self) -> Any:
        import numpy as np

        if not self.cfg.guidmatch:
            return np.zeros(self.n, dtype=bool)
        g = ((self.c["guid"] != "") & (self.c["guid"] == self.i["guid"])).values
        if self.links is not None and len(self.links):
            key = set(zip(self.links["base_id"], self.links["guid"], self.links["person_id"]))
            g = g | np.fromiter(((b, gg, p) in key for b, gg, p in zip(self.i["base_id"], self.i["guid"], self.c["id"])),
                                dtype=bool, count=self.n)
        return g

    # -- names
    def forename_equiv(self) -> Any:
        """One is a form of the other (Joe/Joseph, Alfie/Alfred); sharing a third form is not
        enough (Theo and Edward are both "Ted"); or one's middle name is the other's forename."""

        c, i = self.c, self.i
        equiv = self.distinct("fn", lambda a, b: bool(a) and bool(b) and a != b
                             and (b in forename_forms(a) or a in forename_forms(b)))
        middle_swap = ((c["mn"] != "") & (i["fn"] == c["mn"])) | ((i["mn"] != "") & (c["fn"] == i["mn"]))
        return equiv | middle_swap.values

    @cached_property
    def names_swapped(self) -> Any:
        """The forename and surname entered the other way round ("Jones Amelia", or "Jones
        Amleia"): each side's forename is the other's surname, one of the two exactly and the
        other exactly or a typing error away (both present, and not one name twice). Once per
        batch of pairs: the forename and the surname comparison both read it."""
        import numpy as np

        c, i = self.c, self.i
        fs = (i["fn"] != "") & (i["fn"] == c["sn"])
        sf = (i["sn"] != "") & (i["sn"] == c["fn"])
        out = np.asarray(fs & sf & (i["fn"] != i["sn"]), dtype=bool)
        # one exact, the other a typing error (computed only where one is exact)
        one = np.asarray(fs ^ sf, dtype=bool)
        if one.any():
            typed = np.asarray(self.cross_typed(one), dtype=bool)
            out = out | (one & typed)
        return out

    def cross_typed(self, where: Any) -> Any:
        """Where ``where``: the record's forename a typing error (or Jaro-Winkler >= 0.9) from the
        LA's surname, or its surname from the LA's forename (the non-exact half of a swap)."""
        import numpy as np

        c, i = self.c, self.i
        a = np.asarray(i["fn"], dtype=object)
        b = np.asarray(c["sn"], dtype=object)
        x = np.asarray(i["sn"], dtype=object)
        y = np.asarray(c["fn"], dtype=object)
        out = np.zeros(self.n, dtype=bool)
        for k in np.flatnonzero(where).tolist():
            p, q = (x[k], y[k]) if a[k] == b[k] else (a[k], b[k])
            out[k] = bool(p) and bool(q) and (_typed(p, q) or _jaro_winkler(p, q) >= 0.9)
        return out

    def surname_part(self) -> Any:
        import numpy as np

        return np.fromiter((bool(set(a) & set(b)) for a, b in zip(self.c["sn_parts"], self.i["sn_parts"])),
                           dtype=bool, count=self.n)

    def similar(self, col: str, threshold: float) -> Any:
        return self.distinct(col, lambda a, b: _jaro_winkler(a, b) >= threshold)

    def typed(self, col: str) -> Any:
        return self.distinct(col, _typed)

    def typed_exact(self, col: str) -> Any:
        """Optimal string alignment distance 1 (a slip or a transposition), whatever the length."""
        return self.distinct(col, _typed1)

    def typed_or_similar(self, col: str, where: Any = None) -> Any:
        """A typed error or Jaro-Winkler >= 0.9 apart (a street name retyped)."""
        return self.distinct(col, lambda a, b: _typed(a, b) or _jaro_winkler(a, b) >= 0.9, where)

    # -- DOB
    def dob_swap(self) -> Any:
        return (self.i["dob_swap"] != "") & (self.c["dob_s"] == self.i["dob_swap"])

    def dob_one_digit(self) -> Any:
        return self.distinct("dob_s", _one_digit)

    def dob_within(self, days: int) -> Any:
        return (self.c["dob"] - self.i["dob"]).abs().dt.days <= days


Predicate = Callable[[Pairs], Any]


@dataclass(frozen=True)
class Level:
    """One level of a comparison: the pairs ``when`` selects (after the levels before it)
    get ``weight`` (a :class:`Weights` field name; ``None`` is 0) and the ``label``."""

    label: str
    when: Predicate | None          # None: every pair still unassigned (the last level)
    weight: str | None = None
    compatible: bool = True         # consistent with the same child
    tf: str | None = None           # term-frequency adjusted on this normalised column (see TermFrequencies)


@dataclass(frozen=True)
class Comparison:
    field: str
    levels: tuple[Level, ...]

    @property
    def labels(self) -> list[str]:
        return [lv.label for lv in self.levels]

    def level_of(self, label: str) -> int:
        return self.labels.index(label)


def _missing(col: str) -> Level:
    return Level("missing", lambda p: p.missing(col))


COMPARISONS: tuple[Comparison, ...] = (
    Comparison("upn", (
        _missing("upn"),
        Level("valid, equal", lambda p: p.upn_eq & p.upn_perm_both, "upn_agree"),
        Level("equal, temporary", lambda p: p.upn_eq & p.upn_valid_both, "upn_temp_agree"),
        Level("different valid permanent", lambda p: p.upn_perm_both & ~p.upn_eq, "upn_disagree", False),
        Level("not comparable", None),
    )),
    Comparison("guid", (
        Level("linked", lambda p: p.guid_linked, "guid_agree"),
        Level("none", None),
    )),
    Comparison("forename", (
        _missing("fn"),
        Level("exact", lambda p: p.equal("fn"), "forename_exact", tf="fn"),
        # the school's file was decoded with the wrong code page ("RenÃ©e"): repaired, the very name
        Level("exact, mis-decoded", lambda p: (p.i["fn_fixed"] != "") & (p.c["fn"] == p.i["fn_fixed"]),
              "forename_exact"),
        Level("nickname or middle name", lambda p: p.forename_equiv(), "forename_equiv"),
        # "Jones Amelia" for "Amelia Jones": the very name, in the other field (Splink's "columns reversed")
        Level("swapped with surname", lambda p: p.names_swapped, "forename_swapped"),
        # compatible only with an identifier or the middle name agreeing (see score_pairs)
        Level("typo", lambda p: p.similar("fn", 0.9), "forename_typo", False),
        # compatible only with a valid permanent UPN, DOB and surname agreeing (see score_pairs)
        Level("typed error", lambda p: p.typed("fn"), "forename_typed", False),
        Level("initial only", lambda p: p.c["fn1"] == p.i["fn1"], "forename_initial", False),
        Level("different", None, "forename_disagree", False),
    )),
    Comparison("surname", (
        _missing("sn"),
        Level("exact", lambda p: p.equal("sn"), "surname_exact", tf="sn"),
        Level("part of double-barrel", lambda p: p.surname_part(), "surname_variant"),
        Level("swapped with forename", lambda p: p.names_swapped, "surname_swapped"),
        Level("typo", lambda p: p.similar("sn", 0.92), "surname_typo"),
        Level("typed error", lambda p: p.typed("sn"), "surname_typed"),
        Level("different", None, "surname_disagree", False),
    )),
    Comparison("dob", (
        _missing("dob_s"),
        Level("exact", lambda p: p.equal("dob_s"), "dob_exact"),
        Level("day and month swapped", lambda p: p.dob_swap(), "dob_swap"),
        Level("one digit", lambda p: p.dob_one_digit(), "dob_digit"),
        Level("within 31 days", lambda p: p.dob_within(31), "dob_near", False),
        Level("different", None, "dob_disagree", False),
    )),
    Comparison("gender", (
        _missing("gender"),
        Level("equal", lambda p: p.c["gender"] == p.i["gender"], "gender_agree"),
        Level("different", None, "gender_disagree", False),
    )),
    Comparison("postcode", (
        _missing("pc"),
        Level("unit", lambda p: p.c["pc"] == p.i["pc"], "postcode_unit"),
        Level("sector", lambda p: p.equal("pc_sector"), "postcode_sector"),
        Level("district", lambda p: p.equal("pc_district"), "postcode_district"),
        # one character typed or two neighbours transposed ("CT1 2AB"/"CT2 1AB", "4223"/"4232")
        Level("typed error", lambda p: p.typed_exact("pc"), "postcode_typed"),
        Level("different", None, "postcode_disagree"),
    )),
    Comparison("address_line1", (
        Level("equal", lambda p: p.equal("addr"), "address_agree"),
        Level("same number, street typed", lambda p: p.typed_or_similar("street", p.equal("addr_no")),
              "address_street_typo"),
        Level("same street, other number", lambda p: p.equal("street"), "address_street"),
        Level("not equal or missing", None),
    )),
    Comparison("middle_names", (
        _missing("mn"),
        Level("equal", lambda p: p.c["mn"] == p.i["mn"], "middle_agree"),
        Level("different", None, "middle_disagree"),
    )),
)
BY_FIELD: dict[str, Comparison] = {c.field: c for c in COMPARISONS}
PARTS: list[str] = [c.field for c in COMPARISONS]
_ALL = set(Weights.names())
assert all(lv.weight is None or lv.weight in _ALL for c in COMPARISONS for lv in c.levels)


class TermFrequencies:
    """Term-frequency adjustment, as Splink does: agreeing on a rare name is worth more than
    agreeing on "Smith". For a value v with share p(v) of the LA's records, an exact agreement
    gets ``log2(u / p(v))`` bits more than the level's weight, where u = sum of p(w)^2 over all
    values (the chance two random records agree), bounded to [``low``, ``high``] bits: a rare
    name adds up to 2 bits, a common one takes away at most 1 (the thresholds were set on
    untuned weights; a common name agreeing is still evidence).

    Built from value counts over the whole LA (``from_frame`` on the LA frame, or counts a
    query gives), never from a candidate subset, so the CLI and the DAG path agree."""

    def __init__(self, counts: dict[str, dict[str, int]], totals: dict[str, tuple[int, int]], low: float = -1.0,
                 high: float = 2.0) -> None:
        # totals: column -> (number of records with a value, sum of squared counts)
        self.counts, self.totals, self.low, self.high = counts, totals, low, high

    @classmethod
    def from_frame(cls, prepared: Any, columns: Any = ("fn", "sn")) -> TermFrequencies:
        counts, totals = {}, {}
        for col in columns:
            vc = prepared[col][prepared[col] != ""].value_counts()
            counts[col] = vc.to_dict()
            totals[col] = (int(vc.sum()), int((vc.astype("int64") ** 2).sum()))
        return cls(counts, totals)

    def adjustment(self, col: str, values: Any) -> Any:
        """Bits to add for an exact agreement on each of ``values``."""
        import numpy as np

        n, sq = self.totals.get(col, (0, 0))
        if not n or not sq:
            return np.zeros(len(values))
        u = sq / (n * n)
        counts = self.counts.get(col, {})

        def bits(v: Any) -> float:
            return float(np.clip(np.log2(u * n / counts[v]), self.low, self.high)) if counts.get(v) else 0.0

        if len(values) > 1_000:
            # (each distinct value once, by its code: no Python loop over the pairs, issue 15)
            import pandas as pd

            codes, uniques = pd.factorize(values, use_na_sentinel=False)
            return np.array([bits(v) for v in np.asarray(uniques, dtype=object).tolist()], dtype=float)[codes]
        adj = {v: bits(v) for v in set(values)}
        return np.array([adj[v] for v in values])


def evaluate(comparison: Comparison, p: Pairs, w: Weights, tf: TermFrequencies | None = None) -> Any:
    """(level index, weight) arrays: the first level whose predicate holds, per pair (plus the
    term-frequency adjustment of the levels that have one)."""
    import numpy as np

    level = np.full(p.n, -1, dtype=np.int8)
    for k, lv in enumerate(comparison.levels):
        todo = level < 0
        if not todo.any():
            break
        p.todo = todo
        hit = todo if lv.when is None else (todo & np.asarray(lv.when(p), dtype=bool))
        level[hit] = k
    p.todo = None
    weights = np.array([0.0 if lv.weight is None else getattr(w, lv.weight) for lv in comparison.levels])[level]
    if tf is not None:
        for k, lv in enumerate(comparison.levels):
            if lv.tf:
                hit = np.flatnonzero(level == k)
                if len(hit):
                    weights[hit] += tf.adjustment(lv.tf, p.c[lv.tf].values[hit])
    return level, weights


def score_pairs(core: Any, inc: Any, pairs: Any, cfg: Any, links: Any = None, tf: TermFrequencies | None = None,
                *, frame: bool = True) -> Any:
    """Per-field level and weight and the total for every candidate pair: columns ``<field>``
    (weight), ``<field>_lv`` (level index into :data:`BY_FIELD` [field].levels), ``score``,
    ``forename_ok`` and ``corroborated``. A DataFrame; with ``frame=False``, a few pairs
    come as :class:`b2b.matching.small.Frame` (row-aligned arrays: no DataFrame built)."""
    import functools

    import numpy as np
    import pandas as pd

    from b2b.matching.small import ArrayPairs, Frame

    if "fn_fixed" not in inc.columns:
        inc = inc.assign(fn_fixed=mis_decoded_keys(inc["forename"] if "forename" in inc.columns else inc["fn"]))
    p = _pairs(core, inc, pairs, cfg, links)
    s = (Frame if isinstance(p, ArrayPairs) else pd.DataFrame)({"ci": pairs["ci"].values, "ii": pairs["ii"].values})
    for comp in COMPARISONS:
        s[comp.field + "_lv"], s[comp.field] = evaluate(comp, p, cfg.weights, tf)
    # (field by field, left to right: pandas' sum(axis=1) over the weights)
    s["score"] = s[PARTS].sum(axis=1) if isinstance(s, pd.DataFrame) else \
        functools.reduce(np.add, (s[f].to_numpy().astype(float) for f in PARTS))
    fcomp = BY_FIELD["forename"]
    # corroboration that counts: a valid permanent UPN that agrees, with a compatible DOB and surname
    # (or, for a changed surname, with the DOB and the very forename); with no DOB on one side
    # (a school's blank field, an old LA record), the UPN with the very forename, whatever the
    # surname: a brother or sister whose UPN the school typed by mistake, a twin included, has a
    # forename of their own; the DOB only ever told a sibling apart, and the forename does that
    s["upn_strong"] = at(s, "upn", "valid, equal") & (
        (at(s, "dob", *DOB_COMPATIBLE) & (at(s, "surname", *SURNAME_COMPATIBLE) | at(s, "forename", "exact")))
        | (at(s, "dob", "missing") & at(s, "forename", "exact", "exact, mis-decoded")))
    # a typed forename ("Bne", "Poul", "Jgll") is compatible only with that corroboration; a
    # forename a typo away ("Jayden"/"Jaden", "Kayherine") only with a UPN or GUID agreeing, or
    # the middle name too: such a forename does not tell twins apart, and a twin the LA does not
    # know, on another school's roll, shares everything else (surname, DOB, home)
    identifier = at(s, "upn", "valid, equal", "equal, temporary") | at(s, "guid", "linked")
    # (with the middle name but no identifier, only a forename that is no name: a twin the LA
    # does not know may share a family middle name and carry a real name a typo away, "Amelie"
    # beside "Amelia", both named Rose)
    typo_middle = at(s, "forename", "typo") & ~identifier & at(s, "middle_names", "equal")
    if typo_middle.any():
        from b2b.matching.normalise import may_be_a_name

        counts = tf.counts.get("fn", {}) if tf is not None else {}
        fn_i, fn_c = inc["fn"].values, core["fn"].values
        for k in np.flatnonzero(typo_middle).tolist():
            typo_middle[k] = not may_be_a_name(fn_i[s["ii"].values[k]], fn_c[s["ci"].values[k]], counts)
    # a typed forename with a changed surname (a slip and a new family name in one record): the
    # agreeing valid permanent UPN and exact DOB at the very home stand where the surname stood.
    # A wrong link would need a twin of the child who carries the child's UPN (a sibling's UPN
    # entered in error), whose real name is one typing error from the child's, and whose surname
    # changed while the child's did not; the twin guards still see the twin the LA knows
    typed_renamed = at(s, "forename", "typed error") & at(s, "upn", "valid, equal") & at(s, "dob", "exact") & \
        at(s, "postcode", "unit") & at(s, "address_line1", *HOME_ADDRESS)
    s["forename_ok"] = np.array([lv.compatible for lv in fcomp.levels])[s["forename_lv"].values] | \
        (at(s, "forename", "typed error") & (s["upn_strong"].values | typed_renamed)) | \
        (at(s, "forename", "typo") & identifier) | typo_middle
    s["forename_strong"] = at(s, "forename", *FORENAME_STRONG)
    # the same home (postcode unit and the address line, or its house number with the street
    # retyped): within one home a child is told apart by forename and DOB — a twin by the
    # forename, a sibling by the DOB (months apart) — so the same home with the very forename
    # (or a form of it) and a DOB at most a typing error or 31 days away is corroboration that
    # counts without any identifier, whatever the surname says (a typo, a new surname)
    s["home"] = at(s, "postcode", "unit") & at(s, "address_line1", *HOME_ADDRESS)
    s["home_strong"] = s["home"].values & s["forename_strong"].values & \
        at(s, "dob", *DOB_COMPATIBLE, "within 31 days")
    # a second, independent identifier beyond name + DOB: a namesake elsewhere has none. The
    # street name counts too (another house number, another postcode: the LA's address is old or
    # mistyped): a namesake with the same full name and DOB is already rare (about 1 in 1,000
    # records of a large LA), and one living on a street of the same name rarer still (well
    # under 1 in 10,000 even for "High Street"); a twin or sibling on that street has another
    # forename or DOB, which eligibility checks separately. A postcode one typed character from
    # the LA's ("CT1 2AB"/"CT1 2BA") counts as the sector does
    s["corroborated"] = at(s, "upn", "valid, equal", "equal, temporary") | at(s, "guid", "linked") | \
        at(s, "postcode", "unit", "sector", "typed error") | \
        at(s, "address_line1", *HOME_ADDRESS, "same street, other number") | \
        at(s, "middle_names", "equal")
    return pd.DataFrame(s.cols) if frame and isinstance(s, Frame) else s


def _pairs(core: Any, inc: Any, pairs: Any, cfg: Any, links: Any) -> Pairs:
    """The two sides of the pairs: pandas Series, or numpy arrays for a few pairs (issue 15)."""
    from b2b.matching import small

    if len(pairs) <= small.SMALL_PAIRS and core.index.is_unique and inc.index.is_unique:
        return small.array_pairs(core, inc, core.index.get_indexer(pairs["ci"].values),
                                 inc.index.get_indexer(pairs["ii"].values), _CORE_NEEDED, _INC_NEEDED, cfg, links)
    c = core[_CORE_NEEDED].loc[pairs["ci"].values].reset_index(drop=True)
    i = inc[_INC_NEEDED].loc[pairs["ii"].values].reset_index(drop=True)
    return Pairs(c, i, cfg, links)


#: DOB levels consistent with the same child (typed day/month or one digit included)
DOB_COMPATIBLE = ("exact", "day and month swapped", "one digit")
#: forename levels that tell twins apart: the same name or one of its forms
FORENAME_STRONG = ("exact", "exact, mis-decoded", "nickname or middle name", "swapped with surname")
#: surname levels consistent with the same child
SURNAME_COMPATIBLE = ("exact", "part of double-barrel", "swapped with forename", "typo", "typed error")
#: address line levels that name the same home (with the postcode unit)
HOME_ADDRESS = ("equal", "same number, street typed")


def at(s: Any, field: str, *labels: str) -> Any:
    """Pairs whose level for ``field`` is one of ``labels`` (a level of -1, no pair, is none)."""
    return _level_table(field, labels)[s[field + "_lv"].to_numpy()]


@cache
def _level_table(field: str, labels: tuple[str, ...]) -> Any:
    """Per level index of ``field`` (and -1, the last slot), whether it is one of ``labels``: a
    lookup, where ``np.isin`` cost ~15 us a call, ~75 calls a decision (issue 15)."""
    import numpy as np

    comp = BY_FIELD[field]
    table = np.zeros(len(comp.levels) + 1, dtype=bool)
    table[[comp.level_of(lb) for lb in labels]] = True
    table.flags.writeable = False
    return table


def label_of(field: str, level: int) -> str:
    return BY_FIELD[field].levels[level].label


def per_distinct(a: Any, b: Any, fn: Any) -> Any:
    """``fn(a, b)`` for each row of two string columns, computed once per distinct pair (names
    and dates repeat a lot) and mapped back. The distinct pairs are found on each column's
    codes (no text joined per row, no whole column made Python strings: issue 15); ``fn`` is
    judged on them by its vectorised form (:func:`judge`)."""
    import numpy as np
    import pandas as pd

    if not len(a):
        return np.zeros(0, dtype=bool)
    # (a missing value, never in a prepared column, is a value of its own here)
    ca, ua = pd.factorize(a, use_na_sentinel=False)
    cb, ub = pd.factorize(b, use_na_sentinel=False)
    ua, ub = np.asarray(ua, dtype=object), np.asarray(ub, dtype=object)
    pair, inverse = np.unique(ca.astype(np.int64) * len(ub) + cb, return_inverse=True)
    return judge(fn, ua[pair // len(ub)], ub[pair % len(ub)])[inverse.reshape(-1)]


def judge(fn: Any, a: Any, b: Any) -> Any:
    """``fn(x, y)`` for each pair of two object arrays of text, as a boolean array: by ``fn.many``
    (the same judgement on whole arrays) when ``fn`` has one, else pair by pair.
    ``tests/test_matching_levels.py`` holds each ``many`` to its ``fn``."""
    import numpy as np

    many = getattr(fn, "many", None)
    if many is not None and len(a):
        return np.asarray(many(a, b), dtype=bool)
    return np.fromiter((fn(x, y) for x, y in zip(a, b)), dtype=bool, count=len(a))


#: rapidfuzz's distance module, imported on first use (a ~40 ms import) and then kept: these
#: predicates run for every distinct pair of values, and an import statement inside them cost
#: ~1.5 us a call (issue 15)
_RAPIDFUZZ: Any = None


def _distance() -> Any:
    global _RAPIDFUZZ
    if _RAPIDFUZZ is None:
        from rapidfuzz import distance

        _RAPIDFUZZ = distance
    return _RAPIDFUZZ


def _jaro_winkler(a: str, b: str) -> float:
    if not a or not b or a == b:
        return 0.0
    return (_RAPIDFUZZ or _distance()).JaroWinkler.normalized_similarity(a, b)


def _typed(a: str, b: str) -> bool:
    """A typed error: optimal string alignment distance 1 (a slip, a dropped or doubled key, a
    transposition), or 2 when both names have at least 5 letters."""
    if not a or not b or a == b:
        return False
    limit = 2 if min(len(a), len(b)) >= 5 else 1
    return (_RAPIDFUZZ or _distance()).OSA.distance(a, b, score_cutoff=limit) <= limit


def _typed1(a: str, b: str) -> bool:
    """Optimal string alignment distance exactly 1."""
    return bool(a) and bool(b) and a != b and (_RAPIDFUZZ or _distance()).OSA.distance(a, b, score_cutoff=1) <= 1


def _one_digit(a: str, b: str) -> bool:
    return bool(a) and bool(b) and len(a) == len(b) == 8 and a != b and sum(map(str.__ne__, a, b)) == 1


def _one_digit_many(a: Any, b: Any) -> Any:
    """:func:`_one_digit` of each pair of two object arrays of text, by numpy (2.4x faster than
    a call per pair, measured on 200k distinct pairs; rapidfuzz's pairwise distances were no
    faster than a call per pair for the edit-distance predicates, so they keep theirs)."""
    import numpy as np

    la = np.fromiter(map(len, a), dtype=np.int64, count=len(a))
    lb = np.fromiter(map(len, b), dtype=np.int64, count=len(b))
    out = np.zeros(len(a), dtype=bool)
    k = np.flatnonzero((la == 8) & (lb == 8) & (a != b))
    if len(k):
        # (eight characters each: as eight code points side by side, compared column by column)
        x = np.array(a[k].tolist(), dtype="<U8").view(np.uint32).reshape(-1, 8)
        y = np.array(b[k].tolist(), dtype="<U8").view(np.uint32).reshape(-1, 8)
        out[k] = (x != y).sum(axis=1) == 1
    return out


_one_digit.many = _one_digit_many  # type: ignore[attr-defined]


_CORE_NEEDED = ["id", "upn", "upn_kind", "guid", "fn", "fn1", "mn", "sn", "sn_parts", "gender", "dob", "dob_s",
                "pc", "pc_sector", "pc_district", "addr", "addr_no", "street"]
_INC_NEEDED = _CORE_NEEDED + ["base_id", "dob_swap", "fn_fixed"]

#: what a UTF-8 accented letter looks like read as Windows-1252 ("Ã©" for "é", "Ã¶" for "ö")
_MOJIBAKE = ("Ã", "Â", "â€")


def repair_mis_decoded(s: str) -> str:
    """A UTF-8 name read as Windows-1252 ("RenÃ©e"), read back as UTF-8 ("Renée"); "" when
    the text shows no such sign or does not repair."""
    if not s or not any(m in s for m in _MOJIBAKE):
        return ""
    try:
        fixed = s.encode("cp1252").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return ""
    return fixed if fixed != s else ""


def mis_decoded_keys(names: Any) -> Any:
    """Per raw forename the name key (:func:`~b2b.matching.normalise.name_key`) of its repaired
    form (:func:`repair_mis_decoded`), "" when it needs no repair: the ``fn_fixed`` column."""
    import pandas as pd

    from b2b.matching import normalise
    from b2b.matching.normalise import is_missing, name_key

    if len(names) <= normalise.SMALL_ROWS:  # a school run's few names: in Python, not three Series operations
        memo: dict[str, str] = {}
        out = []
        for v in names.tolist():
            v = "" if is_missing(v) else str(v)
            if v not in memo:
                memo[v] = name_key(repair_mis_decoded(v))
            out.append(memo[v])
        return pd.array(out, dtype="str")  # (the type the Series path gives)
    names = names.where(names.notna(), "").astype(str)
    return names.map({v: name_key(repair_mis_decoded(v)) for v in names.unique()}).values
