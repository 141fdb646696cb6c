"""End to end through the generated DAGs: contacts, leavers, return to school (issue 4).

A module of its own: its simulator starts fresh, so "what the school has sent before"
(F23) begins empty here.
"""
from datetime import datetime

from tests.test_e2e_dags import SNAP_END, dag_id, e2e, q, run  # noqa: F401 - e2e is a fixture

TITLES = {"mr": "Mr", "mrs": "Mrs", "miss": "Miss", "ms": "Ms", "dr": "Dr"}
GENDERS = {"M": "Male", "F": "Female"}


def _pick(items, type_code=None):
    items = [x for x in items if type_code is None or x["type"] == type_code]
    for key in ("primary", "main"):
        for x in items:
            if x.get(key):
                return x
    return items[0] if items else None


def expected_contacts(students):
    """An independent reading of seed 004 over the simulator's own data: {person_id: account}."""
    out, related = {}, {}
    for guid in sorted(students):
        for c in students[guid].blocks["contacts"]["contacts"]:
            related.setdefault(c["person_id"], []).append(guid)
            out.setdefault(c["person_id"], c)
    accounts, rejected = {}, {}
    for pid, c in sorted(out.items()):
        reasons = [r for r, bad in (("no_forename", not c.get("forename")), ("no_surname", not c.get("surname")),
                                    ("no_email", not c["emails"])) if bad]
        if reasons:
            rejected[pid] = reasons
            continue
        homes = [a for a in c["addresses"] if a["type"] == "H"]
        home = max(homes, key=lambda a: a["start_date"]) if homes else {}
        pe, pt = _pick([e for e in c["emails"] if e["primary"] or e["main"]]), \
            _pick([t for t in c["telephones"] if t["primary"] or t["main"]])
        accounts[pid] = {
            "title": TITLES.get((c.get("title") or "").lower()), "gender": GENDERS.get(c.get("gender")),
            "postcode": home.get("postcode"),
            "home_telephone": (_pick(c["telephones"], "H") or {}).get("number"),
            "mobile_telephone": (_pick(c["telephones"], "M") or {}).get("number"),
            "personal_email": (_pick(c["emails"], "H") or {}).get("address"),
            "username": _pick(c["emails"])["address"],
            "email_preference": {"H": "Personal", "W": "Work"}[pe["type"]] if pe else "Personal",
            "telephone_preference": {"H": "Home", "M": "Mobile", "W": "Work"}[pt["type"]] if pt else "None",
        }
    taken = {}
    for pid in sorted(accounts):  # one account per username: the lowest person id (a new LA)
        u = accounts[pid]["username"].lower()
        if u in taken:
            rejected[pid] = ["username_in_use"]
        else:
            taken[u] = pid
    return {p: a for p, a in accounts.items() if p not in rejected}, rejected, related


def test_contacts_through_the_snapshot_dag_follow_seed_004(e2e):
    base = "8862002"
    dr = run(e2e, dag_id(base, "snapshot"), SNAP_END)
    st = e2e["world"].state(dr.data_interval_end)
    current = {g: s for g, s in st.students[base].items() if s.blocks["student"]["end_date"] is None}
    accounts, rejected, related = expected_contacts(current)
    cols = ("person_id", "title", "gender", "postcode", "home_telephone", "mobile_telephone", "personal_email",
            "username", "email_preference", "telephone_preference")
    got = {r[0]: dict(zip(cols[1:], r[1:])) for r in q(
        e2e, f"SELECT {', '.join(cols)} FROM core.contact WHERE base_id = %s AND active", base)}
    assert got == accounts
    got_rejected = {}
    for pid, reason in q(e2e, "SELECT person_id, reason FROM results.rejected_contact WHERE base_id = %s "
                              "ORDER BY 1, 2", base):
        got_rejected.setdefault(pid, []).append(reason)
    assert got_rejected == {p: sorted(r) for p, r in rejected.items()}
    # the simulator plants every kind of failure and unmatched lookup
    assert {r for rs in rejected.values() for r in rs} == {"no_forename", "no_surname", "no_email",
                                                           "username_in_use"}
    assert any(a["title"] is None for a in accounts.values()) and any(a["gender"] is None for a in accounts.values())
    links = q(e2e, "SELECT person_id, student_guid FROM core.contact_link WHERE base_id = %s", base)
    assert sorted(links) == sorted((p, g) for p, gs in related.items() if p in accounts for g in gs)
    log = q(e2e, "SELECT level, counts FROM ops.task_log WHERE dag_id = %s AND stage = 'contacts'",
            dag_id(base, "snapshot"))
    assert log[0][0] == "warning" and log[0][1]["rejected"] == len(rejected)


