"""The DAG path's match stage (b2b.reconcile.match_stage) on simulator data: its set-based
candidate search and writes decide exactly as the matcher does on the whole LA in one call."""
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support import linked_children, load_bench_dataset

ROOT = Path(__file__).resolve().parent.parent
END = datetime(2026, 10, 5, 17, tzinfo=UTC)


@pytest.fixture(scope="module")
def dataset():
    from simulator.matching_data import match_dataset

    # several schools, with the simulator's traps (twins, namesakes, a sibling's UPN, typos, ...)
    return match_dataset(900, 1_800, seed=5, schools=6)


@pytest.fixture
def loaded(db_url, dataset):
    core, inc, _, _ = dataset
    return db_url, load_bench_dataset(core, inc, db_url)


def ctx(dag_id):
    from b2b.context import RunContext

    return RunContext(base_id="bench", task_key="snapshot", dag_id=dag_id, run_id="bench", source="sims7",
                      data_filter="snapshot", window_start=END - timedelta(days=7), window_end=END)


def stage_rows(url, dag_id, part_students, monkeypatch, settings=None):
    """results.match after the stage, with schools matched ``part_students`` at a time."""
    import psycopg

    from b2b.config.settings import Settings
    from b2b.reconcile import match_stage

    monkeypatch.setattr(match_stage, "PART_STUDENTS", part_students)
    parts: list[int] = []
    school_parts = getattr(match_stage.school_parts, "original", match_stage.school_parts)

    def counted(incoming):
        for p in school_parts(incoming):
            parts.append(len(p))
            yield p

    counted.original = school_parts
    monkeypatch.setattr(match_stage, "school_parts", counted)
    with psycopg.connect(url) as conn:
        counts = match_stage.match(conn, ctx(dag_id), settings or Settings())
        rows = conn.execute("""SELECT file_id::text || '|' || student_guid, status, coalesce(person_id, ''), rule,
                                      score, hidden, age_years, explanation
                                 FROM results.match ORDER BY 1""").fetchall()
    counts["parts"] = len(parts)
    return counts, {r[0]: r[1:] for r in rows}


def test_match_stage_decides_as_the_matcher_does_on_the_whole_la_in_one_call(loaded, dataset, monkeypatch):
    """Every results.match row (status, child, rule, score, explanation) equals the decision of
    ``b2b.matching.match`` given the whole LA and every student at once (what ``b2b match``
    does), whether the run is matched in one part or in many."""
    url, dag_id = loaded
    statuses = stage_decides_as_the_matcher(url, dag_id, len(dataset[1]), monkeypatch)
    # the data exercises every outcome
    assert statuses == {"matched", "matched_with_conflicts", "possible", "unmatched"}


def test_match_stage_finds_the_matchers_pairs_when_dobs_are_missing_or_typed_wrong(db_url, dataset, monkeypatch):
    """The forename + surname keys (issue 15): with the postcode, with the birthday (a year
    typed wrong), across a new year, alone when either record has no DOB. LA children and
    students without a DOB, years typed wrong and DOBs days apart across a new year decide in
    the DAG path as the matcher does on the whole LA."""
    import random

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from bench_matching import DAG_ID, load_dag_db
    finally:
        sys.path.remove(str(ROOT / "bench"))
    core, inc, truth, _ = dataset
    core, inc = core.copy(), inc.copy()
    rng = random.Random(7)
    # days apart across a new year (the LA's DOB or the school's in December), moved, no UPN
    row = {p: k for k, p in enumerate(core["person_id"])}
    for n, k in enumerate(rng.sample([k for k, i in enumerate(inc["incoming_id"]) if truth.get(i) in row], 40)):
        y = int(str(inc.at[k, "dob"])[:4])
        dec, jan = f"{y}-12-{rng.randint(20, 31)}", f"{y + 1}-01-0{rng.randint(1, 9)}"
        core.at[row[truth[inc.at[k, "incoming_id"]]], "dob"], inc.at[k, "dob"] = (dec, jan) if n % 2 else (jan, dec)
        inc.at[k, "postcode"], inc.at[k, "upn"] = "ZZ9 9ZZ", None
    for k in rng.sample(range(len(core)), 120):
        core.at[k, "dob"] = None
    for k in rng.sample(range(len(inc)), 120):
        d = str(inc.at[k, "dob"])
        dob = rng.choice([None, f"{int(d[:4]) + 1}{d[4:]}", f"{int(d[:4]) - 1}{d[4:]}"])
        if dob and dob[5:10] == "02-29":
            dob = None  # no 29 February that year
        inc.at[k, "dob"] = dob
        if dob is None and rng.random() < 0.5:
            inc.at[k, "postcode"] = "ZZ9 9ZZ"  # moved, no UPN: only the names are left to pair it
            inc.at[k, "upn"] = None
    load_dag_db(core, inc, db_url)
    statuses = stage_decides_as_the_matcher(db_url, DAG_ID, len(inc), monkeypatch)
    assert {"matched", "possible", "unmatched"} <= statuses


