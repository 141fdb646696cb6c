"""Contacts of current students (F34–F38, seed 004): each rule against real PostgreSQL."""
import copy
from datetime import timedelta

from b2b import pipeline as chain
from b2b.ingest.extract import store_messages
from b2b.reconcile import contacts
from tests.test_chain import DAY1, LEGACY, REPORTS, ctx, page

STUDENT = {"upn": "F886200326001", "forename": "Joe", "surname": "Bloggs", "dob": "2016-01-26", "gender": "M",
           "ncy": "5", "enrol_status": "C", "end_date": None}


def contact(pid, **kw):
    c = {"person_id": pid, "title": "Mrs", "forename": "Ann", "surname": "Bloggs", "gender": "F",
         "relationship": "PAM", "parental_responsibility": True, "priority": 1, "is_staff": False,
         "addresses": [{"type": "H", "paon": "1", "street": "Green Road", "town": "Canterbury",
                        "postcode": "CT1 2AB", "start_date": "2020-01-01"}],
         "telephones": [{"type": "H", "number": "01227 100100", "primary": False, "main": False}],
         "emails": [{"type": "H", "address": f"{pid.lower()}@example.com", "primary": False, "main": False}]}
    c.update(kw)
    return c


def sync(db, students: dict, day: int = 0, student_changes: dict | None = None):
    """One run: the students' contacts blocks (and student blocks) through the chain, then contacts."""
    c = ctx(DAY1 + timedelta(days=day))
    core = {g: dict(STUDENT, **(student_changes or {}).get(g, {})) for g in students}
    msgs = [page("student", list(core.items())),
            page("contacts", [(g, {"contacts": cs}) for g, cs in students.items()])]
    store_messages(db, c, msgs)
    chain.hash_filter(db, c, LEGACY)
    chain.validate(db, c, REPORTS)
    chain.load(db, c)
    return contacts.sync(db, c)


def accounts(db):
    cols = ("person_id", "title", "forename", "surname", "gender", "postcode", "address_paon", "home_telephone",
            "mobile_telephone", "work_telephone", "personal_email", "work_email", "username", "email_preference",
            "telephone_preference", "roles", "active")
    rows = db.execute(f"SELECT {', '.join(cols)} FROM core.contact ORDER BY person_id").fetchall()
    return {r[0]: dict(zip(cols, r)) for r in rows}


def rejected(db):
    return {(r[0], r[1]): r[2] for r in db.execute(
        "SELECT person_id, reason, detail FROM results.rejected_contact ORDER BY 1, 2")}


def test_latest_home_address_and_primary_main_first_selection(db):
    ann = contact("C1", addresses=[
        {"type": "H", "paon": "9", "street": "Old Lane", "town": "Dover", "postcode": "CT16 1AA",
         "start_date": "2015-03-01"},
        {"type": "W", "paon": "77", "street": "Work St", "town": "Ashford", "postcode": "TN23 1AA",
         "start_date": "2024-01-01"},
        {"type": "H", "paon": "1", "street": "New Road", "town": "Canterbury", "postcode": "CT1 2AB",
         "start_date": "2023-06-01"},
        {"type": "H", "paon": "5", "street": "Older Road", "town": "Deal", "postcode": "CT14 6AA",
         "start_date": "2019-01-01"}],
        telephones=[{"type": "H", "number": "H-first", "primary": False, "main": False},
                    {"type": "H", "number": "H-main", "primary": False, "main": True},
                    {"type": "M", "number": "M-first", "primary": False, "main": False},
                    {"type": "M", "number": "M-primary", "primary": True, "main": False},
                    {"type": "M", "number": "M-main", "primary": False, "main": True},
                    {"type": "W", "number": "W-first", "primary": False, "main": False},
                    {"type": "W", "number": "W-second", "primary": False, "main": False}],
        emails=[{"type": "W", "address": "ann.work@example.org", "primary": False, "main": False},
                {"type": "H", "address": "ann.home@example.com", "primary": False, "main": False},
                {"type": "H", "address": "ann.main@example.com", "primary": False, "main": True}])
    counts = sync(db, {"g-1": [ann]})
    a = accounts(db)["C1"]
    assert (a["address_paon"], a["postcode"]) == ("1", "CT1 2AB")  # latest start date among type H
    assert (a["home_telephone"], a["mobile_telephone"], a["work_telephone"]) == ("H-main", "M-primary", "W-first")
    assert (a["personal_email"], a["work_email"]) == ("ann.main@example.com", "ann.work@example.org")
    assert a["username"] == "ann.main@example.com"  # Main, as no email is Primary
    assert (a["email_preference"], a["telephone_preference"]) == ("Personal", "Mobile")  # Main H email; Primary M
    assert a["roles"] == ["contact"] and a["active"] is True
    assert counts["created"] == 1 and counts["rejected"] == 0


