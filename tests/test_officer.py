"""Officer decisions on the lists, and the maintenance tasks, persisting across runs (issue 5, F18)."""
from datetime import UTC, timedelta

import pytest

from b2b import pipeline as chain
from b2b.config.settings import Settings
from b2b.ops import maintenance, officer
from tests.test_chain import ADDR, BASE, DAY1, ctx, page, run_chain

WEIGHTS = Settings()  # the default matcher
AMY = {"upn": None, "forename": "Amy", "surname": "Twist", "dob": "2016-05-05", "gender": "F", "ncy": "5"}


@pytest.fixture
def la(db):
    # two LA children who look alike to the matcher for a school record without an address
    db.execute("""INSERT INTO core.child (person_id, forename, surname, gender, dob, postcode)
                  VALUES ('P1', 'Amy', 'Twist', 'F', '2016-05-05', 'CT1 2AB'),
                         ('P2', 'Amy', 'Twist', 'F', '2016-05-05', 'ME4 1AA'),
                         ('P3', 'Joseph', 'Bloggs', 'M', '2016-01-26', 'CT1 2AB')""")
    db.commit()
    return db


def status(db, guid="g-amy"):
    return db.execute("""SELECT status, person_id, rule FROM results.current_match
                          WHERE base_id = %s AND student_guid = %s""", (BASE, guid)).fetchone()


def day(n):
    return ctx(DAY1 + timedelta(days=n))


def test_confirm_a_possible_candidate_and_the_next_run_respects_it(la):
    db = la
    run_chain(db, day(0), [page("student", [("g-amy", AMY)])], WEIGHTS)
    assert status(db)[0] == "possible"
    assert officer.possible(db, BASE)[0]["student_guid"] == "g-amy"
    officer.confirm(db, BASE, "g-amy", "P2", "officer.jane")
    assert status(db) == ("matched", "P2", "officer_link")
    decision = db.execute("SELECT decision, person_id, decided_by FROM results.match_decision").fetchall()
    assert decision == [("confirm", "P2", "officer.jane via postgres")]  # the web user, via the login
    # the school changes something: the next run links by the officer's decision
    run_chain(db, day(1), [page("student", [("g-amy", dict(AMY, ncy="6"))])], WEIGHTS)
    st = status(db)
    assert st[1:] == ("P2", "officer_link") and st[0] in ("matched", "matched_with_conflicts")


def test_rejected_candidate_is_not_proposed_again(la):
    db = la
    run_chain(db, day(0), [page("student", [("g-amy", AMY)])], WEIGHTS)
    officer.reject(db, BASE, "g-amy", "P1", "officer.jane")
    officer.reject(db, BASE, "g-amy", "P2", "officer.jane")
    assert status(db)[0] == "unmatched"
    run_chain(db, day(1), [page("student", [("g-amy", dict(AMY, ncy="6"))])], WEIGHTS)
    assert status(db) == ("unmatched", None, "none")
    assert [r["student_guid"] for r in officer.unmatched(db, BASE)] == ["g-amy"]


def test_new_child_from_an_unmatched_record(la):
    db = la
    stranger = {"upn": None, "forename": "Zed", "surname": "Newcomer", "dob": "2017-02-02", "gender": "M"}
    run_chain(db, day(0), [page("student", [("g-zed", stranger)]), page("address", [("g-zed", ADDR)])], WEIGHTS)
    assert status(db, "g-zed")[0] == "unmatched"
    pid = officer.new_child(db, BASE, "g-zed", "officer.jane")
    row = db.execute("SELECT forename, surname, dob::text, postcode, updated_by FROM core.child WHERE person_id = %s",
                     (pid,)).fetchone()
    assert row == ("Zed", "Newcomer", "2017-02-02", "CT1 2AB", "officer:officer.jane via postgres")
    run_chain(db, day(1), [page("student", [("g-zed", dict(stranger, ncy="1"))])], WEIGHTS)
    assert status(db, "g-zed")[1:] == (pid, "officer_link")


