"""Issue 14, the possible queue without identifiers: the decision rules that link what the data
proves (a forename one keystroke away at the very home; the middle name confirming a moved
child; optionally a rare name and DOB) — each with its "before" and with the twins, siblings and
namesakes that must stay out."""
import json

import pandas as pd

from b2b.matching import CORE_COLUMNS, INCOMING_COLUMNS, MatchConfig, match
from b2b.matching.decide import RARE_NAME_MIN_LA, keystroke_slip


def la(pid, forename, surname, dob, gender="F", postcode="CT1 2AB", addr="1 Green Road", middle=None):
    return dict(person_id=pid, upn=None, guid=None, forename=forename, middle_names=middle, surname=surname,
                gender=gender, dob=dob, postcode=postcode, address_line1=addr)


def school(iid, forename, surname, dob, gender="F", postcode="CT1 2AB", addr="1 Green Road", middle=None,
           base="8862001"):
    return dict(incoming_id=iid, base_id=base, upn=None, guid=f"g-{iid}", forename=forename, middle_names=middle,
                surname=surname, gender=gender, dob=dob, postcode=postcode, address_line1=addr)


def decide(core, inc, **kw):
    out = match(pd.DataFrame(core, columns=CORE_COLUMNS), pd.DataFrame(inc, columns=INCOMING_COLUMNS), **kw)
    return {r["incoming_id"]: r for r in out.to_dict("records")}


def linked(r) -> bool:
    return r["status"].startswith("matched")


def test_keystroke_slip_is_a_neighbouring_key_or_a_swap_never_a_name_parents_give_twins():
    assert keystroke_slip("bwn", "ben") and keystroke_slip("bne", "ben") and keystroke_slip("mxa", "max")
    assert keystroke_slip("fretq", "freya")  # two neighbouring keys from five letters
    assert not keystroke_slip("mxq", "max")  # two slips in three letters: not the name any more
    for a, b in (("jaden", "jayden"), ("fin", "finn"), ("ami", "amy"), ("leon", "leo"), ("thea", "theo"),
                 ("isha", "isla"), ("emmy", "emma"), ("ava", "eva"), ("sam", "pam")):
        assert not keystroke_slip(a, b) and not keystroke_slip(b, a), (a, b)


def test_a_forename_one_keystroke_away_at_the_very_home_links_without_identifiers():
    core = [la("P1", "Freya", "Moss", "2016-03-04"), la("P2", "Tom", "Moss", "2013-07-01", gender="M")]
    # before issue 14's rule: a typed forename without a UPN was "possible" (forename_differs)
    got = decide(core, [school("slip", "Fretq", "Moss", "2016-03-04"), school("swap", "Tmo", "Moss", "2013-07-01",
                                                                             gender="M")])
    for k, pid in (("slip", "P1"), ("swap", "P2")):
        assert (got[k]["status"], got[k]["person_id"]) == ("matched_with_conflicts", pid)
        e = json.loads(got[k]["explanation"])
        assert e["typed_forename_at_home"] is True and e["fields"]["forename"]["level"] in ("typo", "typed error")
    # moved (another home): still an officer's question
    r = decide(core, [school("slip", "Fretq", "Moss", "2016-03-04", postcode="TN4 8AB", addr="12 New Street")])["slip"]
    assert r["status"] == "possible" and "typed_forename_at_home" not in r["explanation"]


def test_typed_forename_rule_never_links_an_unknown_twin():
    core = [la("P1", "Freya", "Moss", "2016-03-04")]
    # the school sends both twins (one with a slipped name): the roll proves two children
    got = decide(core, [school("freya", "Freya", "Moss", "2016-03-04"), school("twin", "Fretq", "Moss", "2016-03-04")])
    assert (got["freya"]["person_id"], got["freya"]["status"]) == ("P1", "matched")
    assert not linked(got["twin"])
    # the twin on another school's roll, at the same home
    got = decide(core, [school("freya", "Freya", "Moss", "2016-03-04"),
                        school("twin", "Fretq", "Moss", "2016-03-04", base="8862009")])
    assert not linked(got["twin"])
    # the twin alone at its school, its school holding an old address for the other twin
    got = decide(core, [school("freya", "Freya", "Moss", "2016-03-04", postcode="TN4 8AB", addr="12 New Street"),
                        school("twin", "Fretq", "Moss", "2016-03-04")])
    assert not linked(got["twin"])
    # ... or the twin at another school still at the old home, Freya's family moved (her school
    # has the new home): Freya's record holds the very name and DOB of the LA child
    got = decide(core, [school("freya", "Freya", "Moss", "2016-03-04", postcode="TN4 8AB", addr="12 New Street"),
                        school("twin", "Fretq", "Moss", "2016-03-04", base="8862009")])
    assert not linked(got["twin"])
    # the LA knows twins at that home: a name one key from one of them may be the other's nickname,
    # a slip or a third child — never linked on the shared fields
    twins = core + [la("P2", "Ella", "Moss", "2016-03-04")]
    assert not linked(decide(twins, [school("s", "Fretq", "Moss", "2016-03-04")])["s"])
    # a real name one key from the child's (held by another LA child) is a name, not a slip
    other = core + [la("P7", "Freys", "Quinn", "2012-01-01", postcode="ME15 6QX", addr="7 Elsewhere Road")]
    assert not linked(decide(other, [school("s", "Freys", "Moss", "2016-03-04")])["s"])
    # a twin with a close real name (Leo/Leon, Jayden/Jaden) is no keystroke slip
    r = decide([la("P1", "Jayden", "Moss", "2016-03-04", gender="M")],
               [school("s", "Jaden", "Moss", "2016-03-04", gender="M")])["s"]
    assert not linked(r)
    # a sibling (another DOB) is not the child, whatever its name
    assert not linked(decide(core, [school("sib", "Fretq", "Moss", "2018-05-06")])["sib"])


