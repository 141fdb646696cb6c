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

from collections import Counter
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
#: :data:`DERIVED` of a whole column (a list), as one comprehension (the dictionaries' path:
#: ~2,500 LA rows a school run, four columns; the same values as mapping :data:`DERIVED`)
_DERIVED_LISTS = {"md": lambda dob_s: [v[4:] for v in dob_s],
                  "ny": lambda dob_s: [int(v[:4]) + 1 if v[4:6] == "12" else 0 for v in dob_s],
                  "no_dob": lambda dob_s: ["" if v else "1" for v in dob_s],
                  "one": lambda dob_s: ["1"] * len(dob_s)}
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

    def block(keys_core: list[str], keys_inc: list[str] | None = None, core_df: Any = None,
              inc_df: Any = None) -> None:
        keys_inc = keys_inc or keys_core
        c = _key_frame(core_df if core_df is not None else core, keys_core)
        c["ci"] = c.index
        i = _key_frame(inc_df if inc_df is not None else inc, keys_inc)
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
    block(list(PART_KEY), core_df=_exploded_parts(core), inc_df=_exploded_parts(inc))
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
                cols[side, name] = _DERIVED_LISTS[name](col(side, "dob_s"))
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
        kept = [(k, r) for k, r in zip(ckeys, crows) if k in by_key]
        if not kept:
            return
        size = Counter(k for k, _ in kept)
        cap = cfg.block_cap
        for k, r in kept:
            if size[k] > cap:
                continue
            for i in by_key[k]:
                pair = (r, i)
                if pair not in seen:
                    seen.add(pair)
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


def _key_frame(frame: Any, keys: list[str]) -> Any:
    """``frame[keys]``, the :data:`DERIVED` columns computed (each key's frame of the merge path)."""
    out = frame[[k for k in keys if k not in DERIVED]].copy()
    for k in keys:
        if k in DERIVED:
            out[k] = frame["dob_s"].map(DERIVED[k])
    return out[keys]


def _exploded_parts(frame: Any) -> Any:
    """The surname parts key's frame (:data:`PART_KEY`): one row per part of >= 2 letters,
    indexed by the record's row (the merge path's and :class:`LAIndex`'s)."""
    p = frame[["sn_parts", "year", "fn1"]].explode("sn_parts").rename(columns={"sn_parts": "part"})
    p["part"] = p["part"].fillna("")
    return p[p["part"].str.len() >= 2]


def _encoded(values: Any) -> tuple[Any, Any, Any]:
    """An LA key column factorised: (codes, the distinct values as an index, whether each
    distinct value blocks: as text not "" and not "0", as the merge path filters rows)."""
    import numpy as np
    import pandas as pd

    codes, uniq = pd.factorize(values, use_na_sentinel=False)
    present = np.array([str(v) not in ("", "0") for v in uniq], dtype=bool)
    return codes.astype(np.int64), pd.Index(uniq), present


