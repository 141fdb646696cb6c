"""Contacts of current students as accounts (F34–F38, seed 004), set-based in SQL.

Each run of a snapshot or changed-data task rebuilds the base's contacts from the latest
data the LA holds for it (so a backfill of an old window never rolls contacts back):

* **current students**: the latest student block of each student of the base has no
  ``end_date`` on or before the window it came in (leavers are not current);
* **candidates**: the contacts in each current student's latest contacts block; a contact
  related to several students takes its details from the latest block, then the lowest
  student GUID;
* **mapping** (F34/F35): the home address (type H) with the latest start date; per
  telephone type (H, M, W) and email type (H, W) the one marked Primary, then Main, then
  the first; the username is the Primary, else Main, else first email of any type; title
  and gender only when a known value matches ``core.contact_lookup``;
* **preferences** (F35/F38): email type of the Primary, else Main email, default
  Personal; telephone type of the Primary, else Main telephone, default None; set when
  the account is created and never overwritten;
* **rejections** (F36/F37): no forename, no surname or no email address; an email that is
  already another contact's username (an existing account keeps it, disabled or not; of
  new claimants the lowest person id wins). Listed in ``results.rejected_contact``, one
  row per reason; an existing account that now fails keeps its last good data;
* **disabling** (F38): an account no longer related to any current student is disabled,
  never deleted; a staff member's account stays active without the contact role.

The rebuild reads the base's whole history, so a run skips it when it cannot change the
result: the run brought no student or contacts block that counts (loaded or skipped by the
hash cache) AND the base's other parsed/loaded files are exactly those the last rebuild (or
skip) saw (``core.contact_sync``). A run whose predecessor never reached this stage, a
released or deleted file, or a rerun of a window therefore still rebuilds. The window's own counts (created, updated, disabled) are read from the stamps
either way.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from b2b.context import RunContext, log_stage, one, run_files, scalar

if TYPE_CHECKING:
    from psycopg import Connection

REASONS = {
    "no_forename": "no forename: required in all cases",
    "no_surname": "no surname: required in all cases",
    "no_email": "no email address: required in all cases (the username)",
}


def _flag(name: str) -> str:
    """SQL: item ``x``'s boolean flag (a JSON true); plain comparison, no per-row cast function."""
    return f"coalesce(x->>'{name}' = 'true', false)"


def _pick(field: str, list_key: str, type_code: str | None, value: str) -> str:
    """SQL: from contact ``v``'s list, the item of a type marked Primary, then Main, then the first."""
    where = f"WHERE x->>'type' = '{type_code}'" if type_code else ""
    return f"""(SELECT {value} FROM jsonb_array_elements(core.jsonb_list(v->'{list_key}')) WITH ORDINALITY l(x, n)
                 {where}
                 ORDER BY {_flag('primary')} DESC, {_flag('main')} DESC, n LIMIT 1) AS {field}"""


def _preference(field: str, list_key: str, mapping: dict[str, str], default: str) -> str:
    """SQL: the type of the Primary, else the Main item of the list, else ``default``."""
    cases = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in mapping.items())
    return f"""coalesce((SELECT CASE x->>'type' {cases} END
                 FROM jsonb_array_elements(core.jsonb_list(v->'{list_key}')) WITH ORDINALITY l(x, n)
                WHERE ({_flag('primary')} OR {_flag('main')})
                  AND x->>'type' IN ({", ".join(f"'{k}'" for k in mapping)})
                ORDER BY {_flag('primary')} DESC, n LIMIT 1), '{default}') AS {field}"""


