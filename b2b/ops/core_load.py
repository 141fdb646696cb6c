"""Load the LA's own records ("One"): its children into ``core.child`` (with every version
kept in ``core.child_version``), the MIS GUID links it already holds (F16) into
``core.child_link``, and its address gazetteer (LLPG extract) into ``core.address_gazetteer``.

Formats (``b2b core load --help`` prints the same):

* **children CSV**, one row per child, header row with these column names (any order; only
  ``person_id``, ``forename``, ``surname`` and ``dob`` are required):
  ``person_id, upn, forename, middle_names, surname, gender, dob, ethnicity, first_language,
  sen_status, base_id, paon, saon, street, locality, town, postcode, guid, guid_base``.
  ``dob`` is ``YYYY-MM-DD`` (or the mapping's ``date_format``; a midnight time after it, as
  spreadsheets write, is read; a date number such as 42370 is not); ``gender`` M, F, U or X
  (Male, Female, Boy, Girl, 1, 2, Unknown read as such); ``postcode`` a UK postcode or an NHS
  pseudo-postcode (ZZ99 3WZ); ``base_id`` the DfE number of the school
  the LA believes the child attends (7 digits, or ``886/2001``, ``886 2001``; the matcher reads it as
  evidence, so keep it current); ``guid`` a MIS GUID the LA already links to the child at
  school ``guid_base`` (default ``base_id``).
* **gazetteer CSV**: ``uprn, paon, saon, street, locality, town, postcode`` (``uprn`` required).
* **adults CSV** (F14: the parents and carers the LA holds, matched to schools' contacts):
  ``person_id, forename, middle_names, surname, gender, dob, paon, street, postcode``
  (``person_id``, ``forename`` and ``surname`` required; ``dob`` as for children).
* a **mapping file** (YAML) for LA systems whose exports name columns differently::

      encoding: utf-8-sig          # default; also latin-1, cp1252
      delimiter: ","
      children:
        full_extract: true         # false: a partial (changes-only) extract, nobody is deactivated
        date_format: "%d/%m/%Y"    # default %Y-%m-%d
        columns: {person_id: "Person ID", forename: "Legal Forename", dob: "Date of Birth"}
        values: {gender: {Male: M, Female: F}}
      gazetteer:
        columns: {uprn: UPRN, paon: PAO_TEXT, street: STREET_DESCRIPTOR, town: TOWN_NAME,
                  postcode: POSTCODE_LOCATOR}

Files: UTF-8 (a byte-order mark allowed), UTF-16 with its byte-order mark (Excel's "Unicode
text"), or the mapping's ``encoding``; a file that holds no UTF-8 is read as Windows-1252
(logged). Commas, or semicolons or tabs when the header row holds no comma. Headers in any
case, spaces or underscores between words (``Person ID`` is ``person_id``), each once; a
row of empty cells is skipped. An Excel workbook is refused: save the sheet as CSV UTF-8.

Every row is checked before anything is written (a row with more or fewer cells than the
header, an unquoted comma or line break in an address, is a problem of that row; so is a
NUL character, or one school's GUID given to two children): each bad row is reported by row number
(and file line) and field, never by value, and the load is refused whole. A load is one
transaction (COPY into a temporary table, then set-based SQL) and is idempotent: an
unchanged record stays as it is; a changed one gets a new version (the old one is closed,
``valid_to``); a record missing from a **full** extract is marked inactive (never deleted:
matches, conflicts and decisions keep pointing at it) and the matcher ignores it; a record
that comes back is reactivated with a new version. A full extract with no records is refused
(an export that stopped after its header would otherwise deactivate every child).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from b2b.blocks import norm_sql
from b2b.context import scalar
from b2b.dropfolder import move_aside
from b2b.errors import OpsError
from b2b.matching.normalise import GENDER_WORDS

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)

#: the children CSV's fields, in core.child's column order (all versioned)
CHILD_FIELDS = ("person_id", "upn", "forename", "middle_names", "surname", "gender", "dob", "ethnicity",
                "first_language", "sen_status", "base_id", "paon", "saon", "street", "locality", "town", "postcode")
LINK_FIELDS = ("guid", "guid_base")
CHILD_REQUIRED = ("person_id", "forename", "surname", "dob")
GAZETTEER_FIELDS = ("uprn", "paon", "saon", "street", "locality", "town", "postcode")
GAZETTEER_REQUIRED = ("uprn",)
ADULT_FIELDS = ("person_id", "forename", "middle_names", "surname", "gender", "dob", "paon", "street", "postcode")
ADULT_REQUIRED = ("person_id", "forename", "surname")
GENDERS = ("M", "F", "U", "X")
#: gender as LA systems write it, read as the matcher reads it (:func:`b2b.matching.normalise.gender_key`;
#: 1 and 2 as ISO 5218); any other code through the mapping's ``values``
_GENDER_WORDS = {**GENDER_WORDS, "UNKNOWN": "U", "NOT KNOWN": "U"}
#: back-compatible name (the demo and tests load ``World.la_core()`` records)
CORE_COLUMNS = CHILD_FIELDS

_POSTCODE = re.compile(r"^(?:GIR ?0AA|[A-PR-UWYZ][A-HK-Y]?[0-9][0-9A-Z]? ?[0-9][ABD-HJLNP-UW-Z]{2})$")
#: the NHS pseudo-postcodes (ZZ99 3WZ no fixed abode, ZZ99 3VZ not known...): an LA holds them;
#: the matcher reads them as no postcode (:func:`b2b.matching.normalise.postcode_key`)
_PSEUDO_POSTCODE = re.compile(r"^ZZ99 ?[0-9][A-Z]{2}$")
_UPN = re.compile(r"^[A-Z][0-9]{11}[0-9A-Z]$")
_DFE = re.compile(r"^[0-9]{7}$")
#: the DfE number as LAs often write it (LA code / establishment number): read as the 7 digits,
#: so the school the LA holds for a child compares with the school's own (matching, issue 14)
_LAESTAB = re.compile(r"^[0-9]{3}\s*[/-]?\s*[0-9]{4}$")
_UPRN = re.compile(r"^[0-9]{1,12}$")
MAX_PROBLEMS_SHOWN = 20


class CoreLoadError(OpsError):
    """An LA extract was refused (bad rows, bad mapping, unreadable file): nothing was loaded."""


@dataclass(frozen=True)
class Problem:
    row: int          # 1 = the first data row
    line: int         # line in the file (header = 1)
    field: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row} (line {self.line}), field {self.field}: {self.reason}"


@dataclass
class KindMapping:
    columns: dict[str, str] = field(default_factory=dict)       # our field -> the export's header
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # our field -> {theirs: ours}
    date_format: str = "%Y-%m-%d"
    full_extract: bool = True


@dataclass
class ColumnMapping:
    """How an LA's export names its columns (see the module doc for the YAML)."""

    children: KindMapping = field(default_factory=KindMapping)
    gazetteer: KindMapping = field(default_factory=KindMapping)
    adults: KindMapping = field(default_factory=KindMapping)
    encoding: str = "utf-8-sig"
    delimiter: str = ","

    @classmethod
    def load(cls, path: Path | None) -> ColumnMapping:
        if path is None:
            return cls()
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CoreLoadError(f"mapping file cannot be read: {type(exc).__name__}", file=Path(path).name) from None
        if not isinstance(data, dict):
            raise CoreLoadError("mapping file must be a YAML mapping", file=Path(path).name)
        unknown = set(data) - {"children", "gazetteer", "adults", "encoding", "delimiter"}
        if unknown:
            raise CoreLoadError(f"unknown key(s) in mapping file: {', '.join(sorted(unknown))}", file=Path(path).name)

        def kind(name: str, fields_: tuple[str, ...]) -> KindMapping:
            d = data.get(name) or {}
            cols = {str(k): str(v) for k, v in (d.get("columns") or {}).items()}
            bad = sorted(set(cols) - set(fields_) - (set(LINK_FIELDS) if name == "children" else set()))
            if bad:
                raise CoreLoadError(f"mapping {name}.columns names unknown field(s) {', '.join(bad)}",
                                    file=Path(path).name)
            values = {str(k): {str(a): str(b) for a, b in (v or {}).items()} for k, v in (d.get("values") or {}).items()}
            return KindMapping(columns=cols, values=values, date_format=str(d.get("date_format", "%Y-%m-%d")),
                               full_extract=bool(d.get("full_extract", True)))

        return cls(children=kind("children", CHILD_FIELDS), gazetteer=kind("gazetteer", GAZETTEER_FIELDS),
                   adults=kind("adults", ADULT_FIELDS),
                   encoding=str(data.get("encoding", "utf-8-sig")), delimiter=str(data.get("delimiter", ",")))


