"""Task catalogue: schema, every rule with its message, the model, the CLI."""
import copy
import sys
from pathlib import Path

import pytest
import yaml

from b2b.config.catalogue import DEFAULT_PATH, CatalogueError, check_catalogue, load_catalogue, main_check, read_raw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from gen_catalogue import generate  # noqa: E402


@pytest.fixture
def demo():
    return read_raw(DEFAULT_PATH)


def write(tmp_path, data) -> Path:
    p = tmp_path / "cat.yaml"
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def task(data, key, bases=None):
    return next(t for t in data["tasks"] if t["key"] == key and (bases is None or t["bases"][0] in bases))


def test_demo_catalogue_is_valid_and_models_f3():
    cat = load_catalogue(DEFAULT_PATH)
    ids = [s.dag_id for s in cat.dag_specs()]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    assert "b2b__8862001__changed_data" in ids and "b2b__8862003__attendance_changed" in ids
    inactive = {s.dag_id: s.inactive_reason for s in cat.dag_specs() if not s.active}
    assert set(inactive) == {"b2b__8862003__attendance_weekly_legacy", "b2b__8862004__attendance_weekly_legacy"}
    assert all("F3" in r for r in inactive.values())
    assert len(cat.warnings) == 2
    assert cat.la.settings.b2b_s_age == 18 and cat.la.settings.guidmatch is True
    assert cat.base("8862003").migrated_on.isoformat() == "2026-07-20"
    # every kind of task is in the demo
    filters = {(s.task.filter, s.task.attendance, s.task.group_type, s.task.direction) for s in cat.dag_specs()}
    assert {f[0] for f in filters} == {"snapshot", "changed_data", "attendance", "attainment"}
    assert {f[1] for f in filters} >= {"all_current", "unauthorised_current", "changed"}
    assert {f[2] for f in filters} == {"ncy", "lac", "leavers"} and "import" in {f[3] for f in filters}


def mutate(fn):
    return fn


CASES = [
    # (mutation, expected fragment)
    (lambda d: task(d, "attendance_all").update(months=14), "task 'attendance_all' (bases 8862001, 8862002, 8864001, 8864002): field 'months': must be between 1 and 13, got 14"),
    (lambda d: task(d, "attendance_all").update(months=None), "field 'months': required with filter attendance (F24)"),
    (lambda d: task(d, "snapshot", ["8862001"]).update(months=2), "task 'snapshot' (bases 8862001, 8862002, 8864001, 8864002): field 'months': only with filter attendance"),
    (lambda d: task(d, "attendance_all").update(attendance=None), "field 'attendance': required with filter attendance (F22)"),
    (lambda d: task(d, "snapshot", ["8862001"])["bases"].append("8862003"), "one task cannot group SIMS 7 and SIMS Primary bases (F4)"),
    (lambda d: task(d, "attendance_all").update(attendance="changed"), "'changed' exists only for SIMS Primary bases (F2)"),
    (lambda d: task(d, "return_to_school").update(filter="snapshot"), "import-to-school tasks take Changed Data for an NCY group only (F25)"),
    (lambda d: task(d, "return_to_school").update(group={"type": "lac"}), "(F25)"),
    (lambda d: task(d, "attainment").update(hierarchies=[]), "field 'hierarchies': attainment tasks need at least one"),
    (lambda d: task(d, "leavers").update(group={"type": "leavers", "ncys": ["7"]}), "field 'group.ncys': only with group type ncy"),
    (lambda d: task(d, "leavers")["bases"].append("8869999"), "field 'bases': unknown base 8869999"),
    (lambda d: d["tasks"].append(copy.deepcopy(task(d, "leavers"))), "base 8864001 already has a task 'leavers'"),
    (lambda d: d["bases"].append(dict(d["bases"][0])), "base 8862001: duplicate DfE number"),
    (lambda d: d["bases"][0].update(dfe="9992001"), "base 9992001: field 'dfe': must start with the LA code 886"),
    (lambda d: d["bases"][4].pop("migrated_on"), "base 8862003: field 'migrated_on': required for a SIMS Primary base"),
    (lambda d: d["bases"][0].update(migrated_on="2026-01-01"), "base 8862001: field 'migrated_on': only SIMS Primary"),
    (lambda d: task(d, "leavers").update(schedule="61 18 * * 5"), "field 'schedule': not a valid cron expression"),
    (lambda d: task(d, "leavers").update(start_date="1999-01-01"), "field 'start_date': must be on or after 2000-01-01"),
    (lambda d: d["bases"][0].update(kind="sims8"), "base 8862001: field 'kind': 'sims8' is not one of"),
    (lambda d: d["bases"][1].pop("conn_id"), "base 8862002: 'conn_id' is a required property"),
    (lambda d: task(d, "leavers").update(group={"type": "ncy", "ncys": ["15"]}), "task 'leavers' (bases 8864001, 8864002): field 'group.ncys'"),
    (lambda d: d["la"]["settings"].update(B2B_S_AGE=40), "catalogue: field 'la.settings.B2B_S_AGE'"),
    (lambda d: task(d, "leavers").update(schedule="every friday"), "field 'schedule'"),
]