def stage_decides_as_the_matcher(url, dag_id, n_students, monkeypatch) -> set:
    """Every results.match row of the stage, in one part, in many and by hash joins, equals
    the decision of ``b2b.matching.match`` on the whole LA; returns the statuses seen."""
    import pandas as pd
    import psycopg

    from b2b import matching
    from b2b.reconcile import match_stage
    from b2b.reconcile.match_stage import CORE_SELECT, incoming_frame, term_frequencies

    counts, many = stage_rows(url, dag_id, 100, monkeypatch)  # 6 schools of ~150: one part per school
    assert counts["parts"] == 6
    single, one = stage_rows(url, dag_id, 100_000, monkeypatch)
    assert single["parts"] == 1
    assert many == one
    # a small run finds its candidates by index probes; a larger run of one part by hash joins,
    # or, when it is WHOLE_LA_SHARE of the LA or more, from every LA child (as several parts
    # do): the same rows each way
    assert counts["students"] <= match_stage.SMALL_RUN_STUDENTS
    whole_la = []
    unspied = match_stage._whole_la_parts

    def spied(conn, parts):
        whole_la.append(len(parts))
        yield from unspied(conn, parts)

    monkeypatch.setattr(match_stage, "_whole_la_parts", spied)
    monkeypatch.setattr(match_stage, "SMALL_RUN_STUDENTS", 0)
    monkeypatch.setattr(match_stage, "WHOLE_LA_SHARE", float("inf"))
    _, hashed = stage_rows(url, dag_id, 100_000, monkeypatch)
    assert hashed == one and whole_la == []
    monkeypatch.setattr(match_stage, "WHOLE_LA_SHARE", 0.1)  # (the students are half the LA's children)
    _, from_whole_la = stage_rows(url, dag_id, 100_000, monkeypatch)
    assert from_whole_la == one and whole_la == [1]
    assert counts["students"] == len(one) == n_students
    with psycopg.connect(url) as conn:
        files = [r[0] for r in conn.execute("SELECT file_id FROM raw.inbound_file")]
        conn.execute("DELETE FROM core.child_link WHERE file_id = ANY(%s)", (files,))  # as before the stage
        inc = incoming_frame(conn, files, END)
        core = pd.DataFrame(conn.execute(f"SELECT {CORE_SELECT} FROM core.child c WHERE c.active ORDER BY 1")
                            .fetchall(), columns=matching.CORE_COLUMNS)
        tf = term_frequencies(conn, inc)
        conn.rollback()
    want = matching.match(core, inc, matching.MatchConfig(), tf=tf).set_index("incoming_id")
    assert set(want.index) == set(one)
    statuses = set()
    for iid, (status, pid, rule, score, _hidden, _age, expl) in one.items():
        w = want.loc[iid]
        assert (status, pid, rule) == (w["status"], w["person_id"], w["rule"]), iid
        assert (score is None and pd.isna(w["score"])) or float(score) == pytest.approx(float(w["score"])), iid
        assert expl == json.loads(w["explanation"]), iid
        statuses.add(status)
    return statuses


def test_match_stage_hides_only_unmatched_students_older_than_b2b_s_age(loaded, monkeypatch):
    from b2b.config.settings import Settings

    url, dag_id = loaded
    counts, rows = stage_rows(url, dag_id, 100_000, monkeypatch)
    age_limit = Settings().b2b_s_age
    for status, _pid, _rule, _score, hidden, age, _expl in rows.values():
        assert hidden == (status == "unmatched" and age is not None and age > age_limit)
    assert counts["unmatched_hidden"] == sum(1 for r in rows.values() if r[4])
    assert counts["matched"] + counts["possible"] + counts["unmatched"] == counts["students"] == len(rows)



def test_match_stage_records_each_students_age_in_whole_years_on_the_window_end(loaded, monkeypatch):
    """age_years (what B2B_S_AGE hides by) is the student's age on the window's last day, a
    birthday that day included: as PostgreSQL's age() counts it, for every student."""
    import psycopg

    url, dag_id = loaded
    _, rows = stage_rows(url, dag_id, 100_000, monkeypatch)
    with psycopg.connect(url) as conn:
        want = dict(conn.execute("""SELECT file_id::text || '|' || student_guid,
                                           date_part('year', age(%s::date, dob))::int
                                      FROM staging.student""", (END.date(),)).fetchall())
    assert {k: r[5] for k, r in rows.items()} == want
    assert len(set(want.values())) > 5  # children of many ages