def test_leavers_are_sent_only_after_a_non_leavers_task_and_bulk_deleted_blocks_are_normal(e2e):
    base = "8864002"
    leavers = dag_id(base, "snapshot", "leavers")
    # F23: nothing was sent before, so no leaver is sent either
    first = run(e2e, leavers, datetime(2026, 10, 2, 20, 0))
    world = e2e["world"]
    st = world.state(first.data_interval_end)
    assert any(s.blocks["student"]["end_date"] for s in st.students[base].values()), "the school has leavers"
    assert q(e2e, "SELECT coalesce(sum(pupils), 0) FROM raw.inbound_file WHERE dag_id = %s", leavers) == [(0,)]

    snap = run(e2e, dag_id(base, "snapshot"), SNAP_END)
    sent = {g for (g,) in q(e2e, "SELECT DISTINCT student_guid FROM raw.inbound_block b JOIN raw.inbound_file f "
                                 "USING (file_id) WHERE f.dag_id = %s", dag_id(base, "snapshot"))}
    dr = run(e2e, leavers, datetime(2026, 11, 20, 20, 0))  # seven weeks of leavers
    st = world.state(dr.data_interval_end)
    left = {g for g, s in st.students[base].items() if s.blocks["student"]["end_date"]}
    got = {g for (g,) in q(e2e, "SELECT DISTINCT student_guid FROM raw.inbound_block b JOIN raw.inbound_file f "
                                "USING (file_id) WHERE f.dag_id = %s AND f.window_end = %s", leavers,
                           dr.data_interval_end)}
    assert got == left & sent and got, "leavers sent before by the snapshot, and only those"
    assert left - sent, "a starter who left again was never sent by a non-leavers task"
    # F26: a third of them come with their core block only; that is not an error
    blocks = dict(q(e2e, "SELECT b.student_guid, array_agg(b.block_type ORDER BY b.block_type) FROM raw.inbound_block b "
                         "JOIN raw.inbound_file f USING (file_id) WHERE f.dag_id = %s GROUP BY 1", leavers))
    deleted = {g for g in got if world.bulk_deleted(st.students[base][g])}
    assert deleted and all(blocks[g] == ["student"] for g in deleted)
    assert all("address" in blocks[g] for g in got - deleted)
    assert q(e2e, "SELECT count(*) FROM ops.task_log WHERE dag_id = %s AND level = 'error'", leavers) == [(0,)]
    assert q(e2e, "SELECT count(*) FROM raw.inbound_file WHERE dag_id = %s AND status IN ('failed', 'suspense')",
             leavers) == [(0,)]
    # the LA's view keeps the leavers' addresses (a missing block deletes nothing) and records the leaving date
    rows = q(e2e, """SELECT m.student_guid, c.postcode, c.end_date FROM results.current_link m
                      JOIN core.child_current c USING (person_id) WHERE m.base_id = %s AND m.student_guid = ANY(%s)""",
             base, sorted(deleted))
    assert rows and all(pc is not None and end_date is not None for _, pc, end_date in rows)
    # contacts related only to leavers are disabled, not deleted (F38)
    still = {p for (p,) in q(e2e, "SELECT person_id FROM core.contact_link WHERE base_id = %s", base)}
    gone = q(e2e, """SELECT c.person_id, c.active, c.is_staff, c.roles FROM core.contact c
                      WHERE c.base_id = %s AND c.disabled_window IS NOT NULL""", base)
    assert gone and all(not active and not staff and roles == [] and p not in still for p, active, staff, roles in gone)
    leaver_contacts = {c["person_id"] for g in got for c in snap_contacts(world, snap, base, g)}
    assert {p for p, *_ in gone} <= leaver_contacts


