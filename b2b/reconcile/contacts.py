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

A full rebuild (:func:`rebuild`) reads the base's whole history, so :func:`sync` works from
the previous result whenever the base's other parsed/loaded files are exactly those that
result was computed from (``core.contact_sync``):

* a run that brought no student or contacts block that counts (loaded, or skipped by the
  hash cache) changes nothing but the rejected list's "last found" window;
* otherwise only the persons the run can change are recomputed, from the students they
  are related to: those related before the run to a student it touched (``core.contact_link``,
  or the rejected list), those in a touched student's latest contacts block, and every
  contact rejected because its username was in use (the holder may have given it up since).
  Everyone else's candidate row, and so their account, links and rejections, are those of
  the previous result: their students' blocks did not change, and an accepted account's
  username is its own (unique per base), so no one else's claim can take it away.

A first run, a run whose predecessor never reached this stage, a released or deleted file,
or a rerun of a window (its own files were part of the last result) rebuilds in full. The
incremental result equals a full rebuild's (``tests/test_contacts.py`` compares them after
every run of a sequence of simulated days). The window's own counts (created, updated,
disabled) are read from the stamps either way.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from b2b.context import RunContext, log_stage, one, scalar
from b2b.reconcile import stale_stats

if TYPE_CHECKING:
    from psycopg import Connection

#: the run tables the stage's statements join, which an LA's first snapshot outgrows
#: (``stale_stats``): the base's files and the contacts' links to students (a student's latest
#: blocks are read by index probes whatever the statistics; raw.inbound_block and core.contact
#: are not analysed here: see ``stale_stats``). Checked with the stage's first round trip (the
#: scope), analysed before the rebuild or the incremental statement
GROWING_TABLES = stale_stats.growing("raw.inbound_file", "core.contact_link")

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


def _candidates_sql(scoped: bool) -> str:
    """SQL: the candidates as the temporary table ``contact_cand``."""
    return "CREATE TEMP TABLE contact_cand ON COMMIT DROP AS" + _candidates_select(scoped)


def _latest_block(block_type: str, column: str, scoped: bool) -> str:
    """SQL: a LATERAL join to student ``s``'s latest ``block_type`` block of the base (its
    ``content`` and its file's ``column``), by an index probe. ``scoped`` joins the CTE ``f`` of
    the base's files; otherwise ``raw.inbound_file`` directly, so the probe is the plan."""
    files = "f" if scoped else "raw.inbound_file f"
    status = "" if scoped else " AND f.status IN ('parsed', 'loaded')"
    return f"""JOIN LATERAL (SELECT b.content, f.{column} FROM raw.inbound_block b JOIN {files} USING (file_id)
                     WHERE b.base_id = %(base)s AND b.student_guid = s.student_guid AND b.block_type = '{block_type}'
                       AND b.disposition IN ('loaded', 'skipped'){status}
                     ORDER BY f.window_order DESC, b.file_id DESC LIMIT 1) x ON true"""


def _candidates_select(scoped: bool) -> str:
    """SQL: the candidates (see the module docstring) of the whole base, or, ``scoped``, only
    those among ``%(persons)s`` read from the students ``%(students)s`` (which must hold every
    current student related to them).

    Both find a student's latest blocks by index probes, one student at a time, so the plan
    does not depend on statistics: on a base's first snapshot the statistics of
    ``raw.inbound_block`` still say the base has no blocks, and a join of its students to
    their contacts blocks became a nested loop re-reading every student block per contacts
    block (0.4 s for a 400-student school, growing with the square of the school)."""
    persons = "WHERE d.person_id = ANY(%(persons)s)" if scoped else ""
    if scoped:  # per student, an index lookup of its own blocks (not a scan of the base's)
        students, first = "unnest(%(students)s::text[]) s(student_guid)", ""
    else:  # per student of the base too: index probes whatever the statistics say (see below)
        students, first = "base_student s", """
), base_student AS (
    SELECT DISTINCT b.student_guid FROM raw.inbound_block b
     WHERE b.base_id = %(base)s AND b.block_type = 'student' AND b.disposition IN ('loaded', 'skipped')"""
    latest = f"""{first}
), latest_student AS (
    SELECT s.student_guid, x.content, x.window_end
      FROM {students}
      {_latest_block('student', 'window_end', scoped)}
), current_student AS (
    SELECT student_guid FROM latest_student
     WHERE coalesce(staging.try_date(content->>'end_date') > (window_end AT TIME ZONE 'UTC')::date, true)
), latest_contacts AS (
    SELECT s.student_guid, x.content, x.window_order
      FROM current_student s
      {_latest_block('contacts', 'window_order', scoped)}"""
    return f"""
WITH f AS (
    SELECT file_id, window_order, window_end FROM raw.inbound_file
     WHERE base_id = %(base)s AND status IN ('parsed', 'loaded')
{latest}
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
 {persons}
"""