def test_a_prepared_la_subset_decides_as_the_same_rows_prepared_afresh(dataset):
    """``prepare_core`` once, ``take`` a part's rows: the matcher's decisions (every column,
    explanation included) are those of the same LA rows given as a frame (issue 15)."""
    import numpy as np
    import pandas as pd

    from b2b import matching
    from b2b.matching.comparisons import TermFrequencies

    core, inc, _, _ = dataset
    core = core[matching.CORE_COLUMNS].reset_index(drop=True)
    whole = matching.prepare_core(core)
    tf = TermFrequencies.from_frame(whole.prep)
    rows = np.flatnonzero(np.random.default_rng(3).random(len(core)) < 0.7)  # a part's candidates
    part = inc[matching.INCOMING_COLUMNS].iloc[: len(inc) // 2]
    got = matching.match(whole.take(rows), part, tf=tf)
    want = matching.match(core.iloc[rows], part, tf=tf)
    pd.testing.assert_frame_equal(got, want)
    assert set(got["status"]) == {"matched", "matched_with_conflicts", "possible", "unmatched"}
    assert got.equals(matching.match(whole.take(np.isin(np.arange(len(core)), rows)), part, tf=tf))
    assert matching.match(whole, part, tf=tf).equals(matching.match(core, part, tf=tf))


def one_child_two_schools(la_name, gender, records):
    """The LA knows one child (``la_name`` Jones, born 2016-03-04 at 12 High Street, AB1 2CD);
    ``records`` (school, GUID, forename) are school records of that surname, DOB and home.
    Returns (LA frame, school frame, the ``bench_matching`` module: ``load_dag_db``, ``DAG_ID``)."""
    import pandas as pd

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_matching
    finally:
        sys.path.remove(str(ROOT / "bench"))
    from b2b import matching

    core = pd.DataFrame([("P1", None, la_name, None, "Jones", gender, "2016-03-04", "AB1 2CD", "12 High Street")],
                        columns=["person_id", "upn", "forename", "middle_names", "surname", "gender", "dob",
                                 "postcode", "address_line1"])
    inc = pd.DataFrame([(f"{b}:{g}", b, None, g, fn, None, "Jones", gender, "2016-03-04", "AB1 2CD", "12 High Street")
                        for b, g, fn in records], columns=matching.INCOMING_COLUMNS)
    return core, inc, bench_matching


def test_a_child_claimed_exactly_in_another_part_is_not_linked_to_a_form_of_its_name(db_url, monkeypatch):
    """The matcher's cross-school guard holds across parts: the LA knows Leo; Leo's school sends
    Leo, another school (matched in another part) sends Leon, his twin the LA never knew. Leon
    goes to review as ``b2b.matching.match`` on everything at once decides (before: linked)."""
    from b2b import matching

    core, inc, bench = one_child_two_schools("Leo", "M", (("8862001", "g-leo", "Leo"),
                                                               ("8862005", "g-leon", "Leon")))
    want = matching.match(core, inc).set_index("incoming_id")
    assert want.loc["8862005:g-leon", "status"] == "possible"
    by_guid = a_part_per_school_decides_as_one_call(db_url, monkeypatch, core, inc, bench, want)
    assert by_guid["g-leon"][6]["why_not_auto"] == ["claimed_twice"]


@pytest.mark.parametrize("setting", ["true", "false"])
def test_the_la_setting_school_evidence_reaches_the_match_stage(db_url, monkeypatch, setting):
    """The catalogue's SCHOOL_EVIDENCE (issue 14): the LA holds Leo at his school, his family has
    moved house; with the setting on (the default) the school corroborates his very name and DOB
    and he is linked, off he is an officer's question."""
    from b2b.config.settings import Settings

    core, inc, bench = one_child_two_schools("Leo", "M", (("8862001", "g-leo", "Leo"),))
    bench.load_dag_db(core.assign(base_id="8862001"), inc.assign(postcode="TN4 8AB", address_line1="9 New Road"),
                      db_url)
    settings = Settings.from_mapping({"SCHOOL_EVIDENCE": setting})
    assert settings.school_evidence is (setting == "true") and Settings().school_evidence
    _, rows = stage_rows(db_url, bench.DAG_ID, 20_000, monkeypatch, settings)
    [(status, person, *_, explanation)] = rows.values()
    if setting == "true":
        assert (status, person) == ("matched_with_conflicts", "P1") and explanation["at_the_las_school"] is True
    else:
        assert (status, person) == ("possible", "P1") and "at_the_las_school" not in explanation


def a_part_per_school_decides_as_one_call(db_url, monkeypatch, core, inc, bench, want) -> dict:
    """The stage with a part per school: every record's status, child and explanation are
    ``want``'s (``b2b.matching.match`` on everything at once). Returns the rows by GUID."""
    bench.load_dag_db(core, inc, db_url)
    counts, rows = stage_rows(db_url, bench.DAG_ID, 1, monkeypatch)
    assert counts["parts"] == len(inc)
    by_guid = {k.split("|")[1]: v for k, v in rows.items()}
    for iid, w in want.iterrows():
        g = iid.split(":", 1)[1]
        assert by_guid[g][:2] == (w["status"], w["person_id"]), g
        assert by_guid[g][6] == json.loads(w["explanation"]), g
    return by_guid


@pytest.mark.parametrize("schools", [("8862001", "8862005"), ("8862005", "8862001")])
def test_a_twin_in_another_part_whose_name_only_resembles_the_childs_is_another_child(db_url, monkeypatch,
                                                                                         schools):
    """Across parts, as in one call: the LA knows Isla; her school sends Isla, another school
    (matched in another part, before or after hers) sends "Isha", her twin the LA never knew.
    ``b2b.matching.match`` on everything at once calls Isha another child (``unmatched``,
    ``claimed_elsewhere``: the child is Isla's). Before, the part without Isla's record
    proposed the child to Isha (``possible``)."""
    from b2b import matching

    core, inc, bench = one_child_two_schools("Isla", "F", ((schools[0], "g-isla", "Isla"),
                                                                (schools[1], "g-isha", "Isha")))
    want = matching.match(core, inc).set_index("incoming_id")
    isha = want.loc[f"{schools[1]}:g-isha"]
    assert isha["status"] == "unmatched" and "claimed_elsewhere" in isha["explanation"]
    a_part_per_school_decides_as_one_call(db_url, monkeypatch, core, inc, bench, want)



@pytest.mark.parametrize("name, rule", [("Iska", "typed_forename_at_home"), ("Ipla", "overwhelming")])
@pytest.mark.parametrize("schools", [("8862001", "8862005"), ("8862005", "8862001")])
def test_a_link_on_overwhelming_evidence_is_claimed_by_a_record_in_another_part(db_url, monkeypatch, schools,
                                                                               name, rule):
    """No identifiers, one run of two parts: the LA knows Isla; her school sends Isla, another
    school (in the other part, before or after hers) sends "Iska" or "Ipla", a twin the LA never
    knew. Alone, that part links the child on overwhelming evidence (or a forename typed at
    home); another part's record claims the child (``PartHolders``), so the part is decided
    again and the twin is not linked, exactly as ``b2b.matching.match`` decides in one call."""
    from b2b import matching

    core, inc, bench = one_child_two_schools("Isla", "F", ((schools[0], "g-isla", "Isla"),
                                                                (schools[1], "g-twin", name)))
    alone = matching.match(core, inc.iloc[[1]])
    assert alone["status"].iloc[0] == "matched_with_conflicts" and json.loads(alone["explanation"].iloc[0])[rule]
    want = matching.match(core, inc).set_index("incoming_id")
    assert want.loc[f"{schools[1]}:g-twin", "status"] != "matched_with_conflicts"
    by_guid = a_part_per_school_decides_as_one_call(db_url, monkeypatch, core, inc, bench, want)
    assert by_guid["g-isla"][:2] == ("matched", "P1") and rule not in by_guid["g-twin"][6]

def test_name_totals_follow_every_change_of_the_la_children(db):
    """The term-frequency totals (named children, sum of squared name counts) come from a cache
    per state of core.child (migration 0033): after every kind of change, and across a rolled
    back one, they equal a count over the whole table."""

    def direct():
        out = {}
        for col, key in (("fn", "m_fn"), ("sn", "m_sn")):
            out[col] = db.execute(f"""SELECT coalesce(sum(c), 0), coalesce(sum(c * c), 0)
                                        FROM (SELECT count(*) AS c FROM core.child WHERE {key} <> ''
                                               GROUP BY {key}) x""").fetchone()
        return {k: (int(n), int(sq)) for k, (n, sq) in out.items()}

    def cached():
        return {col: (int(n), int(sq)) for col, n, sq in db.execute("SELECT * FROM core.child_name_totals()")}

    def add(pid, fore, sur):
        db.execute("INSERT INTO core.child (person_id, forename, surname) VALUES (%s, %s, %s)", (pid, fore, sur))

    assert cached() == direct() == {"fn": (0, 0), "sn": (0, 0)}
    for pid, fore, sur in (("P1", "Amelia", "Jones"), ("P2", "Amélia", "JONES"), ("P3", "Olivia", "Smith")):
        add(pid, fore, sur)
    db.commit()
    assert cached() == direct() == {"fn": (3, 5), "sn": (3, 5)}
    assert cached() == direct()  # served from the cache
    db.execute("UPDATE core.child SET surname = 'Smith' WHERE person_id = 'P1'")
    db.commit()
    assert cached() == direct() == {"fn": (3, 5), "sn": (3, 5)}
    db.execute("UPDATE core.child SET forename = NULL WHERE person_id = 'P3'")
    db.commit()
    assert cached() == direct() == {"fn": (2, 4), "sn": (3, 5)}
    add("P4", "Noah", "Smith")  # seen by its own transaction, gone after the rollback
    assert cached() == direct() == {"fn": (3, 5), "sn": (4, 10)}
    db.rollback()
    assert cached() == direct() == {"fn": (2, 4), "sn": (3, 5)}
    db.execute("DELETE FROM core.child WHERE person_id = 'P2'")
    db.commit()
    assert cached() == direct() == {"fn": (1, 1), "sn": (2, 4)}
    db.execute("TRUNCATE core.child CASCADE")
    db.commit()
    assert cached() == direct() == {"fn": (0, 0), "sn": (0, 0)}
    assert db.execute("SELECT count(*) FROM core.child_name_totals").fetchone()[0] == 2  # older states pruned

    # Delete Files prunes the noted changes: the state number is kept (so it is never reused
    # and a total cached for an old state is never served for a new one), and the totals
    # still follow every change
    state, noted = db.execute("SELECT core.child_state(), count(*) FROM core.child_change").fetchone()
    assert noted >= 5  # five committed writes above
    assert db.execute("SELECT core.prune_child_change()").fetchone()[0] == noted
    db.commit()
    assert db.execute("SELECT core.child_state(), count(*) FROM core.child_change").fetchone() == (state, 0)
    assert cached() == direct() == {"fn": (0, 0), "sn": (0, 0)}
    add("P5", "Noah", "Smith")
    db.commit()
    assert db.execute("SELECT core.child_state()").fetchone()[0] == state + 1
    assert cached() == direct() == {"fn": (1, 1), "sn": (1, 1)}
    assert db.execute("SELECT count(*) FROM core.child_name_totals").fetchone()[0] == 2


@pytest.mark.parametrize("name, rule", [("Iska", "typed_forename_at_home"), ("Ipla", "overwhelming")])
@pytest.mark.parametrize("order", [("8862001", "8862005"), ("8862005", "8862001")])
def test_a_twin_on_another_roll_is_never_linked_on_overwhelming_evidence_whichever_school_runs_first(
        db_url, order, name, rule):
    """No identifiers. The LA knows Isla; her school (8862001) sends Isla; another school
    (8862005) sends "Iska" or "Ipla" for a twin the LA never knew: the same surname, DOB and
    home, and a forename that neither the LA's children nor the name lists hold — what a
    mistyped forename looks like, which the matcher links when nothing claims the child (one
    key away: ``typed_forename_at_home``; further: ``overwhelming_evidence``). Each school is its own run: whichever
    runs first, Iska is not linked to Isla's child (before: linked either way), and Isla is."""
    import psycopg

    from b2b import matching
    from b2b.config.settings import Settings
    from b2b.reconcile import match_stage

    core, inc, bench = one_child_two_schools("Isla", "F", (("8862001", "g-isla", "Isla"),
                                                                ("8862005", "g-iska", name)))
    alone = matching.match(core, inc.iloc[[1]])  # Iska's school alone: overwhelming evidence
    e = json.loads(alone["explanation"].iloc[0])
    assert alone["status"].iloc[0] == "matched_with_conflicts" and e.get(rule)
    both = matching.match(core, inc).set_index("incoming_id")  # one batch: Isla claims the child
    assert both.loc["8862005:g-iska", "status"] == "unmatched"  # claimed elsewhere
    bench.load_dag_db(core, inc, db_url)
    with psycopg.connect(db_url) as conn:
        conn.execute("UPDATE raw.inbound_file SET dag_id = 'b2b__' || base_id || '__snapshot'")
        conn.commit()
        for base in order:
            match_stage.match(conn, ctx(f"b2b__{base}__snapshot"), Settings())
        rows = {g: (st, p, e) for g, st, p, e in conn.execute(
            "SELECT student_guid, status, person_id, explanation FROM results.match")}
        links = conn.execute("SELECT student_guid, person_id FROM core.child_link ORDER BY 1").fetchall()
    assert rows["g-isla"][:2] == ("matched", "P1")  # its forename is the child's
    if order[0] == "8862001":  # Isla linked first: Iska's run sees the child claimed, and proposes it
        # (the batch sends Iska to unmatched, claimed_elsewhere, seeing Isla's record itself)
        assert rows["g-iska"][:2] == ("possible", "P1")
        assert rule not in rows["g-iska"][2]
    else:  # Iska linked first: Isla's run sends that link to an officer
        assert rows["g-iska"][:2] == ("possible", "P1")
        assert rows["g-iska"][2]["why_not_auto"] == ["linked_elsewhere"]
    assert links == [("g-isla", "P1")]

def test_name_counts_follow_every_change_of_the_la_children(db):
    """The term-frequency counts per name come from a cache per state of core.child (migration
    0038): after every kind of change they equal a count over the whole table, a transaction
    that changed core.child itself sees its own counts (uncached), and a rollback leaves none."""
    names = (["amelia", "olivia", "noah", "zed"], ["jones", "smith", "zed"])

    def direct():
        out = {}
        for col, key, keys in (("fn", "m_fn", names[0]), ("sn", "m_sn", names[1])):
            out |= {(col, k): int(n) for k, n in db.execute(
                f"SELECT {key}, count(*) FROM core.child WHERE {key} = ANY(%s) GROUP BY 1", (keys,))}
        return out

    def cached():
        return {(col, k): int(n) for col, k, n in db.execute("SELECT * FROM core.child_name_counts(%s, %s)", names)}

    def add(pid, fore, sur):
        db.execute("INSERT INTO core.child (person_id, forename, surname) VALUES (%s, %s, %s)", (pid, fore, sur))

    assert cached() == direct() == {}
    for pid, fore, sur in (("P1", "Amelia", "Jones"), ("P2", "Amélia", "JONES"), ("P3", "Olivia", "Smith")):
        add(pid, fore, sur)
    db.commit()
    assert cached() == direct() == {("fn", "amelia"): 2, ("fn", "olivia"): 1, ("sn", "jones"): 2, ("sn", "smith"): 1}
    assert cached() == direct()  # served from the cache
    db.execute("UPDATE core.child SET surname = 'Smith' WHERE person_id = 'P1'")
    db.commit()
    assert cached() == direct() == {("fn", "amelia"): 2, ("fn", "olivia"): 1, ("sn", "jones"): 1, ("sn", "smith"): 2}
    add("P4", "Noah", "Smith")  # seen by its own transaction, gone after the rollback
    assert cached() == direct() == {("fn", "amelia"): 2, ("fn", "olivia"): 1, ("fn", "noah"): 1, ("sn", "jones"): 1,
                                    ("sn", "smith"): 3}
    db.rollback()
    assert cached() == direct() == {("fn", "amelia"): 2, ("fn", "olivia"): 1, ("sn", "jones"): 1, ("sn", "smith"): 2}
    db.execute("DELETE FROM core.child WHERE person_id = 'P2'")
    db.commit()
    assert cached() == direct() == {("fn", "amelia"): 1, ("fn", "olivia"): 1, ("sn", "smith"): 2}
    db.execute("TRUNCATE core.child CASCADE")
    db.commit()
    assert cached() == direct() == {}
    states = db.execute("SELECT DISTINCT changes FROM core.child_name_count").fetchall()
    assert len(states) == 1  # older states pruned
    # Delete Files prunes the noted changes (migration 0037): the state number is kept, the
    # counts still follow every change (a count cached for an old state is never served)
    add("P5", "Noah", "Smith")
    db.commit()
    assert cached() == direct() == {("fn", "noah"): 1, ("sn", "smith"): 1}
    assert db.execute("SELECT core.prune_child_change()").fetchone()[0] >= 5
    db.commit()
    assert cached() == direct() == {("fn", "noah"): 1, ("sn", "smith"): 1}
    add("P6", "Zed", "Zed")
    db.commit()
    assert cached() == direct() == {("fn", "noah"): 1, ("fn", "zed"): 1, ("sn", "smith"): 1, ("sn", "zed"): 1}


def test_earlier_cross_run_links_are_found_through_their_partial_index(db):
    """After every run, the links earlier runs made on overwhelming evidence (or a forename
    typed at home) are looked up by child. Migration 0041's partial index holds exactly those
    links; the statement's predicate must imply the index's, or each run reads the whole of
    ``results.match`` again (issue 15). Changing ``CROSS_RUN_RULES`` without the index fails here."""
    from b2b.reconcile import match_stage

    db.execute("SET enable_seqscan = off")
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + match_stage._EARLIER_LINKS, {"files": [1]}))
    assert "match_cross_run_link_idx" in plan
    predicate = db.execute("SELECT pg_get_expr(indpred, indrelid) FROM pg_index "
                           "WHERE indexrelid = 'results.match_cross_run_link_idx'::regclass").fetchone()[0]
    assert all(f"'{rule}'" in predicate for rule in match_stage.CROSS_RUN_RULES)


