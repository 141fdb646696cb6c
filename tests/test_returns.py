"""Return to school (F25/F28), the domain side: what is pending, the message, failures, reruns."""
import pytest

from b2b.ops import officer
from b2b.outbound import returns
from tests.test_chain import ADDR, BASE, DAY1, JOE, core, ctx, page, run_chain  # noqa: F401 - core: fixture


def joe_with_conflicts(db):
    """Joe (school) vs Joseph (LA) on forename; the school's postcode differs too."""
    run_chain(db, ctx(), [page("student", [("g-joe", JOE)]),
                          page("address", [("g-joe", dict(ADDR, postcode="CT9 9ZZ"))])])
    return sorted(db.execute("SELECT field, la_value, incoming_value FROM results.conflict").fetchall())


def test_only_fields_an_officer_kept_for_the_la_are_pending(core):
    db = core
    assert joe_with_conflicts(db) == [("forename", "Joseph", "Joe"), ("postcode", "CT1 2AB", "CT9 9ZZ")]
    assert returns.pending(db, BASE, None) == []  # open conflicts are not corrections yet
    officer.resolve_conflict(db, "P1", "forename", "la", by="officer1")
    [p] = returns.pending(db, BASE, None)
    assert (p.student_guid, p.person_id, p.fields, p.address) == ("g-joe", "P1", {"forename": ("Joseph", "Joe")}, {})
    officer.resolve_conflict(db, "P1", "postcode", "la", by="officer1")
    [p] = returns.pending(db, BASE, None)
    assert p.fields["postcode"] == ("CT1 2AB", "CT9 9ZZ")
    assert p.address == {"paon": "1", "street": "Green Abbey Road", "postcode": "CT1 2AB"}  # the LA's whole address
    assert returns.pending(db, BASE, ["6", "7"]) == []  # Joe is in NCY 5: not in this task's group
    assert len(returns.pending(db, BASE, ["5"])) == 1


def test_accepting_the_schools_value_returns_nothing(core):
    db = core
    joe_with_conflicts(db)
    officer.resolve_conflict(db, "P1", "forename", "incoming", by="officer1")  # the LA amends its own data
    assert returns.pending(db, BASE, None) == []


def test_message_is_schema_checked_and_a_rerun_replaces_the_outbound_record(core):
    from lxml import etree

    db = core
    joe_with_conflicts(db)
    officer.resolve_conflict(db, "P1", "forename", "la", by="officer1")
    c = ctx(DAY1, dag="b2b__8862003__return_to_school")
    oid, body, pupils = returns.prepare(db, c, "886", None)
    doc = etree.fromstring(body)
    assert doc.findtext("Pupils/Pupil/Forename") == "Joseph" and doc.find("Pupils/Pupil/Surname") is None
    counts = returns.record_delivery(db, c, oid, None, "SIMS 7 unavailable (HTTP 503)")
    assert counts["applied"] == 0
    assert db.execute("SELECT status, error FROM raw.outbound_file").fetchall() == [
        ("failed", "SIMS 7 unavailable (HTTP 503)")]
    log = db.execute("SELECT level, message FROM ops.task_log WHERE stage = 'return_to_school'").fetchall()
    assert log[0][0] == "error" and "Joseph" not in log[0][1]  # no personal data in the log
    # the retry: one outbound record for the window, the school's answer recorded per student
    oid2, _, _ = returns.prepare(db, c, "886", None)
    counts = returns.record_delivery(db, c, oid2, {"applied": 0, "refused": [{"guid": "g-joe",
                                                                             "reason": "student has left"}]}, None)
    assert counts == {"pupils": 1, "fields": 1, "refused": 1, "applied": 0}
    assert db.execute("SELECT count(*), min(status) FROM raw.outbound_file").fetchone() == (1, "delivered")
    assert db.execute("SELECT status, detail FROM results.returned_field").fetchall() == [
        ("refused", "student has left")]


