"""Matching school students to LA child records (issue 5; F13, F14, F16, F17).

Two matchers over the same inputs, both vectorised with pandas (no row-by-row queries):

* :func:`legacy_match` — the vendor rule: a linked GUID (GUIDMATCH on); else UPN plus 3 of
  the 4 identifiers (DOB, surname, gender, forename) on exactly one LA record; else all 4
  on exactly one record; else unmatched. Kept as the baseline the benchmark compares with.
* :func:`match` — a Fellegi-Sunter-style scorer. Candidate pairs come from several
  blocking keys (UPN, GUID, DOB with surname or forename initial, DOB with day and month
  swapped, surname parts with birth year, postcode with birth year, forename with
  surname). Each pair gets a weight per field (log-likelihood style, in bits): forename
  with nickname/diminutive knowledge (the ``nicknames`` package plus common UK forms) and
  typo tolerance (Jaro-Winkler, ``rapidfuzz``), surname with case/hyphen/double-barrel
  variants, DOB with single-digit typos and day/month swaps, postcode at unit, sector and
  district level, gender, address line, and UPN/GUID as strong but not unconditional
  evidence. Decisions:

  - ``matched`` / ``matched_with_conflicts``: best score >= ``auto``, ahead of the next
    candidate by ``margin``, forename and DOB compatible, and corroborated by a UPN, GUID,
    address/postcode or middle-name agreement (name + DOB alone is what a namesake
    elsewhere shares); differing fields are listed (they become conflicts);
  - ``possible``: best score >= ``possible`` but not safe to link (an officer confirms);
  - ``unmatched``: no candidate scores enough.

  Officer decisions are inputs: a GUID an officer linked matches that child (rule
  ``officer_link``); a rejected (GUID, child) pair is never proposed again.

Both the DAG path (``b2b.reconcile.match_stage.match``) and ``b2b match`` (CSV in, CSV out) call
:func:`match`, so they give the same decisions for the same data.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

CORE_COLUMNS = ["person_id", "upn", "guid", "forename", "middle_names", "surname", "gender", "dob", "postcode",
                "address_line1"]
INCOMING_COLUMNS = ["incoming_id", "base_id", "upn", "guid", "forename", "middle_names", "surname", "gender", "dob",
                    "postcode", "address_line1"]
STATUSES = ("matched", "matched_with_conflicts", "possible", "unmatched")

# Common UK forms the nicknames package (US-centred) lacks: formal -> short forms.
UK_DIMINUTIVES = {
    "alfred": ["alfie", "alf"], "archibald": ["archie"], "albert": ["albie", "bertie", "bert"],
    "frederick": ["freddie", "freddy", "fred"], "theodore": ["theo", "teddy", "ted"], "edward": ["teddy", "ted", "eddie", "ed"],
    "henry": ["harry", "hal"], "ronald": ["ronnie", "ron"], "thomas": ["tommy", "tom"], "oliver": ["ollie", "olly"],
    "charlotte": ["lottie", "charlie"], "eleanor": ["ellie", "nell", "nellie"], "elizabeth": ["beth", "libby", "lizzie", "eliza"],
    "isabella": ["bella", "izzy", "issy"], "isabelle": ["bella", "izzy", "issy"], "matilda": ["tilly", "tillie"],
    "harriet": ["hattie"], "florence": ["flo", "florrie"], "victoria": ["tori", "vicky"], "alexandra": ["lexi", "alex"],
    "abigail": ["abbie", "abby"], "rebecca": ["becky", "becca"], "katherine": ["kate", "katie", "kat"],
    "catherine": ["kate", "katie", "cat"], "margaret": ["maggie", "meg", "peggy"], "jessica": ["jess", "jessie"],
    "amelia": ["millie", "milly"], "emily": ["em", "emmy", "millie"], "mohammed": ["mohammad", "muhammad", "mohamed"],
    "joseph": ["joe", "joey"], "james": ["jamie", "jim", "jimmy"], "william": ["will", "billy", "liam"],
    "samuel": ["sam", "sammy"], "benjamin": ["ben", "benji"], "daniel": ["dan", "danny"], "matthew": ["matt"],
    "michael": ["mike", "mikey"], "robert": ["rob", "bob", "bobby"], "alexander": ["alex", "xander", "sandy"],
    "charles": ["charlie", "chas"], "sophie": ["soph"], "sophia": ["sophie"], "georgina": ["georgie"],
    "reuben": ["ruben"], "finley": ["finlay", "finn"],
}


@dataclass(frozen=True)
class Weights:
    """Field weights in bits (log2 of m/u, rounded); agreement levels best first."""

    upn_agree: float = 12.0          # both valid and equal
    upn_temp_agree: float = 6.0      # equal, one a temporary UPN
    upn_disagree: float = -6.0       # both valid permanent UPNs, different
    guid_agree: float = 12.0
    forename_exact: float = 6.0
    forename_equiv: float = 4.5      # nickname / diminutive / middle name used as forename
    forename_typo: float = 3.5       # Jaro-Winkler >= 0.9
    forename_initial: float = 0.0
    forename_disagree: float = -6.0
    surname_exact: float = 7.0
    surname_variant: float = 5.0     # hyphen / double-barrel part
    surname_typo: float = 4.5
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
    postcode_disagree: float = -1.0
    address_agree: float = 2.0
    middle_agree: float = 1.5
    middle_disagree: float = -1.0


@dataclass(frozen=True)
class MatchConfig:
    auto: float = 20.0        # auto-link at or above (with margin, forename and corroboration)
    possible: float = 12.0    # propose to an officer at or above
    margin: float = 5.0       # best must beat the next candidate by this much to auto-link
    guidmatch: bool = True    # F16
    weights: Weights = field(default_factory=Weights)
    block_cap: int = 500      # ignore blocking values shared by more LA records than this


# ------------------------------------------------------------------ normalisation
# Accented letters folded to ASCII, the same table in Python and in SQL (``translate``), so
# the DAG path's candidate query and the matcher normalise names identically.
ACCENTS_FROM = "àáâãäåāăąçćčďèéêëēėęěğìíîïīįıłñńňòóôõöøōőŕřśšşťùúûüūůűųýÿžźż"
ACCENTS_TO = "aaaaaaaaaccc" + "deeeeeeeegiiiiiiilnnnoooooooorrssstuuuuuuuuyyzzz"
_FOLD = str.maketrans(ACCENTS_FROM, ACCENTS_TO)


def _ascii_lower(s) -> str:
    if s is None or (isinstance(s, float) and s != s):
        return ""
    return str(s).lower().translate(_FOLD).strip()


def name_key(s) -> str:
    """Letters only, lower case: "O'Brien-Smith" -> "obriensmith"."""
    return re.sub(r"[^a-z]", "", _ascii_lower(s))


def name_parts(s) -> list[str]:
    return [p for p in re.split(r"[^a-z]+", _ascii_lower(s).replace("'", "")) if p]


def postcode_key(s) -> str:
    return re.sub(r"[^A-Z0-9]", "", str(s or "").upper())


@lru_cache(maxsize=1)
def _nick_namer():
    from nicknames import NickNamer

    return NickNamer()


@lru_cache(maxsize=200_000)
def forename_forms(name: str) -> frozenset[str]:
    """The name, its canonical (formal) forms and its diminutives (nicknames + UK list)."""
    if not name:
        return frozenset()
    nn = _nick_namer()
    forms = {name} | set(nn.canonicals_of(name)) | set(nn.nicknames_of(name))
    for formal, shorts in UK_DIMINUTIVES.items():
        if name == formal or name in shorts:
            forms |= {formal, *shorts}
    return frozenset(f.lower() for f in forms)


def _upn_kind(u: str) -> str:
    """'valid', 'temp' (valid temporary UPN), 'invalid' or '' (missing)."""
    from stdnum.gb import upn as upn_mod

    if not u:
        return ""
    if not upn_mod.is_valid(u):
        return "invalid"
    return "temp" if u[-1].isalpha() else "valid"


def _by_value(col, fn):
    """``fn`` once per distinct value (names repeat a lot), mapped back onto the column."""
    return col.map({v: fn(v) for v in col.unique()})


def prepare(df, id_col: str):
    """Normalised comparison columns (vectorised where pandas can)."""
    import pandas as pd

    out = pd.DataFrame({"id": df[id_col].astype(str).values})
    for c in ("upn", "guid", "forename", "middle_names", "surname", "gender", "postcode", "address_line1"):
        col = df[c] if c in df.columns else pd.Series([None] * len(df))
        out[c] = col.where(col.notna(), "").astype(str).str.strip().values
    if "base_id" in df.columns:
        out["base_id"] = df["base_id"].where(df["base_id"].notna(), "").astype(str).values
    out["upn"] = out["upn"].str.upper().str.replace(" ", "", regex=False)
    kinds = {u: _upn_kind(u) for u in out["upn"].unique()}
    out["upn_kind"] = out["upn"].map(kinds)
    out["fn"] = _by_value(out["forename"], name_key)
    out["fn1"] = out["fn"].str[:1]
    out["mn"] = _by_value(out["middle_names"], lambda s: (name_parts(s) or [""])[0])
    out["sn"] = _by_value(out["surname"], name_key)
    out["sn1"] = out["sn"].str[:1]
    out["sn_parts"] = _by_value(out["surname"], name_parts)
    out["gender"] = out["gender"].str.upper().str[:1]
    dob = pd.to_datetime(df["dob"] if "dob" in df.columns else None, errors="coerce").values
    out["dob"] = pd.to_datetime(dob)
    out["dob_s"] = out["dob"].dt.strftime("%Y%m%d").fillna("")
    out["year"] = out["dob"].dt.year.fillna(0).astype(int)
    swapped = [(f"{s[:4]}{s[6:8]}{s[4:6]}" if s and s[4:6] != s[6:8] and int(s[6:8]) <= 12 else "")
               for s in out["dob_s"]]
    out["dob_swap"] = swapped
    out["pc"] = _by_value(out["postcode"], postcode_key)
    out["pc_sector"] = [p[:-2] if len(p) >= 5 else "" for p in out["pc"]]
    out["pc_district"] = [p[:-3] if len(p) >= 5 else "" for p in out["pc"]]
    out["addr"] = _by_value(out["address_line1"], lambda s: re.sub(r"[^a-z0-9]", "", _ascii_lower(s)))
    return out


# ------------------------------------------------------------------ candidates
def candidate_pairs(core, inc, cfg: MatchConfig, links=None):
    """(core row, incoming row) index pairs from every blocking key, deduplicated."""
    import numpy as np
    import pandas as pd

    frames = []

    def block(keys_core, keys_inc=None, core_df=None, inc_df=None):
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


# ------------------------------------------------------------------ scoring
def _similar(a_vals, b_vals, threshold: float):
    """Jaro-Winkler >= threshold for each pair, computed once per distinct pair."""
    import numpy as np
    from rapidfuzz.distance import JaroWinkler

    cache: dict[tuple[str, str], bool] = {}
    out = np.zeros(len(a_vals), dtype=bool)
    for k, (a, b) in enumerate(zip(a_vals, b_vals)):
        if not a or not b or a == b:
            continue
        key = (a, b)
        v = cache.get(key)
        if v is None:
            v = cache[key] = JaroWinkler.normalized_similarity(a, b) >= threshold
        out[k] = v
    return out


def _one_digit(a_vals, b_vals):
    import numpy as np

    out = np.zeros(len(a_vals), dtype=bool)
    for k, (a, b) in enumerate(zip(a_vals, b_vals)):
        if a and b and len(a) == len(b) == 8 and a != b:
            out[k] = sum(x != y for x, y in zip(a, b)) == 1
    return out


_CORE_NEEDED = ["id", "upn", "upn_kind", "guid", "fn", "fn1", "mn", "sn", "sn_parts", "gender", "dob", "dob_s",
                "pc", "pc_sector", "pc_district", "addr"]
_INC_NEEDED = _CORE_NEEDED + ["base_id", "dob_swap"]


def score_pairs(core, inc, pairs, cfg: MatchConfig, links=None):
    """Per-field weights and the total for every candidate pair."""
    import numpy as np
    import pandas as pd

    w = cfg.weights
    c = core[_CORE_NEEDED].loc[pairs["ci"].values].reset_index(drop=True)
    i = inc[_INC_NEEDED].loc[pairs["ii"].values].reset_index(drop=True)
    s = pd.DataFrame({"ci": pairs["ci"].values, "ii": pairs["ii"].values})

    # UPN: strong, not unconditional
    both = (c["upn"] != "") & (i["upn"] != "")
    valid_both = both & c["upn_kind"].isin(["valid", "temp"]) & i["upn_kind"].isin(["valid", "temp"])
    perm_both = both & (c["upn_kind"] == "valid") & (i["upn_kind"] == "valid")
    eq = both & (c["upn"] == i["upn"])
    s["upn"] = np.select([eq & perm_both, eq & valid_both, perm_both & ~eq], [w.upn_agree, w.upn_temp_agree,
                                                                             w.upn_disagree], 0.0)
    # GUID: the school's id, linked to a child by the LA, a match or an officer
    g = np.zeros(len(s))
    if cfg.guidmatch:
        g = np.where((c["guid"] != "") & (c["guid"] == i["guid"]), w.guid_agree, 0.0)
        if links is not None and len(links):
            key = set(zip(links["base_id"], links["guid"], links["person_id"]))
            linked = np.fromiter(((b, gg, p) in key for b, gg, p in zip(i["base_id"], i["guid"], c["id"])),
                                 dtype=bool, count=len(s))
            g = np.where(linked, w.guid_agree, g)
    s["guid"] = g
    # forename
    fn_missing = (c["fn"] == "") | (i["fn"] == "")
    fn_exact = ~fn_missing & (c["fn"] == i["fn"])
    # one is a form of the other (Joe/Joseph, Alfie/Alfred); sharing a third form is not enough
    # (Theo and Edward are both "Ted")
    equiv = np.fromiter((bool(a) and bool(b) and a != b and (b in forename_forms(a) or a in forename_forms(b))
                         for a, b in zip(c["fn"], i["fn"])), dtype=bool, count=len(s))
    middle_swap = ~fn_missing & (((c["mn"] != "") & (i["fn"] == c["mn"])) | ((i["mn"] != "") & (c["fn"] == i["mn"])))
    typo = _similar(c["fn"].values, i["fn"].values, 0.9)
    initial = ~fn_missing & (c["fn1"] == i["fn1"])
    s["forename"] = np.select([fn_missing, fn_exact, equiv | middle_swap, typo, initial],
                              [0.0, w.forename_exact, w.forename_equiv, w.forename_typo, w.forename_initial],
                              w.forename_disagree)
    s["forename_ok"] = fn_missing | fn_exact | equiv | middle_swap | typo
    # surname
    sn_missing = (c["sn"] == "") | (i["sn"] == "")
    sn_exact = ~sn_missing & (c["sn"] == i["sn"])
    variant = np.fromiter((bool(set(a) & set(b)) for a, b in zip(c["sn_parts"], i["sn_parts"])), dtype=bool,
                          count=len(s)) & ~sn_exact & ~sn_missing
    sn_typo = _similar(c["sn"].values, i["sn"].values, 0.92)
    s["surname"] = np.select([sn_missing, sn_exact, variant, sn_typo], [0.0, w.surname_exact, w.surname_variant,
                                                                       w.surname_typo], w.surname_disagree)
    # date of birth
    d_missing = (c["dob_s"] == "") | (i["dob_s"] == "")
    d_exact = ~d_missing & (c["dob_s"] == i["dob_s"])
    d_swap = ~d_missing & (i["dob_swap"] != "") & (c["dob_s"] == i["dob_swap"])
    d_digit = _one_digit(c["dob_s"].values, i["dob_s"].values)
    days = (c["dob"] - i["dob"]).abs().dt.days
    d_near = ~d_missing & (days <= 31)
    s["dob"] = np.select([d_missing, d_exact, d_swap, d_digit, d_near],
                         [0.0, w.dob_exact, w.dob_swap, w.dob_digit, w.dob_near], w.dob_disagree)
    # gender
    g_missing = (c["gender"] == "") | (i["gender"] == "")
    s["gender"] = np.select([g_missing, c["gender"] == i["gender"]], [0.0, w.gender_agree], w.gender_disagree)
    # postcode and address
    p_missing = (c["pc"] == "") | (i["pc"] == "")
    s["postcode"] = np.select(
        [p_missing, c["pc"] == i["pc"], (c["pc_sector"] != "") & (c["pc_sector"] == i["pc_sector"]),
         (c["pc_district"] != "") & (c["pc_district"] == i["pc_district"])],
        [0.0, w.postcode_unit, w.postcode_sector, w.postcode_district], w.postcode_disagree)
    s["address_line1"] = np.where((c["addr"] != "") & (c["addr"] == i["addr"]), w.address_agree, 0.0)
    m_missing = (c["mn"] == "") | (i["mn"] == "")
    s["middle_names"] = np.select([m_missing, c["mn"] == i["mn"]], [0.0, w.middle_agree], w.middle_disagree)
    s["score"] = s[PARTS].sum(axis=1)
    # a second, independent identifier beyond name + DOB: a namesake elsewhere has none
    s["corroborated"] = (s["upn"] > 0) | (s["guid"] > 0) | (s["postcode"] >= w.postcode_sector) | \
        (s["address_line1"] > 0) | (s["middle_names"] > 0)
    return s


# ------------------------------------------------------------------ decisions
def match(core_df, incoming_df, cfg: MatchConfig | None = None, *, links=None, rejected=None,
          min_age: int | None = None, as_of=None):
    """Decide every incoming record. Returns a DataFrame with one row per incoming record:
    ``incoming_id, status, person_id, rule, score, conflicting_fields, explanation``.

    ``min_age`` (with ``as_of``): LA records younger than this are never candidates — the
    carer rule CARER_MIN (F14): a child can be matched as a carer only from that age.

    ``links``: DataFrame (base_id, guid, person_id, linked_by) of GUID links (F16);
    ``linked_by = 'officer'`` ones are decisive. ``rejected``: DataFrame (base_id, guid,
    person_id) of pairs an officer rejected (never proposed again).
    """
    import numpy as np
    import pandas as pd

    cfg = cfg or MatchConfig()
    core = prepare(core_df.reset_index(drop=True), "person_id")
    inc = prepare(incoming_df.reset_index(drop=True), "incoming_id")
    empty_links = pd.DataFrame(columns=["base_id", "guid", "person_id", "linked_by"])
    links = empty_links if links is None or not len(links) else links.astype(str)
    n = len(inc)
    out = pd.DataFrame({"incoming_id": inc["id"], "status": "unmatched", "person_id": "", "rule": "none",
                        "score": 0.0, "conflicting_fields": "", "explanation": "{}"})
    if not n or not len(core):
        return out
    use_links = links if cfg.guidmatch else None
    pairs = candidate_pairs(core, inc, cfg, use_links)
    s = pd.concat([score_pairs(core, inc, pairs.iloc[k:k + CHUNK], cfg, use_links)
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
    s["eligible"] = s["forename_ok"] & ((s["dob"] >= cfg.weights.dob_digit)
                                        | ((s["dob"] > 0) & ((s["upn"] > 0) | (s["guid"] > 0))))
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
    below, ambiguous = score < cfg.auto, score - runner < cfg.margin
    safe = has & ~below & ~ambiguous & eligible & corro
    maybe = has & ~safe & (score >= cfg.possible)
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
    differ = _differing(core, inc, ci, shown)
    out["status"] = np.select([linked & (differ != ""), linked, maybe], ["matched_with_conflicts", "matched", "possible"],
                              "unmatched")
    out["person_id"] = np.where(shown, core["id"].values[np.maximum(ci, 0)], "")
    out["rule"] = np.select([by_officer, shown], ["officer_link", "weights"], "none")
    out["score"] = np.where(by_officer, np.nan, np.round(score, 2))
    out["conflicting_fields"] = np.where(shown, differ, "")
    out["explanation"] = _explanations(best, runner, n_good, by_officer, maybe, below, ambiguous, fn_ok, eligible,
                                       corro)
    return out


CHUNK = 1_000_000
PARTS = ["upn", "guid", "forename", "surname", "dob", "gender", "postcode", "address_line1", "middle_names"]


def _differing(core, inc, ci, rows):
    """';'-joined compared fields whose values differ (both present), for the chosen pairs."""
    import numpy as np

    c_idx = np.maximum(ci, 0)
    names = np.array([""] * len(inc), dtype=object)
    for f, col in (("upn", "upn"), ("forename", "fn"), ("middle_names", "mn"), ("surname", "surname_l"),
                   ("gender", "gender"), ("dob", "dob_s"), ("postcode", "pc"), ("address_line1", "addr")):
        if col == "surname_l":
            a = core["surname"].str.lower().str.strip().values[c_idx]
            b = inc["surname"].str.lower().str.strip().values
        else:
            a, b = core[col].values[c_idx], inc[col].values
        d = rows & (a != "") & (b != "") & (a != b)
        names = np.where(d, np.where(names == "", f, names + ";" + f), names)
    return names


def _explanations(best, runner, n_good, by_officer, maybe, below, ambiguous, fn_ok, eligible, corro):
    import json
    import math

    out = []
    vals = best[PARTS].fillna(0).values
    scores = best["score"].values
    for k in range(len(best)):
        if by_officer[k]:
            out.append('{"officer_link": true}')
            continue
        if scores[k] != scores[k]:  # no candidate at all
            out.append("{}")
            continue
        d = {"weights": {p: float(v) for p, v in zip(PARTS, vals[k]) if v},
             "score": round(float(scores[k]), 2),
             "runner_up": None if math.isinf(runner[k]) else round(float(runner[k]), 2),
             "candidates_over_possible": int(n_good[k])}
        if maybe[k]:
            d["why_not_auto"] = [r for r, bad in (("below_auto", below[k]), ("ambiguous", ambiguous[k]),
                                                  ("forename_differs", not fn_ok[k]),
                                                  ("uncorroborated", not corro[k]),
                                                  ("dob_differs", fn_ok[k] and not eligible[k])) if bad]
        out.append(json.dumps(d, sort_keys=True))
    return out


def candidates(core_df, incoming_df, cfg: MatchConfig | None = None, *, links=None, top: int = 3):
    """The best ``top`` candidates per incoming record with their per-field weights (officer view)."""
    cfg = cfg or MatchConfig()
    core = prepare(core_df.reset_index(drop=True), "person_id")
    inc = prepare(incoming_df.reset_index(drop=True), "incoming_id")
    pairs = candidate_pairs(core, inc, cfg, links)
    s = score_pairs(core, inc, pairs, cfg, links)
    s["person_id"] = core["id"].values[s["ci"].values]
    s["incoming_id"] = inc["id"].values[s["ii"].values]
    s = s.sort_values(["ii", "score"], ascending=[True, False]).groupby("ii").head(top)
    return s.drop(columns=["ci", "ii"]).reset_index(drop=True)


# ------------------------------------------------------------------ the legacy rule
def legacy_match(core_df, incoming_df, *, guidmatch: bool = True, links=None):
    """The vendor rule (baseline): GUID link; UPN + 3 of 4; all 4 on exactly one; else none."""
    import pandas as pd

    core = core_df.reset_index(drop=True).copy()
    inc = incoming_df.reset_index(drop=True).copy()
    for df in (core, inc):
        for c in ("upn", "guid", "forename", "surname", "gender"):
            df[c] = df[c].where(df[c].notna(), "").astype(str)
        df["_fn"] = df["forename"].str.lower().str.strip()
        df["_sn"] = df["surname"].str.lower().str.strip()
        df["_dob"] = pd.to_datetime(df["dob"], errors="coerce").dt.strftime("%Y-%m-%d").fillna("")
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
    return out


def _decide(out, decided, idx, person_ids, rule: str) -> None:
    idx = list(idx)
    if not idx:
        return
    out.loc[idx, "status"] = "matched"
    out.loc[idx, "person_id"] = list(person_ids)
    out.loc[idx, "rule"] = rule
    decided.loc[idx] = True