@pytest.mark.parametrize("before", ["on", "off"])
def test_the_cross_part_claims_are_never_joined_by_a_loop_over_every_pair(db, before):
    """``claimed_exactly_in_another_part`` filters both sides on explanation paths the planner
    cannot estimate: with ``results.match``'s statistics taken while it was nearly empty (an
    LA's first load), it guessed one row a side and joined the run's claims to its links by a
    nested loop (1.6 s at 30k x 15k in parts of 5,000, the square of the run). It runs with
    nested loops off, and the setting is as it was after it."""
    from b2b.reconcile import match_stage

    db.execute("ANALYZE results.match")
    db.execute(f"SET enable_nestloop = {before}")
    db.execute(match_stage._NO_NESTLOOP)
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + match_stage._CLAIMED_EXACTLY, {"files": [1, 2]}))
    assert "Nested Loop" not in plan and "Hash" in plan, plan
    db.execute(match_stage._NESTLOOP_BACK)
    assert db.execute("SHOW enable_nestloop").fetchone()[0] == before
    assert match_stage.claimed_exactly_in_another_part(db, [1, 2]) == 0
    assert db.execute("SHOW enable_nestloop").fetchone()[0] == before

def test_a_large_runs_guid_guard_is_one_hashed_join_whatever_the_statistics_say(db):
    """A replay of an LA's first load (100k x 80k) spent over 10 minutes in the GUID guard where
    the first run took 30 s: ``results.match`` and ``core.child_link`` had been analysed while
    they held no live rows, the run's earlier rows were deleted in the stage's own transaction
    (their index entries still there), and the guard's probe per record went through each
    table's index on its second column: a pass over every entry per record. A large run's guard
    is one join, planned with nested loops off: no loop whatever the statistics; a school run's
    keeps its probes (cheap for a few records)."""
    from b2b.reconcile import match_stage

    db.execute("ANALYZE results.match, core.child_link")  # (empty: the statistics of the replay)
    db.execute(match_stage._NO_NESTLOOP)
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + match_stage._GUID_ELSEWHERE_LARGE_SQL, {"files": [1, 2]}))
    db.execute(match_stage._NESTLOOP_BACK)
    assert "Nested Loop" not in plan and "Hash Join" in plan, plan
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + match_stage._GUID_ELSEWHERE_SQL, {"files": [1, 2]}))
    assert "Nested Loop" in plan and "child_link" in plan


