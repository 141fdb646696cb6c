"""F14 (issue 14 part 5): school contacts matched as carers to the LA's person records (adults,
and children at least CARER_MIN years old) with the student matcher, kept in results.carer_match."""
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from b2b import pipeline as chain
from b2b.config.settings import Settings
from b2b.ingest.extract import ReceivedMessage, RunContext, store_messages
from b2b.matching import CORE_COLUMNS, INCOMING_COLUMNS, MatchConfig, match
from tests.support import school_with_la_adults
from tests.test_chain import page

END = datetime(2026, 10, 5, 17, tzinfo=UTC)
HOME = {"type": "H", "paon": "4", "street": "Elm Way", "town": "Canterbury", "postcode": "CT2 7XY",
        "start_date": "2019-01-01"}


def contact(pid, forename, gender, **kw):
    c = {"person_id": pid, "title": None, "forename": forename, "surname": "Hill", "gender": gender,
         "relationship": "OTH", "parental_responsibility": False, "priority": 2, "is_staff": False,
         "addresses": [HOME], "telephones": [],
         "emails": [{"type": "H", "address": f"{pid}@example.com", "primary": True, "main": False}]}
    return c | kw


def test_carer_min_boundary_on_the_matcher():
    """A child exactly CARER_MIN years old on the day is a candidate; a day younger is not."""
    def la(pid, dob):
        return dict(person_id=pid, upn=None, guid=None, forename="Sam", middle_names=None, surname="Hill",
                    gender="M", dob=dob, postcode="CT2 7XY", address_line1="4 Elm Way")

    carer = pd.DataFrame([dict(incoming_id="c", base_id="8862003", upn=None, guid="k1", forename="Sam",
                               middle_names=None, surname="Hill", gender="M", dob=None, postcode="CT2 7XY",
                               address_line1="4 Elm Way")], columns=INCOMING_COLUMNS)
    cfg = MatchConfig(guidmatch=False, dob_required=False)
    for dob, expected in (("2010-10-05", ("matched", "P1")), ("2010-10-06", ("unmatched", ""))):
        out = match(pd.DataFrame([la("P1", dob)], columns=CORE_COLUMNS), carer, cfg, min_age=16,
                    as_of="2026-10-05").iloc[0]
        assert (out["status"], out["person_id"]) == expected, dob


def test_contacts_are_matched_to_la_adults_and_children_from_carer_min(db):
    settings = Settings()  # CARER_MIN 16
    sixteen = END.date().replace(year=END.year - settings.carer_min)
    db.execute("""INSERT INTO core.child (person_id, forename, surname, gender, dob, paon, street, postcode)
                  VALUES ('C1', 'Oscar', 'Hill', 'M', '2016-07-01', '4', 'Elm Way', 'CT2 7XY'),
                         ('C2', 'Sam', 'Hill', 'M', %s, '4', 'Elm Way', 'CT2 7XY'),
                         ('C3', 'Tom', 'Hill', 'M', %s, '4', 'Elm Way', 'CT2 7XY')""",
               (sixteen, sixteen + timedelta(days=1)))
    db.execute("""INSERT INTO core.adult (person_id, forename, surname, gender, dob, paon, street, postcode)
                  VALUES ('A1', 'Jane', 'Hill', 'F', '1985-02-03', '4', 'Elm Way', 'CT2 7XY')""")
    db.commit()
    c = RunContext(base_id="8862003", task_key="changed_data", dag_id="b2b__8862003__changed_data", run_id="r1",
                   source="sims_primary", data_filter="changed_data", window_start=END - timedelta(days=1),
                   window_end=END)

    oscar = {"upn": None, "forename": "Oscar", "surname": "Hill", "dob": "2016-07-01", "gender": "M", "ncy": "5",
             "enrol_status": "C"}
    contacts = [contact("k-jane", "Jane", "F", relationship="PAM", parental_responsibility=True, priority=1),
                contact("k-sam", "Sam", "M"), contact("k-tom", "Tom", "M")]
    store_messages(db, c, [page("student", [("g-oscar", oscar)]), page("contacts", [("g-oscar", {"contacts": contacts})])])
    chain.hash_filter(db, c, settings)
    chain.validate(db, c, Path(tempfile.gettempdir()) / "b2b-test-reports")
    chain.load(db, c)
    for _ in range(2):  # a rerun gives the same rows, once
        counts = chain.match(db, c, settings)
        got = {r[0]: r[1:] for r in db.execute(
            "SELECT contact_id, status, person_id, person_kind FROM results.carer_match").fetchall()}
        assert got == {"k-jane": ("matched", "A1", "adult"),
                       "k-sam": ("matched", "C2", "child"),     # exactly CARER_MIN years old on the day
                       "k-tom": ("unmatched", None, None)}       # a day younger: never a candidate
        assert counts["carers"] == {"contacts": 3, "matched": 2, "possible": 0}