def test_manual_link_and_unknown_ids_are_clear_errors(la):
    db = la
    run_chain(db, day(0), [page("student", [("g-amy", AMY)])], WEIGHTS)
    with pytest.raises(officer.OfficerError, match="no LA child P404"):
        officer.link(db, BASE, "g-amy", "P404", "officer.jane")
    with pytest.raises(officer.OfficerError, match="no imported student g-none"):
        officer.link(db, BASE, "g-none", "P1", "officer.jane")
    officer.link(db, BASE, "g-amy", "P1", "officer.jane")
    assert db.execute("SELECT linked_by FROM core.child_link WHERE student_guid = 'g-amy'").fetchone() == ("officer",)


def joe_conflict(db):
    joe = {"upn": None, "forename": "Joe", "surname": "Bloggs", "dob": "2016-01-26", "gender": "M"}
    run_chain(db, day(0), [page("student", [("g-joe", joe)]), page("address", [("g-joe", ADDR)])], WEIGHTS)
    return joe


def test_resolve_conflict_keep_la_value_stays_resolved_on_reimport(la):
    db = la
    joe = joe_conflict(db)
    assert db.execute("SELECT person_id, field, la_value, incoming_value FROM results.conflict").fetchall() == [
        ("P3", "forename", "Joseph", "Joe")]
    assert officer.resolve_conflict(db, "P3", "forename", "la", "officer.jane") == 1
    assert db.execute("SELECT count(*) FROM results.conflict").fetchone()[0] == 0
    run_chain(db, day(1), [page("student", [("g-joe", dict(joe, ncy="5"))])], WEIGHTS)
    assert db.execute("SELECT count(*) FROM results.conflict").fetchone()[0] == 0  # same values: still resolved
    assert db.execute("SELECT forename FROM core.child WHERE person_id = 'P3'").fetchone() == ("Joseph",)


def test_resolve_conflict_accept_incoming_updates_the_la_record(la):
    db = la
    joe_conflict(db)
    officer.resolve_conflict(db, "P3", "forename", "incoming", "officer.jane")
    assert db.execute("SELECT forename, updated_by FROM core.child WHERE person_id = 'P3'").fetchone() == (
        "Joe", "officer:officer.jane via postgres")
    res = db.execute("SELECT resolution, resolved_by FROM results.conflict_resolution").fetchall()
    assert res == [("accepted_incoming", "officer.jane via postgres")]
    with pytest.raises(officer.OfficerError, match="no open conflict"):
        officer.resolve_conflict(db, "P3", "forename", "la", "officer.jane")


def test_clear_conflicts_drops_those_the_la_has_since_fixed(la):
    db = la
    joe_conflict(db)
    assert maintenance.clear_conflicts(db) == 0
    db.execute("UPDATE core.child SET forename = 'Joe' WHERE person_id = 'P3'")  # corrected in the LA system
    db.commit()
    assert maintenance.clear_conflicts(db) == 1
    assert db.execute("SELECT count(*) FROM results.conflict").fetchone()[0] == 0


def test_clear_cached_data_makes_the_next_import_process_everything(la):
    db = la
    msgs = [page("student", [("g-amy", AMY)])]
    run_chain(db, day(0), msgs, WEIGHTS)
    assert run_chain(db, day(1), msgs, WEIGHTS)["hash"]["skipped_by_cache"] == 1
    assert maintenance.clear_cached_data(db, BASE) >= 1
    assert run_chain(db, day(2), msgs, WEIGHTS)["hash"]["skipped_by_cache"] == 0


def test_delete_files_purges_payloads_and_keeps_tables(la):
    from datetime import datetime, timezone

    db = la
    joe_conflict(db)
    before = db.execute("SELECT count(*) FROM staging.student").fetchone()[0]
    assert maintenance.delete_files(db, 30) == 0  # nothing that old
    assert maintenance.delete_files(db, 30, now=datetime.now(UTC) + timedelta(days=31)) == 2
    assert db.execute("SELECT count(*) FROM raw.inbound_file WHERE payload IS NOT NULL").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM staging.student").fetchone()[0] == before