@pytest.mark.parametrize("before", ["on", "off"])
def test_a_school_runs_candidate_probes_leave_the_planner_settings_as_they_were(db, before):
    """A school run's candidate, link and rejection statements run with hash and merge joins
    and parallel workers off (index probes); the statements after them in the stage's
    transaction (the guards, the carers) run with the settings as they were."""
    import pandas as pd

    from b2b.matching import INCOMING_COLUMNS
    from b2b.reconcile import match_stage

    part = pd.DataFrame([("i1", "8862001", "", "g1", "Isla", "", "Hill", "F", "2015-03-04", "CT2 7XY", "4 Elm Way")],
                        columns=INCOMING_COLUMNS)
    with db.transaction():
        db.execute(f"SET LOCAL enable_hashjoin = {before}")
        db.execute("SET LOCAL max_parallel_workers_per_gather = 1")
        core, links, rejected = match_stage._one_small_part(db, part, prepared=True)
        assert db.execute("SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin'), "
                          "current_setting('max_parallel_workers_per_gather')").fetchone() == (before, "on", "1")
    assert len(core) == 0 and len(links) == 0 and len(rejected) == 0


def test_the_match_stage_analyses_the_run_tables_a_snapshot_has_outgrown(db):
    """Issue 15: an LA's first snapshot fills results.match, core.child_link and the staging
    tables faster than autovacuum analyses them, and statements planned on statistics taken
    when they were nearly empty scanned whole tables per record (0.2-7 s a school run in the
    stage bench). A match run analyses (its key columns) a run table changed by more than half
    its rows (at least 1,000) since its last analysis; a table that has not grown so is left
    alone."""
    from datetime import UTC, datetime

    from b2b.config.settings import Settings
    from b2b.context import RunContext
    from b2b.reconcile import match_stage

    def stats(table):
        db.commit()  # (statistics views are read as of the transaction's first look)
        return db.execute("SELECT s.n_live_tup, coalesce(s.analyze_count, 0), c.reltuples FROM pg_stat_user_tables s "
                          "JOIN pg_class c ON c.oid = s.relid WHERE s.schemaname || '.' || s.relname = %s",
                          (table,)).fetchone()

    db.execute("ANALYZE core.child_link, results.match")  # (both empty)
    linked_children(db, "8862001", 3000)
    db.commit()
    assert stats("core.child_link")[0] >= 3000 and stats("core.child_link")[2] <= 0
    before = stats("results.match")[1]
    end = datetime(2026, 10, 4, 17, tzinfo=UTC)
    ctx = RunContext(base_id="8862001", task_key="snapshot", dag_id="b2b__8862001__snapshot", run_id="r",
                     source="sims7", data_filter="snapshot", window_start=None, window_end=end)
    match_stage.match(db, ctx, Settings())
    db.execute("SELECT pg_stat_force_next_flush()")
    assert stats("core.child_link")[2] == 3000  # analysed: the planner knows its rows
    assert stats("results.match")[1] == before  # (unchanged: not analysed again)
    analysed = stats("core.child_link")[1]
    match_stage.match(db, ctx, Settings())  # (and not again while it has not grown)
    db.execute("SELECT pg_stat_force_next_flush()")
    assert stats("core.child_link")[1] == analysed


