"""Parse inbound messages into canonical data blocks (docs/protocol.md).

* SIMS 7 XML is parsed **streaming** (``lxml.etree.iterparse``, one ``<Pupil>`` at a
  time, cleared after use), validated against ``include/schemas/b2b_message.xsd`` while
  it streams, with entity resolution, DTD loading and network access off. A document
  with a ``<!DOCTYPE`` is refused outright: B2B messages never carry one, and that is
  where external-entity and "billion laughs" attacks live.
* SIMS Primary JSON pages are checked for shape and turned into the same blocks.

Errors raise :class:`MessageError` with a reason that names the message part and the
pupil ordinal but never personal data.
"""
from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache

from b2b import INCLUDE
from b2b.blocks import PRIMARY_GROUPS, XML_BLOCKS
from b2b.errors import IngestError

# Elements whose children form a list.
LIST_CONTAINERS = {"Contacts", "Addresses", "Telephones", "Emails", "Needs", "Exclusions", "Results"}
SPECIAL_NAMES = {
    "UPN": "upn", "DOB": "dob", "NCY": "ncy", "EAL": "eal",
    "SENStatus": "sen_status", "PAON": "paon", "SAON": "saon",
    "ApplicationReference": "guid", "LEA": "lea",
}
BOOL_KEYS = {
    "eal", "gifted_talented", "service_child", "traveller", "connexions_assent",
    "looked_after", "parental_responsibility", "is_staff", "primary", "main",
}
INT_KEYS = {"ranking", "sessions", "academic_year", "priority"}
XSD_PATH = INCLUDE / "schemas" / "b2b_message.xsd"

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class MessageError(IngestError):
    """A message that cannot be imported. ``reason`` is safe to log (no personal data)."""

    def __init__(self, reason: str, *, pupil: int | None = None, line: int | None = None,
                 base: str | None = None, file: object | None = None):
        self.reason = reason
        self.pupil = pupil
        self.line = line
        where = []
        if pupil is not None:
            where.append(f"pupil #{pupil}")
        if line is not None:
            where.append(f"line {line}")
        super().__init__(reason + (f" ({', '.join(where)})" if where else ""), base=base, file=file,
                         record=None if pupil is None else f"pupil #{pupil}")

    def __str__(self) -> str:  # the position is already in the message
        return self.message


@dataclass(frozen=True)
class Block:
    block_type: str
    student_guid: str
    content: dict


@dataclass
class ParsedMessage:
    header: dict
    blocks: list[Block] = field(default_factory=list)
    pupils: int = 0


@lru_cache(maxsize=4096)  # a small vocabulary of tags, converted on every element (issue 15)
def xml_key(tag: str) -> str:
    """``MiddleNames`` -> ``middle_names``; ``UPN`` -> ``upn``."""
    if tag in SPECIAL_NAMES:
        return SPECIAL_NAMES[tag]
    return _CAMEL.sub("_", tag).lower()


def _typed(key: str, text: str | None):
    if text is None:
        return None
    text = text.strip()
    if key in BOOL_KEYS:
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise MessageError(f"field {key}: expected true/false")
    if key in INT_KEYS:
        try:
            return int(text)
        except ValueError:
            raise MessageError(f"field {key}: expected a whole number") from None
    return text


def _convert(el):
    """An XML element to canonical JSON-able data (recursive, small subtrees only)."""
    if el.tag in LIST_CONTAINERS:  # an empty container is an empty list, not a missing value
        return [_convert(c) for c in el]
    if not len(el):  # (no list of children built: this runs on every element)
        return _typed(xml_key(el.tag), el.text)
    return {xml_key(c.tag): _convert(c) for c in el}


def _block_content(el) -> dict:
    value = _convert(el)
    if isinstance(value, list):  # Contacts / Exclusions are lists at block level
        return {xml_key(el.tag): value}
    if not isinstance(value, dict):
        return {}
    return value


@lru_cache(maxsize=1)
def message_schema():
    from lxml import etree

    return etree.XMLSchema(etree.parse(str(XSD_PATH)))


