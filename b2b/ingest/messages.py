"""Parse inbound messages into canonical data blocks (docs/protocol.md).

* SIMS 7 XML is validated against ``include/schemas/b2b_message.xsd`` by libxml2, with
  entity resolution, DTD loading and network access off: a valid message (nearly every one)
  in one parse of its tree (the fast path, ``_parse_valid``); anything else **streaming**
  (``lxml.etree.iterparse``, one ``<Pupil>`` at a time, cleared after use), which gives the
  exact error or rejects exactly the bad pupils. A document
  with a ``<!DOCTYPE`` is refused outright: B2B messages never carry one, and that is
  where external-entity and "billion laughs" attacks live.
* SIMS Primary JSON pages are checked for shape and turned into the same blocks.

Errors raise :class:`MessageError` with a reason that names the message part and the
pupil ordinal but never personal data.
"""
from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from b2b import INCLUDE, gc_control
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
                 base: str | None = None, file: object | None = None) -> None:
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
    pupil: int = 0  # the pupil's position in its message (SIMS 7 <Pupil>, SIMS Primary item), from 1


@dataclass(frozen=True)
class RejectedPupil:
    """A pupil of a sound message that failed the schema or a type (item 11): not imported,
    reported as an error anomaly; the message's other pupils go on. No value, only where."""

    pupil: int           # position in the message, from 1
    student_guid: str
    field: str           # the element at fault (e.g. ``DOB``; a SIMS Primary key path, e.g. ``surname``)
    line: int | None
    reason: str          # safe to log: element, rule and line, never the value
    block_type: str = "student"  # of the anchor block the anomaly points at (SIMS Primary: the data group)

    @property
    def detail(self) -> str:
        return f"pupil #{self.pupil}" + (f", line {self.line}" if self.line else "") + f": {self.reason}"


@dataclass
class ParsedMessage:
    header: dict
    blocks: list[Block] = field(default_factory=list)
    pupils: int = 0
    rejected: list[RejectedPupil] = field(default_factory=list)
    #: a SIMS Primary page held a number that is not finite (NaN, ±Infinity, or a float too big):
    #: the pupil holding it is rejected; the page's blocks are written by ``json.dumps``, as before issue 15
    nonfinite: bool = False


@lru_cache(maxsize=4096)  # a small vocabulary of tags, converted on every element (issue 15)
def xml_key(tag: str) -> str:
    """``MiddleNames`` -> ``middle_names``; ``UPN`` -> ``upn``."""
    if tag in SPECIAL_NAMES:
        return SPECIAL_NAMES[tag]
    return _CAMEL.sub("_", tag).lower()


def _typed(key: str, text: str | None) -> Any:
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


def _convert(el: Any) -> Any:
    """An XML element to canonical JSON-able data (recursive, small subtrees only)."""
    if el.tag in LIST_CONTAINERS:  # an empty container is an empty list, not a missing value
        return [_convert(c) for c in el]
    if not len(el):  # (no list of children built: this runs on every element)
        return _typed(xml_key(el.tag), el.text)
    return {xml_key(c.tag): _convert(c) for c in el}


def _block_content(el: Any) -> dict:
    value = _convert(el)
    if isinstance(value, list):  # Contacts / Exclusions are lists at block level
        return {xml_key(el.tag): value}
    if not isinstance(value, dict):
        return {}
    return value


XS = "{http://www.w3.org/2001/XMLSchema}"


@lru_cache(maxsize=1)
def message_schema() -> Any:
    from lxml import etree

    return etree.XMLSchema(etree.parse(str(XSD_PATH)))


@lru_cache(maxsize=1)
def part_schema() -> Any:
    """The message schema with ``Header`` and ``Pupil`` also declared as top-level elements, so
    the header and each pupil are validated on their own as the message streams: a pupil-level
    error then names its pupil, element and line, and rejects only that pupil."""
    from lxml import etree

    doc = etree.parse(str(XSD_PATH))
    for name in ("Header", "Pupil"):
        etree.SubElement(doc.getroot(), f"{XS}element", name=name, type=name)
    return etree.XMLSchema(doc)


