"""The simulator: determinism, valid codes, XSD-valid messages, time and change semantics."""
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from lxml import etree
from stdnum.gb import upn as upn_mod

from b2b.ingest.messages import XSD_PATH, parse_sims7
from simulator.world import SimulatorError, World, WorldConfig

UTC = UTC
T1 = datetime(2026, 10, 5, 17, 0, tzinfo=UTC)
T0 = T1 - timedelta(days=1)
POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][A-Z0-9]? [0-9][A-Z]{2}$")


@pytest.fixture(scope="module")
def world():
    return World(WorldConfig.demo())


def test_same_seed_same_bytes_other_seed_differs(world):
    again = World(WorldConfig.demo())
    assert again.export_sims7("8862001", "snapshot", T1) == world.export_sims7("8862001", "snapshot", T1)
    assert again.primary_datagroup("8862003", "sen", T1, T0) == world.primary_datagroup("8862003", "sen", T1, T0)
    other = World(WorldConfig.demo(seed=1))
    assert other.export_sims7("8862001", "snapshot", T1) != world.export_sims7("8862001", "snapshot", T1)


def test_upns_and_postcodes_are_valid(world):
    st = world.state(T1)
    upns = [s.blocks["student"]["upn"] for roll in st.students.values() for s in roll.values()]
    permanent = [u for u in upns if u[-1].isdigit()]
    assert len(permanent) > 0.95 * len(upns)
    planted = {st.students[d][g].blocks["student"]["upn"] for d, g in world.entry_errors()}
    assert planted and not any(upn_mod.is_valid(u) for u in planted)  # school typos the LA must flag
    assert all(upn_mod.is_valid(u) for u in upns if u not in planted)  # temporary UPNs included
    posts = [s.blocks["address"]["postcode"] for roll in st.students.values() for s in roll.values()]
    assert all(POSTCODE.match(p) for p in posts)


@pytest.mark.parametrize("filt, kw", [
    ("snapshot", {}), ("changed_data", {"since": T0}), ("attendance", {"attendance": "all_current", "months": 3}),
    ("attendance", {"attendance": "unauthorised_current", "months": 1}), ("attendance", {"attendance": "all_previous"}),
    ("attainment", {"hierarchies": ["B2B KS2"]}), ("snapshot", {"group": "lac"}), ("snapshot", {"group": "leavers"}),
])
def test_every_filter_validates_against_the_xsd(world, filt, kw):
    xml = world.export_sims7("8864001", filt, T1, **kw)
    schema = etree.XMLSchema(etree.parse(str(XSD_PATH)))
    schema.assertValid(etree.fromstring(xml))


def test_changed_data_is_a_subset_of_the_snapshot(world):
    snap = {(b.student_guid, b.block_type): b.content
            for b in parse_sims7(world.export_sims7("8862001", "snapshot", T1)).blocks}
    changed = parse_sims7(world.export_sims7("8862001", "changed_data", T1, since=T0)).blocks
    assert 0 < len(changed) < 0.5 * len(snap)
    for b in changed:
        assert snap[(b.student_guid, b.block_type)] == b.content


def test_time_brings_starters_and_leavers_and_earlier_state_is_stable(world):
    later = world.state(T1 + timedelta(days=14))
    early = world.state(T0)
    n_early = sum(len(r) for r in early.students.values())
    n_later = sum(len(r) for r in later.students.values())
    assert n_later > n_early
    leavers = [s for r in later.students.values() for s in r.values() if s.blocks["student"]["end_date"]]
    assert leavers
    # asking for an earlier instant after a later one gives the earlier world again
    assert world.export_sims7("8862002", "snapshot", T0) == World(WorldConfig.demo()).export_sims7("8862002", "snapshot", T0)


def test_attendance_is_pure_and_amendments_show_in_primary_changes(world):
    s = next(iter(world.state(T1).students["8862003"].values()))
    a = world.marks_string(s, 2026, T1)
    world.state(T1 + timedelta(days=30))
    assert world.marks_string(s, 2026, T1) == a
    assert len(a) <= 2 * 25 and set(a) <= set("/\\LBDJPVWKCEIMRSTQHGNOUXYZ#-")
    # across a month, some marks recorded as N are later amended
    amended = 0
    for d in range(1, 20):
        end = datetime(2026, 10, 1, 17, tzinfo=UTC) + timedelta(days=d)
        for item in world.primary_datagroup("8862003", "attendance", end, end - timedelta(days=1)):
            amended += sum(1 for c in item["data"]["changes"] if c["date"] < (end - timedelta(days=1)).date().isoformat())
    assert amended > 0