# ------------------------------------------------------------------ reading and checking
#: a valid UTF-8 sequence of more than one byte: a file that fails as UTF-8 and holds none is read
#: as Windows-1252 (Excel's "CSV" on Windows); one holding both is refused (mixed or damaged)
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")
_UTF8_NAMES = ("utf-8-sig", "utf-8", "utf8", "utf_8", "utf-8sig")


def decode_text(data: bytes, encoding: str, name: str) -> tuple[str, str]:
    """A spreadsheet file's text and the encoding it was read with (``b2b core load`` and ``b2b
    match`` both read their files so): UTF-16 when it starts with UTF-16's byte-order mark
    (Excel's "Unicode text"), else ``encoding`` (the mapping's, default UTF-8 with or without a
    byte-order mark); a file that is not UTF-8 and holds no UTF-8 at all is read as
    Windows-1252 (the caller says so). A workbook, or a refusal, names the file and the line,
    never the bytes (they are a name or an address); the byte-order mark is dropped."""
    if data[:4] == b"PK\x03\x04" or data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        raise CoreLoadError("an Excel workbook, not a CSV file: save the sheet as CSV UTF-8 (comma delimited)",
                            file=name)
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        encoding = "utf-16"
    try:
        return data.decode(encoding).lstrip("\ufeff"), encoding
    except LookupError:
        raise CoreLoadError(f"unknown encoding {encoding!r} in the mapping file", file=name) from None
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        if encoding.lower() in _UTF8_NAMES and not _UTF8_MULTIBYTE.search(data):
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:
                pass
            else:
                return text, "cp1252"
        raise CoreLoadError(f"cannot be read as {encoding}: the bytes at line {line} are not {encoding} (save "
                            "the file as CSV UTF-8, or name its encoding in the mapping file)", file=name) from None


