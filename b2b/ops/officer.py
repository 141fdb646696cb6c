"""What LA officers do with the Unmatched, Possible and Matched-with-Conflicts lists (F13,
F17), and the maintenance tasks (F18). Every decision is recorded (who, when, what) in
``results.match_decision`` / ``results.conflict_resolution`` and honoured by later runs:
a confirmed or hand-made link is a GUID link (``linked_by = 'officer'``) that the matcher
treats as decisive; a rejected pair is never proposed again.

Airflow-free; the ``b2b officer …`` and ``b2b maintenance …`` commands and the maintenance
DAGs call these functions.
"""
from __future__ import annotations

import json
import logging

from b2b.blocks import CONFLICT_FIELDS
from b2b.errors import OpsError

log = logging.getLogger(__name__)



class OfficerError(OpsError):
    """A decision that cannot be applied (unknown student or child, nothing to resolve)."""


# ------------------------------------------------------------------ lists
def unmatched(conn, base_id: str | None = None, include_hidden: bool = False) -> list[dict]:
    """The Unmatched list; students older than B2B_S_AGE only with ``include_hidden`` (F13)."""
    rows = conn.execute(
        """SELECT base_id, student_guid, upn, forename, surname, gender, dob, age_years, hidden
             FROM results.unmatched
            WHERE (%(b)s::text IS NULL OR base_id = %(b)s) AND (%(h)s OR NOT hidden)
            ORDER BY base_id, surname, forename""", {"b": base_id, "h": include_hidden}).fetchall()
    keys = ("base_id", "student_guid", "upn", "forename", "surname", "gender", "dob", "age_years", "hidden")
    return [dict(zip(keys, r)) for r in rows]


def possible(conn, base_id: str | None = None) -> list[dict]:
    """The Possible-matches queue with each candidate and the explanation of its score."""
    rows = conn.execute(
        """SELECT base_id, student_guid, candidate_person_id, score, explanation, forename, surname, dob,
                  la_forename, la_surname, la_dob
             FROM results.possible_match WHERE (%(b)s::text IS NULL OR base_id = %(b)s)
            ORDER BY base_id, score DESC""", {"b": base_id}).fetchall()
    keys = ("base_id", "student_guid", "person_id", "score", "explanation", "forename", "surname", "dob",
            "la_forename", "la_surname", "la_dob")
    return [dict(zip(keys, r)) for r in rows]


def candidates(conn, base_id: str, student_guid: str, top: int = 3) -> list[dict]:
    """The best LA candidates for one school student, with per-field weights (the explanation)."""
    from b2b import matching
    from b2b.reconcile.match_stage import core_candidates, incoming_frame, term_frequencies

    fid = _latest_file(conn, base_id, student_guid)
    end = conn.execute("SELECT window_end FROM raw.inbound_file WHERE file_id = %s", (fid,)).fetchone()[0]
    inc = incoming_frame(conn, [fid], end)
    inc = inc[inc["student_guid"] == student_guid]
    core, links, _ = core_candidates(conn, inc)
    c = matching.candidates(core, inc, links=links, top=top, tf=term_frequencies(conn, inc))
    fields = ["upn", "guid", "forename", "surname", "dob", "gender", "postcode", "address_line1", "middle_names"]
    return [{"person_id": r["person_id"], "score": round(float(r["score"]), 2),
             "weights": {f: float(r[f]) for f in fields if r[f]}} for _, r in c.iterrows()]


# ------------------------------------------------------------------ decisions
def _latest_file(conn, base_id: str, student_guid: str) -> int:
    row = conn.execute(
        """SELECT m.file_id FROM results.current_match m WHERE m.base_id = %s AND m.student_guid = %s""",
        (base_id, student_guid)).fetchone()
    if row is None:
        raise OfficerError(f"base {base_id}: no imported student {student_guid}")
    return row[0]


def _child_exists(conn, person_id: str) -> None:
    if conn.execute("SELECT 1 FROM core.child WHERE person_id = %s", (person_id,)).fetchone() is None:
        raise OfficerError(f"no LA child {person_id}")


def _record(conn, base_id, student_guid, person_id, decision, by, note=None) -> None:
    conn.execute("""INSERT INTO results.match_decision (base_id, student_guid, person_id, decision, decided_by, note)
                    VALUES (%s, %s, %s, %s, %s, %s)""", (base_id, student_guid, person_id, decision, by, note))
    log.info("officer %s: %s base %s student %s -> %s", by, decision, base_id, student_guid, person_id)