def test_truth_and_la_core_differences(world):
    truth = world.truth()
    st = world.state(T0)
    assert all((dfe, g) in truth for dfe, roll in st.students.items() for g in roll)
    core = world.la_core()
    by_pid = {r["person_id"]: r for r in core}
    diffs = {"forename": 0, "no_upn": 0, "upper": 0, "dob": 0, "postcode": 0}
    for (dfe, g), pid in truth.items():
        if pid is None or g not in st.students[dfe]:
            continue
        sch, la = st.students[dfe][g].blocks, by_pid[pid]
        diffs["forename"] += sch["student"]["forename"] != la["forename"]
        diffs["no_upn"] += la["upn"] is None
        diffs["upper"] += la["surname"].isupper()
        diffs["dob"] += sch["student"]["dob"] != la["dob"].isoformat()
        diffs["postcode"] += sch["address"]["postcode"] != la["postcode"]
    assert all(v > 0 for v in diffs.values()), diffs
    assert sum(1 for r in core if r["base_dfe"] is None) == world.config.la_only_children


def test_bad_parameters_raise(world):
    with pytest.raises(SimulatorError):
        world.export_sims7("8862001", "changed_data", T1)
    with pytest.raises(SimulatorError):
        world.export_sims7("8862001", "attendance", T1, attendance="all_current", months=14)
    with pytest.raises(LookupError):
        world.export_sims7("9999999", "snapshot", T1)


def _marks(world, dfe, until, **kw):
    return {g: b["attendance"] for g, b in world.pupils(dfe, "attendance", until, **kw)}


def test_each_attendance_filter_is_served_faithfully(world):
    from simulator import codes
    from simulator.world import weekdays, year_start

    until = datetime(2026, 11, 20, 17, 0, tzinfo=UTC)
    dfe = "8864001"
    full = _marks(world, dfe, until, attendance="all_current", months=13)
    unauth = _marks(world, dfe, until, attendance="unauthorised_current", months=13)
    absences = _marks(world, dfe, until, attendance="absences_current", months=13)
    assert set(full) == set(unauth) == set(absences) and len(full) > 300
    for g, f in full.items():
        m = f["marks"]  # (strings end at their last mark: compare positions, not lengths)
        u, a = unauth[g]["marks"], absences[g]["marks"]
        # each filter keeps exactly the sessions whose code belongs to it, at the same offsets
        assert all(c in codes.UNAUTHORISED + "-" for c in u) and all(
            c in codes.UNAUTHORISED + codes.AUTHORISED + "-" for c in a)
        assert [k for k, c in enumerate(m) if c in codes.UNAUTHORISED] == [k for k, c in enumerate(u) if c != "-"]
        assert [k for k, c in enumerate(m) if c in codes.UNAUTHORISED + codes.AUTHORISED] == [
            k for k, c in enumerate(a) if c != "-"]
    assert any(c != "-" for f in unauth.values() for c in f["marks"])
    # the month filter (F24): one month back blanks every earlier session
    one = _marks(world, dfe, until, attendance="all_current", months=1)
    cutoff = (until - timedelta(days=30)).date()
    first_kept = 2 * sum(1 for d in weekdays(year_start(2026), cutoff) if d < cutoff)
    for g, f in one.items():
        assert set(f["marks"][:first_kept]) <= {"-"}
        assert f["marks"][first_kept:] == full[g]["marks"][first_kept:]
    # the previous academic year: the whole year, from its own start date
    prev = _marks(world, dfe, until, attendance="all_previous", months=13)
    some = next(f for f in prev.values() if f["marks"] != "-")
    assert some["academic_year"] == 2025 and some["start_date"] == "2025-09-01"


def test_ncy_groups_one_several_all(world):
    dfe = "8864001"
    every = {g: b["student"]["ncy"] for g, b in world.pupils(dfe, "snapshot", T1)}
    one = {g for g, _ in world.pupils(dfe, "snapshot", T1, ncys=["9"])}
    several = {g for g, _ in world.pupils(dfe, "snapshot", T1, ncys=["7", "11"])}
    assert one == {g for g, n in every.items() if n == "9"} and one
    assert several == {g for g, n in every.items() if n in ("7", "11")} and several and not several & one
    assert len({n for n in every.values()}) >= 5  # all: every year group of the school
    lac = {g for g, b in world.pupils(dfe, "snapshot", T1, group="lac")}
    assert lac and all(world.state(T1).students[dfe][g].blocks["student"]["looked_after"] for g in lac)