def sniff_delimiter(text: str, delimiter: str = ",") -> tuple[str, str | None]:
    """The delimiter of a file whose text this is, and what to say of it: ``delimiter``, or
    semicolons or tabs when the header row holds no comma (a comma-decimal locale's CSV,
    Excel's "Unicode text")."""
    first = text.split("\n", 1)[0]
    if delimiter == "," and "," not in first:
        for other, said in ((";", "semicolons"), ("\t", "tabs")):
            if other in first:
                return other, said
    return delimiter, None


def shape(text: str) -> str:
    """A value's shape, not the value: each digit 9, each letter A ("31/02/2015" -> "99/99/9999")."""
    return _LETTERS.sub("A", _DIGITS.sub("9", text.strip()))


def dfe_number(value: str) -> str:
    """A school's DfE number as LAs write it ("886/2001", "886-2001", "886 2001") as its 7 digits;
    anything else as it is."""
    return re.sub(r"[^0-9]", "", value) if _LAESTAB.match(value.strip()) else value


def _header_key(h: str) -> str:
    """A column name as compared: any case, spaces or underscores between words ("Person ID" is person_id)."""
    return "_".join(h.replace("_", " ").lower().split())


def _read_rows(path: Path, mapping: ColumnMapping, km: KindMapping, fields_: tuple[str, ...],
               required: tuple[str, ...]) -> tuple[list[dict], list[int]]:
    """The file's rows with our field names (values stripped, '' -> None), and their line numbers.
    Commas, or semicolons or tabs when the header holds no comma (the mapping's ``delimiter``
    otherwise); a row of empty cells is skipped; a row with more or fewer cells than the header
    is a problem of that row (an unquoted comma or line break in an address)."""
    name = Path(path).name
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CoreLoadError(f"cannot be read: {type(exc).__name__}", file=name) from None
    text, used = decode_text(data, mapping.encoding, name)
    if used == "cp1252":
        log.warning("core load %s: not UTF-8; read as Windows-1252", name)
    delimiter, said = sniff_delimiter(text, mapping.delimiter)
    if said:
        log.info("core load %s: read with %s between fields", name, said)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise CoreLoadError(f"not a valid CSV at line {reader.line_num}: {exc}", file=name) from None
    if not header:
        raise CoreLoadError("empty file (no header row)", file=name)
    keys = [_header_key(h) for h in header]
    wanted = {_header_key(km.columns.get(f, f)): f for f in fields_}
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        # a known column by its name; another by its position (a file without a header row
        # would have a child's values there)
        named = [f"{wanted[k]} (columns {', '.join(str(j + 1) for j, x in enumerate(keys) if x == k)})"
                if k in wanted else f"columns {', '.join(str(j + 1) for j, x in enumerate(keys) if x == k)}"
                for k in twice]
        raise CoreLoadError(f"the header row names a column twice: {'; '.join(named)}", file=name)
    by_key = dict(zip(keys, header))
    source = {f: by_key[k] for k, f in wanted.items() if k in by_key}
    missing = [f"{f} (column {km.columns.get(f, f)!r})" for f in required if f not in source]
    if missing:
        raise CoreLoadError(f"required column(s) missing: {', '.join(missing)}", file=name)
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    last = reader.line_num
    try:
        for raw in reader:
            extra = raw.pop(None, None)  # more cells than headers
            short = None in raw.values()  # fewer: DictReader's restval
            if not extra and all(not (v or "").strip() for v in raw.values()):
                continue  # a row of empty cells (",,,,": a spreadsheet's cleared row)
            rec: dict[str, Any] = {"__extra__": True} if extra is not None else {"__short__": True} if short else {}
            for f, col in source.items():
                v = (raw.get(col) or "").strip()
                v = km.values.get(f, {}).get(v, v)
                rec[f] = v or None
            rows.append(rec)
            lines.append(reader.line_num)
            last = reader.line_num
    except csv.Error as exc:
        hint = " (a quote opened and never closed?)" if "end of data" in str(exc) else ""
        raise CoreLoadError(f"not a valid CSV in the row starting at line {last + 1}: {exc}{hint}",
                            file=name) from None
    return rows, lines