MOVED = dict(postcode="TN4 8AB", addr="12 New Street")


def test_the_middle_name_confirms_a_moved_child_with_a_surname_typed_in_error_or_day_and_month_swapped():
    core = [la("P1", "Robert", "Lenis", "2009-01-19", gender="M", middle="James"),
            la("P2", "Abigail", "Smith", "2013-07-06", middle="Rose")]
    inc = [school("sn", "Robert", "Lewis", "2009-01-19", gender="M", middle="James", **MOVED),
           school("dob", "Abigail", "Smith", "2013-06-07", middle="Rose", **MOVED)]
    # before: "possible", below_auto (the middle name corroborated, but under 20 bits)
    got = decide(core, inc)
    for k, pid in (("sn", "P1"), ("dob", "P2")):
        assert (got[k]["status"], got[k]["person_id"]) == ("matched_with_conflicts", pid)
        assert json.loads(got[k]["explanation"])["middle_name_counts"] is True
    # without the middle name it stays an officer's question
    got = decide(core, [dict(r, middle_names=None) for r in inc])
    assert [got[k]["status"] for k in ("sn", "dob")] == ["possible", "possible"]
    # a DOB one digit or a few days out: a namesake with the same middle name, a year or days
    # apart, is some forty times likelier than on the day — still a question
    for dob in ("2010-01-19", "2009-01-24"):
        r = decide(core, [dict(inc[0], surname="Lenis", dob=dob)])["sn"]
        assert not linked(r) and "middle_name_counts" not in r["explanation"]


def test_the_middle_name_never_links_a_twin_or_a_sibling():
    # twins (and siblings) often share a family middle name; each has a forename of its own
    core = [la("P1", "Amelia", "Jones", "2016-03-04", middle="Rose")]
    got = decide(core, [school("twin", "Isla", "Jones", "2016-03-04", middle="Rose", **MOVED),
                        school("sib", "Amelia", "Jones", "2017-11-20", middle="Rose", base="8862004", **MOVED)])
    assert not any(linked(got[k]) for k in ("twin", "sib"))
    # a twin whose name is a typo away but no keystroke ("Amelie"/"Amelia") gains nothing from the
    # rule: no lower threshold (it needs 20 bits, as before)
    r = decide(core, [school("twin2", "Amelie", "Jones", "2016-03-04", middle="Rose", base="8862003",
                             postcode="TN4 8AB", addr="12 New Street", gender="")])["twin2"]
    assert not linked(r) and "middle_name_counts" not in r["explanation"]
    # a namesake elsewhere with no middle name of its own: name and DOB only, still a question
    r = decide(core, [school("n", "Amelia", "Jones", "2016-03-04", middle="Grace", **MOVED)])["n"]
    assert not linked(r)