# ------------------------------------------------------------------ the LA's adults, loaded from its file
def test_adults_file_loads_through_the_mapping_and_a_full_extract_removes_the_missing(db, tmp_path):
    from b2b.ops import core_load
    from simulator.la_files import write_la_files
    from simulator.world import World, WorldConfig

    world = World(WorldConfig.generated(2, 60, seed=3))
    write_la_files(tmp_path / "b2b", world)
    paths = write_la_files(tmp_path / "la", world, style="la")
    assert tmp_path / "la" / "adults.csv" in paths
    assert (tmp_path / "la" / "adults.csv").stat().st_mode & 0o077 == 0
    mapping = core_load.ColumnMapping.load(tmp_path / "la" / "mapping.yaml")
    a = core_load.load_adults_file(db, tmp_path / "la" / "adults.csv", mapping)
    assert a["adults"] > 20 and a["changed"] == a["adults"] and a["removed"] == 0
    # the same adults in our own column names are the same records: nothing changes
    b = core_load.load_adults_file(db, tmp_path / "b2b" / "adults.csv")
    assert (b["changed"], b["removed"]) == (0, 0)
    lines = (tmp_path / "b2b" / "adults.csv").read_text().splitlines()
    (tmp_path / "fewer.csv").write_text("\n".join(lines[:-2]) + "\n")
    c = core_load.load_adults_file(db, tmp_path / "fewer.csv")
    assert c["removed"] == 2
    assert db.execute("SELECT count(*) FROM core.adult").fetchone()[0] == a["adults"] - 2
    assert db.execute("SELECT kind, counts->>'removed' FROM core.load_run ORDER BY load_id DESC LIMIT 1"
                      ).fetchone() == ("adults", "2")


def test_a_bad_adults_row_is_named_and_nothing_is_loaded(db, tmp_path):
    from b2b.ops.core_load import CoreLoadError, load_adults_file

    f = tmp_path / "adults.csv"
    f.write_text("person_id,forename,surname,dob,postcode\nA1,Jane,Hill,1985-02-03,CT2 7XY\n"
                 "A2,,Hill,1985-02-03,CT2 7XY\nA3,Tom,Hill,31/12/1980,CT2 7XY\n")
    try:
        load_adults_file(db, f)
    except CoreLoadError as exc:
        text = str(exc)
    else:
        raise AssertionError("a bad adults file was loaded")
    assert "row 2 (line 3), field forename" in text and "row 3 (line 4), field dob" in text
    assert "Jane" not in text and "Tom" not in text  # rows are named, values never shown
    db.rollback()
    assert db.execute("SELECT count(*) FROM core.adult").fetchone()[0] == 0


def test_school_contacts_match_the_adults_the_la_loaded(db, db_url, tmp_path, monkeypatch):
    """F14 end to end: the LA's adults file loaded, a school's snapshot imported the way a DAG
    run does; every automatic carer link is to the adult the contact really is."""
    from simulator.la_files import adult_rows

    monkeypatch.setenv("B2B_HOME", str(tmp_path))
    world = school_with_la_adults(db, tmp_path)
    got = db.execute("SELECT contact_id, status, person_id, person_kind FROM results.carer_match").fetchall()
    assert got, "no contact reached carer matching"
    # the truth: which adult id the LA gave each school contact (simulator.la_files.adult_rows)
    from simulator.world import _h

    truth = {}
    for roll in world._base_state.students.values():
        for st in roll.values():
            for c in st.blocks["contacts"]["contacts"]:
                truth[c["person_id"]] = f"A{_h(world.config.seed, c['person_id'], 'adult_id') % 10**8:08d}"
    held = {r["person_id"] for r in adult_rows(world)}
    linked = [(cid, pid) for cid, status, pid, kind in got if status in ("matched", "matched_with_conflicts")
              and kind == "adult"]
    assert len(linked) >= 0.5 * sum(1 for cid, *_ in got if truth.get(cid) in held)
    assert all(truth[cid] == pid for cid, pid in linked), "a carer was linked to the wrong adult"