def _check_common(rows: list[dict], lines: list[int], key: str, required: tuple[str, ...]) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, (r, line) in enumerate(zip(rows, lines), start=1):
        if r.pop("__extra__", False):
            problems.append(Problem(i, line, "(row)", "more cells than the header has columns"))
        if r.pop("__short__", False):
            problems.append(Problem(i, line, "(row)", "fewer cells than the header has columns"))
        for f, v in r.items():
            if isinstance(v, str) and "\x00" in v:  # PostgreSQL cannot store it (COPY would fail)
                problems.append(Problem(i, line, f, "holds a NUL character"))
        for f in required:
            if not r.get(f):
                problems.append(Problem(i, line, f, "required, but empty"))
        k = r.get(key)
        if k:
            if k in seen:
                problems.append(Problem(i, line, key, f"duplicate of row {seen[k]}"))
            else:
                seen[k] = i
    return problems


def check_children(rows: list[dict], lines: list[int] | None = None, date_format: str = "%Y-%m-%d") -> list[Problem]:
    """Every problem in a children extract (nothing is written); values are normalised in place."""
    return _check_people(rows, lines, date_format, CHILD_REQUIRED)


def check_adults(rows: list[dict], lines: list[int] | None = None, date_format: str = "%Y-%m-%d") -> list[Problem]:
    """Every problem in an adults extract (the same checks as children's fields)."""
    return _check_people(rows, lines, date_format, ADULT_REQUIRED)


def _check_people(rows: list[dict], lines: list[int] | None, date_format: str,
                  required: tuple[str, ...]) -> list[Problem]:
    lines = lines or [i + 1 for i in range(1, len(rows) + 1)]
    problems = _check_common(rows, lines, "person_id", required)
    today = date.today()
    links: dict[tuple, int] = {}
    for i, (r, line) in enumerate(zip(rows, lines), start=1):
        dob = r.get("dob")
        if isinstance(dob, datetime):
            dob = dob.date()
        if dob and not isinstance(dob, date):
            read = _read_date(str(dob), date_format)
            if read is None:
                problems.append(Problem(i, line, "dob", _not_a_date(str(dob), date_format)))
            dob = read
        if isinstance(dob, date):
            if not date(1900, 1, 1) <= dob <= today:
                problems.append(Problem(i, line, "dob", "outside 1900-01-01 .. today"))
            r["dob"] = dob.isoformat()
        if r.get("gender"):
            r["gender"] = _GENDER_WORDS.get(str(r["gender"]).upper(), str(r["gender"]).upper())
            if r["gender"] not in GENDERS:
                problems.append(Problem(i, line, "gender", f"not one of {', '.join(GENDERS)} "
                                                           "(map other codes with the mapping's values:)"))
        if r.get("upn"):
            r["upn"] = str(r["upn"]).replace(" ", "").upper()
            if not _UPN.match(r["upn"]):
                problems.append(Problem(i, line, "upn", "not a UPN (a letter, 11 digits, a digit or letter)"))
        if r.get("postcode"):
            r["postcode"] = " ".join(str(r["postcode"]).upper().split())
            if not (_POSTCODE.match(r["postcode"]) or _PSEUDO_POSTCODE.match(r["postcode"])):
                problems.append(Problem(i, line, "postcode", "not a UK postcode"))
        for f in ("base_id", "guid_base"):
            if r.get(f):  # "886/2001", "886-2001": as the school's 8862001
                r[f] = dfe_number(str(r[f]))
            if r.get(f) and not _DFE.match(str(r[f])):
                problems.append(Problem(i, line, f, "not a DfE number (7 digits)"))
        if r.get("guid") and not (r.get("guid_base") or r.get("base_id")):
            problems.append(Problem(i, line, "guid_base", "a GUID link needs the school (guid_base or base_id)"))
        elif r.get("guid"):  # one school's GUID names one child (the link otherwise went to either)
            link = (r.get("guid_base") or r.get("base_id"), r["guid"])
            if link in links:
                problems.append(Problem(i, line, "guid", f"the same school's GUID as row {links[link]}"))
            else:
                links[link] = i
    return problems