def test_new_child_ids_come_from_a_sequence_so_a_delete_never_makes_them_collide(la):
    db = la
    pages = [page("student", [(f"g-new{i}", {"upn": None, "forename": f"New{i}", "surname": "Comer",
                                              "dob": f"2017-02-0{i}", "gender": "M"}) for i in (1, 2, 3)])]
    run_chain(db, day(0), pages, WEIGHTS)
    first = officer.new_child(db, BASE, "g-new1")
    second = officer.new_child(db, BASE, "g-new2")
    # the first child is withdrawn (e.g. merged into another record): a row count would now give
    # the second child's id again
    db.execute("DELETE FROM core.child_link WHERE person_id = %s", (first,))
    db.execute("DELETE FROM core.child WHERE person_id = %s", (first,))
    third = officer.new_child(db, BASE, "g-new3")
    assert len({first, second, third}) == 3 and third > second > first


def test_new_child_ids_are_distinct_under_concurrency(la, db_url):
    import psycopg

    db = la
    pages = [page("student", [(f"g-c{i}", {"upn": None, "forename": f"Con{i}", "surname": "Current",
                                            "dob": f"2015-03-0{i}", "gender": "F"}) for i in (1, 2)])]
    run_chain(db, day(0), pages, WEIGHTS)
    db.commit()
    with psycopg.connect(db_url) as a, psycopg.connect(db_url) as b:
        a.execute("SELECT 1")  # a transaction is open: a's new child stays uncommitted
        b.execute("SET lock_timeout = '5s'")  # a colliding id would wait for a: fail instead of hang
        pa = officer.new_child(a, BASE, "g-c1")
        pb = officer.new_child(b, BASE, "g-c2")  # would have read the same count and collided
        a.commit()
        b.commit()
    assert pa != pb
    assert db.execute("SELECT count(*) FROM core.child WHERE person_id IN (%s, %s)", (pa, pb)).fetchone() == (2,)


# ------------------------------------------------------------------ fault sweep: decisions that meet
def decide_while_another_is_open(db_url, first, second):
    """``first`` decides in connection a and stays uncommitted while ``second`` decides in
    connection b (a thread: it waits for a); a commits; b's outcome (its value or its error)."""
    import threading
    import time

    import psycopg

    out: dict = {}
    with psycopg.connect(db_url) as a, psycopg.connect(db_url) as b:
        b.execute("SET lock_timeout = '20s'")
        b.commit()
        with a.transaction():
            first(a)

            def run():
                try:
                    out["value"] = second(b)
                except officer.OfficerError as exc:
                    out["error"] = str(exc)

            t = threading.Thread(target=run)
            t.start()
            time.sleep(0.5)  # b reached the decision while a's is open
        t.join(30)
    return out


def test_confirm_of_a_student_a_newer_run_has_decided_is_refused(la):
    db = la
    run_chain(db, day(0), [page("student", [("g-amy", AMY)])], WEIGHTS)
    assert status(db)[0] == "possible"  # the officer's list of the day
    # a newer run re-decided the student (the school sent her UPN, the one the LA holds for P1)
    db.execute("UPDATE core.child SET upn = 'R201100018042' WHERE person_id = 'P1'")
    run_chain(db, day(1), [page("student", [("g-amy", dict(AMY, upn="R201100018042"))])], WEIGHTS)
    now = status(db)
    assert now == ("matched", "P1", "weights")
    with pytest.raises(officer.OfficerError, match="base 8862003: student g-amy is no longer a possible match "
                                                   "\\(it is now matched to LA child P1\\); look at it again, "
                                                   "or link it to LA child P2 by hand"):
        officer.confirm(db, BASE, "g-amy", "P2", "officer.jane")  # from the day-old list
    assert status(db) == now
    assert db.execute("SELECT count(*) FROM results.match_decision").fetchone() == (0,)