def test_carer_candidates_decide_as_the_whole_carer_population(db):
    """Issue 15: the carers' candidates are only the people a contact's forename + surname or
    postcode and initial can pair (a contact has no DOB, UPN or GUID), not the whole carer
    population; the decisions, scores and explanations are those the matcher gives over that
    whole population (every LA adult, and every active LA child at least CARER_MIN years old),
    its name frequencies included: a forename common in the LA weighs less. (Before migration
    0042 the frequencies were those of the people sharing a contact's surname or postcode.)"""
    import random

    from b2b import matching
    from b2b.matching.comparisons import TermFrequencies
    from b2b.matching.normalise import prepare
    from b2b.reconcile.match_stage import NO_CANDIDATE, carer_candidates, carer_paired

    rng = random.Random(5)
    fore = ["Sam", "Jane", "Ann", "Tom", "Zoë", "Lee"]
    sur = ["Hill", "O'Neil", "Smith", "Hill-Brown", "Ng"]
    pcs = ["CT2 7XY", "CT1 1AA", "ME4 4QQ"]
    kids, adults = [], []
    for k in range(120):
        row = (f"P{k}", rng.choice(fore), rng.choice(sur), rng.choice("MF"), rng.choice(pcs), str(rng.randint(1, 9)))
        (kids if k % 2 else adults).append(row)
    adults.append(("U1", "Rowena", "Hill", "F", "CT2 7XY", "4"))  # a name of her own: matched
    for pid, f, s, g, pc, paon in kids:
        db.execute("""INSERT INTO core.child (person_id, forename, surname, gender, dob, paon, street, postcode)
                      VALUES (%s, %s, %s, %s, %s, %s, 'Elm Way', %s)""",
                   (pid, f, s, g, rng.choice(["1990-01-02", "2001-05-06", "2020-07-08"]), paon, pc))
    for pid, f, s, g, pc, paon in adults:
        db.execute("""INSERT INTO core.adult (person_id, forename, surname, gender, dob, paon, street, postcode)
                      VALUES (%s, %s, %s, %s, '1980-03-04', %s, 'Elm Way', %s)""", (pid, f, s, g, paon, pc))
    contacts = pd.DataFrame([dict(incoming_id=f"c{k}", base_id="8862003", forename=rng.choice(fore),
                                  surname=rng.choice(sur[:3]), gender=rng.choice("MF"), postcode=rng.choice(pcs[:2]),
                                  address_line1=f"{rng.randint(1, 9)} Elm Way") for k in range(25)]
                            + [dict(incoming_id="c-rowena", base_id="8862003", forename="Rowena", surname="Hill",
                                    gender="F", postcode="CT2 7XY", address_line1="4 Elm Way")]
                            # nobody shares their names or homes: no candidate at all
                            + [dict(incoming_id="c-far", base_id="8862003", forename="Quentin", surname="Zed",
                                    gender="M", postcode="ZZ9 9ZZ", address_line1="1 Far Lane"),
                               dict(incoming_id="c-nohome", base_id="8862003", forename="Una", surname="Hill-Brown",
                                    gender="F", postcode=None, address_line1=None)],
                            columns=INCOMING_COLUMNS)
    asof, carer_min = END.date(), 16
    mine = carer_candidates(db, contacts, asof, carer_min)  # (this transaction changed them: counted directly)
    db.commit()
    core, tf = carer_candidates(db, contacts, asof, carer_min)  # counted and cached
    again = carer_candidates(db, contacts, asof, carer_min)  # read from the cache
    for other in (mine, again):
        pd.testing.assert_frame_equal(other[0], core)
        assert (other[1].counts, other[1].totals) == (tf.counts, tf.totals)
    cols = ("person_id, upn, NULL::text, forename, middle_names, surname, gender, dob, postcode, "
            "concat_ws(' ', paon, street), NULL::text")
    everyone = pd.DataFrame(db.execute(
        f"""SELECT {cols} FROM core.child WHERE active AND dob <= (%(asof)s::date - make_interval(years => %(min)s))
            UNION ALL
            SELECT {cols.replace('upn, ', 'NULL, ', 1)} FROM core.adult
            ORDER BY 1""", {"asof": asof, "min": carer_min}).fetchall(), columns=CORE_COLUMNS)
    assert 0 < len(core) < len(everyone)
    cfg = MatchConfig(guidmatch=False, dob_required=False)
    got = match(core[CORE_COLUMNS], contacts, cfg, min_age=carer_min, as_of=asof, tf=tf)
    want = match(everyone, contacts, cfg, min_age=carer_min, as_of=asof)
    pd.testing.assert_frame_equal(got, want)
    assert {"matched", "possible"} <= set(got["status"])
    # the contacts sharing no blocking key with a candidate are left out of the matcher
    # (match_carers): the others decide as in the whole batch, and those are the matcher's
    # own "no candidate" decision
    paired = carer_paired(contacts, core)
    assert 0 < sum(paired) < len(contacts)
    some = match(core[CORE_COLUMNS], contacts[paired], cfg, min_age=carer_min, as_of=asof, tf=tf)
    pd.testing.assert_frame_equal(some.reset_index(drop=True), want[paired].reset_index(drop=True))
    cols_out = ["person_id", "status", "rule", "score", "explanation"]
    assert {tuple(r) for r in want[[not p for p in paired]][cols_out].itertuples(index=False)} == {NO_CANDIDATE}
    # the frequencies read by name are the population's (the matcher's own count over it)
    whole = TermFrequencies.from_frame(prepare(everyone, "person_id"))
    assert tf.totals == whole.totals
    for col, name in (("fn", "forename"), ("sn", "surname")):
        assert tf.counts[col] == {k: whole.counts[col][k] for k in {matching.name_key(v) for v in contacts[name]}
                                  if k in whole.counts[col]}