_TIME_OF_DAY = re.compile(r"[T ]0?0:00(?::00(?:\.0+)?)?$")  # a spreadsheet's "2015-03-12 00:00:00"
_DIGITS = re.compile(r"[0-9]")
_LETTERS = re.compile(r"[^\W\d_]")


def _read_date(text: str, date_format: str) -> date | None:
    """A DOB written in the mapping's ``date_format`` or as ``YYYY-MM-DD`` (never read otherwise:
    03/04/2015 is not guessed), either with a midnight time after it; ``None`` if not."""
    text = _TIME_OF_DAY.sub("", text.strip())
    for fmt in dict.fromkeys((date_format, "%Y-%m-%d")):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


def _not_a_date(text: str, date_format: str) -> str:
    """Why a DOB was not read, by its shape (9 a digit, A a letter), never its value."""
    shaped = shape(text)
    if re.fullmatch(r"[0-9]{5}(\.[0-9]+)?", text.strip()):
        return (f"not a date in the format {date_format} (shaped {shaped}: a spreadsheet's date number? "
                "format the column as a date before saving)")
    return f"not a date in the format {date_format} (shaped {shaped})"


def check_gazetteer(rows: list[dict], lines: list[int] | None = None) -> list[Problem]:
    lines = lines or [i + 1 for i in range(1, len(rows) + 1)]
    problems = _check_common(rows, lines, "uprn", GAZETTEER_REQUIRED)
    for i, (r, line) in enumerate(zip(rows, lines), start=1):
        if r.get("uprn") and not _UPRN.match(str(r["uprn"])):
            problems.append(Problem(i, line, "uprn", "not a UPRN (up to 12 digits)"))
        if r.get("postcode"):
            r["postcode"] = " ".join(str(r["postcode"]).upper().split())
            if not _POSTCODE.match(r["postcode"]):
                problems.append(Problem(i, line, "postcode", "not a UK postcode"))
    return problems


def _refuse(problems: list[Problem], file: str | None, what: str) -> None:
    if not problems:
        return
    shown = "; ".join(str(p) for p in problems[:MAX_PROBLEMS_SHOWN])
    more = f"; and {len(problems) - MAX_PROBLEMS_SHOWN} more" if len(problems) > MAX_PROBLEMS_SHOWN else ""
    raise CoreLoadError(f"{what} refused, nothing loaded: {len(problems)} problem(s): {shown}{more}",
                        file=file, record=f"row {problems[0].row}")


# ------------------------------------------------------------------ loading
def _text(v: Any) -> str | None:
    if v is None or v == "":
        return None
    return v.isoformat() if isinstance(v, date) else str(v)


def _record_sql(alias: str) -> str:
    pairs = ", ".join(f"'{f}', {alias}.{f}" for f in CHILD_FIELDS if f != "person_id")
    return f"jsonb_strip_nulls(jsonb_build_object({pairs}))"


#: a full children extract that would mark more than this share of the LA's active children
#: inactive (and more than :data:`LARGE_DROP_MIN` of them) is refused unless the loader says it
#: is meant (``--allow-large-drop``): an export cut short or filtered by mistake looks exactly
#: like that, and the year's leavers and movers are ~6-8% at most
LARGE_DROP_SHARE = 0.2
LARGE_DROP_MIN = 100