def test_preference_defaults_and_set_only_on_first_creation(db):
    plain = contact("C1")  # nothing marked Primary or Main
    sync(db, {"g-1": [plain]})
    a = accounts(db)["C1"]
    assert (a["email_preference"], a["telephone_preference"]) == ("Personal", "None")

    changed = copy.deepcopy(plain)
    changed["emails"].append({"type": "W", "address": "c1.work@example.org", "primary": True, "main": False})
    changed["telephones"].append({"type": "W", "number": "01227 999999", "primary": True, "main": False})
    changed["surname"] = "Bloggs-Smith"
    counts = sync(db, {"g-1": [changed]}, day=1)
    a = accounts(db)["C1"]
    assert a["surname"] == "Bloggs-Smith" and a["work_email"] == "c1.work@example.org"  # details follow SIMS
    assert a["username"] == "c1.work@example.org"
    assert (a["email_preference"], a["telephone_preference"]) == ("Personal", "None")  # not overwritten (F38)
    assert counts["created"] == 0 and counts["updated"] == 1

    sync(db, {"g-1": [changed], "g-2": [contact(
        "C2", emails=[{"type": "W", "address": "c2@example.org", "primary": True, "main": False}],
        telephones=[{"type": "W", "number": "1", "primary": True, "main": False}])]}, day=2)
    b = accounts(db)["C2"]
    assert (b["email_preference"], b["telephone_preference"]) == ("Work", "Work")  # a new account takes them


def test_title_and_gender_only_when_a_known_value_matches(db):
    sync(db, {"g-1": [contact("C1", title="mrs", gender="F"), contact("C2", title="Mstr", gender="U"),
                      contact("C3", title=None, gender="male")]})
    a = accounts(db)
    assert (a["C1"]["title"], a["C1"]["gender"]) == ("Mrs", "Female")
    assert (a["C2"]["title"], a["C2"]["gender"]) == (None, None)
    assert (a["C3"]["title"], a["C3"]["gender"]) == (None, "Male")


def test_contacts_without_forename_surname_or_email_are_listed_not_imported(db):
    counts = sync(db, {"g-1": [contact("C1", forename=None), contact("C2", surname="  "),
                               contact("C3", emails=[]), contact("C4", forename="", emails=[]),
                               contact("C5")]})
    assert set(accounts(db)) == {"C5"}
    r = rejected(db)
    assert set(r) == {("C1", "no_forename"), ("C2", "no_surname"), ("C3", "no_email"), ("C4", "no_email"),
                      ("C4", "no_forename")}
    assert "required" in r[("C1", "no_forename")]
    assert counts["rejected"] == 4 and counts["rejected_no_email"] == 2
    guids = db.execute("SELECT DISTINCT student_guids FROM results.rejected_contact").fetchall()
    assert guids == [(["g-1"],)]
    # fixed in SIMS: imported, and it leaves the list
    sync(db, {"g-1": [contact("C1"), contact("C2"), contact("C3"), contact("C4"), contact("C5")]}, day=1)
    assert set(accounts(db)) == {"C1", "C2", "C3", "C4", "C5"} and rejected(db) == {}