# ------------------------------------------------------------------ the carers' name frequencies, cached
def _carer_counts_direct(conn, asof, carer_min):
    """Every carer's name counted here: active LA children at least CARER_MIN years old on the
    day, and every LA adult, normalised by the matcher's own name_key."""
    from collections import Counter

    from b2b.matching import name_key

    rows = conn.execute(
        """SELECT forename, surname FROM core.child WHERE active AND dob <= (%s::date - make_interval(years => %s))
           UNION ALL SELECT forename, surname FROM core.adult""", (asof, carer_min)).fetchall()
    counts = {col: Counter(k for k in (name_key(r[i]) for r in rows) if k) for i, col in enumerate(("fn", "sn"))}
    return ({col: dict(c) for col, c in counts.items()},
            {col: (sum(c.values()), sum(v * v for v in c.values())) for col, c in counts.items()})


def _carer_counts_cached(conn, asof, carer_min, fns, sns):
    counts, totals = {"fn": {}, "sn": {}}, {}
    for col, name, n, sq in conn.execute("SELECT col, name, n, sq FROM core.carer_name_counts(%s, %s, %s, %s)",
                                         (asof, carer_min, fns, sns)).fetchall():
        if name is None:
            totals[col] = (n, sq)
        else:
            counts[col][name] = n
    return counts, totals