def _check_prolog(content: bytes) -> None:
    head = content[:4096]
    first_el = re.search(rb"<[A-Za-z_]", head)
    prolog = head[: first_el.start()] if first_el else head
    if _DOCTYPE.search(prolog):
        raise MessageError("document type declarations (DTD/entities) are not allowed in B2B messages")


#: quoted tokens of lxml/libxml2 messages kept in error text: schema types, facet names and
#: numbers (lengths); every other quoted token may be a value (a name, a DOB) and is dropped
_SAFE_TOKEN = re.compile(r"^([<>/]|xs:[A-Za-z]+|[0-9]+|maxLength|minLength|length|pattern|enumeration|"
                         r"minInclusive|maxInclusive|totalDigits|fractionDigits)$")


def _scrub(msg: str) -> str:
    """An lxml message without values: the element name (``Element 'DOB':``) is kept, every
    quoted value is replaced by '…' (it may be personal data), and the length is capped."""
    msg = msg.strip()
    m = re.match(r"Element '([^']{1,100})'(.*)", msg, re.S)
    head, rest = (f"element <{m.group(1)}>", m.group(2)) if m else ("", msg)
    rest = re.sub(r"'([^']*)'", lambda q: q.group(0) if _SAFE_TOKEN.match(q.group(1)) else "'…'", rest)
    # a value not in quotes: "The value has a length of…" is safe, "value X" after 'of the set' is not
    rest = re.sub(r"\{[^}]*\}", "{…}", rest)
    out = (head + rest).strip()
    return out[:300]


def _schema_error(schema: Any, el: Any) -> tuple[str, int | None, str] | None:
    """(element, line, reason) of the first schema error of ``el`` (validated on its own), or None."""
    if schema.validate(el):
        return None
    err = schema.error_log[0]
    m = re.match(r"Element '([^']{1,100})'", err.message or "")
    element = m.group(1) if m else el.tag
    return element, (err.line or None), _scrub(err.message or "does not match the schema")


def _xml_syntax(exc: BaseException, pupil: int | None) -> MessageError:
    """A clear error for a document that is not well-formed XML: bad bytes, not XML, broken."""
    errors = list(getattr(exc, "error_log", None) or [])
    last = errors[-1] if errors else None
    type_name = getattr(last, "type_name", "") or ""
    line = getattr(exc, "lineno", None) or getattr(last, "line", None) or None
    msg = str(getattr(exc, "msg", None) or exc)
    msg = re.sub(r", line \d+, column \d+$", "", msg)
    # libxml2 quotes the document after some messages: an unfinished CDATA section's text on the
    # next line (a pupil's name and address, found by a fault sweep), the bytes of a bad encoding
    msg = msg.split("\n", 1)[0]
    msg = re.sub(r"Bytes:(\s*0x[0-9A-Fa-f]{2})+", "Bytes: …", msg)
    if "ENCODING" in type_name or "encoding" in msg.lower() or "invalid char" in msg.lower():
        kind = "is not valid UTF-8 (or its declared encoding)"
    elif type_name == "ERR_DOCUMENT_EMPTY" or "Start tag expected" in msg:
        kind = "is not XML"
    else:
        kind = "is not well-formed XML"
    return MessageError(f"message {kind}: {_scrub(msg)}", pupil=pupil, line=line)


#: the biggest SIMS 7 message the fast path takes (its tree is ~9x the message; a big school's
#: snapshot is ~1.6 MB): a bigger one streams through the careful path, in bounded memory
FAST_PATH_MAX_BYTES = 8 * 1024 * 1024


