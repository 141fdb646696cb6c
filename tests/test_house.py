"""One vocabulary (issue 13): the registry in b2b/blocks.py drives loads, conflicts, officer
resolution, Clear Conflicts and returns, with one "same value" rule everywhere."""
import re
from dataclasses import replace
from pathlib import Path

import pytest

from b2b import PROJECT_ROOT, blocks
from b2b import pipeline as chain
from b2b.blocks import BLOCKS, COMPARED, CONFLICT_FIELDS, BlockType, Column, same_sql, same_value
from b2b.config.settings import Settings
from b2b.ingest import load as load_mod
from b2b.ingest.extract import store_messages
from b2b.ops import maintenance, officer
from tests.test_chain import BASE, ctx, page

LEGACY = Settings(matcher="legacy")

# the LA's record and a school record differing in EVERY compared field, linked by GUID (F16)
LA_ROW = {"upn": "F886200326001", "forename": "Joseph", "middle_names": "Adam", "surname": "Bloggs", "gender": "M",
          "dob": "2016-01-26", "ethnicity": "WBRI", "first_language": "ENG", "paon": "1",
          "street": "Green Abbey Road", "postcode": "CT1 2AB"}
SCHOOL = {"upn": "U886200326009", "forename": "Joe", "middle_names": "Alan", "surname": "Blogs", "gender": "F",
          "dob": "2016-01-27", "ethnicity": "WIRI", "first_language": "FRN", "ncy": "5"}
SCHOOL_ADDR = {"paon": "2", "street": "Old Dover Road", "town": "Canterbury", "postcode": "CT1 3XY"}
# the school's values written the way an LA system might hold them: same value, other form
SAME_FORM = {"upn": "U886200326009", "forename": "  JOE ", "middle_names": "alan", "surname": "BLOGS",
             "gender": "F", "dob": "2016-01-27", "ethnicity": "WIRI", "first_language": "FRN", "paon": "2",
             "street": "OLD DOVER ROAD", "postcode": "ct13xy"}


def _every_field_differs(db):
    cols = ", ".join(LA_ROW)
    db.execute(f"INSERT INTO core.child (person_id, {cols}) VALUES ('P9', {', '.join(['%s'] * len(LA_ROW))})",
               tuple(LA_ROW.values()))
    db.execute("INSERT INTO core.child_link (base_id, student_guid, person_id, linked_by) "
               "VALUES (%s, 'g-joe', 'P9', 'la')", (BASE,))
    db.commit()
    c = ctx()
    store_messages(db, c, [page("student", [("g-joe", SCHOOL)]), page("address", [("g-joe", SCHOOL_ADDR)])])
    chain.hash_filter(db, c, LEGACY)
    chain.validate(db, c, Path("/tmp/b2b-test-reports"))
    chain.load(db, c)
    chain.match(db, c, LEGACY)
    chain.conflicts(db, c)
    return c


def test_every_compared_field_raises_a_conflict_and_each_is_resolvable(db):
    _every_field_differs(db)
    raised = {r[0] for r in db.execute("SELECT field FROM results.conflict WHERE person_id = 'P9'")}
    assert raised == set(CONFLICT_FIELDS)
    # the match explanation names exactly the fields the conflicts stage recorded
    expl = db.execute("SELECT explanation FROM results.match WHERE student_guid = 'g-joe'").fetchone()[0]
    assert sorted(expl["differing_fields"]) == sorted(CONFLICT_FIELDS)
    for field in CONFLICT_FIELDS:
        assert officer.resolve_conflict(db, "P9", field, "la", "officer.test") == 1, field
    assert db.execute("SELECT count(*) FROM results.conflict").fetchone()[0] == 0


def test_every_compared_field_is_cleared_once_the_la_holds_the_same_value(db):
    _every_field_differs(db)
    sets = ", ".join(f"{f} = %s" for f in SAME_FORM)
    db.execute(f"UPDATE core.child SET {sets} WHERE person_id = 'P9'", tuple(SAME_FORM.values()))
    db.commit()
    assert maintenance.clear_conflicts(db) == len(CONFLICT_FIELDS)
    assert db.execute("SELECT count(*) FROM results.conflict").fetchone()[0] == 0


def test_an_la_value_that_still_differs_is_not_cleared(db):
    _every_field_differs(db)
    assert maintenance.clear_conflicts(db) == 0
    assert db.execute("SELECT count(*) FROM results.conflict").fetchone()[0] == len(CONFLICT_FIELDS)