def test_a_large_run_before_the_la_has_loaded_its_children_leaves_every_student_unmatched(db_url, monkeypatch):
    """An LA's first snapshot arriving before its records are loaded: a large run, in one part
    (the whole-LA read: any run is a large share of no children) or in several, decides every
    student unmatched without a candidate, and fails nothing."""
    from b2b.reconcile import match_stage
    from simulator.matching_data import match_dataset

    core, inc, _, _ = match_dataset(300, 600, seed=5, schools=2)
    dag_id = load_bench_dataset(core.iloc[0:0], inc, db_url)
    monkeypatch.setattr(match_stage, "SMALL_RUN_STUDENTS", 0)
    for part_students, parts in ((100_000, 1), (100, 2)):
        counts, rows = stage_rows(db_url, dag_id, part_students, monkeypatch)
        assert counts["parts"] == parts
        assert counts["unmatched"] == counts["students"] == len(rows) == len(inc)
        assert {r[1] for r in rows.values()} == {""} and {r[2] for r in rows.values()} == {"none"}


def test_the_cross_run_links_read_from_the_decisions_are_those_the_database_finds(db):
    """``cross_run_links`` reads a part's overwhelming / typed-at-home links from the decisions
    in hand instead of from results.match (``explanation ?| ARRAY[...]``): the same children,
    a rule's name elsewhere in an explanation (a nested key, a text value) counted by neither,
    a record without a child never."""
    import pandas as pd

    from b2b.reconcile import match_stage

    decided = pd.DataFrame({
        "person_id": ["P1", "P2", "P3", "P4", "", "P1", "P6"],
        "explanation": [
            '{"overwhelming": {"place": "postcode"}, "score": 14.0}',
            '{"typed_forename_at_home": true}',
            '{"fields": {"overwhelming": 1}}',                      # nested: not the rule
            '{"why_not_auto": ["overwhelming"]}',                   # a text value: not the rule
            '{"overwhelming": {"place": "address"}}',               # no child
            '{"overwhelming": {"place": "address"}}',               # P1 again: once
            None]})
    got = match_stage.cross_run_links(decided)
    assert got == ["P1", "P2"]
    sql = db.execute(
        f"""SELECT DISTINCT person_id FROM unnest(%s::text[], %s::jsonb[]) AS m (person_id, explanation)
             WHERE person_id <> '' AND {match_stage._cross_run('m')} ORDER BY 1""",
        (decided["person_id"].tolist(), [e if isinstance(e, str) else "{}" for e in decided["explanation"]])).fetchall()
    assert [r[0] for r in sql] == got