def parse_sims7(content: bytes, *, expected_base: str | None = None, validate: bool = True,
                on_pupil: Callable[[list[Block] | None], None] | None = None) -> ParsedMessage:
    """Parse one SIMS 7 XML message into blocks. Raises MessageError; never partial.

    A message that is valid as a whole (nearly every one) takes the fast path
    (:func:`_parse_valid`): one parse validated against the whole-message schema in libxml2,
    blocks converted by :func:`_fast_block`. Anything unusual on that path (not
    well-formed, not valid, a DTD, a pupil without id, a value a type refuses) sends the
    message through the streaming parser below, which gives the exact error, or rejects
    exactly the bad pupil(s) by element and line; both give the same blocks.

    ``on_pupil``, if given, is called with the blocks so far after each pupil of the fast path
    (so that they can be written while the rest is parsed), and with None if the fast path
    gives up: the blocks it was shown are then void (the careful path's result stands).

    The fast path holds the message's whole tree (about 9x its size); a message over
    ``FAST_PATH_MAX_BYTES`` (a school of over ~10,000 pupils) streams through the careful
    path instead, in bounded memory.
    """
    if not content or not content.strip():
        raise MessageError("empty message")
    _check_prolog(content)
    parsed = _parse_valid(content, on_pupil) if validate and len(content) <= FAST_PATH_MAX_BYTES else None
    if parsed is None:
        if on_pupil is not None:
            on_pupil(None)
        parsed = _parse_streaming(content, validate=validate)
    if expected_base:
        school = parsed.header.get("source_school") or {}
        got = f"{school.get('lea', '')}{school.get('estab', '')}"
        if got != expected_base:
            raise MessageError(f"message is from base {got or '?'}, expected {expected_base}")
    return parsed


def _parse_streaming(content: bytes, *, validate: bool) -> ParsedMessage:
    """The careful path: the reference for the blocks, the errors and the rejections.

    The document streams through a plain (non-validating, hardened) parser, so a document
    that is not well-formed gets the parser's own error and line. The envelope is checked as
    it streams (root ``<B2BMessage version>``, then ``<Header>``, then ``<Pupils>`` of
    ``<Pupil>``); the header and each pupil are validated against the XSD on their own. A
    pupil that fails the schema or a type (item 11) is *rejected*: listed in
    ``ParsedMessage.rejected`` with its position, element and line, its blocks left out,
    the other pupils kept. Anything else wrong raises :class:`MessageError` (the file goes
    to suspense).
    """
    from lxml import etree

    schema = part_schema() if validate else None
    parsed = ParsedMessage(header={})
    root = None
    last_pupil = None  # the last complete <Pupil> (kept until the next one ends)
    seen_header = seen_pupils = False
    try:
        # "end" events only (start events cost ~8 % more): the root is checked at its first
        # child's end, and the pupil being read at an error is found in the partial tree
        for _event, el in etree.iterparse(io.BytesIO(content), events=("end",), resolve_entities=False,
                                          no_network=True, load_dtd=False, huge_tree=False, remove_comments=True,
                                          remove_pis=True):
            if root is None:
                root = el.getroottree().getroot()
                if el.getroottree().docinfo.doctype:
                    # the prolog check above only looks at the first 4 KiB; this sees all of it
                    raise MessageError("document type declarations (DTD/entities) are not allowed in B2B messages")
                if root.tag != "B2BMessage":
                    raise MessageError(f"root element is <{root.tag}>, expected <B2BMessage>", line=root.sourceline)
                if validate and "version" not in root.attrib:
                    raise MessageError("<B2BMessage> has no version attribute", line=root.sourceline)
            parent = el.getparent()
            if el.tag == "Pupil" and parent is not None and parent.tag == "Pupils":
                parsed.pupils += 1
                _take_pupil(el, parsed, schema)
                el.clear()
                last_pupil = el
                # free the processed siblings too: constant memory on big schools
                while el.getprevious() is not None:
                    del parent[0]
            elif parent is root and el is not root:
                if el.tag == "Header" and not seen_header and not seen_pupils:
                    seen_header = True
                    if schema is not None:
                        bad = _schema_error(schema, el)
                        if bad:
                            raise MessageError(f"message header does not match the B2B message schema: {bad[2]}",
                                               line=bad[1])
                    parsed.header = _convert(el)
                    el.clear()
                elif el.tag == "Pupils" and not seen_pupils and (seen_header or not validate):
                    seen_pupils = True
                elif validate or el.tag not in ("Header", "Pupils"):
                    raise MessageError(f"unexpected element <{el.tag}> in <B2BMessage> "
                                       "(expected <Header> then <Pupils>)", line=el.sourceline)
            elif parent is not None and parent.tag == "Pupils" and parent.getparent() is root:
                raise MessageError(f"unexpected element <{el.tag}> in <Pupils>", line=el.sourceline)
    except etree.XMLSyntaxError as exc:
        raise _xml_syntax(exc, _reading(root, last_pupil, parsed.pupils)) from None
    except ValueError as exc:  # lxml refuses some inputs before parsing (e.g. a bad encoding name)
        raise MessageError(f"message is not XML: {_scrub(str(exc))}") from None
    if root is None:
        raise MessageError("no B2BMessage root element")
    if not parsed.header:
        raise MessageError("message has no Header")
    if validate and not seen_pupils:
        raise MessageError("message has no <Pupils> element")
    return parsed