def test_an_email_already_used_as_another_contacts_username_fails_that_record(db):
    shared = [{"type": "H", "address": "family@example.com", "primary": True, "main": False}]
    sync(db, {"g-1": [contact("C5", emails=shared)]})
    # the same email on two more records (a duplicate person in SIMS, a second parent): the
    # existing account keeps it; the others fail with the reason
    sync(db, {"g-1": [contact("C5", emails=shared)],
              "g-2": [contact("C2", emails=[dict(shared[0], address="FAMILY@example.com")]),
                      contact("C7", emails=shared)]}, day=1)
    a = accounts(db)
    assert set(a) == {"C5"} and a["C5"]["username"] == "family@example.com"
    r = rejected(db)
    assert set(r) == {("C2", "username_in_use"), ("C7", "username_in_use")}
    assert r[("C2", "username_in_use")].endswith("contact C5")
    # two new claimants in one run: the lowest person id gets the account
    sync(db, {"g-3": [contact("C9", emails=[dict(shared[0], address="new@example.com")]),
                      contact("C8", emails=[dict(shared[0], address="new@example.com")])]}, day=2)
    a = accounts(db)
    assert "C8" in a and "C9" not in a
    r = rejected(db)
    assert r[("C9", "username_in_use")] == "email already used as the username of contact C8"
    assert ("C8", "username_in_use") not in r and ("C2", "username_in_use") in r  # g-2 is still current


def test_a_contact_no_longer_related_to_a_current_student_is_disabled_not_deleted(db):
    staff = contact("C2", is_staff=True, forename="Sue")
    sync(db, {"g-1": [contact("C1"), staff], "g-2": [contact("C3")]})
    a = accounts(db)
    assert a["C2"]["roles"] == ["staff", "contact"]
    # g-1 leaves: C1 (only related to g-1) is disabled; the staff member keeps the account
    counts = sync(db, {"g-1": [contact("C1"), staff], "g-2": [contact("C3")]}, day=1,
                  student_changes={"g-1": {"end_date": "2026-10-06"}})
    a = accounts(db)
    assert set(a) == {"C1", "C2", "C3"}  # nothing deleted
    assert (a["C1"]["active"], a["C1"]["roles"], a["C1"]["forename"]) == (False, [], "Ann")
    assert (a["C2"]["active"], a["C2"]["roles"]) == (True, ["staff"])
    assert (a["C3"]["active"], a["C3"]["roles"]) == (True, ["contact"])
    assert counts["disabled"] == 1 and counts["staff_kept_without_contact_role"] == 1
    links = db.execute("SELECT person_id, student_guid FROM core.contact_link ORDER BY 1").fetchall()
    assert links == [("C3", "g-2")]
    # related again (a sibling starts): enabled again, the role back
    sync(db, {"g-2": [contact("C3")], "g-4": [contact("C1")]}, day=2)
    assert accounts(db)["C1"]["active"] is True and accounts(db)["C1"]["roles"] == ["contact"]


def test_a_contact_removed_from_a_students_contacts_is_disabled(db):
    sync(db, {"g-1": [contact("C1"), contact("C2")]})
    sync(db, {"g-1": [contact("C1")]}, day=1)
    a = accounts(db)
    assert a["C2"]["active"] is False and a["C1"]["active"] is True


def test_rerun_of_a_contacts_run_leaves_identical_tables(db):
    data = {"g-1": [contact("C1"), contact("C2", forename=None)], "g-2": [contact("C1"), contact("C3")]}
    first = sync(db, data)
    c = ctx(DAY1)
    before = (accounts(db), rejected(db), db.execute("SELECT * FROM core.contact_link ORDER BY 1, 2, 3").fetchall())
    again = contacts.sync(db, c)
    after = (accounts(db), rejected(db), db.execute("SELECT * FROM core.contact_link ORDER BY 1, 2, 3").fetchall())
    assert before == after
    assert again == first and first["created"] == 2  # the window's own counts, whichever attempt reports them
    assert sorted(r[2] for r in before[2] if r[1] == "C1") == ["g-1", "g-2"]  # one account, two students