_REQUIRED = """
CREATE TEMP TABLE contact_reject ON COMMIT DROP AS
SELECT person_id, 'no_forename'::text AS reason, %(no_forename)s::text AS detail FROM contact_cand WHERE forename IS NULL
UNION ALL
SELECT person_id, 'no_surname', %(no_surname)s FROM contact_cand WHERE surname IS NULL
UNION ALL
SELECT person_id, 'no_email', %(no_email)s FROM contact_cand WHERE username IS NULL
"""

def _username_in_use(cand: str, rejected: str) -> str:
    """F37's rule as one SELECT (person_id, reason, detail) over the candidates ``cand`` not yet
    ``rejected``: the email is the username; an account that holds it already keeps it
    (disabled or not), and of new claimants in one run the lowest person id wins.

    Set-based: each claimant is joined once to the account holding its username (the unique
    index on ``(base_id, lower(username))``) and ranked among its fellow claimants by a window
    function, so the cost grows with the candidates, not with their square."""
    return f"""
SELECT c.person_id, 'username_in_use'::text AS reason,
       'email already used as the username of contact ' || coalesce(h.person_id, c.first_claimant) AS detail
  FROM (SELECT c.person_id, c.username, min(c.person_id) OVER (PARTITION BY lower(c.username)) AS first_claimant
          FROM {cand} c
         WHERE c.username IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM {rejected} r WHERE r.person_id = c.person_id)) c
  LEFT JOIN core.contact h ON h.base_id = %(base)s AND lower(h.username) = lower(c.username)
 WHERE CASE WHEN h.person_id IS NOT NULL THEN h.person_id <> c.person_id
            ELSE c.first_claimant < c.person_id END
"""


_USERNAME_IN_USE = "INSERT INTO contact_reject (person_id, reason, detail)" + _username_in_use("contact_cand",
                                                                                            "contact_reject")

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


# An incremental run in one statement (no temporary tables): the same steps as ``_reconcile``
# over the persons in scope. Every part sees the tables as they were before the statement, as
# the separate statements of a rebuild see them before their own step; a link or rejection
# that stays is updated in place instead of deleted and inserted again (same rows after).
_SCOPED = f"""
WITH cand AS MATERIALIZED ({_candidates_select(True)}
), req AS MATERIALIZED (
    SELECT person_id, 'no_forename'::text AS reason, %(no_forename)s::text AS detail FROM cand WHERE forename IS NULL
    UNION ALL
    SELECT person_id, 'no_surname', %(no_surname)s FROM cand WHERE surname IS NULL
    UNION ALL
    SELECT person_id, 'no_email', %(no_email)s FROM cand WHERE username IS NULL
), in_use AS MATERIALIZED ({_username_in_use('cand', 'req')}), rej AS MATERIALIZED (
    SELECT * FROM req UNION ALL SELECT * FROM in_use
), ok AS MATERIALIZED (
    SELECT * FROM cand c WHERE NOT EXISTS (SELECT 1 FROM rej r WHERE r.person_id = c.person_id)
), new_link AS MATERIALIZED (
    SELECT c.person_id, l->>'student_guid' AS student_guid, l->>'relationship' AS relationship,
           (l->>'parental_responsibility')::boolean AS parental_responsibility, (l->>'priority')::int AS priority
      FROM ok c CROSS JOIN LATERAL jsonb_array_elements(c.links) l
), upserted AS (
    {_UPSERT.replace("FROM contact_cand c", "FROM ok c").replace(
        "WHERE NOT EXISTS (SELECT 1 FROM contact_reject r WHERE r.person_id = c.person_id)", "")}
), unlinked AS (
    DELETE FROM core.contact_link k
     WHERE k.base_id = %(base)s AND k.person_id = ANY(%(persons)s) AND k.person_id NOT IN (SELECT person_id FROM rej)
       AND NOT EXISTS (SELECT 1 FROM new_link n WHERE n.person_id = k.person_id AND n.student_guid = k.student_guid)
), linked AS (
    INSERT INTO core.contact_link (base_id, person_id, student_guid, relationship, parental_responsibility, priority)
    SELECT %(base)s, person_id, student_guid, relationship, parental_responsibility, priority FROM new_link
    ON CONFLICT (base_id, person_id, student_guid) DO UPDATE
       SET relationship = EXCLUDED.relationship, parental_responsibility = EXCLUDED.parental_responsibility,
           priority = EXCLUDED.priority
     WHERE ROW(core.contact_link.relationship, core.contact_link.parental_responsibility, core.contact_link.priority)
           IS DISTINCT FROM ROW(EXCLUDED.relationship, EXCLUDED.parental_responsibility, EXCLUDED.priority)
), disabled AS (
    {_DISABLE.replace("contact_cand k", "cand k")} AND c.person_id = ANY(%(persons)s)
), unlisted AS (
    DELETE FROM results.rejected_contact x
     WHERE x.base_id = %(base)s AND x.person_id = ANY(%(persons)s)
       AND NOT EXISTS (SELECT 1 FROM rej r WHERE r.person_id = x.person_id AND r.reason = x.reason)
), listed AS (
    {_REJECTED.replace("contact_reject r JOIN contact_cand c", "rej r JOIN cand c")}
    ON CONFLICT (base_id, person_id, reason) DO UPDATE
       SET detail = EXCLUDED.detail, student_guids = EXCLUDED.student_guids, forename = EXCLUDED.forename,
           surname = EXCLUDED.surname, email = EXCLUDED.email, window_order = EXCLUDED.window_order
), found_again AS (
    UPDATE results.rejected_contact x SET window_order = %(wo)s
     WHERE x.base_id = %(base)s AND x.window_order <> %(wo)s AND x.person_id <> ALL(%(persons)s)
)
SELECT count(*) FROM cand
"""