def load_children(conn: Connection, rows: list[dict], *, full: bool, source: str = "records", sha256: str | None = None,
                  allow_large_drop: bool = False) -> dict:
    """Load checked children rows (see :func:`check_children`) in one transaction; the counts.
    A full extract that would deactivate a large share of the LA's children is refused
    (:data:`LARGE_DROP_SHARE`), nothing loaded, unless ``allow_large_drop``."""
    cols = ", ".join(CHILD_FIELDS)
    data_cols = [f for f in CHILD_FIELDS if f != "person_id"]
    casts = ", ".join("i.dob::date" if f == "dob" else f"i.{f}" for f in CHILD_FIELDS)
    with conn.transaction():
        conn.execute("DROP TABLE IF EXISTS pg_temp.core_in, pg_temp.core_diff, pg_temp.core_gone")
        conn.execute(f"CREATE TEMP TABLE core_in ({', '.join(f + ' text' for f in CHILD_FIELDS + LINK_FIELDS)}) "
                     "ON COMMIT DROP")
        with conn.cursor() as cur, cur.copy(f"COPY core_in ({cols}, guid, guid_base) FROM STDIN") as copy:
            for r in rows:
                link_base = r.get("guid_base") or r.get("base_id") if r.get("guid") else None
                copy.write_row(tuple(_text(r.get(f)) for f in CHILD_FIELDS) + (_text(r.get("guid")), _text(link_base)))
        load_id = scalar(conn,
            "INSERT INTO core.load_run (kind, source, sha256, full_extract) VALUES ('children', %s, %s, %s) "
            "RETURNING load_id", (source, sha256, full))
        conn.execute(
            f"""CREATE TEMP TABLE core_diff ON COMMIT DROP AS
                SELECT i.person_id, c.person_id IS NULL AS is_new
                  FROM core_in i LEFT JOIN core.child c ON c.person_id = i.person_id
                 WHERE c.person_id IS NULL OR NOT c.active OR c.origin <> 'la'
                    OR ({', '.join('c.' + f for f in data_cols)})
                       IS DISTINCT FROM ({', '.join('i.dob::date' if f == 'dob' else 'i.' + f for f in data_cols)})""")
        new = conn.execute(
            f"""INSERT INTO core.child ({cols}, origin, updated_by)
                SELECT {casts}, 'la', 'la' FROM core_in i JOIN core_diff d USING (person_id) WHERE d.is_new""").rowcount
        conn.execute("""UPDATE core.child_version v SET valid_to = now() FROM core_diff d
                         WHERE v.person_id = d.person_id AND v.valid_to IS NULL AND NOT d.is_new""")
        sets = ", ".join(f"{f} = {'i.dob::date' if f == 'dob' else 'i.' + f}" for f in data_cols)
        updated = conn.execute(
            f"""UPDATE core.child c SET {sets}, active = true, inactive_since = NULL, origin = 'la',
                       version = c.version + 1, updated_at = now(), updated_by = 'la'
                  FROM core_in i JOIN core_diff d USING (person_id)
                 WHERE c.person_id = i.person_id AND NOT d.is_new""").rowcount
        conn.execute(
            f"""INSERT INTO core.child_version (person_id, version, record, active, load_id)
                SELECT c.person_id, c.version, {_record_sql('c')}, true, %s
                  FROM core.child c JOIN core_diff d USING (person_id)""", (load_id,))
        deactivated = 0
        if full:
            conn.execute("""CREATE TEMP TABLE core_gone ON COMMIT DROP AS
                            SELECT c.person_id FROM core.child c
                             WHERE c.active AND c.origin = 'la'
                               AND NOT EXISTS (SELECT 1 FROM core_in i WHERE i.person_id = c.person_id)""")
            gone = scalar(conn, "SELECT count(*) FROM core_gone")
            active = scalar(conn, "SELECT count(*) FROM core.child WHERE active AND origin = 'la'")
            if not allow_large_drop and gone > LARGE_DROP_MIN and gone > LARGE_DROP_SHARE * active:
                # (raised inside the transaction: everything above is rolled back)
                raise CoreLoadError(
                    f"children extract refused, nothing loaded: as a full extract it would mark {gone:,} of the "
                    f"LA's {active:,} active children inactive (over {LARGE_DROP_SHARE:.0%}: an export cut short "
                    "or filtered?); if that is right, load it with --allow-large-drop", file=source)
            conn.execute("""UPDATE core.child_version v SET valid_to = now() FROM core_gone g
                             WHERE v.person_id = g.person_id AND v.valid_to IS NULL""")
            deactivated = conn.execute(
                """UPDATE core.child c SET active = false, inactive_since = now(), version = c.version + 1,
                          updated_at = now(), updated_by = 'la'
                     FROM core_gone g WHERE c.person_id = g.person_id""").rowcount
            conn.execute(
                f"""INSERT INTO core.child_version (person_id, version, record, active, load_id)
                    SELECT c.person_id, c.version, {_record_sql('c')}, false, %s
                      FROM core.child c JOIN core_gone g USING (person_id)""", (load_id,))
        link_conflicts = scalar(conn,
            """SELECT count(*) FROM core_in i JOIN core.child_link l
                   ON l.base_id = i.guid_base AND l.student_guid = i.guid AND l.person_id <> i.person_id""")
        links = conn.execute(
            """INSERT INTO core.child_link (base_id, student_guid, person_id, linked_by)
               SELECT guid_base, guid, person_id, 'la' FROM core_in WHERE guid IS NOT NULL AND guid_base IS NOT NULL
               ON CONFLICT (base_id, student_guid) DO NOTHING""").rowcount
        counts = {"records": len(rows), "new": new, "updated": updated, "deactivated": deactivated,
                  "new_links": links, "link_conflicts": link_conflicts}
        conn.execute("UPDATE core.load_run SET counts = %s WHERE load_id = %s",
                     (json.dumps(counts), load_id))
    log.info("core load %s: %s", source, counts)
    return counts


