"""The comparison levels of a few candidate pairs on numpy arrays (issue 15).

A per-school run scores tens of pairs; on pandas Series each of the ~40 level predicates costs
a fixed ~0.1 ms however few the pairs. :class:`ArrayPairs` is :class:`Pairs` over numpy
arrays: the very :data:`~b2b.matching.comparisons.COMPARISONS` predicates run on it unchanged
(``p.c[col] == p.i[col]`` compares arrays element by element); only the helpers that use
pandas-only calls are given here in numpy. ``tests/test_matching_small.py`` checks every
level, weight and decision against the Series path on many random small batches.
"""
from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np

from b2b.matching.comparisons import Pairs
from b2b.matching.normalise import is_missing

#: at most this many candidate pairs are compared on arrays (more: pandas Series)
SMALL_PAIRS = 5_000


class Col(np.ndarray):
    """A column of one side of the pairs: a numpy array with the ``values`` the predicates read."""

    @property
    def values(self) -> Any:
        return self

    def to_numpy(self, dtype: Any = None) -> Any:
        return self.view(np.ndarray) if dtype is None else np.asarray(self, dtype=dtype)


class Side:
    """The rows of one side of the pairs (``take`` of a prepared frame), column by column."""

    def __init__(self, frame: Any, rows: Any, columns: list[str]) -> None:
        self.cols: dict[str, Col] = {}
        for c in columns:
            col = frame[c]
            # numbers and dates as they are, text as Python objects (converted once: pandas' str
            # columns are Arrow arrays)
            v = col.to_numpy() if col.dtype.kind in "iufbMm" else col.to_numpy(dtype=object)
            self.cols[c] = v[rows].view(Col)

    def __getitem__(self, col: str) -> Col:
        return self.cols[col]

    def __len__(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0


class ArrayPairs(Pairs):
    """:class:`Pairs` whose ``c`` and ``i`` are :class:`Side` s (numpy arrays)."""

    def distinct(self, col: str, fn: Any, where: Any = None) -> Any:
        mask = self.todo if where is None else (np.asarray(where, dtype=bool) if self.todo is None
                                                 else self.todo & np.asarray(where, dtype=bool))
        a, b = self.c[col], self.i[col]
        out = np.zeros(self.n, dtype=bool)
        idx = None if mask is None else np.flatnonzero(mask)
        if idx is not None and not len(idx):
            return out
        if a.dtype != object or b.dtype != object:  # (numbers, dates: numpy's scalars, as before)
            for k in range(self.n) if idx is None else idx.tolist():
                out[k] = bool(fn(a[k], b[k]))
            return out
        # text: the values as Python lists (an element of a numpy array subclass costs ~10x a
        # list's), each distinct pair judged once
        memo: dict[tuple, bool] = {}
        hits = []
        av, bv = (a, b) if idx is None else (a[idx], b[idx])
        for key in zip(av.tolist(), bv.tolist()):
            hit = memo.get(key)
            if hit is None:
                hit = memo[key] = bool(fn(*key))
            hits.append(hit)
        if idx is None:
            out[:] = hits
        else:
            out[idx] = hits
        return out

    @cached_property
    def upn_valid_both(self) -> Any:
        ok = ("valid", "temp")
        return ~self.missing("upn") & np.isin(self.c["upn_kind"], ok) & np.isin(self.i["upn_kind"], ok)

    def dob_within(self, days: int) -> Any:
        d = np.asarray(self.c["dob"]) - np.asarray(self.i["dob"])
        known = ~np.isnat(d)
        out = np.zeros(self.n, dtype=bool)
        out[known] = np.abs(d[known]) // np.timedelta64(1, "D") <= days
        return out


def array_pairs(core: Any, inc: Any, ci: Any, ii: Any, core_cols: list[str], inc_cols: list[str], cfg: Any,
                links: Any) -> ArrayPairs:
    return ArrayPairs(Side(core, ci, core_cols), Side(inc, ii, inc_cols), cfg, links)


#: at most this many chosen pairs get their differing fields value by value
SMALL_DIFFERING = 2_000


def _missing(x: Any) -> bool:
    """Missing for the differing-fields rule: :func:`~b2b.matching.normalise.is_missing` or ""."""
    if type(x) is str:  # (most values: ~10k a school run, each a pandas import and four tests before)
        return x == ""
    return is_missing(x) or (isinstance(x, str) and x == "")


def differing_rows(core_df: Any, incoming_df: Any, ci: Any, take: Any, fields: Any) -> Any:
    """:func:`b2b.matching.decide.differing` for a few chosen pairs (``take``: the incoming
    rows, ``ci`` their LA rows): each value through the one "same value" normalisation once
    (:func:`b2b.blocks.normalise`), in Python rather than ~14 Series maps."""
    from datetime import date

    import pandas as pd

    from b2b.blocks import normalise
    from b2b.matching.normalise import dob_dates

    names = np.array([""] * len(incoming_df), dtype=object)

    def norm(f: str, values: Any) -> list:
        if f == "dob" and not all(x is None or (type(x) is date and 1678 <= x.year <= 2261) for x in values):
            # (dates as the database gives them are what pd.to_datetime(...).dt.date gives back)
            values = pd.Series(pd.Series(dob_dates(pd.Series(values, dtype=object))).dt.date,
                               dtype=object).to_numpy(dtype=object)
        memo: dict[Any, Any] = {}
        out: list[Any] = []
        for x in values:
            if _missing(x):
                out.append(None)
                continue
            if x not in memo:
                memo[x] = normalise(f, x)
            out.append(memo[x])
        return out

    for f in fields:
        if f not in core_df.columns or f not in incoming_df.columns:
            continue
        a = norm(f, _taken(core_df[f], ci[take]))
        b = norm(f, _taken(incoming_df[f], take))
        for k, x, y in zip(take.tolist(), a, b):
            if x is not None and y is not None and x != y:  # a normalised "" is a value, as in pandas
                names[k] = f if names[k] == "" else names[k] + ";" + f
    return names


def _taken(col: Any, rows: Any) -> Any:
    """``col.to_numpy(dtype=object)[rows]``, without converting the rows not taken when the text is
    Arrow strings (a large run's parts read a few rows of the whole LA's: ~0.13 s a part at 300k)."""
    if col.dtype == object:
        return col.to_numpy(dtype=object)[rows]
    return col.take(rows).to_numpy(dtype=object)


#: at most this many scored pairs are decided on numpy arrays (more: pandas group-bys)
SMALL_DECIDE = 5_000


class Frame:
    """Row-aligned numpy columns with the few DataFrame idioms :func:`b2b.matching.decide.match`
    reads: ``f["col"].values`` / ``.to_numpy()`` (a :class:`Col`), ``f["col"] = array``,
    ``f[mask or positions]`` (the selected rows), ``len``, ``in``. A per-school run's scored
    pairs as a Frame cost microseconds per operation where a DataFrame costs ~0.1-1 ms."""

    def __init__(self, cols: dict[str, Any]) -> None:
        self.cols = cols

    @classmethod
    def of(cls, df: Any) -> Frame:
        return cls({c: df[c].to_numpy() for c in df.columns})

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return self.cols[key].view(Col)
        key = np.asarray(key)
        return Frame({c: v[key] for c, v in self.cols.items()})

    def __setitem__(self, col: str, values: Any) -> None:
        self.cols[col] = np.asarray(values)

    def __contains__(self, col: str) -> bool:
        return col in self.cols

    @property
    def columns(self) -> list[str]:
        return list(self.cols)

    def __len__(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0


def rank(s: Frame, n: int, possible: float) -> tuple[Any, Any, Any, Any]:
    """The pandas path's ranking of the scored pairs of :func:`b2b.matching.decide.match`, on
    arrays: a stable sort by record, eligible first, score descending, LA id (``np.lexsort``,
    as pandas' multi-column ``sort_values``), then per incoming record: the best pair's row
    (-1 for none), the second eligible pair's score (-inf for none), the number of pairs scoring
    at least ``possible``, and whether any pair is ``exact_other``."""
    ii = s["ii"].to_numpy().astype(np.int64)
    score = s["score"].to_numpy()
    eligible = s["eligible"].to_numpy().astype(bool)
    best = np.full(n, -1, dtype=np.int64)
    runner = np.full(n, -np.inf)
    if len(ii):
        _, pid = np.unique(s["person_id"].to_numpy(), return_inverse=True)
        order = np.lexsort((pid.ravel(), -score, ~eligible, ii))
        oii = ii[order]
        first = np.ones(len(order), dtype=bool)
        first[1:] = oii[1:] != oii[:-1]
        best[oii[first]] = order[first]
        el = order[eligible[order]]
        eii = ii[el]
        start = np.ones(len(el), dtype=bool)
        start[1:] = eii[1:] != eii[:-1]
        second = np.zeros(len(el), dtype=bool)
        second[1:] = ~start[1:] & start[:-1]
        runner[eii[second]] = score[el[second]]
    n_good = np.bincount(ii[score >= possible], minlength=n).astype(int)
    exact_any = np.zeros(n, dtype=bool)
    exact_any[ii[s["exact_other"].to_numpy().astype(bool)]] = True
    return best, runner, n_good, exact_any

