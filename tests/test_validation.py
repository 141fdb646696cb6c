"""Expectation suites (Great Expectations) on data blocks: each rule, severities, structure, report."""
from datetime import UTC, date, datetime, timezone

import pytest

from b2b.blocks import BLOCK_TYPES
from b2b.ingest.validation import StructuralError, load_suite, validate_blocks

AS_OF = date(2026, 10, 5)
GOOD = {"upn": "F886200326001", "surname": "Bloggs", "forename": "Joe", "dob": "2016-01-26", "gender": "M",
        "ethnicity": "WBRI", "first_language": "ENG", "home_language": "ENG", "religion": "NOR", "ncy": "5",
        "enrol_status": "C", "sen_status": "N", "start_date": "2022-09-01"}


def blk(block_type, content, ordinal=1, file_id=1, guid="g1"):
    return {"file_id": file_id, "ordinal": ordinal, "base_id": "8862001", "block_type": block_type,
            "student_guid": guid, "content": content}


def rules(result):
    return sorted((a.rule, a.field, a.value, a.severity) for a in result.anomalies)


def test_every_suite_loads_and_names_real_gx_expectations():
    import great_expectations as gx

    for bt in BLOCK_TYPES:
        suite = load_suite(bt)
        for e in suite["expectations"]:
            cls = "".join(p.capitalize() for p in e["type"].split("_"))
            assert hasattr(gx.expectations, cls), e["type"]


def test_good_student_has_no_anomalies():
    r = validate_blocks([blk("student", GOOD)], run_label="t", as_of=AS_OF)
    assert r.anomalies == [] and r.invalid_blocks == set() and r.checked == 1


@pytest.mark.parametrize("change, expected", [
    ({"upn": "A886200326001"}, ("upn_check_letter", "upn", "A886200326001", "error")),
    ({"upn": "F88620032600"}, ("upn_check_letter", "upn", "F88620032600", "error")),
    ({"dob": "1990-01-01"}, ("dob_range", "dob", "1990-01-01", "error")),
    ({"dob": "2026-02-30"}, ("dob_range", "dob", "2026-02-30", "error")),
    ({"gender": "X"}, ("gender_code", "gender", "X", "error")),
    ({"ncy": "15"}, ("ncy_range", "ncy", "15", "error")),
    ({"surname": None}, ("surname_required", "surname", None, "error")),
    ({"sen_status": "Q"}, ("sen_status_code", "sen_status", "Q", "error")),
    ({"ethnicity": "ZZZZ"}, ("ethnicity_code", "ethnicity", "ZZZZ", "warning")),
    ({"first_language": "XXX"}, ("language_code", "first_language", "XXX", "warning")),
])
def test_each_student_rule(change, expected):
    r = validate_blocks([blk("student", dict(GOOD, **change))], run_label="t", as_of=AS_OF)
    assert rules(r) == [expected]
    assert r.invalid_blocks == ({(1, 1)} if expected[3] == "error" else set())


@pytest.mark.parametrize("block_type, content, expected", [
    ("address", {"street": "High St", "postcode": "CT1 2A"}, ("postcode_format", "postcode", "CT1 2A")),
    ("address", {"street": "High St", "postcode": "ct1 2ab"}, ("postcode_format", "postcode", "ct1 2ab")),
    ("address", {"street": "High St"}, ("postcode_required", "postcode", None)),
    ("sen", {"needs": [{"type": "SPLD", "ranking": 1}, {"type": "DYS", "ranking": 2}]},
     ("sen_need_code", "type", "DYS")),
    ("exclusions", {"exclusions": [{"category": "FIXD", "start_date": "2026-01-05", "reason": "PP", "term": "WIN"}]},
     ("exclusion_term", "term", "WIN")),
    ("attendance", {"academic_year": 2026, "marks": "//LL-A/"}, ("attendance_code", "marks", "//LL-A/")),
    ("attendance", {"academic_year": 2026, "changes": [{"date": "2026-10-01", "session": "AM", "code": "%"}]},
     ("attendance_code", "change_codes", "%")),
    ("attainment", {"results": [{"hierarchy": "KS2", "aspect": "Reading", "result": None}]},
     ("attainment_result_required", "result", None)),
])
def test_rules_of_other_block_types(block_type, content, expected):
    r = validate_blocks([blk(block_type, content), blk("student", GOOD, ordinal=2)], run_label="t", as_of=AS_OF)
    assert [(a.rule, a.field, a.value) for a in r.anomalies] == [expected]
    assert r.invalid_blocks == {(1, 1)}  # the student block of the same student is still valid


