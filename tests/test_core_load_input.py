"""The LA's own extract as its spreadsheets and systems write it (a fault sweep of core load):
encodings, separators, headers, ragged rows, DOBs, codes, an empty full extract — each read
or refused whole with the rows named, never a personal value in the message."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from b2b.ops import core_load
from b2b.ops.core_load import CoreLoadError, load_children_file, load_gazetteer_file, refresh_from_folder
from tests.test_la_ready import CHILD_HEADER, children, write_csv

HEADER = "person_id,upn,forename,surname,gender,dob,postcode,base_id,paon\n"
ROWS = ("P1,R201100018042,Zoë,Lee,F,2016-03-04,CT1 2AB,8862001,1 Green Road\n"
        "P2,,José,Núñez,M,2014-01-02,CT1 2AB,8862001,2 Green Road\n")


def put(tmp_path: Path, data: bytes | str, name: str = "children.csv") -> Path:
    p = tmp_path / name
    p.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return p


def names(db) -> list[tuple]:
    return db.execute("SELECT person_id, forename, surname FROM core.child ORDER BY 1").fetchall()


def refused(db, path: Path, **kw) -> str:
    with pytest.raises(CoreLoadError) as e:
        load_children_file(db, path, **kw)
    return str(e.value)


# ------------------------------------------------------------------ encodings and separators
@pytest.mark.parametrize("data", [
    (HEADER + ROWS).replace(",", "\t").encode("utf-16"),   # Excel's "Unicode text": UTF-16, tabs
    (HEADER + ROWS).encode("utf-16"),                      # UTF-16 with commas
    (HEADER + ROWS).encode("cp1252"),                      # Excel's "CSV" on Windows
    (HEADER + ROWS).replace(",", ";").encode("utf-8-sig"),  # a comma-decimal locale's CSV
], ids=["utf16-tabs", "utf16-commas", "windows-1252", "semicolons"])
def test_excel_encodings_and_separators_are_read_with_accents_intact(db, tmp_path, data):
    assert load_children_file(db, put(tmp_path, data))["new"] == 2
    assert names(db) == [("P1", "Zoë", "Lee"), ("P2", "José", "Núñez")]


def test_a_file_part_utf8_part_not_is_refused_naming_the_line_never_the_bytes(db, tmp_path, caplog):
    data = (HEADER + ROWS).encode("utf-8") + "P3,,Aimée,Lee,F,2015-01-01,,,\n".encode("cp1252")
    msg = refused(db, put(tmp_path, data))
    assert "line 4" in msg and "Aim" not in msg
    assert names(db) == []
    # wholly Windows-1252: read as such, and the log says so (no value)
    with caplog.at_level(logging.INFO, logger="b2b.ops.core_load"):
        load_children_file(db, put(tmp_path, (HEADER + ROWS).encode("cp1252"), "b.csv"))
    assert "read as Windows-1252" in caplog.text and "Zo" not in caplog.text


def test_an_excel_workbook_is_refused_as_one(db, tmp_path):
    assert "Excel workbook" in refused(db, put(tmp_path, b"PK\x03\x04" + b"\x00" * 60, "children.xlsx"))


# ------------------------------------------------------------------ headers
def test_headers_in_any_case_with_spaces_and_mapped_names_in_another_case(db, tmp_path):
    load_children_file(db, put(tmp_path, HEADER.upper().replace("PERSON_ID", " Person ID ") + ROWS))
    assert len(names(db)) == 2
    mapping = core_load.ColumnMapping()
    mapping.children = core_load.KindMapping(columns={"person_id": "PERSON REF", "dob": "date of BIRTH"})
    f = put(tmp_path, "Person Ref,Forename,Surname,Date Of Birth\nP1,Zoë,Lee,2016-03-04\n", "b.csv")
    assert load_children_file(db, f, mapping, full=False)["records"] == 1


def test_a_column_twice_is_named_by_field_and_position(db, tmp_path):
    msg = refused(db, put(tmp_path, HEADER.strip() + ",Surname\n" + ROWS.replace("\n", ",X\n")))
    assert "names a column twice: surname (columns 4, 10)" in msg
    # one we do not read, by its position only (a file with no header row has values there)
    msg = refused(db, put(tmp_path, HEADER.strip() + ",Ann,Ann\n" + ROWS.replace("\n", ",,\n"), "b.csv"))
    assert "columns 10, 11" in msg and "ann" not in msg.lower()


# ------------------------------------------------------------------ ragged rows
def test_a_short_row_is_a_problem_not_a_record_without_its_last_fields(db, tmp_path):
    f = put(tmp_path, HEADER + ROWS + "P3,,Cy,Ray,M,2015-05-06\n")
    msg = refused(db, f)
    assert "row 3 (line 4), field (row): fewer cells than the header has columns" in msg and "Ray" not in msg
    assert names(db) == []


def test_a_row_of_empty_cells_is_skipped_and_an_unclosed_quote_is_refused(db, tmp_path):
    assert load_children_file(db, put(tmp_path, HEADER + ROWS + ",,,,,,,,\n"))["records"] == 2
    msg = refused(db, put(tmp_path, HEADER + 'P1,,"Zoë,Lee,F,2016-03-04,,,\n' + ROWS[len("P1"):], "b.csv"))
    assert "row starting at line 2" in msg and "quote" in msg and "Zo" not in msg


# ------------------------------------------------------------------ values
def test_dob_in_the_mapped_format_or_iso_with_a_midnight_time(db, tmp_path):
    mapping = core_load.ColumnMapping()
    mapping.children = core_load.KindMapping(date_format="%d/%m/%Y")
    f = put(tmp_path, HEADER + "P1,,Ann,Lee,F,04/03/2016,,,\nP2,,Bo,Lee,M,2014-01-02,,,\n"
                               "P3,,Cy,Lee,M,2015-03-12 00:00:00,,,\nP4,,Di,Lee,F,12/03/2015 00:00,,,\n")
    load_children_file(db, f, mapping)
    assert db.execute("SELECT person_id, dob::text FROM core.child ORDER BY 1").fetchall() == [
        ("P1", "2016-03-04"), ("P2", "2014-01-02"), ("P3", "2015-03-12"), ("P4", "2015-03-12")]


def test_a_dob_not_read_is_named_by_shape_never_by_value(db, tmp_path):
    msg = refused(db, put(tmp_path, HEADER + "P1,,Ann,Lee,F,42370,,,\nP2,,Bo,Lee,M,04/03/2016,,,\n"))
    assert "row 1 (line 2), field dob: not a date in the format %Y-%m-%d (shaped 99999: a spreadsheet's date" in msg
    assert "row 2 (line 3), field dob: not a date in the format %Y-%m-%d (shaped 99/99/9999)" in msg  # never guessed
    assert "42370" not in msg and "2016" not in msg


def test_gender_words_a_spaced_school_number_and_nhs_pseudo_postcodes(db, tmp_path):
    f = put(tmp_path, HEADER + "P1,,Ann,Lee,Female,2016-03-04,ZZ99 3WZ,886 2001,\n"
                               "P2,,Bo,Lee,male,2014-01-02,zz993vz,886/2001,\n"
                               "P3,,Cy,Lee,1,2014-01-02,,,\nP4,,Di,Lee,2,2014-01-02,,,\nP5,,Ed,Lee,u,2014-01-02,,,\n")
    load_children_file(db, f)
    assert db.execute("SELECT person_id, gender, postcode, base_id FROM core.child ORDER BY 1").fetchall() == [
        ("P1", "F", "ZZ99 3WZ", "8862001"), ("P2", "M", "ZZ993VZ", "8862001"), ("P3", "M", None, None),
        ("P4", "F", None, None), ("P5", "U", None, None)]


def test_one_schools_guid_on_two_children_is_a_problem_not_a_link_to_either(db, tmp_path):
    rows = children(["P4", "", "Di", "Fox", "F", "2015-01-01", "", "8862001", "g-1"])
    msg = refused(db, write_csv(tmp_path / "children.csv", CHILD_HEADER, rows))
    assert "row 4 (line 5), field guid: the same school's GUID as row 1" in msg
    assert db.execute("SELECT count(*) FROM core.child_link").fetchone()[0] == 0


def test_a_nul_in_a_value_is_a_problem_of_its_row_and_the_refresh_sets_the_file_aside(db, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    put(inbox, HEADER + ROWS + "P3,,Cy\x00,Ray,M,2015-05-06,,,\n", "children_1.csv")
    with pytest.raises(CoreLoadError, match="moved to suspense") as e:
        refresh_from_folder(db, inbox)
    assert "row 3 (line 4), field forename: holds a NUL character" in str(e.value) and "Cy" not in str(e.value)
    assert len(list((inbox / "suspense").glob("*_children_1.csv"))) == 1 and names(db) == []


# ------------------------------------------------------------------ an empty extract
def test_a_full_extract_with_no_records_is_refused_not_the_end_of_every_child(db, tmp_path):
    load_children_file(db, put(tmp_path, HEADER + ROWS))
    msg = refused(db, put(tmp_path, HEADER, "b.csv"))
    assert "no records" in msg and "every child inactive" in msg
    assert db.execute("SELECT count(*) FROM core.child WHERE active").fetchone()[0] == 2
    assert load_children_file(db, put(tmp_path, HEADER, "c.csv"), full=False)["records"] == 0  # changes-only: fine
    load_gazetteer_file(db, put(tmp_path, "uprn,postcode\n1,CT1 2AB\n", "g.csv"))
    with pytest.raises(CoreLoadError, match="remove every address"):
        load_gazetteer_file(db, put(tmp_path, "uprn,postcode\n", "g2.csv"))
    assert db.execute("SELECT count(*) FROM core.address_gazetteer").fetchone()[0] == 1


def test_a_full_extract_that_would_deactivate_a_large_share_is_refused_unless_meant(db, tmp_path):
    """An export cut short half-way, or filtered to one area by mistake, is a full extract that
    marks thousands of children inactive; refused, nothing loaded, unless --allow-large-drop."""
    def extract(n: int, name: str) -> Path:
        rows = "".join(f"P{k},,Ann{k},Lee,F,2016-03-04,CT1 2AB,8862001,{k} Green Road\n" for k in range(n))
        return put(tmp_path, HEADER + rows, name)

    load_children_file(db, extract(1000, "all.csv"))
    msg = refused(db, extract(500, "half.csv"))
    assert "mark 500 of the LA's 1,000 active children inactive" in msg and "--allow-large-drop" in msg
    assert db.execute("SELECT count(*) FROM core.child WHERE active").fetchone()[0] == 1000
    assert db.execute("SELECT count(*) FROM core.load_run").fetchone()[0] == 1  # (the refused one left none)
    # the year's leavers (a few percent) load as before; a large drop that is meant, too
    assert load_children_file(db, extract(900, "leavers.csv"))["deactivated"] == 100
    assert load_children_file(db, extract(500, "meant.csv"), allow_large_drop=True)["deactivated"] == 400
    assert db.execute("SELECT count(*) FROM core.child WHERE active").fetchone()[0] == 500