_INPUTS = """
SELECT count(*) || ':' || coalesce(max(file_id), 0) || ':' || coalesce(sum(file_id), 0)
  FROM raw.inbound_file WHERE base_id = %(base)s AND status IN ('parsed', 'loaded') AND file_id <> ALL(%(files)s)
"""

# the run's parsed (not suspended) files (``b2b.context.run_files``), as a subquery
_RUN_FILES = """(SELECT file_id FROM raw.inbound_file WHERE dag_id = %(dag)s AND window_end = %(end)s
                   AND status IN ('parsed', 'loaded'))"""

# the last rebuild's fingerprint and counts, the fingerprint of the base's files now with this
# run's left out, and this run's files
_LAST = f"""
SELECT s.inputs, s.counts,
       (SELECT count(*) || ':' || coalesce(max(file_id), 0) || ':' || coalesce(sum(file_id), 0)
          FROM raw.inbound_file WHERE base_id = %(base)s AND status IN ('parsed', 'loaded')
           AND file_id NOT IN {_RUN_FILES}),
       ARRAY{_RUN_FILES}
  FROM core.contact_sync s WHERE s.base_id = %(base)s
"""

# The scope of an incremental run: the students the run brought a student or contacts block
# for ("touched"), the persons whose result can change (related to a touched student before
# the run: links, or the rejected list for a rejected contact; in a touched student's latest
# contacts block; or rejected because their username was in use, as the holder may have let
# it go since), and every student whose blocks those persons' candidates are read from.
# No row (nothing computed) when the base has no previous result: its first run rebuilds.
_SCOPE = f"""
WITH touched AS (
    SELECT DISTINCT student_guid FROM raw.inbound_block
     WHERE file_id IN {_RUN_FILES} AND block_type IN ('student', 'contacts') AND disposition IN ('loaded', 'skipped')
), latest_contacts AS (
    SELECT x.content FROM touched t
      JOIN LATERAL (SELECT b.content FROM raw.inbound_block b JOIN raw.inbound_file f USING (file_id)
                     WHERE b.base_id = %(base)s AND b.student_guid = t.student_guid AND b.block_type = 'contacts'
                       AND b.disposition IN ('loaded', 'skipped') AND f.status IN ('parsed', 'loaded')
                     ORDER BY f.window_order DESC, b.file_id DESC LIMIT 1) x ON true
), persons AS (
    SELECT e.v->>'person_id' AS person_id
      FROM latest_contacts c CROSS JOIN LATERAL jsonb_array_elements(core.jsonb_list(c.content->'contacts')) e(v)
    UNION
    SELECT l.person_id FROM core.contact_link l JOIN touched t USING (student_guid) WHERE l.base_id = %(base)s
    UNION
    SELECT r.person_id FROM results.rejected_contact r
     WHERE r.base_id = %(base)s
       AND (r.reason = 'username_in_use' OR r.student_guids && ARRAY(SELECT student_guid FROM touched))
)
SELECT ARRAY(SELECT person_id FROM persons WHERE person_id IS NOT NULL),
       ARRAY(SELECT student_guid FROM touched
             UNION SELECT l.student_guid FROM core.contact_link l JOIN persons p USING (person_id)
                    WHERE l.base_id = %(base)s
             UNION SELECT unnest(r.student_guids) FROM results.rejected_contact r JOIN persons p USING (person_id)
                    WHERE r.base_id = %(base)s),
       (SELECT count(*) FROM touched)
 WHERE EXISTS (SELECT 1 FROM core.contact_sync s WHERE s.base_id = %(base)s)
"""