def _reading(root: Any, last_pupil: Any, complete: int) -> int | None:
    """The position of the pupil being read when the parser stopped, from the partial tree
    (None when the parser was not inside a ``<Pupil>``)."""
    if root is None:
        return None
    pupils = root.find("Pupils")
    if pupils is None or not len(pupils) or pupils[-1].tag != "Pupil" or pupils[-1] is last_pupil:
        return None
    return complete + 1


def _take_pupil(el: Any, parsed: ParsedMessage, schema: Any) -> None:
    """One complete ``<Pupil>``: its blocks, or a rejection naming where it failed."""
    pos = parsed.pupils
    guid_el = el.find("ApplicationReference")
    guid = (guid_el.text or "").strip() if guid_el is not None else ""
    if not guid:
        # without its id a pupil cannot be reported or matched: the message is malformed
        raise MessageError("pupil without ApplicationReference (MIS GUID)", pupil=pos, line=el.sourceline)
    if schema is not None:
        bad = _schema_error(schema, el)
        if bad:
            parsed.rejected.append(RejectedPupil(pos, guid, bad[0], bad[1], bad[2]))
            return
    blocks = []
    for child in el:
        btype = XML_BLOCKS.get(child.tag)
        if btype is None:
            continue
        try:
            blocks.append(Block(btype, guid, _block_content(child), pos))
        except MessageError as exc:
            parsed.rejected.append(RejectedPupil(pos, guid, child.tag, child.sourceline,
                                                 f"{btype} block: {exc.reason}"))
            return
    parsed.blocks.extend(blocks)


#: tag -> JSON key, filled as tags are met (a valid message's vocabulary is the schema's: a few dozen)
_KEYS: dict[str, str] = {}
_TYPED_KEYS = BOOL_KEYS | INT_KEYS


def _fast_dict(el: Any) -> dict:
    """``_convert`` of an element with children that is not a list container, unrolled one
    level: a leaf child is converted in line (no call per leaf). Same result as ``_convert``."""
    out: dict[str, Any] = {}
    for c in el:
        tag = c.tag
        key = _KEYS.get(tag)
        if key is None:
            key = xml_key(tag)
            if len(_KEYS) < 4096:  # bounded: an invalid message (judged at its end) may hold any tag
                _KEYS[tag] = key
        if tag in LIST_CONTAINERS:
            out[key] = [_fast_value(x) for x in c]
        elif len(c):
            out[key] = _fast_dict(c)
        else:
            text = c.text
            if text is None:
                out[key] = None
            elif key in _TYPED_KEYS:
                out[key] = _typed(key, text)
            else:
                out[key] = text.strip()
    return out


def _fast_value(el: Any) -> Any:
    """``_convert`` of any element (a list item)."""
    if el.tag in LIST_CONTAINERS:
        return [_fast_value(x) for x in el]
    if len(el):
        return _fast_dict(el)
    return _typed(xml_key(el.tag), el.text)