def _attendance_only(db, day: int, guids):
    """A run that brings only attendance (no student or contacts block), through the chain to contacts."""
    c = ctx(DAY1 + timedelta(days=day))
    store_messages(db, c, [page("attendance", [(g, {"academic_year": 2026, "marks": "//" * day}) for g in guids])])
    chain.hash_filter(db, c, LEGACY)
    chain.validate(db, c, REPORTS)
    chain.load(db, c)
    return contacts.sync(db, c)


def test_a_run_without_student_or_contacts_data_leaves_contacts_as_they_are_without_a_rebuild(db):
    data = {"g-1": [contact("C1"), contact("C2", forename=None)], "g-2": [contact("C1"), contact("C3")]}
    first = sync(db, data)
    before = (accounts(db), rejected(db), db.execute("SELECT * FROM core.contact_link ORDER BY 1, 2, 3").fetchall())
    out = _attendance_only(db, 1, ["g-1", "g-2"])
    after = (accounts(db), rejected(db), db.execute("SELECT * FROM core.contact_link ORDER BY 1, 2, 3").fetchall())
    assert before == after
    assert out["unchanged"] is True and out["created"] == 0
    assert out["candidates"] == first["candidates"] and out["rejected"] == first["rejected"] == 1
    # the next run with contacts data rebuilds again
    data["g-2"] = [contact("C1"), contact("C3", forename="Cy")]
    again = sync(db, data, day=2)
    assert "unchanged" not in again and accounts(db)["C3"]["forename"] == "Cy"


def test_contacts_of_a_run_that_stopped_before_the_contacts_stage_are_applied_by_the_next_run(db):
    sync(db, {"g-1": [contact("C1")]})
    # day 1: a new contact arrives and is loaded, but that run never reaches the contacts stage
    c = ctx(DAY1 + timedelta(days=1))
    store_messages(db, c, [page("contacts", [("g-1", {"contacts": [contact("C1"), contact("C4")]})])])
    chain.hash_filter(db, c, LEGACY)
    chain.validate(db, c, REPORTS)
    chain.load(db, c)
    assert "C4" not in accounts(db)
    # day 2 brings only attendance: the contacts stage still sees day 1's data
    out = _attendance_only(db, 2, ["g-1"])
    assert "unchanged" not in out and accounts(db)["C4"]["active"] is True


# --- incremental runs equal a full rebuild (issue 15) ---------------------------------------

def _tables(db):
    return tuple(db.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall()
                 for t in ("core.contact", "core.contact_link", "results.rejected_contact"))


def _day(db, day: int, students: dict, contact_lists: dict):
    """A changed-data run with student blocks ``{guid: changes}`` and contacts blocks
    ``{guid: [contact, …]}``, through load; then contacts, compared with a full rebuild of
    the same state (rolled back), and the run committed (so a resent block is skipped by
    the hash cache the next time)."""
    c = ctx(DAY1 + timedelta(days=day))
    msgs = []
    if students:
        msgs.append(page("student", [(g, dict(STUDENT, **ch)) for g, ch in students.items()]))
    if contact_lists:
        msgs.append(page("contacts", [(g, {"contacts": cs}) for g, cs in contact_lists.items()]))
    store_messages(db, c, msgs)
    chain.hash_filter(db, c, LEGACY)
    chain.validate(db, c, REPORTS)
    chain.load(db, c)
    with db.transaction(force_rollback=True):
        full = contacts.rebuild(db, c)
        expected = _tables(db)
    out = contacts.sync(db, c)
    assert _tables(db) == expected, f"day {day}: incremental contacts differ from a full rebuild"
    assert {k: v for k, v in out.items() if k not in ("incremental", "unchanged")} == full, f"day {day}"
    chain.commit(db, c)
    return out