def test_a_value_the_schema_refuses_is_a_clear_error_naming_the_base(core):
    db = core
    joe_with_conflicts(db)
    officer.resolve_conflict(db, "P1", "forename", "la", by="officer1")
    [p] = returns.pending(db, BASE, None)
    p.fields["upn"] = ("not-a-upn", "F886200326001")
    with pytest.raises(returns.ReturnError, match=r"base 8862003: .*b2b_return.xsd \(line \d+") as exc:
        returns.build_message("886", ctx(), [p])
    assert "not-a-upn" not in str(exc.value)


@pytest.mark.parametrize("bad", ["Jo\x01seph", "Joseph\x1b", "Jo\ufffeseph"])
def test_a_value_xml_cannot_carry_holds_back_that_pupil_only(core, monkeypatch, bad):
    """lxml refused a control character (ValueError) while building the message: the school's
    whole return stopped, retried for ever. That pupil is now recorded as not sent (fields
    named, never the value) and the others go, well formed."""
    from lxml import etree

    db = core
    joe_with_conflicts(db)
    officer.resolve_conflict(db, "P1", "forename", "la", by="officer1")
    officer.resolve_conflict(db, "P1", "postcode", "la", by="officer1")
    [joe] = returns.pending(db, BASE, None)
    ann = returns.PendingReturn("g-ann", "P2", {"surname": ("Smith", "Smyth")}, {})
    joe.fields["forename"] = (bad, "Joe")
    joe.address["street"] = "Green\x0bAbbey Road"
    monkeypatch.setattr(returns, "pending", lambda conn, base, ncys: [ann, joe])
    warned = []
    monkeypatch.setattr(returns.log, "warning", lambda msg, *args: warned.append(msg % args))
    c = ctx(DAY1, dag="b2b__8862003__return_to_school")
    oid, body, pupils = returns.prepare(db, c, "886", None)
    assert pupils == [ann]
    doc = etree.fromstring(body)
    assert [p.findtext("ApplicationReference") for p in doc.iterfind("Pupils/Pupil")] == ["g-ann"]
    assert warned == [f"base {BASE}: student g-joe not returned: the LA's address, forename holds a character XML "
                      "cannot carry"]
    counts = returns.record_delivery(db, c, oid, {"applied": 1, "refused": []}, None)
    assert counts == {"pupils": 1, "fields": 1, "refused": 0, "applied": 1, "not_sent": 1}
    assert db.execute("SELECT student_guid, field, status, detail FROM results.returned_field "
                      "ORDER BY 1, 2").fetchall() == [
        ("g-ann", "surname", "applied", None),
        ("g-joe", "forename", "refused", "not sent: the LA's address, forename holds a character XML cannot carry"),
        ("g-joe", "postcode", "refused", "not sent: the LA's address, forename holds a character XML cannot carry")]
    [(level, message)] = db.execute("SELECT level, message FROM ops.task_log WHERE stage = 'return_to_school'")
    assert level == "warning" and message.endswith("; 1 students not sent (a value XML cannot carry)")


@pytest.mark.parametrize("bad", ["Jo\x00seph", "Jo\x0cseph", "Jo\ud800seph", "Jo\uffffseph"])
def test_a_message_is_never_built_with_a_value_xml_cannot_carry(bad):
    """Not from PostgreSQL (no NUL or unpaired surrogate there), but never malformed XML or a
    ValueError/UnicodeEncodeError from lxml: a clear error naming the base and student."""
    p = returns.PendingReturn("g-joe", "P1", {"forename": (bad, "Joe")}, {})
    with pytest.raises(returns.ReturnError, match="base 8862003: students g-joe hold a character XML cannot "
                                                  "carry") as exc:
        returns.build_message("886", ctx(), [p])
    assert bad not in str(exc.value)


def test_markup_in_a_value_is_escaped_in_the_message():
    from lxml import etree

    hostile = "O'Brien & <Sons> ]]> \"x\""
    p = returns.PendingReturn("g-joe", "P1", {"surname": (hostile, "Joe")}, {"street": "1 <b>]]>&amp;"})
    doc = etree.fromstring(returns.build_message("886", ctx(), [p]))
    assert doc.findtext("Pupils/Pupil/Surname") == hostile