class LAIndex:
    """The LA side of :func:`candidate_pairs`'s merge path built ONCE for many calls (issue 15:
    a large DAG run matches 20,000-student parts, each against most of one prepared set of
    candidate children; rebuilding every key's LA frame, its filters and its block sizes per
    part cost more than the CLI's one call). Per key: the LA rows whose key is present and
    shared by at most ``block_cap`` rows, grouped by key value (each column's values
    factorised once, a key value one integer), behind a hash index of the values.
    :meth:`pairs` gives exactly :func:`candidate_pairs` of the rows ``rows`` (positions,
    ascending) and ``inc``: the same pairs in the same order, ``ci`` counted in the whole
    frame. A key value's LA rows are all among the candidates of any part holding it (the
    candidate statement finds them by the same keys), so its block size is the same counted here."""

    def __init__(self, core: Any, block_cap: int) -> None:
        import numpy as np

        self.n = len(core)
        self.block_cap = block_cap
        self.ids = core["id"]
        self._id_objects: Any = None
        cache: dict[str, tuple] = {}

        def column(name: str) -> tuple:
            if name not in cache:
                cache[name] = _encoded(core["dob_s"].map(DERIVED[name]) if name in DERIVED else core[name])
            return cache[name]

        rows = np.arange(self.n, dtype=np.int64)
        self._keys = [self._side([column(k) for k in kc], rows, list(ki or kc)) for kc, ki in KEYS]
        parts = _exploded_parts(core)
        self._parts = self._side([_encoded(parts[k]) for k in PART_KEY], parts.index.to_numpy(dtype=np.int64),
                                 list(PART_KEY))
        self._guid = self._side([column(k) for k in GUID_KEY], rows, list(GUID_KEY))

    def id_objects(self) -> Any:
        """The rows' ids as an array of Python strings, made once (the matcher reads them per part)."""
        if self._id_objects is None:
            self._id_objects = self.ids.to_numpy(dtype=object)
        return self._id_objects

    def _side(self, cols: list[tuple], rows: Any, inc_keys: list[str]) -> tuple:
        import numpy as np

        ok = np.ones(len(rows), bool)
        comb = np.zeros(len(rows), np.int64)
        for codes, uniq, present in cols:
            ok &= present[codes]
            comb = comb * len(uniq) + codes
        rows, comb = rows[ok], comb[ok]
        values, codes = np.unique(comb, return_inverse=True)  # (sorted: looked up by searchsorted, no hash table)
        size = np.bincount(codes, minlength=len(values))
        keep = size[codes] <= self.block_cap
        rows, codes = rows[keep], codes[keep]
        order = np.argsort(codes, kind="stable")  # a value's rows in frame order
        starts = np.searchsorted(codes[order], np.arange(len(values) + 1))
        return inc_keys, [uniq for _, uniq, _ in cols], values, rows[order], starts

    @staticmethod
    def _join(side: tuple, i: Any) -> tuple[Any, Any]:
        """A key's pairs with the incoming key frame ``i`` (its columns in the LA key's order,
        index: incoming row), sorted as an inner merge of the LA frame with it orders them
        (LA row, then incoming row)."""
        import numpy as np

        _, uniqs, values, la_rows, starts = side
        valid = np.ones(len(i), bool)
        comb = np.zeros(len(i), np.int64)
        for k, uniq in enumerate(uniqs):
            at = uniq.get_indexer(i.iloc[:, k])
            valid &= at >= 0
            comb = comb * len(uniq) + at
        comb = comb[valid]
        code = np.minimum(np.searchsorted(values, comb), max(len(values) - 1, 0))
        ii = i.index.to_numpy(dtype=np.int64)[valid]
        hit = values[code] == comb if len(values) else np.zeros(len(comb), bool)
        ii, code = ii[hit], code[hit]
        n = starts[code + 1] - starts[code]
        total = int(n.sum())
        first = np.repeat(starts[code] - np.cumsum(n) + n, n)
        ci = la_rows[first + np.arange(total)]
        ii = np.repeat(ii, n)
        order = np.lexsort((ii, ci))
        return ci[order], ii[order]

    def pairs(self, inc: Any, cfg: Any, links: Any = None, rows: Any = None) -> Any:
        """:func:`candidate_pairs` (merge path) of the LA rows ``rows`` (None: all) and ``inc``."""
        import numpy as np
        import pandas as pd

        assert cfg.block_cap == self.block_cap
        cis, iis = [], []

        def add(side: tuple, i: Any) -> None:
            ci, ii = self._join(side, i)
            cis.append(ci)
            iis.append(ii)

        for side in self._keys:
            add(side, _key_frame(inc, side[0]))
        add(self._parts, _exploded_parts(inc))
        if cfg.guidmatch:
            add(self._guid, _key_frame(inc, list(GUID_KEY)))
            if links is not None and len(links):
                lk = links.merge(pd.DataFrame({"ci": np.arange(self.n), "person_id": self.ids.values}), on="person_id")
                ii = inc[["base_id", "guid"]].reset_index().rename(columns={"index": "ii"})
                m = lk.merge(ii, on=["base_id", "guid"])
                cis.append(m["ci"].to_numpy(dtype=np.int64))
                iis.append(m["ii"].to_numpy(dtype=np.int64))
        ci, ii = np.concatenate(cis), np.concatenate(iis)
        if rows is not None:  # the call's own rows only
            allowed = np.zeros(self.n, bool)
            allowed[np.asarray(rows, dtype=np.int64)] = True
            keep = allowed[ci]
            ci, ii = ci[keep], ii[keep]
        # the first of each pair, in order (drop_duplicates)
        _, first = np.unique(ci * max(len(inc), 1) + ii, return_index=True)
        first.sort()
        return pd.DataFrame({"ci": ci[first], "ii": ii[first]})