def _fast_block(el: Any) -> dict:
    """``_block_content`` through the unrolled converter."""
    if el.tag in LIST_CONTAINERS:
        return {xml_key(el.tag): [_fast_value(x) for x in el]}
    if len(el):
        return _fast_dict(el)
    return {}


def _valid_tree(content: bytes) -> Any:
    """The message's tree, validated against the whole-message schema by libxml2 as it parses
    (hardened as the streaming parser: no entities, DTD or network; comments and PIs dropped)."""
    from lxml import etree

    parser = etree.XMLParser(schema=message_schema(), resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, remove_comments=True, remove_pis=True)
    return etree.fromstring(content, parser)


def _parse_valid(content: bytes, on_pupil: Callable[[list[Block]], None] | None = None) -> ParsedMessage | None:
    """The fast path (issue 15): the whole message parsed and validated in libxml2 (one
    ``fromstring`` with the schema: half the CPU of a validating ``iterparse``), then each pupil's
    blocks built by the unrolled converter (:func:`_fast_block`), with the cyclic collector
    paused (``b2b.gc_control.paused``: blocks are acyclic JSON data, and so is the tree, yet
    every 700 allocations the collector walked the young ones, 12-25 % of the conversion's CPU;
    a school's blocks, promoted while alive, counted towards full collections over everything
    the process keeps alive). None when the message
    is not valid as a whole or anything else is unusual: the streaming parser then judges it (the
    exact error, or the bad pupils rejected by element and line). A message is a school, about
    1 MB: its tree is a few MB, freed as soon as its blocks are built."""
    with gc_control.paused():
        return _build_valid(content, on_pupil)


def _build_valid(content: bytes, on_pupil: Callable[[list[Block]], None] | None) -> ParsedMessage | None:
    try:
        root = _valid_tree(content)
        if root.getroottree().docinfo.doctype or root.tag != "B2BMessage" or len(root) != 2:
            return None
        header_el, pupils = root[0], root[1]
        if header_el.tag != "Header" or pupils.tag != "Pupils":
            return None
        parsed = ParsedMessage(header=_convert(header_el))
        if not parsed.header:
            return None
        blocks = parsed.blocks
        for pos, el in enumerate(pupils, start=1):
            parsed.pupils = pos
            if el.tag != "Pupil":
                return None
            guid_el = el.find("ApplicationReference")
            guid = (guid_el.text or "").strip() if guid_el is not None else ""
            if not guid:
                return None
            for child in el:
                tag = child.tag
                btype = XML_BLOCKS.get(tag)
                if btype is not None:
                    blocks.append(Block(btype, guid, _fast_block(child), pos))
            if on_pupil is not None:
                on_pupil(blocks)
    except Exception:  # noqa: BLE001 - not well-formed, not valid, a value refused: the streaming parser judges
        return None
    return parsed


#: text PostgreSQL cannot store (``text`` and ``jsonb`` refuse both): NUL, and a UTF-16 surrogate
#: (JSON's ``\ud800`` unpaired: not a character, not encodable as UTF-8)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: a key named in an anomaly's field as it is; any other key (it may hold anything) is shown as ``?``
_SAFE_KEY = re.compile(r"[A-Za-z0-9_]{1,64}")
#: how deep a pupil's SIMS Primary data may nest (real data groups: 4 levels; the JSON parser's
#: limit is ~1,000, and every later step that walks the value recursively must stay well within it)
PRIMARY_MAX_DEPTH = 32


@lru_cache(maxsize=1)
def _single_value_keys() -> dict[str, tuple[tuple[str, ...], str | None, tuple[str, ...]]]:
    """Per SIMS Primary data group: the keys of its staging columns that hold one value (text,
    date, bool, int; not ``json``) at block level, its list key, and those of each list item."""
    from b2b.blocks import BLOCKS

    out = {}
    for b in BLOCKS:
        if b.primary_group:
            single = [c for c in b.columns if c.cast != "json"]
            block = tuple(c.key or c.name for c in single if c.from_block or not b.list_key)
            item = tuple(c.key or c.name for c in single if b.list_key and not c.from_block)
            out[b.primary_group] = (block, b.list_key, item)
    return out