# fault sweep: catalogues that YAML or Python's regular expressions read differently from
# what the LA wrote; each is one error naming where, never a replaced or silently odd DAG
SWEEP_CASES = [
    (lambda d: d["bases"][0].update(conn_id="sims7_8862001\n"),
     "base 8862001: field 'conn_id': 'sims7_8862001\\n' does not match"),
    (lambda d: d["la"].update(code="886\n"), "catalogue: field 'la.code': '886\\n' does not match"),
    (lambda d: task(d, "leavers").update(schedule="0 18 30 2 *"),
     "task 'leavers' (bases 8864001, 8864002): field 'schedule': never fires (no such day): '0 18 30 2 *'"),
]


@pytest.mark.parametrize("mutation, expected", CASES + SWEEP_CASES)
def test_rules_name_base_task_and_field(tmp_path, demo, mutation, expected):
    mutation(demo)
    path = write(tmp_path, demo)
    errors, _ = check_catalogue(path)
    assert any(expected in e for e in errors), errors
    with pytest.raises(CatalogueError):
        load_catalogue(path)


def test_error_lists_every_problem(tmp_path, demo):
    task(demo, "attendance_all").update(months=0)
    task(demo, "attainment").update(hierarchies=[])
    with pytest.raises(CatalogueError) as exc:
        load_catalogue(write(tmp_path, demo))
    assert len(exc.value.problems) == 2
    assert "months" in str(exc.value) and "hierarchies" in str(exc.value)


def test_generated_600_base_catalogue(tmp_path):
    path = write(tmp_path, generate(600, 6))
    assert check_catalogue(path) == ([], [])
    specs = load_catalogue(path).dag_specs()
    assert len(specs) == 3600 and all(s.active for s in specs)


def test_main_check_exit_codes(tmp_path, demo, capsys):
    assert main_check(str(DEFAULT_PATH)) == 0
    out = capsys.readouterr().out
    assert "6 bases" in out and "2 inactive" in out and "warning:" in out
    task(demo, "attendance_all").update(months=20)
    assert main_check(str(write(tmp_path, demo))) == 1
    assert "must be between 1 and 13, got 20" in capsys.readouterr().out


def test_unreadable_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    errors, _ = check_catalogue(bad)
    assert errors and "mapping" in errors[0]


# issue 9 item 12: catalogues that used to produce DAGs silently (one even replaced a school's
# weekly snapshot DAG with its LAC task) now stop the DAG file with one import error
BROKEN = [
    ("duplicate_task_key", lambda d: task(d, "lac_snapshot").update(key="snapshot"),
     "field 'key': base 8862001 already has a task 'snapshot'"),
    ("duplicate_base", lambda d: d["bases"].append(dict(d["bases"][0])), "base 8862001: duplicate DfE number"),
    ("unknown_filter", lambda d: task(d, "changed_data", ["8862001"]).update(filter="changed"),
     "task 'changed_data' (bases 8862001, 8862002, 8864001, 8864002): field 'filter': 'changed' is not one of"),
    ("months_99", lambda d: task(d, "attendance_all").update(months=99),
     "task 'attendance_all' (bases 8862001, 8862002, 8864001, 8864002): field 'months': must be between 1 and 13, "
     "got 99"),
    ("mixed_sims7_and_primary", lambda d: task(d, "changed_data", ["8862001"])["bases"].append("8862003"),
     "field 'bases': one task cannot group SIMS 7 and SIMS Primary bases (F4)"),
]