def snap_contacts(world, dr, base, guid):
    return world.state(dr.data_interval_end).students[base][guid].blocks["contacts"]["contacts"]


def test_return_to_school_round_trip(e2e):
    import psycopg

    from b2b.ops import officer

    base = "8862001"
    run(e2e, dag_id(base, "snapshot"), SNAP_END)
    f28 = ("upn", "surname", "forename", "middle_names", "gender", "dob", "paon", "street", "postcode")
    conflicts = q(e2e, """SELECT person_id, field, student_guid, la_value, incoming_value FROM results.conflict
                           WHERE base_id = %s AND field = ANY(%s) ORDER BY 1, 2""", base, list(f28))
    assert len({c[1] for c in conflicts}) >= 3, conflicts
    kept = conflicts[::2]  # the officer keeps the LA's value on half of them
    with psycopg.connect(e2e["url"]) as conn:
        for person_id, field, *_ in kept:
            officer.resolve_conflict(conn, person_id, field, "la", by="test")

    ret = "b2b__8862001__return_to_school"
    dr = run(e2e, ret, datetime(2026, 10, 6, 7, 0))
    sent = q(e2e, """SELECT r.person_id, r.field, r.la_value, r.school_value, r.status FROM results.returned_field r
                      JOIN raw.outbound_file o USING (outbound_id) WHERE o.dag_id = %s""", ret)
    assert sorted((p, f, la, inc, "applied") for p, f, _, la, inc in kept) == sorted(sent)
    (status, pupils, payload), = q(e2e, "SELECT status, pupils, payload FROM raw.outbound_file WHERE dag_id = %s", ret)
    assert status == "delivered" and pupils == len({p for p, *_ in kept}) and b"<B2BReturn" in bytes(payload)
    log = q(e2e, "SELECT level, counts FROM ops.task_log WHERE dag_id = %s AND stage = 'return_to_school'", ret)
    assert log == [("info", {"pupils": pupils, "fields": len(kept), "refused": 0, "applied": pupils})]

    # the school applied them: its next changed-data export carries the LA's values, no conflict
    cd = run(e2e, dag_id(base, "changed_data"), datetime(2026, 10, 6, 18, 0))
    students = {g for _, _, g, _, _ in kept}
    got = q(e2e, """SELECT s.student_guid FROM staging.student s JOIN raw.inbound_file f USING (file_id)
                     WHERE f.dag_id = %s AND f.window_end = %s""", dag_id(base, "changed_data"), cd.data_interval_end)
    assert students <= {g for (g,) in got} | set(
        g for (g,) in q(e2e, """SELECT a.student_guid FROM staging.address a JOIN raw.inbound_file f USING (file_id)
                                 WHERE f.dag_id = %s AND f.window_end = %s""",
                        dag_id(base, "changed_data"), cd.data_interval_end))
    again = q(e2e, """SELECT o.person_id, o.field FROM results.conflict_observation o JOIN raw.inbound_file f
                       USING (file_id) WHERE f.dag_id = %s AND f.window_end = %s""",
              dag_id(base, "changed_data"), cd.data_interval_end)
    assert not {(p, f) for p, f, *_ in kept} & set(again)
    st = e2e["world"].state(cd.data_interval_end).students[base]
    for person_id, field, guid, la_value, _ in kept:
        block = st[guid].blocks["address" if field in ("paon", "street", "postcode") else "student"]
        assert str(block[field]).lower() == la_value.lower(), (field, guid)
    # the conflicts the officer did not settle are not returned, and nothing is pending now
    dr = run(e2e, ret, datetime(2026, 10, 7, 7, 0))
    assert q(e2e, "SELECT pupils, status FROM raw.outbound_file WHERE dag_id = %s AND window_end = %s", ret,
             dr.data_interval_end) == [(0, "delivered")]
