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

    def page(group, items):
        return ReceivedMessage(f"{group} p1/1", json.dumps({
            "organisationId": "o", "dataGroup": group, "page": 1, "pageSize": 100, "totalItems": len(items),
            "totalPages": 1, "next": None,
            "items": [{"studentId": g, "changed": "2026-10-05T12:00:00+00:00", "data": d} for g, d in items]}).encode(),
            "application/json", group=group)

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