def test_incremental_contacts_equal_a_full_rebuild_through_moves_collisions_and_leavers(db):
    def person(pid, email=None, **kw):
        return contact(pid, emails=[{"type": "H", "address": email or f"{pid.lower()}@example.com",
                                     "primary": True, "main": False}], **kw)

    g = [f"g-{i}" for i in range(6)]
    # day 0 (first run: a full rebuild): a shared parent, a staff member, a record without forename
    _day(db, 0, {x: {} for x in g}, {
        g[0]: [person("C1"), person("C2")], g[1]: [person("C1"), person("C3", is_staff=True)],
        g[2]: [person("C4", forename=None)], g[3]: [person("C5")], g[4]: [person("C6")], g[5]: []})
    # day 1: C2 moves from g-0 to g-2; C4 fixed in SIMS
    out = _day(db, 1, {}, {g[0]: [person("C1")], g[2]: [person("C4"), person("C2", surname="Moved")]})
    assert out["incremental"]["students"] == 2
    assert accounts(db)["C2"]["surname"] == "Moved" and accounts(db)["C4"]["active"] is True
    # day 2: username collisions: C7 claims C5's username; C8 and C9 claim the same new one
    _day(db, 2, {}, {g[4]: [person("C6"), person("C7", "c5@example.com"), person("C9", "new@example.com"),
                            person("C8", "NEW@example.com")]})
    r = rejected(db)
    assert set(r) == {("C7", "username_in_use"), ("C9", "username_in_use")}
    # day 3: C5 leaves its username behind; C7 stays rejected this run (C5 held it when the run began)
    _day(db, 3, {}, {g[3]: [person("C5", "c5.new@example.com")]})
    assert ("C7", "username_in_use") in rejected(db)
    # day 4: a run about other students only: C7 now gets the freed username
    _day(db, 4, {g[5]: {"forename": "Sam"}}, {})
    assert "C7" in accounts(db) and ("C7", "username_in_use") not in rejected(db)
    # day 5: C1 loses all its students (g-1 leaves, g-0 drops it); the staff member keeps the account
    _day(db, 5, {g[1]: {"end_date": "2026-10-09"}}, {g[0]: []})
    a = accounts(db)
    assert (a["C1"]["active"], a["C3"]["roles"]) == (False, ["staff"])
    # day 6: the same blocks again (skipped by the hash cache) and a returning contact
    _day(db, 6, {g[1]: {"end_date": "2026-10-09"}}, {g[0]: [person("C1")]})
    assert accounts(db)["C1"]["active"] is True
    # day 7: no student or contacts data: left as it is
    assert _day(db, 7, {}, {}).get("unchanged") is True


def test_incremental_contacts_equal_a_full_rebuild_over_random_changed_days(db):
    import random

    rng = random.Random(15)
    guids = [f"g-{i}" for i in range(8)]
    pids = [f"C{i:02d}" for i in range(14)]
    emails = [f"{p.lower()}@example.com" for p in pids] + ["family@example.com", "shared@example.com"]

    def random_contact(pid):
        return contact(pid, forename=rng.choice(["Ann", "Bo", None]) if rng.random() < 0.15 else "Ann",
                       surname=rng.choice(["Bloggs", "Smith", "Jones"]), is_staff=rng.random() < 0.1,
                       relationship=rng.choice(["PAM", "PAF", "CAR"]), priority=rng.randint(1, 3),
                       emails=[] if rng.random() < 0.05 else [
                           {"type": rng.choice("HW"), "address": rng.choice(emails), "primary": rng.random() < 0.5,
                            "main": False} for _ in range(rng.randint(1, 2))])

    def random_contacts():
        return [random_contact(p) for p in rng.sample(pids, rng.randint(0, 3))]

    _day(db, 0, {x: {} for x in guids}, {x: random_contacts() for x in guids})
    modes = set()
    for day in range(1, 13):
        touched = rng.sample(guids, rng.randint(1, 3))
        students = {x: {"end_date": "2026-10-01"} if rng.random() < 0.15 else {}
                    for x in touched if rng.random() < 0.5}
        lists = {x: random_contacts() for x in touched if x not in students or rng.random() < 0.5}
        out = _day(db, day, students, lists)
        modes.add("incremental" if "incremental" in out else "unchanged" if out.get("unchanged") else "full")
    assert "incremental" in modes