def test_part_holders_follow_the_rows_as_they_are_written_and_rewritten():
    """What ``claimed_outside`` asks of the run's other parts: a child named by another part's
    row, as the rows stand (a part decided again and rewritten no longer names its old child)."""
    from b2b.reconcile.match_stage import PartHolders

    h = PartHolders()
    h.add(0, ["P1", "P2", None, ""])
    h.add(1, ["P1", "P3", "P3"])
    assert h.elsewhere(0, ["P1", "P2", "P3", "P9"]) == {"P1", "P3"}
    assert h.elsewhere(1, ["P1", "P2", "P3"]) == {"P1", "P2"}
    h.remove(1, ["P1", "P3"])  # part 1 decided again: two of its rows changed child
    h.add(1, ["P2", None])
    assert h.elsewhere(0, ["P1", "P2", "P3"]) == {"P2", "P3"}  # one row still names P3
    h.remove(1, ["P3"])
    assert h.elsewhere(0, ["P1", "P3"]) == set()


def spy_forks(monkeypatch) -> list:
    """The (items, processes) of each b2b.forked.ordered_map call, as it is called."""
    from b2b import forked

    used = []
    unspied = forked.ordered_map

    def spied(fn, n, p, per_child=None):
        used.append((n, p))
        return unspied(fn, n, p, per_child)

    monkeypatch.setattr(forked, "ordered_map", spied)
    return used


@pytest.mark.parametrize("procs", ["1", "3"])
def test_a_run_of_several_parts_decides_alike_in_one_process_or_several(loaded, monkeypatch, procs):
    """An LA's first load (several parts) decides its parts in forked processes, one per core
    (``B2B_MATCH_PROCESSES``, b2b.forked): every results.match row (status, child, rule,
    score, explanation) is the one a single process writes, and the one a single part gives."""
    from b2b import forked
    from b2b.reconcile import match_stage

    url, dag_id = loaded
    used = spy_forks(monkeypatch)
    monkeypatch.setenv(forked.PROCESSES_ENV, procs)
    monkeypatch.setattr(match_stage, "PARTS_PER_PROCESS", 1)  # (a process forked per part: six, not three)
    counts, many = stage_rows(url, dag_id, 100, monkeypatch)
    assert counts["parts"] == 6
    # (the first pass; the parts decided again with the other parts' claims, when several are)
    assert used[:1] == ([] if procs == "1" else [(6, 3)]) and all(n > 1 and p == 3 for n, p in used[1:])
    monkeypatch.setenv(forked.PROCESSES_ENV, "1")
    _, one = stage_rows(url, dag_id, 100_000, monkeypatch)
    assert many == one


def test_a_part_failing_in_a_forked_process_fails_the_run_and_writes_nothing(loaded, monkeypatch):
    """A part whose matcher fails in its process ends the stage with an error naming the part;
    the stage's transaction is rolled back (results.match as before the run) and no process
    is left behind."""
    import os

    import psutil
    import psycopg

    from b2b import forked
    from b2b.config.settings import Settings
    from b2b.reconcile import match_stage

    url, dag_id = loaded
    _, before = stage_rows(url, dag_id, 100_000, monkeypatch)
    parent = os.getpid()
    unbroken = match_stage._decide_first

    def broken(part, *a, **k):
        if os.getpid() != parent:  # (in a forked process: the first part fails)
            raise MemoryError("a part too large")
        return unbroken(part, *a, **k)

    monkeypatch.setattr(match_stage, "_decide_first", broken)
    monkeypatch.setattr(match_stage, "PART_STUDENTS", 100)
    monkeypatch.setenv(forked.PROCESSES_ENV, "2")
    with psycopg.connect(url) as conn:
        with pytest.raises(forked.ForkedError, match=r"item 0: MemoryError: a part too large"):
            match_stage.match(conn, ctx(dag_id), Settings())
        conn.rollback()
        after = conn.execute("SELECT count(*), count(DISTINCT status) FROM results.match").fetchone()
    assert after == (len(before), len({r[0] for r in before.values()}))
    assert psutil.Process().children() == []


@pytest.mark.parametrize("claims", ["as_asked", "changed_since"])
def test_parts_decided_again_in_forked_processes_decide_as_one_by_one(loaded, monkeypatch, claims):
    """The parts decided again once the other parts' claims are known go to the forked
    processes together, each with the claims the first pass left; a part whose claims an
    earlier part's new decisions changed is decided again in the stage's own process with the
    claims as they are then (``changed_since``). Either way, the rows one process writes.
    (A claimed child the LA does not hold is added to every part's claims: the matcher ignores
    it, so every part is decided again.)"""
    import itertools
    import os

    from b2b import forked
    from b2b.reconcile import match_stage

    url, dag_id = loaded
    monkeypatch.setenv(forked.PROCESSES_ENV, "1")
    _, one = stage_rows(url, dag_id, 100, monkeypatch)
    asks = itertools.count()
    unclaimed = match_stage.claimed_outside

    def claimed_outside(*a, **k):
        phantom = f"no-such-child-{next(asks) if claims == 'changed_since' else 0}"
        return unclaimed(*a, **k) | {phantom}

    parent, here = os.getpid(), []
    undecided = match_stage._decide_again

    def decide_again(*a, **k):
        if os.getpid() == parent:
            here.append(1)
        return undecided(*a, **k)

    used = spy_forks(monkeypatch)
    monkeypatch.setattr(match_stage, "claimed_outside", claimed_outside)
    monkeypatch.setattr(match_stage, "_decide_again", decide_again)
    monkeypatch.setenv(forked.PROCESSES_ENV, "2")
    counts, many = stage_rows(url, dag_id, 100, monkeypatch)
    assert counts["parts"] == 6
    assert used[0] == (6, 2) and len(used) == 2 and used[1][0] >= 2  # (the parts decided again, forked)
    assert len(here) == (used[1][0] if claims == "changed_since" else 0)
    assert many == one