_CANDIDATES = f"""
CREATE TEMP TABLE contact_cand ON COMMIT DROP AS
WITH f AS (
    SELECT file_id, window_order, window_end FROM raw.inbound_file
     WHERE base_id = %(base)s AND status IN ('parsed', 'loaded')
), latest_student AS (
    SELECT DISTINCT ON (b.student_guid) b.student_guid, b.content, f.window_end
      FROM raw.inbound_block b JOIN f USING (file_id)
     WHERE b.base_id = %(base)s AND b.block_type = 'student' AND b.disposition IN ('loaded', 'skipped')
     ORDER BY b.student_guid, f.window_order DESC, b.file_id DESC
), current_student AS (
    SELECT student_guid FROM latest_student
     WHERE coalesce(staging.try_date(content->>'end_date') > (window_end AT TIME ZONE 'UTC')::date, true)
), latest_contacts AS (
    SELECT DISTINCT ON (b.student_guid) b.student_guid, b.content, f.window_order
      FROM raw.inbound_block b JOIN f USING (file_id) JOIN current_student USING (student_guid)
     WHERE b.base_id = %(base)s AND b.block_type = 'contacts' AND b.disposition IN ('loaded', 'skipped')
     ORDER BY b.student_guid, f.window_order DESC, b.file_id DESC
), item AS (
    SELECT c.student_guid, c.window_order, e.v, e.v->>'person_id' AS person_id
      FROM latest_contacts c
     CROSS JOIN LATERAL jsonb_array_elements(core.jsonb_list(c.content->'contacts')) e(v)
     WHERE nullif(trim(e.v->>'person_id'), '') IS NOT NULL
), related AS (
    SELECT person_id, array_agg(student_guid ORDER BY student_guid) AS student_guids,
           jsonb_agg(jsonb_build_object('student_guid', student_guid, 'relationship', v->>'relationship',
                     'parental_responsibility', staging.try_bool(v->>'parental_responsibility'),
                     'priority', staging.try_int(v->>'priority')) ORDER BY student_guid) AS links
      FROM item GROUP BY person_id
), details AS (
    SELECT DISTINCT ON (person_id) * FROM item ORDER BY person_id, window_order DESC, student_guid
)
SELECT d.person_id, r.student_guids, r.links,
       nullif(trim(v->>'forename'), '') AS forename, nullif(trim(v->>'surname'), '') AS surname,
       (SELECT value FROM core.contact_lookup WHERE kind = 'title' AND code = lower(trim(v->>'title'))) AS title,
       (SELECT value FROM core.contact_lookup WHERE kind = 'gender' AND code = lower(trim(v->>'gender'))) AS gender,
       coalesce(staging.try_bool(v->>'is_staff'), false) AS is_staff,
       h.home->>'paon' AS address_paon, h.home->>'street' AS address_street, h.home->>'town' AS address_town,
       h.home->>'postcode' AS postcode, staging.try_date(h.home->>'start_date') AS address_start_date,
       {_pick("home_telephone", "telephones", "H", "x->>'number'")},
       {_pick("mobile_telephone", "telephones", "M", "x->>'number'")},
       {_pick("work_telephone", "telephones", "W", "x->>'number'")},
       {_pick("personal_email", "emails", "H", "x->>'address'")},
       {_pick("work_email", "emails", "W", "x->>'address'")},
       {_pick("username", "emails", None, "nullif(trim(x->>'address'), '')")},
       {_preference("email_preference", "emails", {"H": "Personal", "W": "Work"}, "Personal")},
       {_preference("telephone_preference", "telephones", {"H": "Home", "M": "Mobile", "W": "Work"}, "None")}
  FROM details d
  JOIN related r USING (person_id)
  LEFT JOIN LATERAL (
        SELECT x AS home FROM jsonb_array_elements(core.jsonb_list(d.v->'addresses')) WITH ORDINALITY l(x, n)
         WHERE x->>'type' = 'H'
         ORDER BY staging.try_date(x->>'start_date') DESC NULLS LAST, n LIMIT 1) h ON true
"""

_REQUIRED = """
CREATE TEMP TABLE contact_reject ON COMMIT DROP AS
SELECT person_id, 'no_forename'::text AS reason, %(no_forename)s::text AS detail FROM contact_cand WHERE forename IS NULL
UNION ALL
SELECT person_id, 'no_surname', %(no_surname)s FROM contact_cand WHERE surname IS NULL
UNION ALL
SELECT person_id, 'no_email', %(no_email)s FROM contact_cand WHERE username IS NULL
"""