# the base's counts after the run, from its tables (equal to what a full rebuild counts: its
# candidates are the accounts with the contact role and the rejected contacts)
_COUNTS = """
SELECT (SELECT count(*) FROM (SELECT person_id FROM core.contact WHERE base_id = %(base)s AND 'contact' = ANY(roles)
                              UNION SELECT person_id FROM results.rejected_contact WHERE base_id = %(base)s) x),
       (SELECT count(*) FROM core.contact_link l
         WHERE l.base_id = %(base)s AND NOT EXISTS (SELECT 1 FROM results.rejected_contact r
                                                    WHERE r.base_id = l.base_id AND r.person_id = l.person_id)),
       (SELECT count(DISTINCT person_id) FROM results.rejected_contact WHERE base_id = %(base)s),
       (SELECT coalesce(jsonb_object_agg(reason, n), '{}') FROM (
            SELECT reason, count(*) AS n FROM results.rejected_contact WHERE base_id = %(base)s GROUP BY reason) r),
       s.*
  FROM (""" + _STAMPED + """) s
"""


def _fingerprint_plus(inputs: str, files: list[int]) -> str:
    """The fingerprint (``_INPUTS``) of a set of files with ``files`` added to it."""
    n, top, total = (int(x) for x in inputs.split(":"))
    return f"{n + len(files)}:{max([top, *files])}:{total + sum(files)}"


def _remember(conn: Connection, ctx: RunContext, counts: dict, inputs: str | None = None) -> None:
    """The base's files now (this run's included) and the counts of the contacts they give."""
    if inputs is None:
        inputs = scalar(conn, _INPUTS, {"base": ctx.base_id, "files": []})
    conn.execute("""INSERT INTO core.contact_sync (base_id, inputs, counts, window_order)
                    VALUES (%s, %s, %s, %s)
                    ON CONFLICT (base_id) DO UPDATE SET inputs = EXCLUDED.inputs, counts = EXCLUDED.counts,
                          window_order = EXCLUDED.window_order, synced_at = now()""",
                 (ctx.base_id, inputs, json.dumps(counts), ctx.window_order))


def _log(conn: Connection, ctx: RunContext, counts: dict) -> None:
    by_reason = {k.removeprefix("rejected_"): v for k, v in counts.items()
                 if k.startswith("rejected_") and k != "rejected_"}
    log_stage(conn, ctx, "contacts", counts,
              f"contacts: {counts['candidates']} contacts of current students; {counts['created']} created, "
              f"{counts['updated']} updated, {counts['disabled']} disabled, "
              f"{counts['staff_kept_without_contact_role']} staff kept without the contact role; "
              f"{counts['rejected']} rejected ({', '.join(f'{k} {v}' for k, v in by_reason.items()) or 'none'}), "
              f"see results.rejected_contact",
              level="warning" if counts["rejected"] else "info")