def _key(k: str) -> str:
    return k if _SAFE_KEY.fullmatch(k) else "?"


#: what a page's JSON text holds before any value can be unstorable text: JSON escapes a NUL as
#: ``\u0000`` and a surrogate as ``\udXXX`` (raw, neither is valid JSON text or UTF-8)
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_CONTAINERS = frozenset((dict, list))


def _plain(data: dict, block_keys: frozenset, list_key: str | None, item_keys: frozenset) -> bool:
    """Whether one pupil's data certainly passes :func:`_primary_problem` once its page holds no
    unstorable text and no such number: no single-value key holds a list or an object, and no
    container nests past :data:`PRIMARY_MAX_DEPTH`. Only containers are descended (most of a
    pupil's ~25 values are text), so this costs ~1-2 us a pupil where the full walk cost ~30."""
    if _CONTAINERS.isdisjoint(map(type, data.values())):  # (a flat pupil: one C-level pass)
        return True
    stack: list[tuple[Any, int, frozenset | None]] = []
    for k, v in data.items():
        t = type(v)
        if t is dict or t is list:
            if k in block_keys:
                return False
            stack.append((v, 1, item_keys if k == list_key else None))
    while stack:
        v, depth, singles = stack.pop()
        if depth >= PRIMARY_MAX_DEPTH:
            return False
        if _CONTAINERS.isdisjoint(map(type, v.values() if type(v) is dict else v)):
            continue  # (a leaf, as a contact's telephone or email: nothing inside to descend)
        if type(v) is dict:
            for k, x in v.items():
                t = type(x)
                if t is dict or t is list:
                    if singles is not None and k in singles:
                        return False
                    stack.append((x, depth + 1, None))
        else:
            for x in v:
                t = type(x)
                if t is dict or t is list:
                    stack.append((x, depth + 1, singles if t is dict else None))
    return True


@lru_cache(maxsize=16)
def _single_value_sets(group: str) -> tuple[frozenset, str | None, frozenset]:
    block, list_key, item = _single_value_keys().get(group, ((), None, ()))
    return frozenset(block), list_key, frozenset(item)


def _primary_problem(group: str, data: dict) -> tuple[str, str] | None:
    """(field, reason) of the first thing in one pupil's SIMS Primary data that must not be
    stored or loaded, or None. The reason names the rule, never the value:

    * text PostgreSQL cannot store (NUL, an unpaired surrogate), in a value or a key;
    * a number that is not finite (``NaN``, ``Infinity``, or too big for a float: not JSON,
      RFC 8259; it would be stored as null or refused);
    * nesting deeper than :data:`PRIMARY_MAX_DEPTH`;
    * a list or an object where a staging column takes one value (``surname: ["Bloggs"]``
      would be loaded as the text '["Bloggs"]').

    Walked with an explicit stack: data nested to the JSON parser's own limit cannot overflow it.
    (:func:`parse_primary_page` walks a pupil so only when its page's text or its containers
    call for it: walking every value of every pupil made the parse ~4x slower, issue 15.)"""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                return path or "data", "not storable text (it holds NUL or an unpaired surrogate)"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return path or "data", "not a finite number (NaN or Infinity is not JSON)"
        elif isinstance(value, dict | list):
            if depth >= PRIMARY_MAX_DEPTH:
                return path or "data", f"nested more than {PRIMARY_MAX_DEPTH} levels"
            if isinstance(value, dict):
                for k, v in reversed(value.items()):
                    sub = f"{path}.{_key(k)}" if path else _key(k)
                    if _UNSTORABLE.search(k):
                        return sub, "a key is not storable text (it holds NUL or an unpaired surrogate)"
                    stack.append((v, sub, depth + 1))
            else:
                stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in reversed(list(enumerate(value))))
    block_keys, list_key, item_keys = _single_value_keys().get(group, ((), None, ()))
    places: list[tuple[dict, str]] = [(data, "")]
    items = data.get(list_key) if list_key else None
    if isinstance(items, list):
        places += [(item, f"{list_key}[{i}].") for i, item in enumerate(items) if isinstance(item, dict)]
    for where, prefix in places:
        for k in block_keys if not prefix else item_keys:
            v = where.get(k)
            if isinstance(v, dict | list):
                kind = "an object" if isinstance(v, dict) else "a list"
                return f"{prefix}{k}", f"{kind} where a single value is expected"
    return None