# F37 as first written (issue 15 replaced it): for each claimant, one probe of the accounts and
# one scan of every other candidate. The rule's set-based form must list the same rejections.
_IN_USE_AS_FIRST_WRITTEN = """
SELECT c.person_id, 'username_in_use'::text AS reason,
       'email already used as the username of contact ' || coalesce(h.person_id, w.person_id) AS detail
  FROM contact_cand c
  LEFT JOIN LATERAL (SELECT x.person_id FROM core.contact x
                      WHERE x.base_id = %(base)s AND lower(x.username) = lower(c.username)
                        AND x.person_id <> c.person_id LIMIT 1) h ON true
  LEFT JOIN LATERAL (SELECT o.person_id FROM contact_cand o
                      WHERE lower(o.username) = lower(c.username) AND o.person_id < c.person_id
                        AND NOT EXISTS (SELECT 1 FROM contact_reject r WHERE r.person_id = o.person_id)
                        AND NOT EXISTS (SELECT 1 FROM core.contact x WHERE x.base_id = %(base)s
                                                                      AND lower(x.username) = lower(c.username))
                      ORDER BY o.person_id LIMIT 1) w ON true
 WHERE NOT EXISTS (SELECT 1 FROM contact_reject r WHERE r.person_id = c.person_id)
   AND coalesce(h.person_id, w.person_id) IS NOT NULL
"""


def test_username_in_use_lists_the_same_rejections_as_the_rule_first_written(db):
    import random

    rng = random.Random(37)
    guids = [f"g-{i}" for i in range(10)]
    pids = [f"C{i:02d}" for i in range(30)]
    emails = ["a@example.com", "A@example.com", "b@example.com", "c@example.com", "d@example.com"]

    def claimant(pid):
        return contact(pid, forename=None if rng.random() < 0.1 else "Ann",
                       emails=[] if rng.random() < 0.1 else [
                           {"type": "H", "address": rng.choice(emails), "primary": True, "main": False}])

    seen = set()
    for day in range(8):
        lists = {g: [claimant(p) for p in rng.sample(pids, rng.randint(0, 4))] for g in rng.sample(guids, 4)}
        c = ctx(DAY1 + timedelta(days=day))
        store_messages(db, c, [page("student", [(g, dict(STUDENT)) for g in lists]),
                               page("contacts", [(g, {"contacts": cs}) for g, cs in lists.items()])])
        chain.hash_filter(db, c, LEGACY)
        chain.validate(db, c, REPORTS)
        chain.load(db, c)
        params = {"base": c.base_id, "wo": c.window_order, **contacts.REASONS}
        with db.transaction(force_rollback=True):
            db.execute("DROP TABLE IF EXISTS pg_temp.contact_cand, pg_temp.contact_reject")
            db.execute(contacts._candidates_sql(False), params)
            db.execute(contacts._REQUIRED, params)
            db.execute("ANALYZE contact_cand, contact_reject")
            now = set(db.execute(contacts._username_in_use("contact_cand", "contact_reject"), params).fetchall())
            before = set(db.execute(_IN_USE_AS_FIRST_WRITTEN, params).fetchall())
        assert now == before, f"day {day}"
        seen |= {r[2] for r in now}
        contacts.sync(db, c)
        chain.commit(db, c)
    # both kinds of collision happened: with an account, and between new claimants
    assert len(seen) > 2