def big_la(n: int) -> list[dict]:
    """An LA of ``n`` children with names that do not collide with the tests' (for term frequencies)."""
    letters = "bcdfghklmnprstvz"
    out = []
    for k in range(n):
        a, b, c = letters[k % 16], letters[(k // 16) % 16], letters[(k // 256) % 16]
        out.append(la(f"F{k}", f"Xa{a}{b}", f"Yo{c}{a}{b}", f"20{10 + k % 10}-0{1 + k % 9}-1{k % 10}",
                      postcode=f"ME{1 + k % 20} {1 + k % 9}ZZ", addr=f"{1 + k % 150} Filler Street"))
    return out


def test_a_rare_name_and_dob_links_without_identifiers_only_when_asked_and_never_a_twin_or_namesake():
    la_children = big_la(RARE_NAME_MIN_LA)
    core = la_children + [la("P1", "Zephyrine", "Okonkwo", "2015-06-07"),
                          # two LA children share the name and DOB "Amelia Smith", 2014-02-02
                          la("P8", "Amelia", "Smith", "2014-02-02"),
                          la("P9", "Amelia", "Smith", "2014-02-02", postcode="ME15 6QX", addr="7 Elsewhere Road")]
    moved = school("moved", "Zephyrine", "Okonkwo", "2015-06-07", **MOVED)
    # before (and by default): name and DOB only, an officer's question
    assert decide(core, [moved])["moved"]["status"] == "possible"
    cfg = MatchConfig(rare_name=True)
    r = decide(core, [moved], cfg=cfg)["moved"]
    assert (r["status"], r["person_id"]) == ("matched_with_conflicts", "P1")
    assert json.loads(r["explanation"])["rare_name"]["expected_namesakes"] <= 5e-4
    # two LA children with that name and DOB: no link
    assert not linked(decide(core, [school("s", "Amelia", "Smith", "2014-02-02", **MOVED)], cfg=cfg)["s"])
    # a twin the LA does not know (its own forename), a sibling (its own DOB): not the child
    got = decide(core, [school("twin", "Zara", "Okonkwo", "2015-06-07", **MOVED),
                        school("sib", "Zephyrine", "Okonkwo", "2017-03-01", base="8862007", **MOVED)], cfg=cfg)
    assert not linked(got["twin"]) and not linked(got["sib"])
    # two records with the name and DOB in one batch (twins named alike, a duplicate): not this rule's
    got = decide(core, [moved, school("dup", "Zephyrine", "Okonkwo", "2015-06-07", base="8862008")], cfg=cfg)
    assert "rare_name" not in got["moved"]["explanation"]
    # a small LA says nothing about how rare a name is
    small = decide(core[-3:], [moved], cfg=cfg)["moved"]
    assert small["status"] == "possible"
    # a name common in the LA: namesakes are to be expected
    common = la_children + [la(f"C{k}", "Olivia", "Smith", f"20{10 + k % 10}-11-0{1 + k % 9}") for k in range(400)] + \
        [la("P5", "Olivia", "Smith", "2015-06-07")]
    r = decide(common, [school("c", "Olivia", "Smith", "2015-06-07", **MOVED)], cfg=cfg)["c"]
    assert r["status"] == "possible"


def test_benchmark_plants_namesakes_on_common_names_more_often():
    from simulator.matching_data import _name_commonness, match_dataset

    core, inc, truth, kinds = match_dataset(3000, 3600, seed=5)
    common = _name_commonness(core, inc)
    planted = [common[i] for i, k in kinds.items() if k in ("namesake", "namesake_unknown") and i in common]
    assert planted and sum(planted) / len(planted) > 1.2  # the batch's average is 1


def held_at(rec, base="8862001"):
    """An LA record whose school, as the LA holds it, is ``base``."""
    return dict(rec, base_id=base)


def test_the_school_the_la_holds_corroborates_the_very_name_and_dob_of_a_child_who_moved():
    core = [held_at(la("P1", "Freya", "Moss", "2016-03-04")),
            held_at(la("P2", "Tom", "Moss", "2013-07-01", gender="M"), "8862009")]
    moved = school("moved", "Freya", "Moss", "2016-03-04", **MOVED)
    # before (the school not read, or not held): name and DOB only, an officer's question
    assert decide(core, [moved], cfg=MatchConfig(school_evidence=False))["moved"]["status"] == "possible"
    assert decide([dict(core[0], base_id=None)], [moved])["moved"]["status"] == "possible"
    r = decide(core, [moved])["moved"]
    assert (r["status"], r["person_id"]) == ("matched_with_conflicts", "P1")
    assert json.loads(r["explanation"])["at_the_las_school"] is True
    # the LA holds the child at another school (a family that moved school too): still a question
    r = decide(core, [school("tom", "Tom", "Moss", "2013-07-01", gender="M", **MOVED)])["tom"]
    assert r["status"] == "possible" and "at_the_las_school" not in r["explanation"]
    # a surname the school holds double-barrelled or typed in error is still the child's there
    for iid, sn in (("barrel", "Moss-Whitfield"), ("typed", "Mpss")):
        r = decide(core, [school(iid, "Freya", sn, "2016-03-04", **MOVED)])[iid]
        assert (r["status"], r["person_id"]) == ("matched_with_conflicts", "P1"), iid
    # a forename short of the name (or a form of it), a DOB short of the very day, stay with officers
    for iid, fn, dob in (("typo", "Freyq", "2016-03-04"), ("dob", "Freya", "2016-03-05")):
        assert not linked(decide(core, [school(iid, fn, "Moss", dob, **MOVED)])[iid])
    # the contacts (F14) are not children at a school: never this rule's
    assert "at_the_las_school" not in json.dumps(
        decide(core, [dict(moved, dob=None)], cfg=MatchConfig(dob_required=False), min_age=6,
               as_of="2026-10-05")["moved"])


def test_the_school_rule_never_links_a_twin_a_sibling_or_one_of_two_namesakes():
    core = [held_at(la("P1", "Elizabeth", "Moss", "2016-03-04")),
            held_at(la("P2", "Tom", "Moss", "2013-07-01", gender="M"))]
    # twins the LA does not know, both on the roll at the new home: only the very forename links
    got = decide(core, [school("liz", "Elizabeth", "Moss", "2016-03-04", **MOVED),
                        school("twin", "Ella", "Moss", "2016-03-04", **MOVED)])
    assert (got["liz"]["status"], got["liz"]["person_id"]) == ("matched_with_conflicts", "P1")
    assert not linked(got["twin"])
    # ... and a twin whose forename is only a form of the child's ("Beth") is not the child there
    got = decide(core, [school("beth", "Beth", "Moss", "2016-03-04", **MOVED),
                        school("twin", "Ella", "Moss", "2016-03-04", **MOVED)])
    assert not linked(got["beth"]) and not linked(got["twin"])
    # a brother or sister at the school: a DOB of their own
    assert not linked(decide(core, [school("sib", "Tom", "Moss", "2014-07-01", gender="M", **MOVED)])["sib"])
    # two LA children of that name and DOB, both held at the school: an officer's question
    two = core + [held_at(la("P3", "Elizabeth", "Moss", "2016-03-04", postcode="ME15 6QX", addr="7 Elsewhere Road"))]
    r = decide(two, [school("s", "Elizabeth", "Moss", "2016-03-04", **MOVED)])["s"]
    assert r["status"] == "possible" and "ambiguous" in json.loads(r["explanation"])["why_not_auto"]
    # ... one of them held at another school: the one the LA holds at this school, past the namesake
    other = core + [held_at(la("P3", "Elizabeth", "Moss", "2016-03-04", postcode="ME15 6QX",
                               addr="7 Elsewhere Road"), "8862009")]
    r = decide(other, [school("s", "Elizabeth", "Moss", "2016-03-04", **MOVED)])["s"]
    assert (r["status"], r["person_id"]) == ("matched_with_conflicts", "P1")
    # two valid permanent UPNs that differ are two children, whatever the school says
    from stdnum.gb.upn import calc_check_digit

    a, b = (calc_check_digit(body) + body for body in ("886200120001", "886200120002"))
    upns = [dict(core[0], upn=a), core[1]]
    r = decide(upns, [dict(school("s", "Elizabeth", "Moss", "2016-03-04", **MOVED), upn=b)])["s"]
    assert not linked(r)
    assert linked(decide(upns, [dict(school("s", "Elizabeth", "Moss", "2016-03-04", **MOVED), upn=None)])["s"])
    # the same child on two rolls, one of them the school the LA holds: that one only
    got = decide(core, [school("here", "Elizabeth", "Moss", "2016-03-04", **MOVED),
                        school("there", "Elizabeth", "Moss", "2016-03-04", base="8862009", **MOVED)])
    assert linked(got["here"]) and not linked(got["there"])


def test_a_namesake_born_days_away_held_at_another_school_is_another_child_not_a_question():
    """The LA holds the nearest child at another school, born days (or a digit) from the record's
    DOB, living elsewhere, no identifier agreeing: a newcomer's namesake — unmatched, the
    candidate still explained (``why_not_possible``), not the possible queue."""
    from stdnum.gb.upn import calc_check_digit

    core = [held_at(la("P1", "Freya", "Moss", "2016-03-14"), "8862009")]
    rec = school("s", "Freya", "Moss", "2016-03-04", **MOVED)
    # before (the school not read): an officer's question
    assert decide(core, [rec], cfg=MatchConfig(school_evidence=False))["s"]["status"] == "possible"
    r = decide(core, [rec])["s"]
    assert (r["status"], r["person_id"]) == ("unmatched", "")
    assert json.loads(r["explanation"])["why_not_possible"] == ["held_at_another_school"]
    # still a question: the LA holds no school, or this one; the same postcode sector; a middle
    # name agreeing; a UPN agreeing (the child, with a DOB error)
    upn = calc_check_digit("886200120001") + "886200120001"
    for name, c, i in (("no school", dict(core[0], base_id=None), rec),
                       ("this school", dict(core[0], base_id="8862001"), rec),
                       ("sector", core[0], dict(rec, postcode="CT1 2XY")),
                       ("middle", dict(core[0], middle_names="Rose"), dict(rec, middle_names="Rose")),
                       ("upn", dict(core[0], upn=upn), dict(rec, upn=upn))):
        r = decide([c], [i])["s"]
        assert r["person_id"] == "P1" and "held_at_another_school" not in r["explanation"], name