@pytest.mark.parametrize("mutation, expected", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_dag_file_refuses_an_invalid_catalogue_with_one_import_error(tmp_path, demo, monkeypatch, capsys,
                                                                    mutation, expected):
    from airflow.dag_processing.dagbag import DagBag

    from b2b import PROJECT_ROOT

    mutation(demo)
    path = write(tmp_path, demo)
    monkeypatch.setenv("B2B_CATALOGUE", str(path))
    bag = DagBag(dag_folder=str(PROJECT_ROOT / "dags" / "b2b_generated.py"))
    assert bag.dags == {}, "no DAG may be built from an invalid catalogue"
    assert len(bag.import_errors) == 1
    message = next(iter(bag.import_errors.values()))
    assert "CatalogueError" in message and expected in message
    # `b2b config check` reports the same problem
    assert main_check(str(path)) == 1
    assert expected in capsys.readouterr().out


def test_dag_file_validates_a_catalogue_once_then_parses_without_json_schema(tmp_path, demo, monkeypatch):
    path = write(tmp_path, demo)
    monkeypatch.setenv("B2B_HOME", str(tmp_path / "home"))
    assert not list((tmp_path / "home").glob("cache/catalogue-valid-*"))
    load_catalogue(path, validate="once")
    assert len(list((tmp_path / "home").glob("cache/catalogue-valid-*"))) == 1
    # an edit is validated again (and refused)
    task(demo, "attendance_all").update(months=99)
    path.write_text(yaml.safe_dump(demo, sort_keys=False))
    with pytest.raises(CatalogueError, match="got 99"):
        load_catalogue(path, validate="once")


def test_a_key_given_twice_is_refused_naming_its_line(tmp_path):
    text = DEFAULT_PATH.read_text()
    first = '    schedule: "0 18 * * 0"\n'
    line = text[:text.index(first)].count("\n") + 1
    path = tmp_path / "cat.yaml"
    path.write_text(text.replace(first, first + '    schedule: "0 6 * * 0"\n', 1))  # YAML kept the 6 o'clock one
    errors, _ = check_catalogue(path)
    assert errors == [f"line {line + 1}, column 5: not valid YAML (key 'schedule' given twice in one mapping "
                      f"(first on line {line}); YAML would keep only the last)"]
    path.write_text(text.replace('{dfe: "8862001",', '{dfe: "8862001", dfe: "8862009",', 1))
    assert "key 'dfe' given twice" in check_catalogue(path)[0][0]
    with pytest.raises(CatalogueError, match="given twice"):
        load_catalogue(path)
    # a merge key's values may be overridden: that is what it is for
    path.write_text(text.replace('  - {dfe: "8862002"', '  - &b2 {dfe: "8862002"', 1).replace(
        "  - {dfe: \"8864001\", name: Riverside Academy, kind: sims7, conn_id: sims7_8864001}",
        "  - {<<: *b2, dfe: \"8864001\", name: Riverside Academy, conn_id: sims7_8864001}", 1))
    assert check_catalogue(path) == ([], check_catalogue(DEFAULT_PATH)[1])
    assert load_catalogue(path).bases["8864001"].kind == "sims7"


def test_an_alias_bomb_or_an_alias_inside_itself_is_refused_before_expanding(tmp_path):
    text = DEFAULT_PATH.read_text()
    bomb = "x0: &x0 [" + ", ".join(["lol"] * 10) + "]\n" + "".join(
        f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]\n" for i in range(1, 7))  # 10^7 values (add two for a billion)
    path = tmp_path / "cat.yaml"
    path.write_text(bomb + text)
    assert check_catalogue(path)[0] == ["not read: over 1,000,000 values once its aliases are expanded"]
    with pytest.raises(CatalogueError, match="over 1,000,000 values"):
        load_catalogue(path)
    path.write_text("x: &x [*x]\n" + text)
    assert check_catalogue(path)[0] == ["not read: an alias refers to the list or mapping it is in"]
    # aliases a catalogue really uses are fine: one list of schools for two tasks
    data = yaml.safe_load(text)
    path.write_text(text.replace('bases: ["8862001", "8862002", "8864001", "8864002"]',
                                 'bases: &sims7 ["8862001", "8862002", "8864001", "8864002"]', 1).replace(
        'bases: ["8862001", "8862002", "8864001", "8864002"]', "bases: *sims7"))
    assert check_catalogue(path)[0] == []
    assert len(load_catalogue(path).dag_specs()) == len(build_specs(data))


def build_specs(data):
    from b2b.config.catalogue import build

    return build(data).dag_specs()