def _reconcile(conn: Connection, ctx: RunContext, params: dict) -> None:
    """All of the base's candidates to accounts, links and the rejected list (a full rebuild)."""
    # (dropped on commit; dropped here too when the caller's transaction is still open)
    conn.execute("DROP TABLE IF EXISTS pg_temp.contact_cand, pg_temp.contact_reject")
    conn.execute(_candidates_sql(False), params)
    conn.execute(_REQUIRED, params)
    # temporary tables are never analysed by autovacuum: without statistics the planner
    # guesses their size and can pick nested loops over whole tables. Their sizes and the
    # columns the next statements join or filter on are what it needs; the wide columns
    # (links, student GUIDs, the contact's details) are only copied, so are not sampled.
    conn.execute("ANALYZE contact_cand (person_id, username), contact_reject (person_id)")
    conn.execute(_USERNAME_IN_USE, params)
    conn.execute(_UPSERT, params)
    conn.execute("""DELETE FROM core.contact_link WHERE base_id = %(base)s
                     AND person_id NOT IN (SELECT person_id FROM contact_reject)""", params)
    conn.execute(_LINKS, params)
    conn.execute(_DISABLE, params)
    conn.execute("DELETE FROM results.rejected_contact WHERE base_id = %(base)s", params)
    conn.execute(_REJECTED, params)


def _found_again(conn: Connection, params: dict) -> None:
    """Every rejected contact of the base was found again by this run, as a full rebuild records."""
    conn.execute("""UPDATE results.rejected_contact SET window_order = %(wo)s
                     WHERE base_id = %(base)s AND window_order <> %(wo)s""", params)


def _counts(conn: Connection, params: dict) -> dict:
    candidates, links, rejected, by_reason, new, updated, disabled, staff_kept = one(conn, _COUNTS, params)
    return {"candidates": candidates, "created": new, "updated": updated, "links": links,
            "disabled": disabled, "staff_kept_without_contact_role": staff_kept, "rejected": rejected,
            **{f"rejected_{k}": v for k, v in sorted(by_reason.items())}}


def rebuild(conn: Connection, ctx: RunContext) -> dict:
    """Rebuild the base's contact accounts, links and rejected list from its whole history.

    What :func:`sync` does when it cannot work from the previous result (first run, a rerun,
    a released or deleted file), and what an incremental run must equal (tests).
    """
    params = {"base": ctx.base_id, "wo": ctx.window_order, **REASONS}
    # statements sent in a pipeline: the server runs them back to back (a stage's fixed cost
    # on a busy machine is mostly the round trips)
    with conn.transaction(), conn.pipeline():
        _reconcile(conn, ctx, params)
        # counted from the window stamps, so a rerun of the window reports what the window did
        counts = _counts(conn, params)
        _log(conn, ctx, counts)
        _remember(conn, ctx, counts)
    return counts


def sync(conn: Connection, ctx: RunContext) -> dict:
    """Bring the base's contact accounts, links and rejected list up to date, in one transaction.

    From the previous result when the base's other files are those it was computed from
    (``core.contact_sync``): nothing to do when the run brought no student or contacts
    block, else only the persons the run can change (``_SCOPE``); otherwise a full
    :func:`rebuild`.
    """
    params: dict = {"base": ctx.base_id, "wo": ctx.window_order, "dag": ctx.dag_id, "end": ctx.window_end,
                    **REASONS}
    with conn.transaction():
        with conn.pipeline():  # (the run tables' statistics checked in the same round trip)
            outgrown = stale_stats.check(conn, GROWING_TABLES)
            last_cur = conn.execute(_LAST, params)
            scope_cur = conn.execute(_SCOPE, params)
            last = last_cur.fetchone()
            scope = scope_cur.fetchone()
        outgrown.analyse()
        if last is None or scope is None or last[0] != last[2]:
            return rebuild(conn, ctx)
        persons, students, touched = scope
        files = list(last[3])
        with conn.pipeline():
            if not touched:
                new, updated, disabled, staff_kept = one(conn, _STAMPED, params)
                counts = {**last[1], "created": new, "updated": updated, "disabled": disabled,
                          "staff_kept_without_contact_role": staff_kept, "unchanged": True}
                log_stage(conn, ctx, "contacts", counts,
                          f"contacts: no new student or contacts data since the last rebuild; "
                          f"{counts['candidates']} contacts of current students unchanged",
                          level="warning" if counts.get("rejected") else "info")
                _found_again(conn, params)
                _remember(conn, ctx, last[1], _fingerprint_plus(last[0], files))
                return counts
            params |= {"persons": persons, "students": students}
            conn.execute(_SCOPED, params)
            counts = _counts(conn, params)
            _log(conn, ctx, counts)
            _remember(conn, ctx, counts, _fingerprint_plus(last[0], files))
    return {**counts, "incremental": {"students": touched, "persons": len(persons)}}
