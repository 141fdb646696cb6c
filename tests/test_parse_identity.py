"""Issue 15: the fast SIMS 7 path and the buffered COPY change no block and no block hash.

The hash cache compares a block's hash with the one stored at its last import: a parser
upgrade that changed a single value, type or key would show every block as changed. So the
fast path (``_parse_valid``: whole-message validation in libxml2, the unrolled converter) is
compared with a frozen copy of the converter it replaced (``_ref_*`` below, as it was before
issue 15), on the simulator's messages (fixed seeds) and on a valid message full of edge cases;
and the hashes the hash-filter stage computes from stored blocks are compared with those of the
JSON text the old ``json.dumps(..., sort_keys=True)`` COPY wrote.
"""
from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from lxml import etree

from b2b.blocks import XML_BLOCKS
from b2b.ingest.extract import ReceivedMessage, RunContext, store_messages
from b2b.ingest.messages import (
    _parse_streaming,
    _parse_valid,
    message_schema,
    parse_primary_page,
    parse_sims7,
)

UNTIL = datetime(2026, 10, 5, 17, 0, tzinfo=UTC)

# ---------------------------------------------------------------- the converter before issue 15, frozen
_REF_LISTS = {"Contacts", "Addresses", "Telephones", "Emails", "Needs", "Exclusions", "Results"}
_REF_SPECIAL = {"UPN": "upn", "DOB": "dob", "NCY": "ncy", "EAL": "eal", "SENStatus": "sen_status", "PAON": "paon",
                "SAON": "saon", "ApplicationReference": "guid", "LEA": "lea"}
_REF_BOOL = {"eal", "gifted_talented", "service_child", "traveller", "connexions_assent", "looked_after",
             "parental_responsibility", "is_staff", "primary", "main"}
_REF_INT = {"ranking", "sessions", "academic_year", "priority"}


def _ref_key(tag: str) -> str:
    return _REF_SPECIAL.get(tag) or re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", tag).lower()


def _ref_typed(key: str, text: str | None) -> Any:
    if text is None:
        return None
    text = text.strip()
    if key in _REF_BOOL:
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise ValueError(key)
    if key in _REF_INT:
        return int(text)
    return text


def _ref_convert(el: Any) -> Any:
    if el.tag in _REF_LISTS:
        return [_ref_convert(c) for c in el]
    if not len(el):
        return _ref_typed(_ref_key(el.tag), el.text)
    return {_ref_key(c.tag): _ref_convert(c) for c in el}


def _ref_block(el: Any) -> dict:
    value = _ref_convert(el)
    if isinstance(value, list):
        return {_ref_key(el.tag): value}
    return value if isinstance(value, dict) else {}


def _reference(content: bytes) -> tuple[dict, list[tuple]]:
    """(header, [(block type, guid, content, pupil)]) of a valid message, by the old converter."""
    root = etree.fromstring(content, etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                                                     remove_comments=True, remove_pis=True))
    blocks = []
    for pos, pupil in enumerate(root.find("Pupils"), start=1):
        guid = pupil.find("ApplicationReference").text.strip()
        blocks += [(XML_BLOCKS[c.tag], guid, _ref_block(c), pos) for c in pupil if c.tag in XML_BLOCKS]
    return _ref_convert(root.find("Header")), blocks


def _as_tuples(parsed) -> list[tuple]:
    return [(b.block_type, b.student_guid, b.content, b.pupil) for b in parsed.blocks]