def link(conn, base_id: str, student_guid: str, person_id: str, by: str, *, decision: str = "link",
         note: str | None = None) -> None:
    """Link a school student to an LA child (``confirm`` a candidate, or by hand)."""
    with conn.transaction():
        fid = _latest_file(conn, base_id, student_guid)
        _child_exists(conn, person_id)
        _record(conn, base_id, student_guid, person_id, decision, by, note)
        conn.execute(
            """INSERT INTO core.child_link (base_id, student_guid, person_id, linked_by, file_id)
               VALUES (%s, %s, %s, 'officer', NULL)
               ON CONFLICT (base_id, student_guid) DO UPDATE
                  SET person_id = EXCLUDED.person_id, linked_by = 'officer', file_id = NULL, linked_at = now()""",
            (base_id, student_guid, person_id))
        conn.execute(
            """UPDATE results.match SET person_id = %s, status = 'matched', rule = 'officer_link', hidden = false,
                      explanation = explanation || jsonb_build_object('officer', %s::text)
                WHERE file_id = %s AND student_guid = %s""", (person_id, by, fid, student_guid))


def confirm(conn, base_id: str, student_guid: str, person_id: str, by: str, note: str | None = None) -> None:
    link(conn, base_id, student_guid, person_id, by, decision="confirm", note=note)


def reject(conn, base_id: str, student_guid: str, person_id: str, by: str, note: str | None = None) -> None:
    """This candidate is not the child: never proposed again; the student returns to Unmatched."""
    with conn.transaction():
        fid = _latest_file(conn, base_id, student_guid)
        _record(conn, base_id, student_guid, person_id, "reject", by, note)
        conn.execute("""DELETE FROM core.child_link WHERE base_id = %s AND student_guid = %s AND person_id = %s""",
                     (base_id, student_guid, person_id))
        conn.execute(
            """UPDATE results.match SET person_id = NULL, status = 'unmatched', rule = 'none',
                      explanation = explanation || jsonb_build_object('rejected_by', %s::text)
                WHERE file_id = %s AND student_guid = %s AND person_id = %s""", (by, fid, student_guid, person_id))


def new_child(conn, base_id: str, student_guid: str, by: str) -> str:
    """Create an LA child from an unmatched school record and link it; returns its person id."""
    with conn.transaction():
        fid = _latest_file(conn, base_id, student_guid)
        n = conn.execute("SELECT count(*) FROM core.child WHERE person_id LIKE 'B2B%%'").fetchone()[0]
        person_id = f"B2B{n + 1:07d}"
        created = conn.execute(
            """INSERT INTO core.child (person_id, upn, forename, middle_names, surname, gender, dob, ethnicity,
                                       first_language, home_language, religion, sen_status, ncy, base_id,
                                       enrol_status, reg_group, start_date, looked_after, paon, saon, street,
                                       locality, town, county, postcode, updated_by)
               SELECT %s, s.upn, s.forename, s.middle_names, s.surname, s.gender, s.dob, s.ethnicity,
                      s.first_language, s.home_language, s.religion, s.sen_status, s.ncy, s.base_id,
                      s.enrol_status, s.reg_group, s.start_date, s.looked_after, a.paon, a.saon, a.street,
                      a.locality, a.town, a.county, a.postcode, %s
                 FROM staging.student s
                 LEFT JOIN LATERAL (SELECT * FROM staging.address a WHERE a.base_id = s.base_id
                                      AND a.student_guid = s.student_guid ORDER BY a.file_id DESC LIMIT 1) a ON true
                WHERE s.file_id = %s AND s.student_guid = %s""", (person_id, f"officer:{by}", fid, student_guid))
        if created.rowcount != 1:
            raise OfficerError(f"base {base_id}: student {student_guid} has no loaded core block")
    link(conn, base_id, student_guid, person_id, by, decision="new_child")
    return person_id


def resolve_conflict(conn, person_id: str, field: str, keep: str, by: str) -> int:
    """Resolve the open conflict(s) on one field of a child: keep the LA value, or accept the
    incoming one (written to the LA record). Returns how many conflict rows were resolved."""
    if keep not in ("la", "incoming"):
        raise OfficerError("keep must be 'la' or 'incoming'")
    if field not in CONFLICT_FIELDS:
        raise OfficerError(f"unknown conflict field {field!r}")
    with conn.transaction():
        rows = conn.execute("""SELECT la_value, incoming_value FROM results.conflict
                                WHERE person_id = %s AND field = %s ORDER BY last_seen DESC""",
                            (person_id, field)).fetchall()
        if not rows:
            raise OfficerError(f"child {person_id}: no open conflict on {field}")
        resolution = "kept_la" if keep == "la" else "accepted_incoming"
        for la_value, inc_value in rows:
            conn.execute(
                """INSERT INTO results.conflict_resolution (person_id, field, la_value, incoming_value, resolution,
                                                          resolved_by)
                   VALUES (%s, %s, %s, %s, %s, %s)
                   ON CONFLICT DO NOTHING""", (person_id, field, la_value, inc_value, resolution, by))
        if keep == "incoming":
            value = rows[0][1]
            conn.execute(f"UPDATE core.child SET {field} = %s, updated_at = now(), updated_by = %s "
                         "WHERE person_id = %s", (value, f"officer:{by}", person_id))
        log.info("officer %s: conflict %s.%s resolved (%s, %d row(s))", by, person_id, field, resolution, len(rows))
        return len(rows)


def as_json(rows) -> str:
    return json.dumps(rows, default=str, indent=2)
