"""The officers' review screens' lists, one page at a time (F13, F17, F41), and the decisions
that are not in :mod:`b2b.ops.officer` (send a conflict to the school).

Every list is **keyset-paged**: a page is ``LIMIT n`` rows after the last key of the previous
page, read through an index, so page 400 costs what page 1 does on 250k children. The
decisions themselves go through :mod:`b2b.ops.officer` (the same functions as the ``b2b
officer`` commands) with the logged-in user as ``by``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from b2b.blocks import COMPARED_BY_NAME, CONFLICT_FIELDS
from b2b.context import scalar
from b2b.ops.officer import OfficerError

if TYPE_CHECKING:
    from psycopg import Connection

PAGE = 50


@dataclass
class Page:
    rows: list[dict]
    next_after: str | None      # the key to pass as ``after`` for the next page (None: last page)


def _key(*parts: Any) -> str:
    return json.dumps([None if p is None else str(p) for p in parts])


def _unkey(after: str | None, n: int) -> list | None:
    if not after:
        return None
    try:
        parts = json.loads(after)
    except ValueError:
        return None
    return parts if isinstance(parts, list) and len(parts) == n else None


def _page(rows: list[dict], limit: int, key: Any) -> Page:
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, key(rows[-1]) if more and rows else None)


def _where(*conds: tuple[bool, str]) -> str:
    """The conditions that apply, so each query shape gets its own plan (no ``%s IS NULL OR``)."""
    return "".join(f" AND {sql}" for on, sql in conds if on)


def _run(conn: Connection, sql: str, params: dict) -> Any:
    # never a generic prepared plan: the keyset bounds and filters decide the plan
    return conn.execute(sql, params, prepare=False)


def _dicts(cur: Any) -> list[dict]:
    names = [d.name for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


#: the row is the student's latest match decision (``results.current_match`` without its full sort:
#: the few unmatched/possible rows are found by their status index, then checked for a newer one)
_LATEST = """NOT EXISTS (SELECT 1 FROM results.match n
                          WHERE n.base_id = m.base_id AND n.student_guid = m.student_guid
                            AND (n.window_order > m.window_order
                                 OR (n.window_order = m.window_order AND n.file_id > m.file_id)))"""


def schools(conn: Connection) -> list[str]:
    """The bases that sent anything (the screens' school filter)."""
    return [r[0] for r in conn.execute("SELECT DISTINCT base_id FROM raw.inbound_file ORDER BY 1").fetchall()]


def counts(conn: Connection, base_id: str | None = None) -> dict:
    """How many rows each list holds (the home screen)."""
    b = {"b": base_id}
    def one(sql: str) -> Any:
        return scalar(conn, sql, b)

    return {
        "unmatched": one(f"SELECT count(*) FROM results.match m WHERE m.status = 'unmatched' AND NOT m.hidden "
                         f"AND {_LATEST} AND (%(b)s::text IS NULL OR m.base_id = %(b)s)"),
        "possible": one(f"SELECT count(*) FROM results.match m WHERE m.status = 'possible' AND {_LATEST} "
                        "AND (%(b)s::text IS NULL OR m.base_id = %(b)s)"),
        "conflicts": one(f"SELECT count(*) FROM (SELECT DISTINCT o.person_id, o.field, o.la_value, o.incoming_value "
                         f"FROM results.conflict_observation o WHERE {_UNRESOLVED} "
                         "AND (%(b)s::text IS NULL OR o.base_id = %(b)s)) x"),
        "rejected_contacts": one("SELECT count(*) FROM results.rejected_contact "
                                 "WHERE (%(b)s::text IS NULL OR base_id = %(b)s)"),
        "suspense": one("SELECT count(*) FROM raw.inbound_file WHERE status IN ('failed', 'suspense') "
                        "AND (%(b)s::text IS NULL OR base_id = %(b)s)"),
        "returns": one("SELECT count(*) FROM results.school_upload WHERE status = 'sent' "
                       "AND (%(b)s::text IS NULL OR base_id = %(b)s)"),
    }


def unmatched(conn: Connection, base_id: str | None = None, include_hidden: bool = False, after: str | None = None,
              limit: int = PAGE) -> Page:
    """The Unmatched list (F13: older than B2B_S_AGE hidden unless asked), by school and surname."""
    k = _unkey(after, 3)
    where = _where((base_id is not None, "m.base_id = %(b)s"), (not include_hidden, "NOT m.hidden"),
                   (k is not None, "(m.base_id, lower(coalesce(s.surname, '')), m.student_guid) "
                                   "> (%(k1)s, %(k2)s, %(k3)s)"))
    k1, k2, k3 = k or (None, None, None)
    cur = _run(conn,
        f"""SELECT m.base_id, m.student_guid, s.upn, s.forename, s.middle_names, s.surname, s.gender, s.dob,
                   m.age_years, m.hidden
              FROM results.match m
              JOIN staging.student s ON s.base_id = m.base_id AND s.student_guid = m.student_guid
                                    AND s.file_id = m.file_id
             WHERE m.status = 'unmatched' AND {_LATEST}{where}
             ORDER BY m.base_id, lower(coalesce(s.surname, '')), m.student_guid LIMIT %(n)s""",
        {"b": base_id, "k1": k1, "k2": k2, "k3": k3, "n": limit + 1})
    return _page(_dicts(cur), limit, lambda r: _key(r["base_id"], (r["surname"] or "").lower(), r["student_guid"]))


def possible(conn: Connection, base_id: str | None = None, after: str | None = None, limit: int = PAGE) -> Page:
    """The Possible-matches queue: each school record with its proposed candidate, the per-field
    weights of the score and why it was not linked automatically."""
    k = _unkey(after, 2)
    where = _where((base_id is not None, "m.base_id = %(b)s"),
                   (k is not None, "(m.base_id, m.student_guid) > (%(k1)s, %(k2)s)"))
    k1, k2 = k or (None, None)
    cur = _run(conn,
        f"""SELECT m.base_id, m.student_guid, m.person_id, m.score, m.explanation,
                   s.upn, s.forename, s.surname, s.gender, s.dob, c.upn AS la_upn, c.forename AS la_forename,
                   c.surname AS la_surname, c.gender AS la_gender, c.dob AS la_dob, c.postcode AS la_postcode
              FROM results.match m
              JOIN staging.student s ON s.base_id = m.base_id AND s.student_guid = m.student_guid
                                    AND s.file_id = m.file_id
              JOIN core.child c ON c.person_id = m.person_id
             WHERE m.status = 'possible' AND {_LATEST}{where}
             ORDER BY m.base_id, m.student_guid LIMIT %(n)s""", {"b": base_id, "k1": k1, "k2": k2, "n": limit + 1})
    return _page(_dicts(cur), limit, lambda r: _key(r["base_id"], r["student_guid"]))


def school_record(conn: Connection, base_id: str, student_guid: str) -> dict | None:
    """The school's latest record (core block and address) of one student."""
    cur = conn.execute(
        """SELECT s.base_id, s.student_guid, s.upn, s.forename, s.middle_names, s.surname, s.gender, s.dob,
                  a.paon, a.street, a.town, a.postcode
             FROM results.current_match m
             JOIN staging.student s ON s.file_id = m.file_id AND s.student_guid = m.student_guid
             LEFT JOIN LATERAL (SELECT * FROM staging.address a WHERE a.base_id = s.base_id
                                  AND a.student_guid = s.student_guid ORDER BY a.file_id DESC LIMIT 1) a ON true
            WHERE m.base_id = %s AND m.student_guid = %s""", (base_id, student_guid))
    rows = _dicts(cur)
    return rows[0] if rows else None


def children(conn: Connection, person_ids: list[str]) -> dict[str, dict]:
    cur = conn.execute(
        """SELECT person_id, upn, forename, middle_names, surname, gender, dob, paon, street, town, postcode
             FROM core.child WHERE person_id = ANY(%s)""", (person_ids,))
    return {r["person_id"]: r for r in _dicts(cur)}


def search_children(conn: Connection, q: str, dob: str | None = None, limit: int = 20) -> list[dict]:
    """LA children by UPN, person id or surname (with an optional date of birth), for a link by hand.
    Index lookups only (``core.child`` m_upn, person_id, m_sn + m_year)."""
    q = (q or "").strip()
    if not q:
        return []
    cur = conn.execute(
        """SELECT person_id, upn, forename, surname, gender, dob, postcode
             FROM core.child
            WHERE (m_upn = upper(replace(%(q)s, ' ', '')) OR person_id = %(q)s
                   OR (m_sn = regexp_replace(lower(%(q)s), '[^a-z]', '', 'g')
                       AND (%(dob)s::date IS NULL OR (m_year = extract(year FROM %(dob)s::date) AND dob = %(dob)s::date))))
            ORDER BY surname, forename, person_id LIMIT %(n)s""", {"q": q, "dob": dob or None, "n": limit})
    return _dicts(cur)


_UNRESOLVED = """NOT EXISTS (SELECT 1 FROM results.conflict_resolution r
                              WHERE r.person_id = o.person_id AND r.field = o.field
                                AND r.la_value IS NOT DISTINCT FROM o.la_value
                                AND r.incoming_value IS NOT DISTINCT FROM o.incoming_value)"""


def conflicts(conn: Connection, base_id: str | None = None, after: str | None = None, limit: int = PAGE,
              include_referred: bool = False) -> Page:
    """Matched with Conflicts (F17/F20): the school's value and the LA's side by side, one row per
    open (child, field, values) however many imports saw it; those sent to the school are left
    out unless asked."""
    k = _unkey(after, 2)
    where = _where((base_id is not None, "o.base_id = %(b)s"),
                   (k is not None, "(o.person_id, o.field) > (%(k1)s, %(k2)s)"))
    k1, k2 = k or (None, None)
    cur = _run(conn,
        f"""SELECT o.person_id, o.field, o.la_value, o.incoming_value, min(o.base_id) AS base_id,
                   min(o.student_guid) AS student_guid, min(o.window_end) AS first_seen,
                   max(o.window_end) AS last_seen, count(DISTINCT o.file_id) AS times_seen,
                   min(c.forename) AS forename, min(c.surname) AS surname,
                   bool_or(ref.person_id IS NOT NULL) AS referred
              FROM results.conflict_observation o
              JOIN core.child c ON c.person_id = o.person_id
              LEFT JOIN results.conflict_referral ref
                ON ref.person_id = o.person_id AND ref.field = o.field
               AND ref.la_value IS NOT DISTINCT FROM o.la_value AND ref.incoming_value IS NOT DISTINCT FROM o.incoming_value
             WHERE {_UNRESOLVED}{where}
             GROUP BY o.person_id, o.field, o.la_value, o.incoming_value
            HAVING %(r)s OR NOT bool_or(ref.person_id IS NOT NULL)
             ORDER BY o.person_id, o.field LIMIT %(n)s""",
        {"b": base_id, "k1": k1, "k2": k2, "n": limit + 1, "r": include_referred})
    rows = _dicts(cur)
    for r in rows:
        r["label"] = COMPARED_BY_NAME[r["field"]].label if r["field"] in COMPARED_BY_NAME else r["field"]
    return _page(rows, limit, lambda r: _key(r["person_id"], r["field"]))


def refer_to_school(conn: Connection, person_id: str, field: str, by: str) -> int:
    """Send an open conflict to the school instead of deciding it: the school's weekly report
    asks it which value is right (and its answer is applied on receipt). Recorded like an
    officer decision: the officer's own login, or "<web user> via <login>" from the screens."""
    if field not in CONFLICT_FIELDS:
        raise OfficerError(f"unknown conflict field {field!r}")
    with conn.transaction():
        n = conn.execute(
            """INSERT INTO results.conflict_referral (person_id, field, la_value, incoming_value, referred_by)
               SELECT person_id, field, la_value, incoming_value, results.officer_identity(%s)
                 FROM results.conflict
                WHERE person_id = %s AND field = %s
               ON CONFLICT DO NOTHING""", (by, person_id, field)).rowcount
        if n == 0 and conn.execute("SELECT 1 FROM results.conflict WHERE person_id = %s AND field = %s",
                                   (person_id, field)).fetchone() is None:
            raise OfficerError(f"child {person_id}: no open conflict on {field}")
    return n


def rejected_contacts(conn: Connection, base_id: str | None = None, after: str | None = None, limit: int = PAGE) -> Page:
    k = _unkey(after, 3)
    where = _where((base_id is not None, "base_id = %(b)s"),
                   (k is not None, "(base_id, person_id, reason) > (%(k1)s, %(k2)s, %(k3)s)"))
    k1, k2, k3 = k or (None, None, None)
    cur = _run(conn,
        f"""SELECT base_id, person_id, reason, detail, forename, surname, email, cardinality(student_guids) AS students
              FROM results.rejected_contact WHERE true{where}
             ORDER BY base_id, person_id, reason LIMIT %(n)s""",
        {"b": base_id, "k1": k1, "k2": k2, "k3": k3, "n": limit + 1})
    return _page(_dicts(cur), limit, lambda r: _key(r["base_id"], r["person_id"], r["reason"]))


def suspense(conn: Connection, base_id: str | None = None, after: str | None = None, limit: int = PAGE) -> Page:
    """Files in suspense or failed, with the reason (no personal data is kept in it)."""
    k = _unkey(after, 1)
    where = _where((base_id is not None, "base_id = %(b)s"), (k is not None, "file_id < %(k1)s::bigint"))
    cur = _run(conn,
        f"""SELECT file_id, base_id, dag_id, label, status, error, received_at, size_bytes
              FROM raw.inbound_file WHERE status IN ('failed', 'suspense'){where}
             ORDER BY file_id DESC LIMIT %(n)s""", {"b": base_id, "k1": k[0] if k else None, "n": limit + 1})
    return _page(_dicts(cur), limit, lambda r: _key(r["file_id"]))


def recent_decisions(conn: Connection, limit: int = 20) -> list[dict]:
    """The latest decisions on every list, with who made them (the audit shown on the home screen)."""
    cur = conn.execute(
        """(SELECT decided_at AS at, decided_by AS by, decision AS what, base_id || ' ' || student_guid AS subject,
                   person_id AS detail FROM results.match_decision ORDER BY decided_at DESC LIMIT %(n)s)
           UNION ALL
           (SELECT resolved_at, resolved_by, resolution, person_id, field FROM results.conflict_resolution
             ORDER BY resolved_at DESC LIMIT %(n)s)
           UNION ALL
           (SELECT referred_at, referred_by, 'sent_to_school', person_id, field FROM results.conflict_referral
             ORDER BY referred_at DESC LIMIT %(n)s)
           ORDER BY at DESC LIMIT %(n)s""", {"n": limit})
    return _dicts(cur)
