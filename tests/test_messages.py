"""Message parsing: good, malformed and hostile input."""
import json
import re

import pytest

from b2b.ingest.messages import MessageError, parse_primary_page, parse_sims7, xml_key

GOOD = b"""<?xml version="1.0" encoding="UTF-8"?>
<B2BMessage version="1.0">
  <Header>
    <MessageID>m-1</MessageID><MessageType>B2B_EXPORT</MessageType><DataFilter>snapshot</DataFilter>
    <SourceSchool><LEA>886</LEA><Estab>2001</Estab><SchoolName>Green Abbey</SchoolName></SourceSchool>
    <DestLEA>886</DestLEA><WindowEnd>2026-10-05T17:00:00+00:00</WindowEnd>
    <DateTime>2026-10-05T17:00:00+00:00</DateTime><SupplierID>SIMS</SupplierID>
  </Header>
  <Pupils>
    <Pupil>
      <ApplicationReference>g-1</ApplicationReference>
      <StudentCore><UPN>A886200126001</UPN><Surname>Bloggs</Surname><Forename>Joe</Forename>
        <MiddleNames>Paul</MiddleNames><DOB>2016-01-26</DOB><Gender>M</Gender><NCY>5</NCY>
        <EAL>false</EAL><SENStatus>K</SENStatus><LookedAfter>true</LookedAfter></StudentCore>
      <Address><PAON>1</PAON><Street>Green Abbey Road</Street><Town>Canterbury</Town><PostCode>CT1 2AB</PostCode></Address>
      <Contacts><Contact><PersonId>c-9</PersonId><Forename>Ann</Forename><Priority>1</Priority>
        <Telephones><Telephone><Type>H</Type><Number>01227 000000</Number><Primary>true</Primary><Main>false</Main></Telephone>
          <Telephone><Type>M</Type><Number>07700 900000</Number><Primary>false</Primary><Main>true</Main></Telephone></Telephones>
      </Contact></Contacts>
      <SEN><StartDate>2024-09-01</StartDate><Needs><Need><Type>SLCN</Type><Ranking>1</Ranking></Need></Needs></SEN>
    </Pupil>
    <Pupil>
      <ApplicationReference>g-2</ApplicationReference>
      <Attendance><AcademicYear>2026</AcademicYear><StartDate>2026-09-01</StartDate><Marks>/\\/\\NN--</Marks></Attendance>
    </Pupil>
  </Pupils>
</B2BMessage>"""


def test_parses_blocks_into_canonical_model():
    parsed = parse_sims7(GOOD, expected_base="8862001", validate=False)
    assert parsed.pupils == 2
    types = [(b.student_guid, b.block_type) for b in parsed.blocks]
    assert types == [("g-1", "student"), ("g-1", "address"), ("g-1", "contacts"), ("g-1", "sen"),
                     ("g-2", "attendance")]
    student = parsed.blocks[0].content
    assert student["upn"] == "A886200126001" and student["middle_names"] == "Paul"
    assert student["eal"] is False and student["looked_after"] is True and student["sen_status"] == "K"
    contacts = parsed.blocks[2].content["contacts"]
    assert contacts[0]["priority"] == 1
    assert [t["type"] for t in contacts[0]["telephones"]] == ["H", "M"]
    assert contacts[0]["telephones"][0]["primary"] is True
    assert parsed.blocks[3].content == {"start_date": "2024-09-01", "needs": [{"type": "SLCN", "ranking": 1}]}
    assert parsed.blocks[4].content["marks"] == "/\\/\\NN--"
    assert parsed.header["source_school"]["estab"] == "2001"


def test_wrong_base_is_refused():
    with pytest.raises(MessageError, match="from base 8862001, expected 8864001"):
        parse_sims7(GOOD, expected_base="8864001", validate=False)


@pytest.mark.parametrize("content, reason", [
    (b"", "empty message"),
    (b"<B2BMessage><Header>", "not well-formed"),
    (b"<Other/>", "expected <B2BMessage>"),
    (b"<B2BMessage version='1.0'><Pupils/></B2BMessage>", "no Header"),
    (GOOD.replace(b"<ApplicationReference>g-2</ApplicationReference>", b""), "without ApplicationReference"),
])
def test_malformed_messages_are_refused_with_reason(content, reason):
    with pytest.raises(MessageError, match=reason):
        parse_sims7(content, validate=False)


def test_external_entity_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    xxe = (f'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file://{secret}">]>'
           '<B2BMessage><Header><MessageID>&x;</MessageID></Header></B2BMessage>').encode()
    with pytest.raises(MessageError, match="not allowed") as exc:
        parse_sims7(xxe, validate=False)
    assert "TOP-SECRET" not in str(exc.value)