def test_two_officers_deciding_one_student_at_once_never_overwrite_each_other(la, db_url):
    db = la
    run_chain(db, day(0), [page("student", [("g-amy", AMY)])], WEIGHTS)
    db.commit()
    proposed = status(db)[1]
    other = ({"P1", "P2"} - {proposed}).pop()
    # two officers confirm the proposal at once: the second is told, no second decision
    out = decide_while_another_is_open(db_url, lambda a: officer.confirm(a, BASE, "g-amy", proposed, "jane"),
                                       lambda b: officer.confirm(b, BASE, "g-amy", proposed, "john"))
    assert f"already linked to LA child {proposed} (confirm by jane via" in out.get("error", ""), out
    # ... one links the other child by hand meanwhile: refused, the first officer's link stays
    out = decide_while_another_is_open(db_url, lambda a: a.execute("SELECT 1"),
                                       lambda b: officer.link(b, BASE, "g-amy", other, "john"))
    assert "reject that link first" in out.get("error", ""), out
    assert db.execute("SELECT person_id, linked_by FROM core.child_link").fetchall() == [(proposed, "officer")]
    assert status(db) == ("matched", proposed, "officer_link")
    assert db.execute("SELECT decision, decided_by FROM results.match_decision").fetchall() == [
        ("confirm", "jane via postgres")]


def test_a_confirm_and_a_reject_at_once_leave_one_consistent_decision(la, db_url):
    db = la
    run_chain(db, day(0), [page("student", [("g-amy", AMY)])], WEIGHTS)
    db.commit()
    proposed = status(db)[1]
    out = decide_while_another_is_open(db_url, lambda a: officer.confirm(a, BASE, "g-amy", proposed, "jane"),
                                       lambda b: officer.reject(b, BASE, "g-amy", proposed, "john"))
    assert "value" in out, out  # the reject came second: it undoes the confirm, link and list alike
    assert db.execute("SELECT count(*) FROM core.child_link").fetchone() == (0,)
    assert status(db) == ("unmatched", None, "none")


def test_new_child_twice_for_one_student_makes_one_child(la, db_url):
    db = la
    stranger = {"upn": None, "forename": "Zed", "surname": "Newcomer", "dob": "2017-02-02", "gender": "M"}
    run_chain(db, day(0), [page("student", [("g-zed", stranger)])], WEIGHTS)
    db.commit()
    out = decide_while_another_is_open(db_url, lambda a: officer.new_child(a, BASE, "g-zed", "jane"),
                                       lambda b: officer.new_child(b, BASE, "g-zed", "john"))  # a double click
    assert "no new LA child made" in out.get("error", ""), out
    with pytest.raises(officer.OfficerError, match=r"already linked to LA child B2B\d{7} \(new_child by jane"):
        officer.new_child(db, BASE, "g-zed", "jane")
    assert db.execute("SELECT count(*) FROM core.child WHERE origin = 'officer'").fetchone() == (1,)


def test_reject_then_confirm_the_same_pair_is_refused_and_a_link_by_hand_holds(la):
    db = la
    run_chain(db, day(0), [page("student", [("g-amy", AMY)])], WEIGHTS)
    proposed = status(db)[1]
    officer.reject(db, BASE, "g-amy", proposed, "jane")
    with pytest.raises(officer.OfficerError, match="no longer a possible match \\(it is now unmatched\\)"):
        officer.confirm(db, BASE, "g-amy", proposed, "jane")
    officer.link(db, BASE, "g-amy", proposed, "jane", note="it was her after all")  # the officer's later word
    run_chain(db, day(1), [page("student", [("g-amy", dict(AMY, ncy="6"))])], WEIGHTS)
    assert status(db)[1:] == (proposed, "officer_link")


def test_two_officers_resolving_one_conflict_at_once(la, db_url):
    db = la
    joe_conflict(db)
    db.commit()
    out = decide_while_another_is_open(db_url, lambda a: officer.resolve_conflict(a, "P3", "forename", "la", "jane"),
                                       lambda b: officer.resolve_conflict(b, "P3", "forename", "incoming", "john"))
    assert "no open conflict on forename" in out.get("error", ""), out
    assert db.execute("SELECT forename FROM core.child WHERE person_id = 'P3'").fetchone() == ("Joseph",)
    assert db.execute("SELECT resolution, resolved_by FROM results.conflict_resolution").fetchall() == [
        ("kept_la", "jane via postgres")]