def test_carers_name_counts_follow_every_change_of_children_and_adults(db, db_url):
    """Issue 15: the carers' name frequencies, cached per state of core.child and core.adult
    and per day, equal a direct count over the carer population after inserts, updates,
    deletes, a truncate and an adults load, inside the transaction that made a change, after
    a rollback, and seen from another connection while a change is uncommitted."""
    import psycopg

    from b2b.ops.core_load import load_adults

    asof, carer_min = END.date(), 16
    names = {"fn": ["sam", "jane", "zoe", "tom", "ann", "nobody"], "sn": ["hill", "oneil", "smith", "ng", "nobody"]}
    cached_states = "SELECT count(DISTINCT (child_state, adult_state, born_by)) FROM core.carer_name_totals"

    def check(conn=db, day=asof):
        counts, totals = _carer_counts_direct(conn, day, carer_min)
        want = ({col: {k: n for k, n in counts[col].items() if k in names[col]} for col in counts}, totals)
        got = _carer_counts_cached(conn, day, carer_min, names["fn"], names["sn"])
        assert got == want
        assert _carer_counts_cached(conn, day, carer_min, names["fn"], names["sn"]) == want  # the cached read
        return want

    def child(pid, fn, sn, dob="1990-01-02", active=True):
        db.execute("""INSERT INTO core.child (person_id, forename, surname, dob, active, postcode)
                      VALUES (%s, %s, %s, %s, %s, 'CT2 7XY')""", (pid, fn, sn, dob, active))

    check()  # nobody yet
    child("C1", "Sam", "Hill")
    child("C2", "Zoë", "O'Neil")
    child("C3", "Sam", "Smith", dob="2020-07-08")  # too young to be a carer
    child("C4", "Sam", "Hill", active=False)  # left the LA's roll
    db.execute("""INSERT INTO core.adult (person_id, forename, surname, dob) VALUES
                  ('A1', 'Jane', 'Hill', '1980-01-01'), ('A2', 'SAM', 'hill', NULL), ('A3', 'Ann', 'Ng', NULL)""")
    got = check()  # inside the transaction that made the change: its own state, never cached
    assert got[0]["fn"]["sam"] == 2 and got[0]["sn"]["hill"] == 3 and got[1]["fn"] == (5, 7)
    assert db.execute("""SELECT count(*) FROM core.carer_name_totals t, core.adult_version v
                          WHERE t.child_state = core.child_state() OR t.adult_state = v.changes""").fetchone()[0] == 0
    db.commit()
    check()
    assert db.execute(cached_states).fetchone()[0] == 1  # the new state cached, the older pruned
    db.execute("UPDATE core.child SET surname = 'Ng' WHERE person_id = 'C1'")
    db.commit()
    check()
    db.execute("UPDATE core.adult SET forename = 'Tom' WHERE person_id = 'A2'")
    db.commit()
    assert check()[0]["fn"] == {"sam": 1, "zoe": 1, "jane": 1, "tom": 1, "ann": 1}
    db.execute("DELETE FROM core.adult WHERE person_id = 'A1'")
    db.execute("DELETE FROM core.child WHERE person_id = 'C2'")
    db.commit()
    before = check()

    # an uncommitted change: its transaction counts it, another connection does not see it
    # (and caches the committed state meanwhile); a rollback leaves the committed counts
    child("C5", "Ann", "Smith")
    db.execute("INSERT INTO core.adult (person_id, forename, surname) VALUES ('A9', 'Ann', 'Hill')")
    inside = check()
    assert inside != before and inside[0]["fn"]["ann"] == 3
    with psycopg.connect(db_url) as other:
        assert check(other) == before
        other.commit()
    db.rollback()
    assert check() == before
    # a change made in a savepoint that is rolled back: the committed state again
    with db.transaction():
        with db.transaction():
            db.execute("UPDATE core.adult SET surname = 'Smith'")
            assert check() != before
            raise psycopg.Rollback()
        assert check() == before
    # a change made by a function with its own settings (as the officers' functions, 0015)
    db.execute("""CREATE FUNCTION pg_temp.rename() RETURNS void LANGUAGE sql SET search_path = pg_catalog
                  AS $$ UPDATE core.child SET forename = 'Jane' $$""")
    db.execute("SELECT pg_temp.rename()")
    assert check()[0]["fn"] == {"jane": 1, "ann": 1, "tom": 1}
    db.rollback()
    assert check() == before

    # the LA's adults load (the real writer of core.adult), then a truncate
    load_adults(db, [{"person_id": "A7", "forename": "Jane", "surname": "Smith", "dob": "1979-05-06"}], full=True)
    assert check()[0]["sn"] == {"ng": 1, "smith": 1}
    db.execute("TRUNCATE core.adult")
    db.commit()
    assert check()[0]["fn"] == {"sam": 1}