# F37: the email is the username; an account that holds it already keeps it (disabled or
# not), and of new claimants in one run the lowest person id wins.
_USERNAME_IN_USE = """
INSERT INTO contact_reject (person_id, reason, detail)
SELECT c.person_id, 'username_in_use',
       'email already used as the username of contact ' || coalesce(h.person_id, w.person_id)
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

_DETAIL_COLS = ("title", "forename", "surname", "gender", "address_paon", "address_street", "address_town",
                "postcode", "address_start_date", "home_telephone", "mobile_telephone", "work_telephone",
                "personal_email", "work_email", "username", "is_staff", "roles")

_UPSERT = f"""
INSERT INTO core.contact (base_id, person_id, {", ".join(_DETAIL_COLS)}, email_preference,
                          telephone_preference, active, created_window, updated_window)
SELECT %(base)s, c.person_id, {", ".join("c." + k for k in _DETAIL_COLS[:-1])},
       CASE WHEN c.is_staff THEN ARRAY['staff', 'contact'] ELSE ARRAY['contact'] END,
       c.email_preference, c.telephone_preference, true, %(wo)s, %(wo)s
  FROM contact_cand c
 WHERE NOT EXISTS (SELECT 1 FROM contact_reject r WHERE r.person_id = c.person_id)
ON CONFLICT (base_id, person_id) DO UPDATE
   SET {", ".join(f"{k} = EXCLUDED.{k}" for k in _DETAIL_COLS)},
       active = true, disabled_window = NULL, updated_window = EXCLUDED.updated_window
 WHERE ROW({", ".join("core.contact." + k for k in _DETAIL_COLS)}, core.contact.active)
       IS DISTINCT FROM ROW({", ".join("EXCLUDED." + k for k in _DETAIL_COLS)}, true)
"""

_LINKS = """
INSERT INTO core.contact_link (base_id, person_id, student_guid, relationship, parental_responsibility, priority)
SELECT %(base)s, c.person_id, l->>'student_guid', l->>'relationship', (l->>'parental_responsibility')::boolean,
       (l->>'priority')::int
  FROM contact_cand c CROSS JOIN LATERAL jsonb_array_elements(c.links) l
 WHERE NOT EXISTS (SELECT 1 FROM contact_reject r WHERE r.person_id = c.person_id)
"""

# F38: related to no current student: disabled, never deleted; staff keep the account
# without the contact role.
_DISABLE = """
UPDATE core.contact c
   SET active = c.is_staff, roles = CASE WHEN c.is_staff THEN ARRAY['staff'] ELSE ARRAY[]::text[] END,
       disabled_window = CASE WHEN c.is_staff THEN NULL ELSE %(wo)s END, updated_window = %(wo)s
 WHERE c.base_id = %(base)s AND 'contact' = ANY(c.roles)
   AND NOT EXISTS (SELECT 1 FROM contact_cand k WHERE k.person_id = c.person_id)
"""

_STAMPED = """
SELECT count(*) FILTER (WHERE created_window = %(wo)s),
       count(*) FILTER (WHERE updated_window = %(wo)s AND created_window <> %(wo)s AND active
                          AND 'contact' = ANY(roles)),
       count(*) FILTER (WHERE disabled_window = %(wo)s),
       count(*) FILTER (WHERE updated_window = %(wo)s AND is_staff AND roles = ARRAY['staff'])
  FROM core.contact WHERE base_id = %(base)s
"""

_REJECTED = """
INSERT INTO results.rejected_contact (base_id, person_id, reason, detail, student_guids, forename, surname,
                                      email, window_order)
SELECT %(base)s, r.person_id, r.reason, r.detail, c.student_guids, c.forename, c.surname, c.username, %(wo)s
  FROM contact_reject r JOIN contact_cand c USING (person_id)
"""


_INPUTS = """
SELECT count(*) || ':' || coalesce(max(file_id), 0) || ':' || coalesce(sum(file_id), 0)
  FROM raw.inbound_file WHERE base_id = %(base)s AND status IN ('parsed', 'loaded') AND file_id <> ALL(%(files)s)
"""

_RUN_HAS_CONTACT_INPUT = """
SELECT EXISTS (SELECT 1 FROM raw.inbound_block
                WHERE file_id = ANY(%(files)s) AND block_type IN ('student', 'contacts')
                  AND disposition IN ('loaded', 'skipped'))