def _typed_equal(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (True == 1 would hide a bool turned into an int)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_typed_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_typed_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# ---------------------------------------------------------------- a valid message full of edge cases
EDGE = """<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment before the root -->
<?b2b a processing instruction?>
<B2BMessage version="1.0">
  <Header>
    <MessageID> m-1 </MessageID><MessageType>B2B_EXPORT</MessageType><DataFilter>snapshot</DataFilter>
    <SourceSchool><LEA>886</LEA><Estab>2001</Estab><SchoolName>O&apos;Brien &amp; Sons</SchoolName></SourceSchool>
    <WindowEnd>2026-10-05T17:00:00+00:00</WindowEnd><DateTime>2026-10-05T17:00:00+00:00</DateTime>
  </Header>
  <Pupils>
    <Pupil>
      <ApplicationReference>  g\\1\t&#9;x  </ApplicationReference>
      <StudentCore>
        <UPN>A886200126001</UPN>
        <Surname>  Zoë&#160;</Surname><Forename>Jo<!-- inside a value -->sé</Forename>
        <MiddleNames/><PreferredSurname></PreferredSurname><PreferredForename>   </PreferredForename>
        <DOB>2016-01-26</DOB><Ethnicity><![CDATA[W<B>"R"]]></Ethnicity>
        <FirstLanguage>a\\"b&#10;c&#13;d\u2028e\u00a0</FirstLanguage><HomeLanguage>&#x1F600;</HomeLanguage>
        <EAL> true </EAL><GiftedTalented>1</GiftedTalented><ServiceChild>0</ServiceChild>
        <Traveller>false</Traveller><LookedAfter>
          true
        </LookedAfter>
      </StudentCore>
      <Address><?pi inside?></Address>
      <Contacts>
        <Contact/>
        <Contact><Priority> +7 </Priority><IsStaff>0</IsStaff><Addresses/><Telephones>
          <Telephone/><Telephone><Number>01227</Number><Primary> 1 </Primary></Telephone></Telephones>
          <Emails><Email><Address>a@b.c</Address><Main>true</Main></Email></Emails></Contact>
      </Contacts>
      <SEN><Needs><Need><Type>SLCN</Type><Ranking>007</Ranking></Need><Need/></Needs></SEN>
      <Exclusions/>
      <Attendance><AcademicYear>-1</AcademicYear><Marks>/\\\\/\\NN--</Marks></Attendance>
      <Attainment><Results><Result><Result>5</Result></Result></Results></Attainment>
    </Pupil>
    <Pupil><ApplicationReference>g-2</ApplicationReference><StudentCore/><SEN/></Pupil>
    <Pupil><ApplicationReference>g-3</ApplicationReference></Pupil>
  </Pupils>
</B2BMessage>
""".encode()


def _simulator_messages() -> list[tuple[str, bytes]]:
    from simulator.world import World, WorldConfig

    out = []
    for config in (WorldConfig.demo(), WorldConfig.generated(3, 900, seed=11)):
        world = World(config)
        for base in world.config.bases:
            if base.kind == "sims7":
                out.append((base.dfe, world.export_sims7(base.dfe, "snapshot", UNTIL, None)))
    return out


@pytest.fixture(scope="module")
def sims7_messages():
    msgs = _simulator_messages()
    assert len(msgs) >= 3
    return msgs


def test_edge_case_message_is_valid_so_the_fast_path_takes_it():
    message_schema().assertValid(etree.fromstring(EDGE))
    assert _parse_valid(EDGE) is not None


def test_fast_path_gives_the_old_converters_blocks_for_edge_cases():
    header, expected = _reference(EDGE)
    fast = _parse_valid(EDGE)
    assert fast is not None and _typed_equal(_as_tuples(fast), expected)
    assert _typed_equal(fast.header, header) and fast.pupils == 3 and not fast.rejected
    # a few of the cases spelled out, so a wrong reference cannot hide a wrong parser
    student = fast.blocks[0].content
    assert fast.blocks[0].student_guid == "g\\1\t\tx"
    assert student["surname"] == "Zoë" and student["forename"] == "José" and student["middle_names"] is None
    assert student["preferred_surname"] is None and student["preferred_forename"] == ""
    assert student["eal"] is True and student["gifted_talented"] is True and student["service_child"] is False
    assert student["looked_after"] is True and student["ethnicity"] == 'W<B>"R"'
    assert student["first_language"] == 'a\\"b\nc\rd\u2028e'
    contacts = fast.blocks[2].content["contacts"]
    assert contacts[0] is None and contacts[1]["priority"] == 7 and contacts[1]["addresses"] == []
    assert contacts[1]["telephones"] == [None, {"number": "01227", "primary": True}]
    assert fast.blocks[1].content == {} and fast.blocks[4].content == {"exclusions": []}
    assert [b.block_type for b in fast.blocks[-2:]] == ["student", "sen"]
    assert fast.blocks[-1].content == {} and fast.blocks[-1].pupil == 2


def test_fast_path_gives_the_old_converters_blocks_for_simulator_messages(sims7_messages):
    blocks = 0
    for dfe, content in sims7_messages:
        header, expected = _reference(content)
        fast = _parse_valid(content)
        assert fast is not None, f"valid message of {dfe} left the fast path"
        assert _typed_equal(_as_tuples(fast), expected) and _typed_equal(fast.header, header)
        blocks += len(expected)
    assert blocks > 1000


def test_fast_and_streaming_paths_agree_on_every_message(sims7_messages):
    for _dfe, content in [*sims7_messages, ("edge", EDGE)]:
        fast, slow = parse_sims7(content), _parse_streaming(content, validate=True)
        assert _typed_equal(_as_tuples(fast), _as_tuples(slow)) and _typed_equal(fast.header, slow.header)
        assert (fast.pupils, fast.rejected) == (slow.pupils, slow.rejected)


def test_message_with_one_bad_pupil_leaves_the_fast_path_and_rejects_only_that_pupil(sims7_messages):
    content = sims7_messages[0][1]
    bad = re.sub(rb"<DOB>[^<]*</DOB>", b"<DOB>1999-02-30</DOB>", content, count=1)
    assert _parse_valid(bad) is None
    parsed = parse_sims7(bad)
    (r,) = parsed.rejected
    assert r.field == "DOB" and r.pupil == 1 and "xs:date" in r.reason
    assert len({b.student_guid for b in parsed.blocks}) == parsed.pupils - 1


# ---------------------------------------------------------------- hashes of the stored blocks
PRIMARY_PAGE = json.dumps({
    "organisationId": "o", "dataGroup": "sen", "page": 1, "pageSize": 100, "totalItems": 2, "totalPages": 1,
    "next": None, "items": [
        {"studentId": "p\\1\t", "data": {"z": 1, "a": "tab\there \"q\" back\\slash é \u2028", "n": None,
                                          "f": 1.5, "big": 10 ** 30, "l": [True, False, {"b": 2, "a": 1}]}},
        {"studentId": 42, "data": {"start_date": "2024-09-01", "needs": [{"type": "ASD", "ranking": 1}]}}]},
).encode()


def _hashes_of(db, texts: list[str]) -> list[str]:
    """The hash-filter stage's formula applied to JSON texts as the old COPY wrote them."""
    return [r[0] for r in db.execute(
        """SELECT encode(sha256(convert_to(t::jsonb::text, 'UTF8')), 'hex')
             FROM unnest(%s::text[]) WITH ORDINALITY u(t, n) ORDER BY n""", (texts,)).fetchall()]


def _stored(db, file_ids: list[int]) -> list[tuple]:
    return db.execute(
        """SELECT block_type, student_guid, encode(sha256(convert_to(content::text, 'UTF8')), 'hex')
             FROM raw.inbound_block WHERE file_id = ANY(%s) ORDER BY file_id, ordinal""", (file_ids,)).fetchall()


def test_stored_blocks_hash_as_the_old_json_dumps_copy_did(db, sims7_messages):
    dfe, content = sims7_messages[0]
    old = lambda c: json.dumps(c, separators=(",", ":"), sort_keys=True)  # noqa: E731 - the old COPY's text
    cases = [("sims7", dfe, [ReceivedMessage("export", content, "application/xml")], _reference(content)[1]),
             ("sims7", "8862001", [ReceivedMessage("export", EDGE, "application/xml")], _reference(EDGE)[1]),
             ("sims_primary", "8862002", [ReceivedMessage("sen p1/1", PRIMARY_PAGE, "application/json", "sen")],
              [(b.block_type, b.student_guid, b.content, b.pupil)
               for b in parse_primary_page(PRIMARY_PAGE).blocks])]
    for source, base, msgs, expected in cases:
        ctx = RunContext(base_id=base, task_key="snapshot", dag_id=f"b2b__{base}__snapshot", run_id="r1",
                         source=source, data_filter="snapshot", window_start=None, window_end=UNTIL)
        summary = store_messages(db, ctx, msgs)
        assert summary.failed == 0 and summary.blocks == len(expected)
        stored = _stored(db, summary.file_ids)
        hashes = _hashes_of(db, [old(c) for _t, _g, c, _p in expected])
        assert stored == [(t, g, h) for (t, g, _c, _p), h in zip(expected, hashes, strict=True)]


@pytest.mark.parametrize("number", [b"NaN", b"-Infinity", b"1e400"])
def test_primary_page_with_a_non_finite_number_is_never_stored_as_null(db, number):
    """msgspec would write a non-finite float as null; Postgres refuses json.dumps' NaN (which
    failed the whole run). The pupil holding it is rejected (not JSON, RFC 8259), the others stored."""
    page = PRIMARY_PAGE.replace(b'"f": 1.5', b'"f": ' + number)
    parsed = parse_primary_page(page)
    assert parsed.nonfinite and not parse_primary_page(PRIMARY_PAGE).nonfinite
    assert [(r.pupil, r.field) for r in parsed.rejected] == [(1, "f")] and len(parsed.blocks) == 1
    ctx = RunContext(base_id="8862002", task_key="snapshot", dag_id="b2b__8862002__snapshot", run_id="r1",
                     source="sims_primary", data_filter="snapshot", window_start=None, window_end=UNTIL)
    summary = store_messages(db, ctx, [ReceivedMessage("sen p1/1", page, "application/json", "sen")])
    assert (summary.failed, summary.rejected_pupils) == (0, 1)
    stored = db.execute("""SELECT student_guid, content FROM raw.inbound_block WHERE base_id = '8862002'
                            ORDER BY ordinal""").fetchall()
    assert stored == [("42", parsed.blocks[0].content), ("p\\1", {})]  # the good pupil; the rejected one's anchor
    assert db.execute("SELECT rule, field FROM raw.rejected_block").fetchall() == [("pupil_schema", "f")]


def test_message_over_the_fast_paths_size_streams_through_the_careful_path_with_the_same_blocks(
        sims7_messages, monkeypatch):
    from b2b.ingest import messages

    _dfe, content = sims7_messages[0]
    expected = parse_sims7(content)
    shown: list = []
    monkeypatch.setattr(messages, "FAST_PATH_MAX_BYTES", len(content) - 1)
    monkeypatch.setattr(messages, "_parse_valid", lambda *a, **k: pytest.fail("the fast path took it"))
    parsed = parse_sims7(content, on_pupil=shown.append)
    assert shown == [None]  # the caller is told that nothing was streamed
    assert _typed_equal(_as_tuples(parsed), _as_tuples(expected)) and parsed.pupils == expected.pupils
