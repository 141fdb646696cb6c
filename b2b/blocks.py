"""The project's vocabulary, once: block types, their names on the wire and in staging, and
the fields compared between a school's record and the LA's.

Everything that needs one of these lists reads it from here:

* the parsers (``b2b.ingest.messages``) map SIMS 7 elements and SIMS Primary data groups
  to block types with :data:`BLOCKS`;
* the load stage (``b2b.ingest.load``) builds its ``INSERT … SELECT`` per staging table
  from each block's :class:`Column` list (:func:`load_sql`);
* conflicts, Clear Conflicts, officer resolution, returns to school and the match
  explanations compare values with the one "same value" rule of :class:`Compared`
  (:func:`same_value` in Python, :func:`same_sql` in SQL);
* return to school sends the :data:`RETURNABLE` fields (F28).

Adding a block type is one :class:`BlockType` entry here plus the SQL migration that
creates its staging table (and an expectation suite). Adding a compared field is one
:class:`Compared` entry (plus its column in ``core.child`` if the LA does not hold it yet).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any


# ------------------------------------------------------------------ block types
@dataclass(frozen=True)
class Column:
    """One staging column: its JSON key in the block (or list item) and how it is typed."""

    name: str
    key: str | None = None   # JSON key; default: the column name
    cast: str = "text"       # text | date | bool | int | json
    from_block: bool = False  # list blocks: read from the block itself, not the item

    def sql(self, item: str, block: str) -> str:
        src = block if self.from_block else item
        key = self.key or self.name
        if self.cast == "json":
            return f"{src}->'{key}'"
        text = f"{src}->>'{key}'"
        return {"text": text, "date": f"staging.try_date({text})", "bool": f"staging.try_bool({text})",
                "int": f"staging.try_int({text})"}[self.cast]


@dataclass(frozen=True)
class BlockType:
    """One kind of data block a school sends about one student."""

    name: str                  # canonical block type, raw.inbound_block.block_type
    xml: str                   # SIMS 7 element of the pupil
    primary_group: str | None  # SIMS Primary data group (None: not served by the API)
    staging: str               # staging table
    columns: tuple[Column, ...]
    list_key: str | None = None  # list block: one staging row per item of content[list_key]


def _cols(*names: str, cast: str = "text") -> tuple[Column, ...]:
    return tuple(Column(n, cast=cast) for n in names)


BLOCKS: tuple[BlockType, ...] = (
    BlockType("student", "StudentCore", "student", "student", (
        *_cols("upn", "surname", "forename", "middle_names", "preferred_surname", "preferred_forename"),
        Column("dob", cast="date"),
        *_cols("gender", "ethnicity", "first_language", "home_language", "religion", "ncy", "reg_group",
               "enrol_status"),
        *_cols("start_date", "end_date", cast="date"),
        *_cols("eal", "gifted_talented", "service_child", "traveller", "connexions_assent", "looked_after",
               cast="bool"),
        Column("sen_status"),
    )),
    BlockType("address", "Address", "address", "address", (
        *_cols("paon", "saon", "street", "locality", "town", "county", "postcode"),
        Column("start_date", cast="date"),
    )),
    BlockType("contacts", "Contacts", "contacts", "contact", (
        *_cols("person_id", "title", "forename", "surname", "gender", "relationship"),
        Column("parental_responsibility", cast="bool"), Column("priority", cast="int"),
        Column("is_staff", cast="bool"),
        *_cols("addresses", "telephones", "emails", cast="json"),
    ), list_key="contacts"),
    BlockType("sen", "SEN", "sen", "sen_need", (
        Column("start_date", cast="date", from_block=True), Column("type"), Column("ranking", cast="int"),
    ), list_key="needs"),
    BlockType("exclusions", "Exclusions", "exclusions", "exclusion", (
        Column("category"), *_cols("start_date", "end_date", cast="date"), *_cols("reason", "term"),
        *_cols("academic_year", "sessions", cast="int"),
    ), list_key="exclusions"),
    BlockType("attendance", "Attendance", "attendance", "attendance", (
        Column("academic_year", cast="int"), Column("start_date", cast="date"), Column("marks"),
        Column("changes", cast="json"),
    )),
    BlockType("attainment", "Attainment", None, "attainment", (
        *_cols("hierarchy", "aspect", "result"), Column("result_date", cast="date"),
    ), list_key="results"),
)

BY_NAME: dict[str, BlockType] = {b.name: b for b in BLOCKS}
BLOCK_TYPES: tuple[str, ...] = tuple(b.name for b in BLOCKS)
XML_BLOCKS: dict[str, str] = {b.xml: b.name for b in BLOCKS}
PRIMARY_GROUPS: tuple[str, ...] = tuple(b.primary_group for b in BLOCKS if b.primary_group)
STAGING_TABLES: tuple[str, ...] = tuple(b.staging for b in BLOCKS)
#: the JSON key holding a list block's items (used by validation to flatten items)
LIST_KEYS: dict[str, str] = {b.name: b.list_key for b in BLOCKS if b.list_key}


def load_sql(block: BlockType) -> str:
    """``INSERT INTO staging.<table> … SELECT`` of the run's pending blocks of this type
    (parameter ``%(files)s``: the run's file ids). List blocks give one row per item."""
    cols = ", ".join(c.name for c in block.columns)
    vals = ", ".join(c.sql("e.v", "b.content") for c in block.columns)
    if block.list_key:
        return (f"INSERT INTO staging.{block.staging} (file_id, ordinal, item, base_id, student_guid, {cols}) "
                f"SELECT b.file_id, b.ordinal, e.n, b.base_id, b.student_guid, {vals} "
                f"FROM raw.inbound_block b CROSS JOIN LATERAL jsonb_array_elements("
                f"coalesce(b.content->'{block.list_key}', '[]')) WITH ORDINALITY AS e(v, n) "
                f"WHERE b.file_id = ANY(%(files)s) AND b.block_type = '{block.name}' AND b.disposition = 'pending'")
    vals = ", ".join(c.sql("b.content", "b.content") for c in block.columns)
    return (f"INSERT INTO staging.{block.staging} (file_id, ordinal, base_id, student_guid, {cols}) "
            f"SELECT b.file_id, b.ordinal, b.base_id, b.student_guid, {vals} "
            f"FROM raw.inbound_block b "
            f"WHERE b.file_id = ANY(%(files)s) AND b.block_type = '{block.name}' AND b.disposition = 'pending'")


# ------------------------------------------------------------------ compared fields
@dataclass(frozen=True)
class Compared:
    """A field compared between the school's latest value and the LA's (F17).

    ``kind`` fixes the one "same value" rule: ``name`` compares case-insensitively after
    trimming ("DAVIDS" = "Davids", as in the LA guidance), ``postcode`` ignores case and
    spaces, ``date`` compares ISO dates, ``code`` compares trimmed values exactly.
    """

    name: str
    block: str          # the block (staging table) the school's value comes from
    kind: str           # name | postcode | date | code
    returnable: bool    # F28: sent back to the school when an officer keeps the LA's value
    xml: str            # element name in a B2BReturn message / report label
    label: str          # how a person reads it (screens, school reports)


COMPARED: tuple[Compared, ...] = (
    Compared("upn", "student", "code", True, "UPN", "UPN"),
    Compared("forename", "student", "name", True, "Forename", "Forename"),
    Compared("middle_names", "student", "name", True, "MiddleNames", "Middle names"),
    Compared("surname", "student", "name", True, "Surname", "Surname"),
    Compared("gender", "student", "code", True, "Gender", "Gender"),
    Compared("dob", "student", "date", True, "DOB", "Date of birth"),
    Compared("ethnicity", "student", "code", False, "Ethnicity", "Ethnicity"),
    Compared("first_language", "student", "code", False, "FirstLanguage", "First language"),
    Compared("paon", "address", "name", True, "PAON", "House name or number"),
    Compared("street", "address", "name", True, "Street", "Street"),
    Compared("postcode", "address", "postcode", True, "Postcode", "Postcode"),
)
COMPARED_BY_NAME: dict[str, Compared] = {c.name: c for c in COMPARED}
CONFLICT_FIELDS: tuple[str, ...] = tuple(c.name for c in COMPARED)
STUDENT_COMPARED: tuple[str, ...] = tuple(c.name for c in COMPARED if c.block == "student")
ADDRESS_COMPARED: tuple[str, ...] = tuple(c.name for c in COMPARED if c.block == "address")
#: F28: fields returned to the school; address fields are returned as the LA's whole address
RETURNABLE: tuple[str, ...] = tuple(c.name for c in COMPARED if c.returnable)
#: the returned student fields in the order of B2BReturn's XSD sequence
RETURNED_STUDENT: tuple[str, ...] = ("upn", "surname", "forename", "middle_names", "gender", "dob")
assert set(RETURNED_STUDENT) == {c.name for c in COMPARED if c.returnable and c.block == "student"}
#: the LA address sent with a returned address field (town travels with the compared ones)
ADDRESS_SENT: tuple[str, ...] = ("paon", "street", "town", "postcode")
#: fields the school owns: applied to the LA's current view for matched students, never conflicts
SCHOOL_FIELDS: tuple[str, ...] = (
    "preferred_forename", "preferred_surname", "home_language", "religion", "sen_status", "ncy", "enrol_status",
    "reg_group", "start_date", "end_date", "looked_after", "eal", "gifted_talented", "service_child", "traveller",
    "connexions_assent")
#: the LA address columns the apply stage overlays
APPLIED_ADDRESS: tuple[str, ...] = ("paon", "saon", "street", "locality", "town", "county", "postcode")
#: human labels of every field a person may see, compared or not
XML_NAMES: dict[str, str] = {**{c.name: c.xml for c in COMPARED}, "town": "Town"}


def text_sql(field: str, expr: str) -> str:
    """The text form of a column as stored in conflict rows (dates as YYYY-MM-DD)."""
    return f"to_char({expr}, 'YYYY-MM-DD')" if COMPARED_BY_NAME[field].kind == "date" else expr


def norm_sql(field: str, text_expr: str) -> str:
    """The one "same value" normalisation, in SQL, of a value's text form."""
    return kind_norm_sql(COMPARED_BY_NAME[field].kind, text_expr)


def kind_norm_sql(kind: str, text_expr: str) -> str:
    """The normalisation of one kind of value (``name``, ``postcode``, ``date``, ``code``): what
    conflicts compare, and what other comparisons of the same kind (the gazetteer's address
    lines and postcodes, ``saon``) must use too."""
    if kind == "name":
        return f"lower(btrim({text_expr}))"
    if kind == "postcode":
        return f"upper(replace({text_expr}, ' ', ''))"
    return f"btrim({text_expr})"


def same_sql(field: str, la_text: str, inc_text: str) -> str:
    """SQL true when two text forms are the same value of ``field``."""
    return f"{norm_sql(field, la_text)} = {norm_sql(field, inc_text)}"


def compare_sql(field: str, la: str, inc: str) -> str:
    """A ``(field, la_value, incoming_value, same)`` row for ``VALUES`` over two columns."""
    la_t, inc_t = text_sql(field, la), text_sql(field, inc)
    return f"('{field}', {la_t}, {inc_t}, {same_sql(field, la_t, inc_t)})"


def as_text(field: str, value: Any) -> str | None:
    """The text form of a Python value (dates as YYYY-MM-DD), as conflict rows hold it."""
    if value is None:
        return None
    if isinstance(value, (date, datetime)):
        return value.strftime("%Y-%m-%d")
    return str(value)


def normalise(field: str, value: Any) -> str | None:
    """The one "same value" normalisation, in Python (mirrors :func:`norm_sql`)."""
    text = as_text(field, value)
    if text is None:
        return None
    kind = COMPARED_BY_NAME[field].kind
    if kind == "name":
        return text.strip().lower()
    if kind == "postcode":
        return text.replace(" ", "").upper()
    return text.strip()


def same_value(field: str, a: Any, b: Any) -> bool:
    """True when two values are the same value of ``field``. A missing value (None) is never
    a difference: a conflict needs both sides, as in :func:`compare_sql`'s callers."""
    na, nb = normalise(field, a), normalise(field, b)
    if na is None or nb is None:
        return True
    return na == nb