def _student_id(item: dict) -> str | None:
    """A SIMS Primary item's ``studentId`` as the pupil's id: a string (stripped, as SIMS 7's
    ``ApplicationReference``) or a whole number; None when it cannot be one."""
    sid = item.get("studentId")
    if isinstance(sid, int) and not isinstance(sid, bool):
        return str(sid)
    if isinstance(sid, str) and not _UNSTORABLE.search(sid):
        return sid.strip() or None
    return None


def parse_primary_page(content: bytes, *, expected_group: str | None = None) -> ParsedMessage:
    """Parse one SIMS Primary data-group page (JSON) into blocks.

    The page goes to suspense (:class:`MessageError`) when it cannot be read as a whole: not
    JSON (or nested beyond the parser's limit), no ``items``, another data group, an item
    that is not an object or has no ``data`` object, or an item whose ``studentId`` is not a
    usable id (missing, blank, neither text nor a whole number, or text PostgreSQL cannot
    store): without its id a pupil can be neither reported nor matched, as in SIMS 7.

    A pupil whose data must not be stored or loaded (:func:`_primary_problem`) is *rejected*
    (``ParsedMessage.rejected``, an error anomaly ``pupil_schema`` at validate naming its
    position, field and rule); the page's other pupils go on."""
    nonfinite: list[str] = []

    def constant(name: str) -> float:  # NaN, Infinity, -Infinity: json.loads' own values
        nonfinite.append(name)
        return float(name)

    def number(text: str) -> float:  # json.loads' own float (called only for numbers with . or e)
        value = float(text)
        if value in (math.inf, -math.inf):
            nonfinite.append(text)
        return value

    try:
        data = json.loads(content, parse_float=number, parse_constant=constant)
    except RecursionError:
        raise MessageError("page is not valid JSON: nested too deeply to be read") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageError(f"page is not valid JSON: {type(exc).__name__}") from None
    if not isinstance(data, dict) or not isinstance(data.get("items"), list):
        raise MessageError("page has no 'items' list")
    group = data.get("dataGroup")
    if group not in PRIMARY_GROUPS:
        raise MessageError(f"unknown data group {repr(group)[:60]}")
    if expected_group and group != expected_group:
        raise MessageError(f"page is for data group {group}, expected {expected_group}")
    parsed = ParsedMessage(header={k: v for k, v in data.items() if k != "items"}, nonfinite=bool(nonfinite))
    # every value of every pupil is walked only when the page's text holds an escaped NUL or
    # surrogate, or a number that is not finite (or it is not UTF-8: json.loads also reads
    # UTF-16 and -32, with NUL bytes); otherwise only each pupil's containers (:func:`_plain`)
    raw = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else bytes(content)
    walk = bool(nonfinite) or b"\x00" in raw or _UNSTORABLE_ESCAPE.search(raw) is not None
    shape = _single_value_sets(group)
    for i, item in enumerate(data["items"], start=1):
        if not isinstance(item, dict) or "studentId" not in item or not isinstance(item.get("data"), dict):
            raise MessageError("item without studentId or data", pupil=i)
        guid = _student_id(item)
        if guid is None:
            raise MessageError("item whose studentId is not a usable id (blank, not text or a whole number, "
                               "or not storable text)", pupil=i)
        parsed.pupils += 1
        bad = None if not walk and _plain(item["data"], *shape) else _primary_problem(group, item["data"])
        if bad is not None:
            parsed.rejected.append(RejectedPupil(i, guid, bad[0], None, f"{group} data, field {bad[0]}: {bad[1]}",
                                                 block_type=group))
            continue
        parsed.blocks.append(Block(group, guid, item["data"], i))
    return parsed