"""


def _unchanged(conn: Connection, ctx: RunContext) -> dict | None:
    """The last rebuild's counts when this run cannot change the base's contacts, else None."""
    row = conn.execute("SELECT inputs, counts FROM core.contact_sync WHERE base_id = %s", (ctx.base_id,)).fetchone()
    if row is None:
        return None
    files = run_files(conn, ctx)
    if scalar(conn, _INPUTS, {"base": ctx.base_id, "files": files}) != row[0]:
        return None
    if scalar(conn, _RUN_HAS_CONTACT_INPUT, {"files": files}):
        return None
    return row[1]


def _remember(conn: Connection, ctx: RunContext, counts: dict) -> None:
    """The base's files now (this run's included) and the counts of the contacts they give."""
    inputs = scalar(conn, _INPUTS, {"base": ctx.base_id, "files": []})
    conn.execute("""INSERT INTO core.contact_sync (base_id, inputs, counts, window_order)
                    VALUES (%s, %s, %s, %s)
                    ON CONFLICT (base_id) DO UPDATE SET inputs = EXCLUDED.inputs, counts = EXCLUDED.counts,
                          window_order = EXCLUDED.window_order, synced_at = now()""",
                 (ctx.base_id, inputs, json.dumps(counts), ctx.window_order))


def sync(conn: Connection, ctx: RunContext) -> dict:
    """Rebuild the base's contact accounts, links and rejected list in one transaction."""
    params = {"base": ctx.base_id, "wo": ctx.window_order, **REASONS}
    with conn.transaction():
        last = _unchanged(conn, ctx)
        if last is not None:
            new, updated, disabled, staff_kept = one(conn, _STAMPED, params)
            counts = {**last, "created": new, "updated": updated, "disabled": disabled,
                      "staff_kept_without_contact_role": staff_kept, "unchanged": True}
            log_stage(conn, ctx, "contacts", counts,
                      f"contacts: no new student or contacts data since the last rebuild; "
                      f"{counts['candidates']} contacts of current students unchanged",
                      level="warning" if counts.get("rejected") else "info")
            _remember(conn, ctx, last)
            return counts
        # (dropped on commit; dropped here too when the caller's transaction is still open)
        conn.execute("DROP TABLE IF EXISTS pg_temp.contact_cand, pg_temp.contact_reject")
        conn.execute(_CANDIDATES, params)
        candidates = scalar(conn, "SELECT count(*) FROM contact_cand")
        conn.execute(_REQUIRED, params)
        # temporary tables are never analysed by autovacuum: without statistics the planner
        # guesses their size and can pick nested loops over whole tables
        conn.execute("ANALYZE contact_cand, contact_reject")
        conn.execute(_USERNAME_IN_USE, params)
        conn.execute(_UPSERT, params)
        conn.execute("""DELETE FROM core.contact_link WHERE base_id = %(base)s
                         AND person_id NOT IN (SELECT person_id FROM contact_reject)""", params)
        links = conn.execute(_LINKS, params).rowcount
        conn.execute(_DISABLE, params)
        # counted from the window stamps, so a rerun of the window reports what the window did
        new, updated, disabled, staff_kept = one(conn, _STAMPED, params)
        conn.execute("DELETE FROM results.rejected_contact WHERE base_id = %(base)s", params)
        conn.execute(_REJECTED, params)
        by_reason: dict[str, int] = dict(conn.execute("SELECT reason, count(*) FROM contact_reject GROUP BY reason ORDER BY reason"))
        rejected = scalar(conn, "SELECT count(DISTINCT person_id) FROM contact_reject")
        counts = {"candidates": candidates, "created": new, "updated": updated, "links": links,
                  "disabled": disabled, "staff_kept_without_contact_role": staff_kept, "rejected": rejected,
                  **{f"rejected_{k}": v for k, v in by_reason.items()}}
        log_stage(conn, ctx, "contacts", counts,
                  f"contacts: {candidates} contacts of current students; {new} created, {updated} updated, "
                  f"{disabled} disabled, {staff_kept} staff kept without the contact role; {rejected} rejected "
                  f"({', '.join(f'{k} {v}' for k, v in by_reason.items()) or 'none'}), see results.rejected_contact",
                  level="warning" if rejected else "info")
        _remember(conn, ctx, counts)
    return counts