def test_valid_codes_pass():
    ok = [blk("address", {"street": "High St", "postcode": "CT1 2AB"}, 1),
          blk("sen", {"needs": [{"type": "ASD", "ranking": 1}]}, 2),
          blk("attendance", {"academic_year": 2026, "marks": "/\\LBDJPVWKCEIMRSTQGNOUXYZ#-"}, 3),
          blk("exclusions", {"exclusions": [{"category": "PERM", "start_date": "2026-01-05", "reason": "PP",
                                             "term": "SPR"}]}, 4)]
    assert validate_blocks(ok, run_label="t", as_of=AS_OF).anomalies == []


def test_simulated_la_is_clean_except_the_planted_typos():
    from b2b.ingest.messages import parse_sims7
    from simulator.world import World, WorldConfig

    world = World(WorldConfig.demo())
    until = datetime(2026, 10, 5, 17, tzinfo=UTC)
    blocks = []
    for fid, dfe in enumerate(["8862001", "8864001"], start=1):
        parsed = parse_sims7(world.export_sims7(dfe, "snapshot", until, None))
        blocks += [blk(b.block_type, b.content, i, fid, b.student_guid) for i, b in enumerate(parsed.blocks)]
    r = validate_blocks(blocks, run_label="t", as_of=until.date())
    planted = {g for (d, g), rule in world.entry_errors().items() if d in ("8862001", "8864001")}
    assert {a.student_guid for a in r.anomalies} == planted
    assert {a.rule for a in r.anomalies} == {"upn_check_letter"}


def test_structural_problem_suspends_only_its_file():
    blocks = [blk("student", GOOD, 1, file_id=1), blk("sen", {"needs": "SPLD"}, 1, file_id=2),
              blk("sen", {"needs": [{"type": "ASD", "ranking": 1}]}, 2, file_id=2),
              blk("mystery", {}, 1, file_id=3)]
    r = validate_blocks(blocks, run_label="t", as_of=AS_OF)
    assert set(r.suspended) == {2, 3}
    assert "'needs' is not a list" in r.suspended[2] and "unknown block type" in r.suspended[3]
    assert r.checked == 1


def test_missing_suite_is_a_clear_error(tmp_path):
    with pytest.raises(StructuralError, match="no expectation suite for block type 'student'"):
        load_suite("student", str(tmp_path))
    (tmp_path / "student.json").write_text('{"block_type": "student", "expectations": [{"type": "x", "kwargs": {}}]}')
    with pytest.raises(StructuralError, match="meta.rule.*kwargs.column"):
        load_suite("student", str(tmp_path))


def test_report_lists_rules_without_values(tmp_path):
    r = validate_blocks([blk("student", dict(GOOD, upn="A886200326001", surname="Zanzibar"))],
                        run_label="b2b__8862001__snapshot__20261005", report_dir=tmp_path, as_of=AS_OF)
    text = r.report_path.read_text()
    assert r.report_path.parent == tmp_path and r.report_path.suffix == ".html"
    assert "upn_check_letter" in text and "A886200326001" not in text and "Zanzibar" not in text


def test_verdicts_kept_in_the_database_spare_a_new_process_the_gx_call(db, monkeypatch):
    from b2b.ingest import validation

    blocks = [blk("student", GOOD, 1), blk("student", dict(GOOD, upn="A886200326001", gender="X"), 2, guid="g2"),
              blk("address", {"street": "High St", "postcode": "ct1 2ab"}, 3, guid="g2")]
    validation._verdicts.clear()
    first = validate_blocks(blocks, run_label="t", as_of=AS_OF, verdicts=db)
    assert db.execute("SELECT count(*) FROM ops.gx_verdict").fetchone()[0] > 0
    # no value is stored, only digests
    assert not db.execute("""SELECT 1 FROM ops.gx_verdict WHERE value_key LIKE '%%CT1%%' OR value_key LIKE '%%886%%'
                              OR length(value_key) <> 32""").fetchall()

    validation._verdicts.clear()  # a new task process

    def no_gx(pending):
        raise AssertionError(f"GX asked about {[(p[0], p[2]['kwargs']['column']) for p in pending]}")

    monkeypatch.setattr(validation, "_gx_judge", no_gx)
    again = validate_blocks(blocks, run_label="t", as_of=AS_OF, verdicts=db)
    assert rules(again) == rules(first) and again.invalid_blocks == first.invalid_blocks == {(1, 2), (1, 3)}
    # a value never judged still goes to GX
    with pytest.raises(AssertionError, match="postcode"):
        validate_blocks([blk("address", {"street": "High St", "postcode": "ZZ9 9ZZ"})], run_label="t", as_of=AS_OF,
                        verdicts=db)