def load_core(conn: Connection, records: Iterable[dict], *, full: bool = False) -> dict:
    """Load LA child records given as dicts (the demo: ``World.la_core()``; ``base_dfe`` is read
    as ``base_id``, ``address_line1`` as ``paon`` when no ``paon``). Checked like a file."""
    rows = []
    for rec in records:
        r = {f: rec.get(f) for f in CHILD_FIELDS + LINK_FIELDS}
        r["base_id"] = r["base_id"] or rec.get("base_dfe")
        if not r.get("paon") and rec.get("address_line1"):
            r["paon"] = rec["address_line1"]
        rows.append({k: (None if v in ("", None) else v) for k, v in r.items()})
    _refuse(check_children(rows), None, "LA child records")
    c = load_children(conn, rows, full=full)
    return {"records": c["records"], "changed": c["new"] + c["updated"], "new_links": c["new_links"]}


def load_children_file(conn: Connection, path: Path, mapping: ColumnMapping | None = None, *, full: bool | None = None,
                       allow_large_drop: bool = False) -> dict:
    """Read, check and load a children CSV (see the module doc); refused whole on any bad row,
    and (a full extract) when it would deactivate a large share of the LA's children."""
    return _from_file(conn, path, mapping or ColumnMapping(), "children", full, allow_large_drop=allow_large_drop)


def _from_file(conn: Connection, path: Path, mapping: ColumnMapping, kind: str, full: bool | None, **load: Any) -> dict:
    """Read one extract of ``kind`` with the mapping, check every row (refused whole on any
    problem), then load it recording the file's name and SHA-256."""
    loader: Any
    fields_, required, check, loader = {
        "children": (CHILD_FIELDS + LINK_FIELDS, CHILD_REQUIRED, check_children, load_children),
        "gazetteer": (GAZETTEER_FIELDS, GAZETTEER_REQUIRED, lambda r, li, _fmt: check_gazetteer(r, li), load_gazetteer),
        "adults": (ADULT_FIELDS, ADULT_REQUIRED, check_adults, load_adults),
    }[kind]
    km: KindMapping = getattr(mapping, kind)
    rows, lines = _read_rows(path, mapping, km, fields_, required)
    full = km.full_extract if full is None else full
    if full and not rows:  # (an export that failed after its header: every record would go)
        gone = {"children": "mark every child inactive", "gazetteer": "remove every address",
                "adults": "remove every adult"}[kind]
        raise CoreLoadError(f"{kind} extract refused, nothing loaded: no records, and a full extract of none would "
                            f"{gone} (a changes-only extract: --partial)", file=Path(path).name)
    _refuse(check(rows, lines, km.date_format), Path(path).name, f"{kind} extract")
    loaded: dict = loader(conn, rows, full=full, source=Path(path).name,
                          sha256=hashlib.sha256(Path(path).read_bytes()).hexdigest(), **load)
    return loaded


def load_gazetteer(conn: Connection, rows: list[dict], *, full: bool = True, source: str = "records",
                   sha256: str | None = None) -> dict:
    """Upsert the gazetteer (one transaction); a full extract removes addresses it no longer holds."""
    return _upsert(conn, rows, kind="gazetteer", table="core.address_gazetteer", fields_=GAZETTEER_FIELDS,
                   derived={"m_pc": norm_sql("postcode", "postcode")}, full=full, source=source, sha256=sha256)