def test_a_large_runs_rows_copied_into_arrow_are_the_rows_pandas_builds(db_url):
    """An LA's first load reads its students and the LA's children by COPY into Arrow columns
    (``copy_frame``, issue 15), not as Python rows: the same frame as pandas builds from the
    rows under Arrow strings, value for value — NULL and empty text kept apart, text with
    the CSV's own characters (commas, quotes, line breaks), letters beyond Latin-1, dates and
    NULL dates, whole numbers, and a column of NULLs only — and no rows give the empty frame."""
    import pandas as pd
    import psycopg

    from b2b import matching
    from b2b.reconcile import match_stage

    rows = [(1, "O'Neil, \"Jo\"", None, "2014-02-28", "Gwenllian\nŴyn"),
            (2, "", "Åsa", None, "Zoë ŷ 李"),
            (3, "   ", "x,y", "2016-10-01", None)]
    columns = ["n", "a", "b", "dob", "c"]
    select = "SELECT n, a, b, dob, c, NULL::text AS d FROM t ORDER BY n"
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TEMP TABLE t (n bigint, a text, b text, dob date, c text)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO t VALUES (%s, %s, %s, %s, %s)", rows)
        with matching.arrow_strings():
            want = pd.DataFrame(conn.execute(select).fetchall(), columns=[*columns, "d"])
            got = match_stage.copy_frame(conn, select, None, [*columns, "d"], ints=("n",))
            assert dict(got.dtypes.astype(str)) == dict(want.dtypes.astype(str))
            assert got.equals(want)
            assert got["a"].tolist()[1] == "" and pd.isna(got["b"].tolist()[0]) and got["d"].tolist() == [None] * 3
            # (with parameters, as the students' read passes them; no rows)
            none = match_stage.copy_frame(conn, "SELECT n, a FROM t WHERE n > %s", (9,), ["n", "a"], ints=("n",))
            assert none.empty and list(none.columns) == ["n", "a"]
    assert match_stage._INCOMING_COLUMNS[:len(matching.INCOMING_COLUMNS)] == matching.INCOMING_COLUMNS


def test_a_run_of_several_parts_matches_the_school_contacts_as_one_part_does(loaded, monkeypatch):
    """An LA's first load reads its school contacts as rows only once the students are decided
    (until then they wait in the driver's buffer, issue 15): the carers' decisions are the ones
    a run of one part writes."""
    import psycopg

    url, dag_id = loaded
    with psycopg.connect(url) as conn:
        # a contact for each of 60 students: half named as an LA child of the student's home, half strangers
        conn.execute("""
            INSERT INTO staging.contact (file_id, ordinal, item, base_id, student_guid, person_id, forename, surname,
                                         gender, relationship, addresses)
            SELECT s.file_id, s.ordinal, 1, s.base_id, s.student_guid, 'C' || s.ordinal,
                   CASE WHEN s.ordinal % 2 = 0 THEN s.forename ELSE 'Ottoline' END, s.surname, s.gender, 'Sibling',
                   jsonb_build_array(jsonb_build_object('type', 'H', 'postcode', a.postcode, 'street', 'Any Street'))
              FROM staging.student s
              LEFT JOIN staging.address a ON a.file_id = s.file_id AND a.student_guid = s.student_guid
             WHERE s.ordinal <= 60""")
        conn.commit()

    def carers(part_students):
        counts, _ = stage_rows(url, dag_id, part_students, monkeypatch)
        with psycopg.connect(url) as conn:
            rows = conn.execute("""SELECT file_id, contact_id, student_guid, coalesce(person_id, ''), status, rule,
                                          score, explanation FROM results.carer_match ORDER BY 1, 2""").fetchall()
        return counts, rows

    several, many = carers(100)
    one, single = carers(100_000)
    assert several["parts"] > 1 and one["parts"] == 1
    assert len(many) >= 60 and many == single


def test_a_large_runs_parts_are_smaller_with_more_processes(monkeypatch):
    """Beyond PART_STUDENTS a run is split into parts of SPLIT_STUDENTS divided by the processes
    deciding them (their frames together take what one process's do), whole schools each;
    up to PART_STUDENTS it stays one part."""
    import pandas as pd

    from b2b import forked
    from b2b.reconcile import match_stage

    monkeypatch.setattr(match_stage, "PART_STUDENTS", 50)
    monkeypatch.setattr(match_stage, "SPLIT_STUDENTS", 20)
    run = pd.DataFrame({"base_id": [f"s{k // 5:02d}" for k in range(60)]})  # 12 schools of 5

    def sizes(procs, frame=run):
        monkeypatch.setenv(forked.PROCESSES_ENV, str(procs))
        parts = list(match_stage.school_parts(frame))
        assert sorted(pd.concat(parts)["base_id"]) == sorted(frame["base_id"])  # every student once
        schools = [set(p["base_id"]) for p in parts]
        assert sum(map(len, schools)) == len(set().union(*schools))  # (no school split between parts)
        return [len(p) for p in parts]

    assert sizes(1) == [20, 20, 20]
    assert sizes(2) == [10] * 6
    assert sizes(4) == [5] * 12
    assert sizes(2, run.iloc[:50]) == [50]  # (not over PART_STUDENTS: one part)


def test_the_legacy_rule_decides_a_large_run_alike_in_parts(loaded, monkeypatch):
    """The vendor rule (``MATCHER=legacy``) on an LA's first load, whose students are read by
    COPY into Arrow columns: the rows of the same run decided in one part (its students read
    as Python rows)."""
    from b2b.config.settings import Settings

    url, dag_id = loaded
    several, many = stage_rows(url, dag_id, 100, monkeypatch, Settings(matcher="legacy"))
    one, single = stage_rows(url, dag_id, 100_000, monkeypatch, Settings(matcher="legacy"))
    assert several["parts"] > 1 and one["parts"] == 1 and several["matcher"] == "legacy"
    assert many == single and several["matched"] > 0
