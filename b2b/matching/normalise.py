"""Normalisation: the comparison columns both sides of a pair are read through.

Names are folded to ASCII lower case (the same accent table as the SQL matching keys of
migration 0010), postcodes to upper case without spaces, UPNs classified (valid permanent,
valid temporary, invalid, missing), DOBs expanded to the forms blocking and comparisons use.
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

#: the LA record's columns; ``base_id`` is the school the LA holds for the child (its DfE number,
#: empty when the LA knows none): optional in ``b2b match``'s CSV (:data:`CORE_OPTIONAL`)
CORE_COLUMNS = ["person_id", "upn", "guid", "forename", "middle_names", "surname", "gender", "dob", "postcode",
                "address_line1", "base_id"]
CORE_OPTIONAL = ("base_id",)
INCOMING_COLUMNS = ["incoming_id", "base_id", "upn", "guid", "forename", "middle_names", "surname", "gender", "dob",
                    "postcode", "address_line1"]

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


# Accented letters folded to ASCII, the same table in Python and in SQL (``translate``), so
# the DAG path's candidate query and the matcher normalise names identically.
ACCENTS_FROM = "àáâãäåāăąçćčďèéêëēėęěğìíîïīįıłñńňòóôõöøōőŕřśšşťùúûüūůűųýÿžźż"
ACCENTS_TO = "aaaaaaaaaccc" + "deeeeeeeegiiiiiiilnnnoooooooorrssstuuuuuuuuyyzzz"
_FOLD = str.maketrans(ACCENTS_FROM, ACCENTS_TO)


def _ascii_lower(s: Any) -> str:
    if type(s) is str and s.isascii():  # (the fold maps only accented letters: nothing to fold)
        return s.lower().strip()
    if s is None or (isinstance(s, float) and s != s):
        return ""
    return str(s).lower().translate(_FOLD).strip()


# (compiled once: the module-level ``re`` functions look each pattern up per call, and the
# matcher normalises every candidate of every school run; issue 15)
_NOT_AZ = re.compile(r"[^a-z]")
_NOT_AZ_RUN = re.compile(r"[^a-z]+")
_NOT_AZ09 = re.compile(r"[^a-z0-9]")
_NOT_AZ09_UPPER = re.compile(r"[^A-Z0-9]")
_HOUSE_NUMBER = re.compile(r"\s*(\d+[a-z]?)\b[\s,]*(.*)$")


def name_key(s: Any) -> str:
    """Letters only, lower case: "O'Brien-Smith" -> "obriensmith". A name in another script
    (Arabic, Chinese, Cyrillic, Greek), which folds to no Latin letter, keeps its own letters
    case-folded ("محمد" stays "محمد"): read as no name, two children's different names would
    both be missing and tell no twins apart. (The SQL keys of migration 0010, used only to find
    candidates, keep Latin letters alone: such a name is found by its DOB, surname or home.)"""
    if type(s) is str and s.isalpha() and s.isascii():  # most names: nothing to fold or drop
        return s.lower()
    key = _NOT_AZ.sub("", _ascii_lower(s))
    return key or _other_script(s)


def _other_script(s: Any) -> str:
    """The letters of a name with no Latin letter, case-folded ("" for anything else)."""
    if type(s) is not str or s.isascii():
        return ""
    return "".join(c for c in s.casefold() if c.isalpha())


def name_parts(s: Any) -> list[str]:
    if type(s) is str and s.isalpha() and s.isascii():
        return [s.lower()]
    parts = [p for p in _NOT_AZ_RUN.split(_ascii_lower(s).replace("'", "")) if p]
    if parts:
        return parts
    other = _other_script(s)
    return [other] if other else []


#: postcodes that say "no postcode": the NHS pseudo-postcodes (ZZ99 3WZ "no fixed abode", ZZ99
#: 3VZ "not known", ZZ99 3CZ…) and anything without a digit ("NFA", "N/A", "UNKNOWN", "TBC"). A
#: placeholder many children share is no home: read as no postcode (a fault sweep linked two
#: children of different surnames on "ZZ99 3WZ" and "NFA")
def _placeholder_postcode(key: str) -> bool:
    return key.startswith("ZZ99") or not any(c.isdigit() for c in key)


def postcode_key(s: Any) -> str:
    if type(s) is str and s.isascii():  # most postcodes: letters, digits and a space
        u = s.upper().replace(" ", "")
        if u.isalnum():
            return "" if _placeholder_postcode(u) else u
    u = _NOT_AZ09_UPPER.sub("", str(s or "").upper())
    return "" if _placeholder_postcode(u) else u


#: address lines that say "no address" (folded to letters and digits): read as none, never as a
#: home two children share
PLACEHOLDER_ADDRESSES = frozenset((
    "nfa", "nofixedabode", "nofixedaddress", "noaddress", "noknownaddress", "unknown", "unknownaddress",
    "addressunknown", "notknown", "notgiven", "notstated", "notrecorded", "notapplicable", "na", "none", "nil",
    "tbc", "tba", "tbd", "withheld", "addresswithheld", "confidential", "confidentialaddress", "refuge",
    "homeless", "x", "xx", "xxx", "unk"))


def address_key(s: Any) -> str:
    """An address line folded to lower-case letters and digits ("12A Howe Way" -> "12ahoweway");
    "" for none and for a placeholder (:data:`PLACEHOLDER_ADDRESSES`)."""
    key = _NOT_AZ09.sub("", _ascii_lower(s))
    return "" if key in PLACEHOLDER_ADDRESSES else key


@lru_cache(maxsize=1)
def _nick_namer() -> Any:
    from nicknames import NickNamer

    return NickNamer()


#: Faker's person providers whose first names are names a child in England may carry
_NAME_LOCALES = ("en_GB", "en_IE", "en_US", "en_NZ", "en_IN", "fr_FR", "de_DE", "es_ES", "it_IT", "pl_PL", "pt_PT",
                 "ro_RO", "tr_TR", "ar_AA", "hi_IN", "ur_PK")


@lru_cache(maxsize=1)
def name_list() -> frozenset[str]:
    """Forenames known to be names (name keys): Faker's first-name lists for the locales above
    and the ``nicknames`` package's names. Used with the LA's own forenames to tell a forename
    mistyped ("Jgll", "Bridegt") from another real name ("Jaden", a twin's)."""
    import importlib

    names: set[str] = set()
    for loc in _NAME_LOCALES:
        try:
            provider = importlib.import_module(f"faker.providers.person.{loc}").Provider
        except (ImportError, AttributeError):
            continue
        for attr in ("first_names", "first_names_male", "first_names_female"):
            values = getattr(provider, attr, None) or ()
            names.update(name_key(v) for v in (values.keys() if hasattr(values, "keys") else values))
    from nicknames import name_triplets

    for t in name_triplets():
        names.add(name_key(t.name1))
        names.add(name_key(t.name2))
    names.discard("")
    return frozenset(names)


@lru_cache(maxsize=1)
def _name_trigrams() -> frozenset[str]:
    """Every run of three letters, with ``^`` and ``$`` for the ends, in the names of :func:`name_list`."""
    return letter_runs(name_list())


def spelt_as_no_name(fn: str) -> bool:
    """The (prepared) forename ``fn`` holds a run of three letters (its ends included) that no
    name of :func:`name_list` holds: "Lachln" ("hln"), "Lucyw" ("yw$"), "Isabeola" ("beo"). A
    spelling no name has is a slip of the hand, whatever it sounds like; a name parents chose,
    however rare, is spelt as names are ("Jaden", "Fin", "Olly", "Ami": every run in the list).
    The shipped list only, never the LA's own forenames: the DAG path reads the counts of its
    run's names, not every LA forename, and must spell as ``b2b match`` does. Missing or under
    two letters: False."""
    if len(fn) < 2:
        return False
    return bool(letter_runs((fn,)) - _name_trigrams())


def letter_runs(names: Any) -> frozenset[str]:
    """The runs of three letters (``^`` and ``$`` for the ends) of these names."""
    out: set[str] = set()
    for n in names:
        w = f"^{n}$"
        out.update(w[k:k + 3] for k in range(len(w) - 2))
    return frozenset(out)


def may_be_a_name(fn: str, child_fn: str, counts: Any, slip: bool = False) -> bool:
    """The (prepared) forename ``fn`` may be a real name, not ``child_fn`` misspelt: an LA
    child holds it (``counts``: the LA's forename counts), it is in :func:`name_list`, or it
    sounds as ``child_fn`` does (Metaphone: "Jaden" for "Jayden", a spelling parents choose)
    unless it is a keystroke slip of it (``slip``: "Bwn", "Mxa")."""
    if not fn or fn in name_list() or counts.get(fn, 0) > 0:
        return True
    import jellyfish

    return not slip and bool(child_fn) and jellyfish.metaphone(fn) == jellyfish.metaphone(child_fn)


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


@lru_cache(maxsize=1_000_000)  # the DAG path prepares an LA child once per school part (issue 15)
def _upn_kind(u: str) -> str:
    """'valid', 'temp' (valid temporary UPN), 'invalid' or '' (missing)."""
    from b2b.upn import is_valid

    if not u:
        return ""
    if not is_valid(u):
        return "invalid"
    return "temp" if u[-1].isalpha() else "valid"


#: at most this many UPNs are checked one by one (:func:`upn_kinds`)
_FEW_UPNS = 24


def upn_kinds(upns: list) -> list[str]:
    """:func:`_upn_kind` of many UPNs (upper-cased, without spaces), in order: the plain ones
    (13 ASCII letters and digits: all of them in practice) checked together with numpy (the
    DfE's arithmetic of :func:`b2b.upn.is_valid`: characters 2-12 digits, the last in the
    check alphabet, an LA number, the check letter), the rest one by one (issue 15: a school
    run checks its ~2,650 candidates' UPNs, ~2 us each, in a task process that has not met them)."""
    import numpy as np

    from b2b.upn import _UPN_ALPHABET, _UPN_LA

    if len(upns) <= _FEW_UPNS:  # (numpy's fixed cost, ~60 us, is more than checking a few one by one)
        return [_upn_kind(u) for u in upns]
    out = [""] * len(upns)
    plain = []
    for k, u in enumerate(upns):
        if type(u) is str and len(u) == 13 and u.isascii() and u.isalnum():
            plain.append(k)
        else:
            out[k] = _upn_kind(u)
    if not plain:
        return out
    a = np.frombuffer("".join([upns[k] for k in plain]).upper().encode("ascii"), dtype=np.uint8) \
        .reshape(-1, 13).astype(np.int64)
    value = np.full(256, -1, dtype=np.int64)
    value[np.frombuffer(_UPN_ALPHABET.encode("ascii"), dtype=np.uint8)] = np.arange(len(_UPN_ALPHABET))
    digits = ((a[:, 1:12] >= 48) & (a[:, 1:12] <= 57)).all(axis=1)
    last = value[a[:, 12]]
    la = (a[:, 1] - 48) * 100 + (a[:, 2] - 48) * 10 + (a[:, 3] - 48)
    check = (value[a[:, 1:13]] * np.arange(2, 14)).sum(axis=1) % 23
    alphabet = np.frombuffer(_UPN_ALPHABET.encode("ascii"), dtype=np.uint8)
    ok = digits & (last >= 0) & np.isin(la, list(_UPN_LA)) & (alphabet[check] == a[:, 0])
    letter = (a[:, 12] >= 65) & (a[:, 12] <= 90)
    for k, good, temp in zip(plain, ok.tolist(), letter.tolist()):
        out[k] = ("temp" if temp else "valid") if good else "invalid"
    return out


@contextmanager
def object_strings() -> Iterator[None]:
    """Inside: pandas keeps text as Python ``str`` objects (``object`` columns), not Arrow strings.

    pandas 3 stores every text column it infers as an Arrow array. The matcher builds many
    columns of a few hundred values and reads them back as Python objects (dictionaries,
    ``tolist``, element by element): for a school run each of those hundreds of round trips
    converts the whole column, and assigning an object array to a frame infers Arrow again.
    Object columns cost nothing to read back: the match stage's CPU per 400-student snapshot
    run 202 -> 162 ms, ``b2b match`` at 30k x 60k ~8% less, the same decisions on every run of
    a 200-school bench (issue 15). The values are the same Python strings either way.

    The switch is pandas' ``future.infer_string`` option (deprecated in pandas 3: pandas 4 will
    drop it, and then this is a no-op: Arrow strings, slower, the same decisions); the option
    is the process's, restored on the way out, exception or not."""
    with _infer_strings(False):
        yield


@contextmanager
def arrow_strings() -> Iterator[None]:
    """Inside: pandas' default again (text as Arrow strings) — for a run of several parts (an
    LA's first load), whose large frames are merged and factorised: 100k x 80k, objects cost
    ~8% more CPU there (though ~55% less memory)."""
    with _infer_strings(True):
        yield


@contextmanager
def _infer_strings(flag: bool) -> Iterator[None]:
    """pandas' ``future.infer_string`` set to ``flag`` inside, restored on the way out."""
    import pandas as pd

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (Pandas4Warning: the option is deprecated)
            before = pd.get_option("future.infer_string")
            pd.set_option("future.infer_string", flag)
    except (KeyError, pd.errors.OptionError):  # pandas without the option
        yield
        return
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pd.set_option("future.infer_string", before)


def _by_value(col: Any, fn: Any) -> Any:
    """``fn`` once per distinct value (names repeat a lot), mapped back onto the column."""
    # (the distinct values as a list: element by element, pandas' Arrow strings cost ~1 us each)
    out = col.map({v: fn(v) for v in col.unique().tolist()})
    # (no values: pandas types an empty map's result float64, which has no ``.str``, when text
    # is kept as objects: :func:`object_strings`)
    return out.astype(object) if not len(col) and out.dtype.kind == "f" else out


#: frames of at most this many rows are prepared value by value (:func:`_prepare_rows`): a
#: per-school run's few records, where pandas' ~30 column operations cost ~20 ms however few
SMALL_ROWS = 5_000
_TEXT = ("upn", "guid", "forename", "middle_names", "surname", "gender", "postcode", "address_line1")


#: the prepared frame of no records, per input shape: pandas' path builds it in ~20-30 ms (a
#: school run without students or carers' candidates paid that once or twice; issue 15)
_EMPTY: dict[tuple, Any] = {}


def prepare(df: Any, id_col: str) -> Any:
    """Normalised comparison columns (vectorised where pandas can)."""

    if not len(df):
        key = (id_col, tuple(df.columns), tuple(str(t) for t in df.dtypes))
        if key not in _EMPTY:
            _EMPTY[key] = _prepare_frame(df, id_col)
        return _EMPTY[key].copy()
    if len(df) <= SMALL_ROWS:
        small = _prepare_rows(df, id_col)
        if small is not None:
            return small
    return _prepare_frame(df, id_col)


def _prepare_frame(df: Any, id_col: str) -> Any:
    """:func:`prepare` by pandas column operations."""
    import pandas as pd

    out = pd.DataFrame({"id": df[id_col].astype(str).values})
    for c in _TEXT:
        col = df[c] if c in df.columns else pd.Series([None] * len(df))
        out[c] = col.where(col.notna(), "").astype(str).str.strip().values
    if "base_id" in df.columns:
        out["base_id"] = df["base_id"].where(df["base_id"].notna(), "").astype(str).values
    out["upn"] = out["upn"].str.upper().str.replace(" ", "", regex=False)
    shared_upn = _shared(out["upn"].tolist())
    if shared_upn is not None:
        out["upn"] = out["upn"].where(~shared_upn, "")
    if id_col == "person_id" and (shared_guid := _shared(out["guid"].tolist())) is not None:
        out["guid"] = out["guid"].where(~shared_guid, "")
    distinct = out["upn"].unique().tolist()
    kinds = dict(zip(distinct, upn_kinds(distinct)))
    out["upn_kind"] = out["upn"].map(kinds)
    out["fn"] = _by_value(out["forename"], name_key)
    out["fn1"] = out["fn"].str[:1]
    out["mn"] = _by_value(out["middle_names"], lambda s: (name_parts(s) or [""])[0])
    out["sn"] = _by_value(out["surname"], name_key)
    out["sn1"] = out["sn"].str[:1]
    out["sn_parts"] = _by_value(out["surname"], name_parts)
    out["gender"] = _by_value(out["gender"], gender_key)
    dob = dob_dates(df["dob"]) if "dob" in df.columns else pd.to_datetime(None, errors="coerce")
    out["dob"] = pd.to_datetime(_no_placeholder_dobs(dob))
    out["dob_s"] = out["dob"].dt.strftime("%Y%m%d").fillna("")
    out["year"] = out["dob"].dt.year.fillna(0).astype(int)
    d = out["dob"]
    can_swap = d.notna() & (d.dt.day <= 12) & (d.dt.day != d.dt.month)
    out["dob_swap"] = out["dob_s"].str[:4].str.cat(out["dob_s"].str[6:8]).str.cat(out["dob_s"].str[4:6]) \
        .where(can_swap.values, "")
    out["pc"] = _by_value(out["postcode"], postcode_key)
    long_pc = (out["pc"].str.len() >= 5).values
    out["pc_sector"] = out["pc"].str[:-2].where(long_pc, "")
    out["pc_district"] = out["pc"].str[:-3].where(long_pc, "")
    out["addr"] = _by_value(out["address_line1"], address_key)
    split = _by_value(out["address_line1"], address_parts)
    out["addr_no"] = split.str[0]
    out["street"] = split.str[1]
    return out


def address_parts(s: str) -> tuple[str, str]:
    """(house number, street) of an address line: the leading number (with a letter, "12a")
    and the rest folded to letters ("12A Howe Way" -> ("12a", "howeway")); ("", "") when the
    line does not start with a number (a house name: no partial comparison)."""
    m = _HOUSE_NUMBER.match(_ascii_lower(s))
    if not m:
        return "", ""
    return m.group(1), _NOT_AZ.sub("", m.group(2))


def address_fields(s: Any) -> tuple[str, str, str]:
    """``address_key`` and ``address_parts`` of one address line, folded once (a school run
    prepares a few thousand distinct address lines: issue 15)."""
    low = _ascii_lower(s)
    m = _HOUSE_NUMBER.match(low)
    if not m:
        key = _NOT_AZ09.sub("", low)
        return ("" if key in PLACEHOLDER_ADDRESSES else key), "", ""
    return _NOT_AZ09.sub("", low), m.group(1), _NOT_AZ.sub("", m.group(2))


#: DOBs written as text: ``YYYY-MM-DD`` (a time of day after it, as spreadsheets and
#: databases export dates, is ignored), ``DD/MM/YYYY`` (``-`` or ``.`` between the parts: an
#: English LA's spreadsheet), or ``YYYYMMDD``. Never month first: "03/04/2015" is 3 April.
_DOB_ISO = re.compile(r"\s*(\d{4})-(\d{1,2})-(\d{1,2})(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\s*")
_DOB_DMY = re.compile(r"\s*(\d{1,2})([/.-])(\d{1,2})\2(\d{4})(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?\s*")
_DOB_COMPACT = re.compile(r"\s*(\d{4})(\d{2})(\d{2})\s*")


def dob_text(s: str) -> Any:
    """One DOB written as text (:data:`_DOB_ISO`, :data:`_DOB_DMY`, :data:`_DOB_COMPACT`) as a
    ``datetime.date``; ``None`` for "" and for anything else (not a date, no such day: 31/02)."""
    from datetime import date

    for rx, order in ((_DOB_ISO, (1, 2, 3)), (_DOB_DMY, (4, 3, 1)), (_DOB_COMPACT, (1, 2, 3))):
        m = rx.fullmatch(s)
        if m:
            try:
                return date(*(int(m.group(k)) for k in order))
            except ValueError:
                return None
    return None


def dob_dates(values: Any) -> Any:
    """DOBs as pandas' datetime64 values (NaT for a missing one or one that is not a date):
    dates and timestamps as they are, text by :func:`dob_text` — never by pandas' guess of the
    format, which reads "12/03/2015" as 3 December, or every later "25/03/2015" as no date,
    depending on the file's first row. Text in ``YYYY-MM-DD`` (what the database, the bench
    and most files give) is read by one vectorised parse; the rest value by value, once per
    distinct value. The same values (and dtype) as ``pd.to_datetime(values, errors="coerce")``
    for dates, timestamps and ``YYYY-MM-DD`` text."""
    import pandas as pd

    v = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    if v.dtype.kind == "M":
        return v.values
    text = v.map(lambda x: type(x) is str, na_action="ignore").fillna(False).astype(bool).to_numpy() \
        if v.dtype == object else v.notna().to_numpy()
    if not text.any():
        return pd.to_datetime(v, errors="coerce").values
    if not (v.notna().to_numpy() & ~text).any():  # text or missing
        out = pd.to_datetime(v, format="%Y-%m-%d", errors="coerce")
    else:
        out = pd.to_datetime(v.where(~text, None), errors="coerce")
        out = out.where(~text, pd.to_datetime(v.where(text, None), format="%Y-%m-%d", errors="coerce"))
    rest = (text & out.isna().to_numpy())
    if rest.any():
        vals = v[rest].astype(str).tolist()
        memo = {x: dob_text(x) for x in dict.fromkeys(vals)}
        parsed = pd.to_datetime(pd.Series([memo[x] for x in vals], dtype=object), errors="coerce")
        out = out.copy()
        out[rest] = parsed.to_numpy().astype(out.dtype)
    return out.values


def dob_problems(values: Any, limit: int = 5) -> tuple[int, list[tuple[int, str]]]:
    """DOBs given but not read as dates (:func:`dob_dates`): (how many, the first ``limit`` as
    (row position, value)) — for a clear message naming the rows, not a silent missing DOB."""
    import numpy as np
    import pandas as pd

    v = values if isinstance(values, pd.Series) else pd.Series(values, dtype=object)
    given = v.notna().to_numpy() & (v.astype(str).str.strip() != "").to_numpy()
    bad = np.flatnonzero(given & np.isnat(np.asarray(dob_dates(v), dtype="datetime64[ns]")))
    return len(bad), [(int(k), str(v.iloc[k])) for k in bad[:limit]]


#: DOBs on or before this are placeholders for "not known" (1900-01-01, 1899-12-31 and 1753-01-01
#: of spreadsheets and databases, 0001-01-01), no living person's: read as no DOB (a fault sweep
#: linked namesakes "born" on 1900-01-01). Real DOBs later in 1900 stay (FEBRL 4 holds some)
LAST_PLACEHOLDER_DOB = "1900-01-01"


def _no_placeholder_dobs(dob: Any) -> Any:
    """``dob`` (datetime64 values) with the placeholders (:data:`LAST_PLACEHOLDER_DOB`) as NaT."""
    import numpy as np

    dob = np.asarray(dob)
    if dob.ndim == 0 or dob.dtype.kind != "M":
        return dob
    early = dob <= np.datetime64(LAST_PLACEHOLDER_DOB)  # (NaT compares False)
    if not early.any():
        return dob
    out = dob.copy()
    out[early] = np.datetime64("NaT")
    return out


#: an identifier (UPN, or the GUID the LA holds) that more than this many records of one file
#: hold is a placeholder ("V886000000000" passes the check letter; "0" or a GUID of zeros for
#: every record): read as none. Two may share one (the same child twice in the LA's records, a
#: brother's UPN typed on a sister's record), and the rules already weigh that
SHARED_IDENTIFIER = 2


def _shared(values: list) -> Any:
    """Which of ``values`` (text, "" for none) more than :data:`SHARED_IDENTIFIER` records hold,
    as a boolean array; None when none is (the usual case)."""
    from collections import Counter

    import numpy as np

    counts = Counter(values)
    many = {v for v, c in counts.items() if c > SHARED_IDENTIFIER and v}
    if not many:
        return None
    return np.fromiter((v in many for v in values), dtype=bool, count=len(values))


#: genders as schools and LAs write them (ISO/IEC 5218's 1 and 2 included); anything else
#: (U, X, "Unknown", 0, 9) is no gender rather than a different one
GENDER_WORDS = {"M": "M", "MALE": "M", "BOY": "M", "1": "M", "F": "F", "FEMALE": "F", "GIRL": "F", "2": "F"}


def gender_key(s: str) -> str:
    """"M", "F" or "" (:data:`GENDER_WORDS`)."""
    return GENDER_WORDS.get(s.strip().upper(), "") if type(s) is str else ""


def is_missing(x: Any) -> bool:
    """A scalar pandas counts as missing: None, NaN, NaT, NA."""
    if x is None:
        return True
    if type(x) in _NEVER_MISSING:  # (the common cases, without pandas' import a call)
        return False
    if isinstance(x, float):
        return x != x
    import pandas as pd

    # (anything else as pandas answers it: numpy's NaT and float32 NaN were once taken as values)
    return x is pd.NaT or x is pd.NA or (pd.api.types.is_scalar(x) and bool(pd.isna(x)))


#: scalar types never missing (exactly these types: a subclass, such as pandas' Timestamp, is checked)
_NEVER_MISSING = frozenset((str, int, bool, bytes))


def _prepare_rows(df: Any, id_col: str, *, columns: bool = False) -> Any:
    """:func:`prepare` for a few records: the same frame (columns, order, dtypes, values;
    ``tests/test_matching_small.py``), each column computed in Python from the same scalar
    functions, and one DataFrame built at the end. ``None`` (use :func:`prepare`'s pandas
    path) for what Python and pandas' string type might treat differently: a non-ASCII UPN or
    gender (``upper``), a DOB outside years 1000-9999 (``strftime``). ``columns``: the frame's
    columns (name -> list or array), no DataFrame built (:func:`b2b.matching.decide.prepare_arrays`)."""
    from datetime import date

    import numpy as np
    import pandas as pd

    n = len(df)
    text: dict[str, list[str]] = {}
    for c in _TEXT:
        if c in df.columns:
            text[c] = [v.strip() if type(v) is str else "" if v is None or is_missing(v) else str(v).strip()
                       for v in df[c].tolist()]
        else:
            text[c] = [""] * n
    if not all(v.isascii() for v in text["upn"]) or not all(v.isascii() for v in text["gender"]):
        return None
    dates = df["dob"].tolist() if "dob" in df.columns else None
    if dates is not None and all(v is None or (type(v) is date and 1000 <= v.year) for v in dates):
        # what the database gives (dates, or none): pd.to_datetime's array (seconds), by numpy
        dob = np.array([np.datetime64("NaT") if v is None else np.datetime64(v, "D") for v in dates],
                       dtype="datetime64[D]").astype("datetime64[s]")
    else:
        dob = dob_dates(df["dob"]) if "dob" in df.columns else pd.to_datetime(None, errors="coerce")
    dob = _no_placeholder_dobs(dob)
    day = dob.astype("datetime64[D]")
    nat = np.isnat(day)
    yy = day.astype("datetime64[Y]").astype(np.int64) + 1970
    if ((yy < 1000) | (yy > 9999))[~nat].any():
        return None
    mm = day.astype("datetime64[M]").astype(np.int64) % 12 + 1
    dd = (day - day.astype("datetime64[M]")).astype(np.int64) + 1

    def by_value(values: list[str], fn: Any) -> list:
        # (each distinct value once, in order of first sight; then one C-level lookup a row)
        memo = {v: fn(v) for v in dict.fromkeys(values)}
        return list(map(memo.__getitem__, values))

    upn = [u.upper().replace(" ", "") for u in text["upn"]]
    if (shared_upn := _shared(upn)) is not None:
        upn = ["" if x else u for u, x in zip(upn, shared_upn.tolist())]
    if id_col == "person_id" and (shared_guid := _shared(text["guid"])) is not None:
        text["guid"] = ["" if x else g for g, x in zip(text["guid"], shared_guid.tolist())]
    fn = by_value(text["forename"], name_key)
    sn = by_value(text["surname"], name_key)
    pc = by_value(text["postcode"], postcode_key)
    address = by_value(text["address_line1"], address_fields)
    # YYYYMMDD (a year of four digits: checked above) and, where the day could be a month, the
    # day and month swapped (YYYYDDMM); "" otherwise: numpy's text of whole numbers, not a
    # format per row
    y0, m0, d0 = np.where(nat, 0, yy), np.where(nat, 0, mm), np.where(nat, 0, dd)
    dob_s = np.where(nat, "", (y0 * 10000 + m0 * 100 + d0).astype(str)).tolist()
    swap = np.where(~nat & (d0 <= 12) & (d0 != m0), (y0 * 10000 + d0 * 100 + m0).astype(str), "").tolist()
    if columns:  # (pandas' astype(str) of the ids, and of the base ids with a missing one "")
        cols: dict[str, Any] = {"id": [v if type(v) is str else str(v) for v in df[id_col].tolist()]}
    else:
        cols = {"id": df[id_col].astype(str).values}
    cols.update(text)
    if "base_id" in df.columns:
        cols["base_id"] = ["" if v is None or is_missing(v) else v if type(v) is str else str(v)
                           for v in df["base_id"].tolist()] if columns else \
            df["base_id"].where(df["base_id"].notna(), "").astype(str).values
    cols["upn"] = upn
    cols["upn_kind"] = upn_kinds(upn)
    cols["fn"] = fn
    cols["fn1"] = [v[:1] for v in fn]
    cols["mn"] = by_value(text["middle_names"], lambda s: (name_parts(s) or [""])[0])
    cols["sn"] = sn
    cols["sn1"] = [v[:1] for v in sn]
    parts = by_value(text["surname"], name_parts)
    cols["sn_parts"] = parts if columns else pd.Series(parts, dtype=object)
    cols["gender"] = by_value(text["gender"], gender_key)
    cols["dob"] = dob if columns else pd.to_datetime(dob)
    cols["dob_s"] = dob_s
    cols["year"] = np.where(nat, 0, yy).astype(int)
    cols["dob_swap"] = swap
    cols["pc"] = pc
    cols["pc_sector"] = [v[:-2] if len(v) >= 5 else "" for v in pc]
    cols["pc_district"] = [v[:-3] if len(v) >= 5 else "" for v in pc]
    cols["addr"] = [a for a, _, _ in address]
    number, street = [b for _, b, _ in address], [c for _, _, c in address]
    cols["addr_no"] = number if columns else pd.Series(number, dtype=object)
    cols["street"] = street if columns else pd.Series(street, dtype=object)
    return cols if columns else pd.DataFrame(cols)
