"""What LA officers do with the Unmatched, Possible and Matched-with-Conflicts lists (F13,
F17), and the maintenance tasks (F18). Every decision is recorded (who, when, what) in
``results.match_decision`` / ``results.conflict_resolution`` and honoured by later runs:
a confirmed or hand-made link is a GUID link (``linked_by = 'officer'``) that the matcher
treats as decisive; a rejected pair is never proposed again. Decisions on one student (and
resolutions of one child's field) are serialised and check what they decide on (migration
0050): a confirm of a student no longer possible, a link over another officer's link, a
second new child or a second resolution is an :class:`OfficerError`, never an overwrite.

Airflow-free; the ``b2b officer …`` and ``b2b maintenance …`` commands and the maintenance
DAGs call these functions.
"""
from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from b2b.blocks import CONFLICT_FIELDS
from b2b.context import scalar
from b2b.errors import OpsError

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)


class OfficerError(OpsError):
    """A decision that cannot be applied (unknown student or child, nothing to resolve)."""


# ------------------------------------------------------------------ lists
def unmatched(conn: Connection, base_id: str | None = None, include_hidden: bool = False) -> list[dict]:
    """The Unmatched list; students older than B2B_S_AGE only with ``include_hidden`` (F13)."""
    rows = conn.execute(
        """SELECT base_id, student_guid, upn, forename, surname, gender, dob, age_years, hidden
             FROM results.unmatched
            WHERE (%(b)s::text IS NULL OR base_id = %(b)s) AND (%(h)s OR NOT hidden)
            ORDER BY base_id, surname, forename""", {"b": base_id, "h": include_hidden}).fetchall()
    keys = ("base_id", "student_guid", "upn", "forename", "surname", "gender", "dob", "age_years", "hidden")
    return [dict(zip(keys, r)) for r in rows]


def possible(conn: Connection, base_id: str | None = None) -> list[dict]:
    """The Possible-matches queue with each candidate and the explanation of its score."""
    rows = conn.execute(
        """SELECT base_id, student_guid, candidate_person_id, score, explanation, forename, surname, dob,
                  la_forename, la_surname, la_dob
             FROM results.possible_match WHERE (%(b)s::text IS NULL OR base_id = %(b)s)
            ORDER BY base_id, score DESC""", {"b": base_id}).fetchall()
    keys = ("base_id", "student_guid", "person_id", "score", "explanation", "forename", "surname", "dob",
            "la_forename", "la_surname", "la_dob")
    return [dict(zip(keys, r)) for r in rows]


def candidates(conn: Connection, base_id: str, student_guid: str, top: int = 3) -> list[dict]:
    """The best LA candidates for one school student, with per-field weights (the explanation)."""
    from b2b import matching
    from b2b.reconcile.match_stage import core_candidates, incoming_frame, term_frequencies

    row = conn.execute(
        """SELECT m.file_id, f.window_end FROM results.current_match m JOIN raw.inbound_file f USING (file_id)
            WHERE m.base_id = %s AND m.student_guid = %s""", (base_id, student_guid)).fetchone()
    if row is None:
        raise OfficerError(f"base {base_id}: no imported student {student_guid}")
    fid, end = row
    inc = incoming_frame(conn, [fid], end)
    inc = inc[inc["student_guid"] == student_guid]
    core, links, _ = core_candidates(conn, inc)
    c = matching.candidates(core, inc, links=links, top=top, tf=term_frequencies(conn, inc))
    fields = ["upn", "guid", "forename", "surname", "dob", "gender", "postcode", "address_line1", "middle_names"]
    return [{"person_id": r["person_id"], "score": round(float(r["score"]), 2),
             "weights": {f: float(r[f]) for f in fields if r[f]}} for _, r in c.iterrows()]


# ------------------------------------------------------------------ decisions
# Every decision goes through a SECURITY DEFINER function (migration 0015) that records who
# made it: the session's own login (session_user), never a name the caller types. Only the
# review screens' login (a member of b2b_ui) may pass ``by``, the web user it acts for; it is
# recorded as "<by> via <login>". Any other session passing ``by`` is refused.
def _call(conn: Connection, fn: str, *args: Any) -> Any:
    import psycopg
    from psycopg import sql

    query = sql.SQL("SELECT results.{}({})").format(sql.Identifier(fn), sql.SQL(", ").join(
        sql.Placeholder() * len(args)))
    try:
        with conn.transaction():
            return scalar(conn, query, args)
    except (psycopg.errors.RaiseException, psycopg.errors.NoDataFound, psycopg.errors.InvalidParameterValue,
            psycopg.errors.InsufficientPrivilege) as exc:
        raise OfficerError(exc.diag.message_primary or str(exc)) from None


def link(conn: Connection, base_id: str, student_guid: str, person_id: str, by: str | None = None, *, decision: str = "link",
         note: str | None = None) -> str:
    """Link a school student to an LA child (``confirm`` a candidate, or by hand); who is recorded."""
    who = _call(conn, "officer_link", base_id, student_guid, person_id, decision, note, by)
    log.info("officer decision %s: base %s student %s -> %s", decision, base_id, student_guid, person_id)
    return who


def confirm(conn: Connection, base_id: str, student_guid: str, person_id: str, by: str | None = None,
            note: str | None = None) -> str:
    return link(conn, base_id, student_guid, person_id, by, decision="confirm", note=note)


def reject(conn: Connection, base_id: str, student_guid: str, person_id: str, by: str | None = None,
           note: str | None = None) -> str:
    """This candidate is not the child: never proposed again; the student returns to Unmatched."""
    who = _call(conn, "officer_reject", base_id, student_guid, person_id, note, by)
    log.info("officer decision reject: base %s student %s -> %s", base_id, student_guid, person_id)
    return who


def new_child(conn: Connection, base_id: str, student_guid: str, by: str | None = None) -> str:
    """Create an LA child from an unmatched school record and link it; returns its person id
    (``B2B`` + 7 digits from the sequence ``core.person_id_seq``)."""
    person_id = _call(conn, "officer_new_child", base_id, student_guid, by)
    log.info("officer decision new_child: base %s student %s -> %s", base_id, student_guid, person_id)
    return person_id


def resolve_conflict(conn: Connection, person_id: str, field: str, keep: str, by: str | None = None) -> int:
    """Resolve the open conflict(s) on one field of a child: keep the LA value, or accept the
    incoming one (written to the LA record). Returns how many conflict rows were resolved."""
    if keep not in ("la", "incoming"):
        raise OfficerError("keep must be 'la' or 'incoming'")
    if field not in CONFLICT_FIELDS:
        raise OfficerError(f"unknown conflict field {field!r}")
    n = _call(conn, "officer_resolve", person_id, field, keep, by)
    log.info("officer: conflict %s.%s resolved (keep %s, %d row(s))", person_id, field, keep, n)
    return n


def as_json(rows: Any) -> str:
    return json.dumps(rows, default=str, indent=2)