def test_billion_laughs_is_refused_quickly():
    lol = b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">' + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10)
    ) + b']><B2BMessage><Header><MessageID>&lol9;</MessageID></Header></B2BMessage>'
    with pytest.raises(MessageError, match="not allowed"):
        parse_sims7(lol, validate=False)


def test_doctype_hidden_after_comment_is_still_refused():
    sneaky = b'<?xml version="1.0"?><!-- hi --><!DOCTYPE m SYSTEM "http://127.0.0.1:9/x.dtd"><B2BMessage/>'
    with pytest.raises(MessageError, match="not allowed"):
        parse_sims7(sneaky, validate=False)


def test_error_text_does_not_leak_values():
    bad = GOOD.replace(b"<Forename>Joe</Forename>", b"<Forename>Joe</Forname>")
    with pytest.raises(MessageError) as exc:
        parse_sims7(bad, validate=False)
    assert "Joe" not in str(exc.value)
    assert exc.value.line is not None


def _page(**over):
    page = {"organisationId": "o", "dataGroup": "sen", "page": 1, "pageSize": 100, "totalItems": 1,
            "totalPages": 1, "next": None,
            "items": [{"studentId": "g-1", "changed": "2026-10-05T12:00:00+00:00",
                       "data": {"start_date": "2024-09-01", "needs": [{"type": "ASD", "ranking": 1}]}}]}
    page.update(over)
    return json.dumps(page).encode()


def test_primary_page_parses():
    parsed = parse_primary_page(_page(), expected_group="sen")
    assert [(b.block_type, b.student_guid) for b in parsed.blocks] == [("sen", "g-1")]
    assert parsed.blocks[0].content["needs"][0]["type"] == "ASD"


@pytest.mark.parametrize("content, reason", [
    (b"{not json", "not valid JSON"),
    (json.dumps({"dataGroup": "sen"}).encode(), "no 'items'"),
    (_page(dataGroup="payroll"), "unknown data group"),
    (_page(items=[{"studentId": "g"}]), "without studentId or data"),
])
def test_bad_primary_pages_are_refused(content, reason):
    with pytest.raises(MessageError, match=reason):
        parse_primary_page(content)


def test_primary_page_for_other_group_is_refused():
    with pytest.raises(MessageError, match="expected contacts"):
        parse_primary_page(_page(), expected_group="contacts")


@pytest.mark.parametrize("tag, key", [("MiddleNames", "middle_names"), ("UPN", "upn"), ("SENStatus", "sen_status"),
                                      ("GiftedTalented", "gifted_talented"), ("DOB", "dob")])
def test_xml_names(tag, key):
    assert xml_key(tag) == key


def test_doctype_after_long_prolog_is_refused():
    # a DOCTYPE pushed past the first 4 KiB by a comment, entities that would be harmless
    sneaky = (b'<?xml version="1.0"?><!-- <a ' + b"x" * 5000 + b' --><!DOCTYPE m [<!ENTITY e "x">]>'
              b'<B2BMessage><Header><MessageID>&e;</MessageID></Header></B2BMessage>')
    with pytest.raises(MessageError, match="not allowed"):
        parse_sims7(sneaky, validate=False)


def test_empty_list_containers_are_empty_lists():
    # a school that removed a student's last SEN need sends <Needs></Needs>: that is "no needs",
    # and must not look like a malformed block (it sent whole files to suspense at LA scale)
    xml = GOOD.replace(b"<Needs><Need><Type>SLCN</Type><Ranking>1</Ranking></Need></Needs>", b"<Needs></Needs>")
    xml = xml.replace(b"<Telephones><Telephone><Type>H</Type>", b"<Emails/><Telephones><Telephone><Type>H</Type>")
    parsed = parse_sims7(xml, expected_base="8862001", validate=False)
    sen = [b.content for b in parsed.blocks if b.block_type == "sen"][0]
    assert sen == {"start_date": "2024-09-01", "needs": []}
    contact = [b.content for b in parsed.blocks if b.block_type == "contacts"][0]["contacts"][0]
    assert contact["emails"] == []


# ------------------------------------------------------------------ issue 9 item 10: error text says what is wrong
def _valid_sims7():
    from datetime import UTC, datetime

    from simulator.world import World, WorldConfig

    world = World(WorldConfig.demo())
    return world.export_sims7("8862001", "snapshot", datetime(2026, 10, 5, 17, tzinfo=UTC), None)