def test_carers_name_counts_count_a_child_from_carer_min_on_the_day(db):
    """CARER_MIN (F14): a child turning CARER_MIN years old on the day counts among the carers'
    names; the day before, not; each day's cut is its own count (and a different CARER_MIN
    another)."""
    asof = END.date()
    db.execute("""INSERT INTO core.child (person_id, forename, surname, dob) VALUES
                  ('C1', 'Sam', 'Hill', %s), ('C2', 'Tom', 'Hill', %s)""",
               (asof.replace(year=asof.year - 16), asof.replace(year=asof.year - 16) + timedelta(days=1)))
    db.commit()
    for day, carer_min, sam, tom in ((asof, 16, 1, None), (asof - timedelta(days=1), 16, None, None),
                                     (asof + timedelta(days=1), 16, 1, 1), (asof, 17, None, None),
                                     (asof, 15, 1, 1), (asof, 16, 1, None)):
        counts, totals = _carer_counts_cached(db, day, carer_min, ["sam", "tom"], ["hill"])
        assert (counts["fn"].get("sam"), counts["fn"].get("tom")) == (sam, tom), (day, carer_min)
        assert totals["sn"] == (_carer_counts_direct(db, day, carer_min)[1]["sn"]), (day, carer_min)
        db.commit()


# ------------------------------------------------------------------ the carers' own rules (F14)
def _carer(forename="Jane", gender="F", address="4 Elm Way"):
    return pd.DataFrame([dict(incoming_id="c", base_id="8862003", upn=None, guid="k1", forename=forename,
                              middle_names=None, surname="Hill", gender=gender, dob=None, postcode="CT2 7XY",
                              address_line1=address)], columns=INCOMING_COLUMNS)


def _la(*people):
    return pd.DataFrame([dict(person_id=pid, upn=None, guid=None, forename=fn, middle_names=None, surname="Hill",
                              gender=g, dob=dob, postcode="CT2 7XY", address_line1="4 Elm Way")
                         for pid, fn, g, dob in people], columns=CORE_COLUMNS)


def _common_names():
    """Name frequencies of a large LA in which Jane and Hill are common: an exact full name at
    the very home scores below the automatic threshold (a contact has no DOB to add to it)."""
    from b2b.matching.comparisons import TermFrequencies

    counts = {"fn": {"jane": 4_000, "sam": 50}, "sn": {"hill": 6_000}}
    return TermFrequencies(counts, {"fn": (300_000, 300_000 * 40), "sn": (300_000, 300_000 * 40)})


def test_a_contacts_very_name_at_the_very_home_links_it_however_common_the_name():
    """A contact has no DOB, UPN or GUID: its exact forename and surname at the same postcode
    unit and address line are what there is, and a common name must not hold the link back
    (the carers' recall fell from 0.78 to 0.68 when their name frequencies were counted over
    the whole carer population, all of them such contacts). Another address line, or a gender
    against it, is not this rule; a same-named person of the household is an officer's case."""
    cfg = MatchConfig(guidmatch=False, dob_required=False)
    tf = _common_names()
    one = match(_la(("A1", "Jane", "F", "1985-02-03")), _carer(), cfg, min_age=16, as_of="2026-10-05", tf=tf).iloc[0]
    assert (one["status"], one["person_id"]) == ("matched", "A1")
    assert one["score"] < cfg.auto  # the rule, not the score, links it
    moved = match(_la(("A1", "Jane", "F", "1985-02-03")), _carer(address="9 Oak Road"), cfg, min_age=16,
                  as_of="2026-10-05", tf=tf).iloc[0]
    assert moved["status"] != "matched"
    other = match(_la(("A1", "Jane", "M", "1985-02-03")), _carer(), cfg, min_age=16, as_of="2026-10-05",
                  tf=tf).iloc[0]
    assert other["status"] != "matched"
    household = match(_la(("A1", "Jane", "F", "1985-02-03"), ("C1", "Jane", "F", "2008-01-01")), _carer(), cfg,
                      min_age=16, as_of="2026-10-05", tf=tf).iloc[0]
    assert household["status"] == "possible"