PAIRS = [("forename", "Joe", " JOE"), ("forename", "Joe", "Jo"), ("surname", "O'Neil", "o'neil "),
         ("postcode", "CT1 2AB", "ct12ab"), ("postcode", "CT1 2AB", "CT1 2AC"), ("upn", "A1 ", "A1"),
         ("upn", "a1", "A1"), ("gender", "M", "F"), ("dob", "2016-01-26", "2016-01-26"),
         ("dob", "2016-01-26", "2016-01-27"), ("street", "Green  Road", "green road"),
         ("ethnicity", "WBRI", "wbri")]


@pytest.mark.parametrize("field,a,b", PAIRS)
def test_one_same_value_rule_in_python_and_sql(db, field, a, b):
    sql_same = db.execute(f"SELECT {same_sql(field, '%s::text', '%s::text')}", (a, b)).fetchone()[0]
    assert same_value(field, a, b) is sql_same


def test_no_module_keeps_its_own_comparison_rule():
    """Normalisation SQL lives in b2b/blocks.py only; nobody lists compared fields again."""
    offenders = []
    for path in (PROJECT_ROOT / "b2b").rglob("*.py"):
        if path.name == "blocks.py":
            continue
        text = path.read_text()
        if re.search(r"lower\(btrim\(", text):  # the name rule, written out again
            offenders.append(f"{path.name}: normalisation SQL")
        if re.search(r"\(\s*\"upn\",\s*\"forename\",\s*\"middle_names\"", text):
            offenders.append(f"{path.name}: a list of compared fields")
    assert offenders == []


def test_conflict_fields_are_the_registry_and_officer_uses_them():
    assert officer.CONFLICT_FIELDS is blocks.CONFLICT_FIELDS
    assert {c.name for c in COMPARED} == set(CONFLICT_FIELDS)
    assert {c.block for c in COMPARED} <= {b.name for b in BLOCKS}


def test_every_registered_block_has_its_staging_table_and_columns(db):
    for b in BLOCKS:
        cols = {r[0] for r in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'staging' AND table_name = %s",
            (b.staging,))}
        assert cols, f"staging.{b.staging} missing"
        assert {c.name for c in b.columns} <= cols, b.name


def test_a_new_block_type_is_one_registry_entry_plus_its_migration(db, monkeypatch):
    """The load stage builds its INSERT from the registry: a new block type with its table loads."""
    # "its SQL migration": the staging table, and the raw block type allowed
    db.execute("CREATE TABLE staging.pet (file_id bigint, ordinal int, item int, base_id text, student_guid text, "
               "name text, species text, born date)")
    db.execute("ALTER TABLE raw.inbound_block DROP CONSTRAINT IF EXISTS inbound_block_block_type_check")
    db.commit()
    pets = BlockType("pets", "Pets", None, "pet", (Column("name"), Column("species"), Column("born", cast="date")),
                     list_key="pets")
    monkeypatch.setattr(load_mod, "BLOCKS", BLOCKS + (pets,))
    monkeypatch.setattr(load_mod, "STAGING_TABLES", tuple(b.staging for b in BLOCKS + (pets,)))
    c = ctx()
    store_messages(db, c, [page("student", [("g-amy", {"forename": "Amy", "surname": "Pond", "dob": "2016-02-02",
                                                       "gender": "F", "ncy": "5"})])])
    fid = db.execute("SELECT file_id FROM raw.inbound_file").fetchone()[0]
    db.execute("""INSERT INTO raw.inbound_block (file_id, ordinal, base_id, block_type, student_guid, content)
                  VALUES (%s, 99, %s, 'pets', 'g-amy',
                          '{"pets": [{"name": "Rex", "species": "dog", "born": "2020-05-01"},
                                     {"name": "Tom", "species": "cat", "born": "bad"}]}')""", (fid, BASE))
    db.commit()
    chain.hash_filter(db, c, LEGACY)
    result = chain.load(db, c)
    assert result["rows"]["pet"] == 2
    rows = db.execute("SELECT item, name, species, born::text FROM staging.pet ORDER BY item").fetchall()
    assert rows == [(1, "Rex", "dog", "2020-05-01"), (2, "Tom", "cat", None)]
    # a rerun of the stage replaces, never doubles
    chain.load(db, c)
    assert db.execute("SELECT count(*) FROM staging.pet").fetchone()[0] == 2


def test_settings_are_typed_and_resolved_once():
    s = Settings.from_mapping({"B2BHCACHE": "false", "B2B_S_AGE": "21", "MATCHER": "legacy", "unknown": 1})
    assert (s.b2bhcache, s.b2b_s_age, s.matcher) == (False, 21, "legacy")
    assert Settings.from_env(s, {"B2B_MAX_PAGES": "7"}).max_pages == 7
    with pytest.raises(ValueError, match="MATCHER"):
        replace(s, matcher="magic")