def test_bad_utf8_is_reported_as_an_encoding_error_with_its_line():
    bad = GOOD.replace(b"Bloggs", b"Blo\xff\xfegs")
    with pytest.raises(MessageError) as exc:
        parse_sims7(bad, validate=True)
    assert "not valid UTF-8" in str(exc.value) and "root element" not in str(exc.value)
    assert exc.value.line == 12 and exc.value.pupil == 1


@pytest.mark.parametrize("content", [b"hello, this is not XML", b'{"items": []}', b"\x00\x01\x02binary"])
def test_non_xml_is_reported_as_not_xml(content):
    with pytest.raises(MessageError) as exc:
        parse_sims7(content)
    assert "is not XML" in str(exc.value) and "schema" not in str(exc.value)


def test_over_long_value_names_element_pupil_and_line_but_not_the_value():
    xml = _valid_sims7()
    pupils = re.findall(rb"<Pupil>.*?</Pupil>", xml, flags=re.S)
    long_name = b"Q" * 5000
    bad = re.sub(rb"<Surname>[^<]*</Surname>", b"<Surname>" + long_name + b"</Surname>", pupils[1], count=1)
    xml = xml.replace(pupils[1], bad)
    line = xml[: xml.index(long_name)].count(b"\n") + 1
    parsed = parse_sims7(xml, expected_base="8862001")
    (r,) = parsed.rejected
    assert (r.pupil, r.field, r.line) == (2, "Surname", line)
    assert r.detail.startswith(f"pupil #2, line {line}: element <Surname>") and "maxLength" in r.detail
    assert "QQQ" not in r.detail and parsed.pupils == len(pupils)


def test_schema_error_text_drops_the_value_but_keeps_the_element():
    xml = _valid_sims7()
    xml = re.sub(rb"<DOB>[^<]*</DOB>", b"<DOB>Smith-1999</DOB>", xml, count=1)
    (r,) = parse_sims7(xml, expected_base="8862001").rejected
    assert r.field == "DOB" and "xs:date" in r.reason and "Smith" not in r.detail and r.pupil == 1


def test_bad_bool_rejects_only_that_pupil():
    parsed = parse_sims7(GOOD.replace(b"<EAL>false</EAL>", b"<EAL>maybe</EAL>"), validate=False)
    (r,) = parsed.rejected
    assert (r.pupil, r.student_guid, r.field) == (1, "g-1", "StudentCore") and "expected true/false" in r.reason
    assert [b.student_guid for b in parsed.blocks] == ["g-2"]


def test_broken_envelope_and_header_still_refuse_the_whole_file():
    xml = _valid_sims7()
    with pytest.raises(MessageError, match="message header does not match"):
        parse_sims7(xml.replace(b"<LEA>886</LEA>", b"<LEA>88x</LEA>", 1))
    with pytest.raises(MessageError, match=r"unexpected element <Extra> in <B2BMessage>"):
        parse_sims7(xml.replace(b"</Pupils>", b"</Pupils><Extra/>"))
    with pytest.raises(MessageError, match=r"unexpected element <Student> in <Pupils>"):
        parse_sims7(xml.replace(b"</Pupils>", b"<Student/></Pupils>"))


# ------------------------------------------------------------------ issue 15: the collector paused on the fast path
def test_the_cyclic_collector_is_paused_while_a_valid_message_is_built_and_back_after():
    import gc

    content = _valid_sims7()
    seen: list[bool] = []
    parsed = parse_sims7(content, on_pupil=lambda blocks: seen.append(gc.isenabled()))
    assert parsed.blocks and seen and not any(seen)  # the fast path ran, without the collector
    assert gc.isenabled()
    # a message the fast path gives up on: the careful path's answer, the collector back on
    bad = content.replace(b"<DOB>", b"<DOB>x", 1)
    assert parse_sims7(bad).rejected and gc.isenabled()


def test_a_collector_the_application_disabled_stays_disabled():
    import gc

    gc.disable()
    try:
        parse_sims7(_valid_sims7())
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_two_threads_building_at_once_leave_the_collector_paused_until_both_are_done():
    import gc
    import threading

    content = _valid_sims7()
    first_done, second_inside = threading.Event(), threading.Event()
    during: list[bool] = []

    def second(blocks):
        second_inside.set()
        if first_done.wait(10) and not during:
            during.append(gc.isenabled())  # the first thread has finished: still paused for this one

    def run_first():
        second_inside.wait(10)
        parse_sims7(content)
        first_done.set()

    t = threading.Thread(target=run_first)
    t.start()
    parse_sims7(content, on_pupil=second)
    t.join()
    assert during == [False] and gc.isenabled()