def test_a_contact_is_never_matched_to_its_own_student(db):
    """A father with his teenage son's very name at the same home: the son is the school's
    student (linked to LA child C1) and an LA child over CARER_MIN, the father is not an LA
    adult. The son scores as the contact would, but a contact is never its own student (the
    11 false carer links on the 200-school bench with the LA's adults were all this); a
    contact with the name of an LA child who is not its student is still matched."""
    settings = Settings()
    db.execute("""INSERT INTO core.child (person_id, upn, forename, surname, gender, dob, paon, street, postcode)
                  VALUES ('C1', 'F886200326001', 'Sam', 'Hill', 'M', '2009-03-04', '4', 'Elm Way', 'CT2 7XY'),
                         ('C2', NULL, 'Alex', 'Hill', 'M', '2008-05-06', '4', 'Elm Way', 'CT2 7XY')""")
    db.commit()
    c = RunContext(base_id="8862003", task_key="changed_data", dag_id="b2b__8862003__changed_data", run_id="r1",
                   source="sims_primary", data_filter="changed_data", window_start=END - timedelta(days=1),
                   window_end=END)
    sam = {"upn": "F886200326001", "forename": "Sam", "surname": "Hill", "dob": "2009-03-04", "gender": "M", "ncy": "12",
           "enrol_status": "C"}
    contacts = [contact("k-sam", "Sam", "M", relationship="PAF", parental_responsibility=True, priority=1),
                contact("k-alex", "Alex", "M", relationship="OTH")]
    store_messages(db, c, [page("student", [("g-sam", sam)]), page("contacts", [("g-sam", {"contacts": contacts})])])
    chain.hash_filter(db, c, settings)
    chain.validate(db, c, Path(tempfile.gettempdir()) / "b2b-test-reports")
    chain.load(db, c)
    chain.match(db, c, settings)
    assert db.execute("SELECT status, person_id FROM results.match").fetchall() == [("matched", "C1")]
    got = {r[0]: r[1:] for r in db.execute("SELECT contact_id, status, person_id FROM results.carer_match").fetchall()}
    assert got["k-sam"][1] != "C1" and got["k-sam"][0] != "matched"
    assert got["k-alex"] == ("matched", "C2")
    # the next day's run brings the contacts alone: the son's link is an earlier one now
    # (core.child_link), and still the contact is not its own student
    nxt = RunContext(base_id="8862003", task_key="changed_data", dag_id="b2b__8862003__changed_data", run_id="r2",
                     source="sims_primary", data_filter="changed_data", window_start=END,
                     window_end=END + timedelta(days=1))
    contacts[1]["priority"] = 2
    store_messages(db, nxt, [page("contacts", [("g-sam", {"contacts": contacts})])])
    chain.hash_filter(db, nxt, settings)
    chain.validate(db, nxt, Path(tempfile.gettempdir()) / "b2b-test-reports")
    chain.load(db, nxt)
    assert chain.match(db, nxt, settings)["carers"]["contacts"] == 2
    files = db.execute("SELECT max(file_id) FROM results.carer_match").fetchone()[0]
    got = {r[0]: r[1:] for r in db.execute("SELECT contact_id, status, person_id FROM results.carer_match "
                                           "WHERE file_id = %s", (files,)).fetchall()}
    assert got["k-sam"][1] != "C1" and got["k-sam"][0] != "matched"
    assert got["k-alex"] == ("matched", "C2")


def test_a_contacts_own_students_are_read_by_key_probes_whatever_the_statistics(db):
    """Issue 15: the own-students read (``_OWN_STUDENTS``) reaches this run's matches and the
    earlier links only by index probes keyed by each contact's student, even when the planner's
    statistics say the tables are empty (a snapshot's first runs: core.child_link and
    results.match fill up run by run before autovacuum analyses them). A version that joined
    the candidate children to the links and the run's contacts was planned as nested loops
    with join filters over materialised rows and took 0.2-7 s a school run in the 200-school
    bench."""
    from b2b.reconcile import match_stage

    db.execute("ANALYZE core.child_link, results.match, staging.contact")  # (the tables empty)
    db.execute("""INSERT INTO core.child (person_id, forename, surname, dob)
                  SELECT 'P' || k, 'Fn', 'Sn', '2010-01-01' FROM generate_series(1, 20000) k""")
    db.execute("""INSERT INTO core.child_link (base_id, student_guid, person_id, linked_by)
                  SELECT '8862001', 'g' || k, 'P' || k, 'la' FROM generate_series(1, 20000) k""")
    plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + match_stage._OWN_STUDENTS, {"files": [1, 2]}))
    assert "Join Filter" not in plan and "Hash Join" not in plan, plan
    assert "Seq Scan on child_link" not in plan and "child_link_pkey" in plan, plan
    db.rollback()