def _check_prolog(content: bytes) -> None:
    head = content[:4096]
    first_el = re.search(rb"<[A-Za-z_]", head)
    prolog = head[: first_el.start()] if first_el else head
    if _DOCTYPE.search(prolog):
        raise MessageError("document type declarations (DTD/entities) are not allowed in B2B messages")


def parse_sims7(content: bytes, *, expected_base: str | None = None, validate: bool = True) -> ParsedMessage:
    """Parse one SIMS 7 XML message into blocks. Raises MessageError; never partial."""
    from lxml import etree

    if not content or not content.strip():
        raise MessageError("empty message")
    _check_prolog(content)
    kwargs = dict(
        events=("end",),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    if validate:
        kwargs["schema"] = message_schema()
    parsed = ParsedMessage(header={})
    root_seen = False
    checked_doctype = False
    try:
        for _event, el in etree.iterparse(io.BytesIO(content), **kwargs):
            if not checked_doctype:
                # the prolog check above only looks at the first 4 KiB; this sees all of it
                checked_doctype = True
                if el.getroottree().docinfo.doctype:
                    raise MessageError(
                        "document type declarations (DTD/entities) are not allowed in B2B messages")
            if el.tag == "Header":
                parsed.header = _convert(el)
                el.clear()
            elif el.tag == "Pupil":
                parsed.pupils += 1
                guid_el = el.find("ApplicationReference")
                guid = (guid_el.text or "").strip() if guid_el is not None else ""
                if not guid:
                    raise MessageError("pupil without ApplicationReference (MIS GUID)", pupil=parsed.pupils)
                for child in el:
                    btype = XML_BLOCKS.get(child.tag)
                    if btype is None:
                        continue
                    try:
                        parsed.blocks.append(Block(btype, guid, _block_content(child)))
                    except MessageError as exc:
                        raise MessageError(f"{btype} block: {exc.reason}", pupil=parsed.pupils) from None
                el.clear()
                # free the processed siblings too: constant memory on big schools
                while el.getprevious() is not None:
                    del el.getparent()[0]
            elif el.getparent() is None:
                root_seen = True
                if el.tag != "B2BMessage":
                    raise MessageError(f"root element is <{el.tag}>, expected <B2BMessage>")
    except etree.XMLSyntaxError as exc:
        line = getattr(exc, "lineno", None)
        msg = str(exc.msg if hasattr(exc, "msg") else exc)
        kind = "does not match the B2B message schema" if "Element" in msg or "element" in msg else "is not well-formed XML"
        raise MessageError(f"message {kind}: {_scrub(msg)}", pupil=parsed.pupils or None, line=line) from None
    if not root_seen:
        raise MessageError("no B2BMessage root element")
    if not parsed.header:
        raise MessageError("message has no Header")
    if expected_base:
        school = parsed.header.get("source_school") or {}
        got = f"{school.get('lea', '')}{school.get('estab', '')}"
        if got != expected_base:
            raise MessageError(f"message is from base {got or '?'}, expected {expected_base}")
    return parsed


def _scrub(msg: str) -> str:
    """Drop quoted values from lxml messages: they may be personal data (a name, a DOB)."""
    msg = re.sub(r"'[^']*'", "'…'", msg)
    return msg[:300]


def parse_primary_page(content: bytes, *, expected_group: str | None = None) -> ParsedMessage:
    """Parse one SIMS Primary data-group page (JSON) into blocks."""
    try:
        data = json.loads(content)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(f"page is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise MessageError("page has no 'items' list")
    group = data.get("dataGroup")
    if group not in PRIMARY_GROUPS:
        raise MessageError(f"unknown data group {group!r}")
    if expected_group and group != expected_group:
        raise MessageError(f"page is for data group {group}, expected {expected_group}")
    parsed = ParsedMessage(header={k: v for k, v in data.items() if k != "items"})
    for i, item in enumerate(data["items"], start=1):
        if not isinstance(item, dict) or not item.get("studentId") or not isinstance(item.get("data"), dict):
            raise MessageError("item without studentId or data", pupil=i)
        parsed.pupils += 1
        parsed.blocks.append(Block(group, str(item["studentId"]), item["data"]))
    return parsed