def _upsert(conn: Connection, rows: list[dict], *, kind: str, table: str, fields_: tuple[str, ...],
            derived: dict[str, str], full: bool, source: str, sha256: str | None) -> dict:
    """COPY checked rows into a temporary table, upsert them into ``table`` on its first field
    (changed rows only), delete what a full extract no longer lists, and record the load."""
    key, cols = fields_[0], ", ".join(fields_)
    exprs = ", ".join(f"{f}::date" if f == "dob" else f for f in fields_)
    extra = "".join(f", {c}" for c in derived)
    with conn.transaction():
        conn.execute("DROP TABLE IF EXISTS pg_temp.extract_in")
        conn.execute(f"CREATE TEMP TABLE extract_in ({', '.join(f + ' text' for f in fields_)}) ON COMMIT DROP")
        with conn.cursor() as cur, cur.copy(f"COPY extract_in ({cols}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(tuple(_text(r.get(f)) for f in fields_))
        updates = ", ".join(f"{f} = EXCLUDED.{f}" for f in fields_[1:] + tuple(derived))
        changed = conn.execute(
            f"""INSERT INTO {table} ({cols}{extra})
                SELECT {exprs}{''.join(', ' + e for e in derived.values())} FROM extract_in
                ON CONFLICT ({key}) DO UPDATE SET {updates}
                WHERE ({', '.join(f'{table}.{f}' for f in fields_)})
                      IS DISTINCT FROM ({', '.join('EXCLUDED.' + f for f in fields_)})""").rowcount
        removed = 0
        if full:
            removed = conn.execute(f"""DELETE FROM {table} t
                                        WHERE NOT EXISTS (SELECT 1 FROM extract_in i WHERE i.{key} = t.{key})""").rowcount
        counts = {"adults" if kind == "adults" else "addresses": len(rows), "changed": changed, "removed": removed}
        conn.execute("INSERT INTO core.load_run (kind, source, sha256, full_extract, counts) "
                     "VALUES (%s, %s, %s, %s, %s)", (kind, source, sha256, full, json.dumps(counts)))
    log.info("%s load %s: %s", kind, source, counts)
    return counts


def load_gazetteer_file(conn: Connection, path: Path, mapping: ColumnMapping | None = None, *, full: bool | None = None) -> dict:
    """Read, check and load a gazetteer CSV (see the module doc); refused whole on any bad row."""
    return _from_file(conn, path, mapping or ColumnMapping(), "gazetteer", full)


def load_adults(conn: Connection, rows: list[dict], *, full: bool = True, source: str = "records",
                sha256: str | None = None) -> dict:
    """Upsert the LA's adults (one transaction); a full extract removes adults it no longer holds
    (``results.carer_match`` keeps its decisions: it names people by id, never by value)."""
    return _upsert(conn, rows, kind="adults", table="core.adult", fields_=ADULT_FIELDS, derived={}, full=full,
                   source=source, sha256=sha256)


def load_adults_file(conn: Connection, path: Path, mapping: ColumnMapping | None = None, *, full: bool | None = None) -> dict:
    """Read, check and load an adults CSV (see the module doc); refused whole on any bad row."""
    return _from_file(conn, path, mapping or ColumnMapping(), "adults", full)


def read_core_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ the drop folder (nightly DAG)
def core_inbox(home: Path | None = None) -> Path:
    """The drop folder the LA's systems write to: ``$B2B_HOME/inbound/core/``."""
    from b2b.db import b2b_home

    return (home or b2b_home()) / "inbound" / "core"




def refresh_from_folder(conn: Connection, folder: Path | None = None) -> dict:
    """Load what the LA dropped in ``folder`` (default :func:`core_inbox`): ``gazetteer*.csv``
    first, then ``children*.csv``, then ``adults*.csv`` (oldest name first), with ``mapping.yaml`` from the folder if
    present. Each loaded file moves to ``done/``; a refused one to ``suspense/`` with a
    ``.reason.txt``, and the refresh then fails with that reason (after the other files)."""
    folder = Path(folder or core_inbox())
    folder.mkdir(parents=True, exist_ok=True)
    mapping_path = folder / "mapping.yaml"
    mapping = ColumnMapping.load(mapping_path if mapping_path.exists() else None)
    results: dict[str, Any] = {"files": 0, "refused": 0}
    errors = []
    for pattern, loader in (("gazetteer*.csv", load_gazetteer_file), ("children*.csv", load_children_file),
                            ("adults*.csv", load_adults_file)):
        for path in sorted(folder.glob(pattern)):
            results["files"] += 1
            try:
                results[path.name] = loader(conn, path, mapping)
            except CoreLoadError as exc:
                results["refused"] += 1
                errors.append(str(exc))
                move_aside(path, folder / "suspense", str(exc))
                log.error("core refresh: %s", exc)
                continue
            move_aside(path, folder / "done")
    if errors:
        raise CoreLoadError(f"{len(errors)} of {results['files']} file(s) refused (moved to suspense/): "
                            + " | ".join(errors), file=str(folder.name))
    return results
