"""The processing chain after extract, free of Airflow: hash filter, load, match, conflicts, apply.

Every stage works on one run window — the files a DAG run stored (``RunContext``:
``dag_id`` + ``window_end``) — with set-based SQL: one statement per step and block
type, never one statement per row. Each stage first removes what an earlier attempt of
the *same stage* derived for those files, so any stage can be retried on its own.

Validation (Great Expectations) sits between hash filter and load: ``b2b.validation``.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from b2b.extract import RunContext

log = logging.getLogger(__name__)

STAGING_TABLES = ("student", "address", "contact", "sen_need", "exclusion", "attendance", "attainment")

# Fields compared between the school's and the LA's record: a difference is a conflict
# (F17). Names compare case-insensitively ("DAVIDS" = "Davids", as in the LA guidance).
IDENTITY_FIELDS = ("upn", "forename", "middle_names", "surname", "gender", "dob", "ethnicity",
                   "first_language")
ADDRESS_FIELDS = ("paon", "street", "postcode")
CASE_INSENSITIVE = {"forename", "middle_names", "surname", "street", "paon"}
# Fields the school owns: applied to the LA record for matched students, never conflicts.
SCHOOL_FIELDS = ("preferred_forename", "preferred_surname", "home_language", "religion", "sen_status",
                 "ncy", "enrol_status", "reg_group", "start_date", "end_date", "looked_after", "eal",
                 "gifted_talented", "service_child", "traveller", "connexions_assent")


@dataclass(frozen=True)
class Settings:
    """The LA's System Defaults that the chain honours."""

    b2bhcache: bool = True   # F7/F15: hash cache on
    guidmatch: bool = True   # F16: GUID matching on
    b2b_s_age: int = 18      # F13: unmatched older than this are hidden
    carer_min: int = 16      # F14 (carer matching, used by the matcher of issue 5)
    matcher: str = "weights"  # "weights" (b2b.matching.match) or "legacy" (the vendor rule)


def run_files(conn, ctx: RunContext) -> list[int]:
    """The parsed (not suspended) files of this run window."""
    return [r[0] for r in conn.execute(
        """SELECT file_id FROM raw.inbound_file
            WHERE dag_id = %s AND window_end = %s AND status IN ('parsed', 'loaded')""",
        (ctx.dag_id, ctx.window_end))]


def log_stage(conn, ctx: RunContext, stage: str, counts: dict, message: str, level: str = "info") -> None:
    """The run-level task-log row of a stage (replaced when the stage reruns)."""
    log_stage_file(conn, ctx, stage, None, counts, message, level)


def log_stage_file(conn, ctx: RunContext, stage: str, file_id: int | None, counts: dict, message: str,
                   level: str = "info") -> None:
    """A task-log row of a stage for one file (or the whole run when ``file_id`` is None)."""
    conn.execute("DELETE FROM ops.task_log WHERE dag_id = %s AND window_end = %s AND stage = %s "
                 "AND file_id IS NOT DISTINCT FROM %s::bigint", (ctx.dag_id, ctx.window_end, stage, file_id))
    conn.execute(
        """INSERT INTO ops.task_log (base_id, task_key, dag_id, run_id, window_start, window_end,
                                     file_id, stage, level, message, counts)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        (ctx.base_id, ctx.task_key, ctx.dag_id, ctx.run_id, ctx.window_start, ctx.window_end,
         file_id, stage, level, message, json.dumps(counts)))


# ------------------------------------------------------------------ hash filter
def hash_filter(conn, ctx: RunContext, settings: Settings) -> dict:
    """Hash every block of the run; mark 'skipped' those equal to the cached hash (F7/F20).

    The cached hash of a (base, student, block type) is the newest hash-cache entry from
    an *earlier* window, so reruns and backfills see the cache as it was for them.
    """
    with conn.transaction():
        files = run_files(conn, ctx)
        # One write per block, driven by the block's primary key and, per block, the cache's key
        # index: no join whose plan could flip to a nested loop over every stored block when the
        # statistics lag behind a fast-growing raw.inbound_block (the earlier self-join took 88 s
        # instead of 1 s for 25 schools' snapshots).
        conn.execute(
            """UPDATE raw.inbound_block b
                  SET (hash, disposition) = (
                      SELECT x.h, CASE WHEN %(cache)s AND x.h = (
                                           SELECT c.hash FROM ops.hash_cache c
                                            WHERE c.base_id = b.base_id AND c.student_guid = b.student_guid
                                              AND c.block_type = b.block_type AND c.window_order < %(order)s
                                            ORDER BY c.window_order DESC LIMIT 1)
                                       THEN 'skipped' ELSE 'pending' END
                        FROM (SELECT encode(sha256(convert_to(b.content::text, 'UTF8')), 'hex') AS h) x)
                WHERE b.file_id = ANY(%(files)s)""",
            {"files": files, "order": ctx.window_order, "cache": settings.b2bhcache})
        counts = dict(conn.execute(
            """SELECT disposition, count(*) FROM raw.inbound_block WHERE file_id = ANY(%s)
               GROUP BY disposition""", (files,)).fetchall())
        result = {"blocks": sum(counts.values()), "skipped_by_cache": counts.get("skipped", 0),
                  "to_process": counts.get("pending", 0), "cache_enabled": settings.b2bhcache}
        log_stage(conn, ctx, "hash_filter", result,
                  f"hash filter: {result['blocks']} blocks, {result['skipped_by_cache']} unchanged since "
                  f"last import, {result['to_process']} to process"
                  + ("" if settings.b2bhcache else " (B2BHCACHE off)"))
    return result


# ------------------------------------------------------------------ validate
def validate(conn, ctx: RunContext, report_dir) -> dict:
    """Run the expectation suites (``b2b.validation``, Great Expectations) on the run's new blocks.

    Row-level failures become ``results.anomaly`` rows and their blocks are marked
    ``invalid`` (not loaded); the student's other blocks and the rest of the file go on.
    A structural failure (unknown block type, missing mandatory section) puts the file(s)
    in suspense with the reason in the task log. Writes an HTML report; its path is logged.
    """
    from pathlib import Path

    from b2b.validation import validate_blocks

    with conn.transaction():
        files = run_files(conn, ctx)
        conn.execute("DELETE FROM results.anomaly WHERE file_id = ANY(%s)", (files,))
        conn.execute("""UPDATE raw.inbound_block SET disposition = 'pending'
                        WHERE file_id = ANY(%s) AND disposition = 'invalid'""", (files,))
        rows = conn.execute(
            """SELECT file_id, ordinal, base_id, block_type, student_guid, content
                 FROM raw.inbound_block WHERE file_id = ANY(%s) AND disposition = 'pending'
                ORDER BY file_id, ordinal""", (files,)).fetchall()
        blocks = [dict(file_id=r[0], ordinal=r[1], base_id=r[2], block_type=r[3], student_guid=r[4],
                       content=r[5]) for r in rows]
        missing = _missing_core(conn, ctx, files)
        blocks = [b for b in blocks if b["file_id"] not in missing]
        label = f"{ctx.dag_id}__{ctx.window_end:%Y%m%dT%H%M%S}"
        result = validate_blocks(blocks, run_label=label, report_dir=Path(report_dir), as_of=ctx.window_end.date())
        result.suspended.update(missing)
        for file_id, reason in sorted(result.suspended.items()):
            conn.execute("UPDATE raw.inbound_file SET status = 'suspense', error = %s WHERE file_id = %s",
                         (f"validation: {reason}", file_id))
            log_stage_file(conn, ctx, "validate", file_id, {"suspended": 1},
                           f"validate: file {file_id} put in suspense: {reason}", level="error")
        with conn.cursor() as cur, cur.copy(
                "COPY results.anomaly (file_id, ordinal, base_id, student_guid, block_type, rule, field, value, "
                "severity) FROM STDIN") as copy:
            for a in result.anomalies:
                copy.write_row((a.file_id, a.ordinal, a.base_id, a.student_guid, a.block_type, a.rule, a.field,
                                a.value, a.severity))
        invalid = sorted(result.invalid_blocks)
        if invalid:
            conn.execute(
                """UPDATE raw.inbound_block b SET disposition = 'invalid'
                     FROM unnest(%s::bigint[], %s::int[]) AS x(file_id, ordinal)
                    WHERE b.file_id = x.file_id AND b.ordinal = x.ordinal""",
                ([i[0] for i in invalid], [i[1] for i in invalid]))
        counts = {"checked": result.checked, "anomalies": len(result.anomalies), "invalid_blocks": len(invalid),
                  "suspended_files": len(result.suspended), "by_rule": result.by_rule(),
                  "report": str(result.report_path)}
        log_stage(conn, ctx, "validate", counts,
                  f"validate: {result.checked} blocks checked, {len(result.anomalies)} anomalies, "
                  f"{len(invalid)} blocks not loaded, {len(result.suspended)} files in suspense; "
                  f"report {result.report_path}",
                  level="error" if result.suspended else "warning" if result.anomalies else "info")
    return counts


def _missing_core(conn, ctx: RunContext, files: list[int]) -> dict[int, str]:
    """SIMS 7 files where a pupil lacks its mandatory core block (all but changed data send it).

    Checked over every block of the file, skipped ones included. Returns {file_id: reason}.
    """
    if ctx.source != "sims7" or ctx.data_filter == "changed_data":
        return {}
    rows = conn.execute(
        """SELECT file_id, count(*) FROM (
               SELECT file_id, student_guid FROM raw.inbound_block WHERE file_id = ANY(%s)
                GROUP BY file_id, student_guid HAVING NOT bool_or(block_type = 'student')) x
            GROUP BY file_id""", (files,)).fetchall()
    return {fid: f"{n} pupil(s) without the mandatory StudentCore section ({ctx.data_filter} message)"
            for fid, n in rows}


# ------------------------------------------------------------------ load
_J = "b.content"
_LOAD_SQL = {
    "student": f"""
        INSERT INTO staging.student (file_id, ordinal, base_id, student_guid, upn, surname, forename,
            middle_names, preferred_surname, preferred_forename, dob, gender, ethnicity, first_language,
            home_language, religion, ncy, reg_group, enrol_status, start_date, end_date, eal,
            gifted_talented, service_child, traveller, connexions_assent, looked_after, sen_status)
        SELECT b.file_id, b.ordinal, b.base_id, b.student_guid, {_J}->>'upn', {_J}->>'surname',
               {_J}->>'forename', {_J}->>'middle_names', {_J}->>'preferred_surname',
               {_J}->>'preferred_forename', staging.try_date({_J}->>'dob'), {_J}->>'gender',
               {_J}->>'ethnicity', {_J}->>'first_language', {_J}->>'home_language', {_J}->>'religion',
               {_J}->>'ncy', {_J}->>'reg_group', {_J}->>'enrol_status', staging.try_date({_J}->>'start_date'),
               staging.try_date({_J}->>'end_date'), staging.try_bool({_J}->>'eal'),
               staging.try_bool({_J}->>'gifted_talented'), staging.try_bool({_J}->>'service_child'),
               staging.try_bool({_J}->>'traveller'), staging.try_bool({_J}->>'connexions_assent'),
               staging.try_bool({_J}->>'looked_after'), {_J}->>'sen_status'
          FROM raw.inbound_block b
         WHERE b.file_id = ANY(%(files)s) AND b.block_type = 'student' AND b.disposition = 'pending'""",
    "address": f"""
        INSERT INTO staging.address (file_id, ordinal, base_id, student_guid, paon, saon, street, locality,
            town, county, postcode, start_date)
        SELECT b.file_id, b.ordinal, b.base_id, b.student_guid, {_J}->>'paon', {_J}->>'saon',
               {_J}->>'street', {_J}->>'locality', {_J}->>'town', {_J}->>'county', {_J}->>'postcode',
               staging.try_date({_J}->>'start_date')
          FROM raw.inbound_block b
         WHERE b.file_id = ANY(%(files)s) AND b.block_type = 'address' AND b.disposition = 'pending'""",
    "contact": """
        INSERT INTO staging.contact (file_id, ordinal, item, base_id, student_guid, person_id, title,
            forename, surname, gender, relationship, parental_responsibility, priority, is_staff,
            addresses, telephones, emails)
        SELECT b.file_id, b.ordinal, e.n, b.base_id, b.student_guid, e.v->>'person_id', e.v->>'title',
               e.v->>'forename', e.v->>'surname', e.v->>'gender', e.v->>'relationship',
               staging.try_bool(e.v->>'parental_responsibility'), staging.try_int(e.v->>'priority'),
               staging.try_bool(e.v->>'is_staff'), e.v->'addresses', e.v->'telephones', e.v->'emails'
          FROM raw.inbound_block b
          CROSS JOIN LATERAL jsonb_array_elements(coalesce(b.content->'contacts', '[]')) WITH ORDINALITY AS e(v, n)
         WHERE b.file_id = ANY(%(files)s) AND b.block_type = 'contacts' AND b.disposition = 'pending'""",
    "sen_need": """
        INSERT INTO staging.sen_need (file_id, ordinal, item, base_id, student_guid, start_date, type, ranking)
        SELECT b.file_id, b.ordinal, e.n, b.base_id, b.student_guid,
               staging.try_date(b.content->>'start_date'), e.v->>'type', staging.try_int(e.v->>'ranking')
          FROM raw.inbound_block b
          CROSS JOIN LATERAL jsonb_array_elements(coalesce(b.content->'needs', '[]')) WITH ORDINALITY AS e(v, n)
         WHERE b.file_id = ANY(%(files)s) AND b.block_type = 'sen' AND b.disposition = 'pending'""",
    "exclusion": """
        INSERT INTO staging.exclusion (file_id, ordinal, item, base_id, student_guid, category, start_date,
            end_date, reason, term, academic_year, sessions)
        SELECT b.file_id, b.ordinal, e.n, b.base_id, b.student_guid, e.v->>'category',
               staging.try_date(e.v->>'start_date'), staging.try_date(e.v->>'end_date'), e.v->>'reason',
               e.v->>'term', staging.try_int(e.v->>'academic_year'), staging.try_int(e.v->>'sessions')
          FROM raw.inbound_block b
          CROSS JOIN LATERAL jsonb_array_elements(coalesce(b.content->'exclusions', '[]')) WITH ORDINALITY AS e(v, n)
         WHERE b.file_id = ANY(%(files)s) AND b.block_type = 'exclusions' AND b.disposition = 'pending'""",
    "attendance": """
        INSERT INTO staging.attendance (file_id, ordinal, base_id, student_guid, academic_year, start_date,
            marks, changes)
        SELECT b.file_id, b.ordinal, b.base_id, b.student_guid, staging.try_int(b.content->>'academic_year'),
               staging.try_date(b.content->>'start_date'), b.content->>'marks', b.content->'changes'
          FROM raw.inbound_block b
         WHERE b.file_id = ANY(%(files)s) AND b.block_type = 'attendance' AND b.disposition = 'pending'""",
    "attainment": """
        INSERT INTO staging.attainment (file_id, ordinal, item, base_id, student_guid, hierarchy, aspect,
            result, result_date)
        SELECT b.file_id, b.ordinal, e.n, b.base_id, b.student_guid, e.v->>'hierarchy', e.v->>'aspect',
               e.v->>'result', staging.try_date(e.v->>'result_date')
          FROM raw.inbound_block b
          CROSS JOIN LATERAL jsonb_array_elements(coalesce(b.content->'results', '[]')) WITH ORDINALITY AS e(v, n)
         WHERE b.file_id = ANY(%(files)s) AND b.block_type = 'attainment' AND b.disposition = 'pending'""",
}


def load(conn, ctx: RunContext, *, fail_after: str | None = None) -> dict:
    """Load the run's pending blocks into staging and record them in the hash cache — one transaction.

    If anything fails, staging, cache and dispositions stay exactly as they were, so the
    retry processes the same blocks. ``fail_after`` (a staging table name) makes the load
    raise after that table: tests use it to prove the rollback.
    """
    counts: dict[str, int] = {}
    with conn.transaction():
        files = run_files(conn, ctx)
        # one loader per base at a time: the cache of one base is read and written here
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('b2b.load.' || %s))", (ctx.base_id,))
        # an earlier successful attempt of this stage: undo it, then redo
        for table in STAGING_TABLES:
            conn.execute(f"DELETE FROM staging.{table} WHERE file_id = ANY(%s)", (files,))
        conn.execute("DELETE FROM core.attendance_marks WHERE file_id = ANY(%s)", (files,))
        conn.execute("DELETE FROM ops.hash_cache WHERE file_id = ANY(%s)", (files,))
        conn.execute("""UPDATE raw.inbound_block SET disposition = 'pending'
                        WHERE file_id = ANY(%s) AND disposition = 'loaded'""", (files,))
        for table in STAGING_TABLES:
            counts[table] = conn.execute(_LOAD_SQL[table], {"files": files}).rowcount
            if fail_after == table:
                raise RuntimeError(f"injected failure after loading staging.{table}")
        conn.execute(
            """INSERT INTO ops.hash_cache (file_id, ordinal, base_id, student_guid, block_type, hash, window_order)
               SELECT b.file_id, b.ordinal, b.base_id, b.student_guid, b.block_type, b.hash, %s
                 FROM raw.inbound_block b WHERE b.file_id = ANY(%s) AND b.disposition = 'pending'""",
            (ctx.window_order, files))
        from b2b.attendance import store_marks

        counts["attendance_marks"] = store_marks(conn, ctx, files, months=ctx.months)
        loaded = conn.execute("""UPDATE raw.inbound_block SET disposition = 'loaded'
                                 WHERE file_id = ANY(%s) AND disposition = 'pending'""", (files,)).rowcount
        conn.execute("UPDATE raw.inbound_file SET status = 'loaded' WHERE file_id = ANY(%s)", (files,))
        result = {"loaded": loaded, "rows": counts}
        log_stage(conn, ctx, "load", result,
                  f"load: {loaded} blocks into staging ({', '.join(f'{k} {v}' for k, v in counts.items() if v)})")
    return result


# ------------------------------------------------------------------ match (legacy rule)
def match(conn, ctx: RunContext, settings: Settings) -> dict:
    """Match every student whose student block was loaded in this run to an LA child.

    ``b2b.matching.match`` decides (see there): ``matched`` / ``matched_with_conflicts``
    (auto-linked), ``possible`` (a candidate for an officer, never linked), ``unmatched``
    (hidden when older than B2B_S_AGE, F13). Officer decisions are honoured (a linked GUID
    matches its child; a rejected pair is not proposed again). An automatic link records
    the GUID so the next import has it as evidence (F16). ``settings.matcher = "legacy"``
    runs the vendor rule instead (GUID; UPN + 3 of 4; all 4).
    """
    from b2b import matching

    with conn.transaction():
        files = run_files(conn, ctx)
        conn.execute("DELETE FROM results.match WHERE file_id = ANY(%s)", (files,))
        conn.execute("DELETE FROM core.child_link WHERE file_id = ANY(%s)", (files,))
        incoming = incoming_frame(conn, files, ctx.window_end)
        core, links, rejected = core_candidates(conn, incoming)
        if settings.matcher == "legacy":
            decided = matching.legacy_match(core, incoming, guidmatch=settings.guidmatch, links=links)
            decided["score"], decided["conflicting_fields"], decided["explanation"] = None, "", "{}"
        else:
            decided = matching.match(core, incoming, matching.MatchConfig(guidmatch=settings.guidmatch),
                                     links=links, rejected=rejected)
        _write_matches(conn, ctx, settings, incoming, decided)
        conn.execute(
            """INSERT INTO core.child_link (base_id, student_guid, person_id, linked_by, file_id)
               SELECT m.base_id, m.student_guid, m.person_id, 'match', m.file_id
                 FROM results.match m
                WHERE m.file_id = ANY(%s) AND m.status IN ('matched', 'matched_with_conflicts')
               ON CONFLICT (base_id, student_guid) DO NOTHING""", (files,))
        by_status = dict(conn.execute(
            "SELECT status, count(*) FROM results.match WHERE file_id = ANY(%s) GROUP BY status", (files,)).fetchall())
        by_rule = dict(conn.execute(
            "SELECT rule, count(*) FROM results.match WHERE file_id = ANY(%s) GROUP BY rule", (files,)).fetchall())
        hidden = conn.execute("SELECT count(*) FROM results.match WHERE file_id = ANY(%s) AND hidden",
                              (files,)).fetchone()[0]
        matched = by_status.get("matched", 0) + by_status.get("matched_with_conflicts", 0)
        counts = {"students": sum(by_status.values()), "matched": matched,
                  "possible": by_status.get("possible", 0), "unmatched": by_status.get("unmatched", 0),
                  "unmatched_hidden": hidden, "by_rule": by_rule, "matcher": settings.matcher}
        log_stage(conn, ctx, "match", counts,
                  f"match ({settings.matcher}): {counts['students']} students, {matched} matched, "
                  f"{counts['possible']} possible, {counts['unmatched']} unmatched "
                  f"({hidden} hidden: older than B2B_S_AGE {settings.b2b_s_age})")
    return counts


def incoming_frame(conn, files: list[int], window_end):
    """The run's students as matcher input, with their latest address as of the window."""
    import pandas as pd

    from b2b.matching import INCOMING_COLUMNS

    rows = conn.execute(
        """SELECT s.file_id::text || '|' || s.student_guid, s.base_id, s.upn, s.student_guid, s.forename,
                  s.middle_names, s.surname, s.gender, s.dob, a.postcode, a.address_line1, s.file_id, s.student_guid
             FROM staging.student s
             LEFT JOIN LATERAL (
                  SELECT sa.postcode, concat_ws(' ', sa.paon, sa.street) AS address_line1
                    FROM staging.address sa JOIN raw.inbound_file f ON f.file_id = sa.file_id
                   WHERE sa.base_id = s.base_id AND sa.student_guid = s.student_guid AND f.window_end <= %s
                   ORDER BY f.window_end DESC, sa.file_id DESC LIMIT 1) a ON true
            WHERE s.file_id = ANY(%s)
            ORDER BY s.file_id, s.student_guid""", (window_end, files)).fetchall()
    return pd.DataFrame(rows, columns=INCOMING_COLUMNS + ["file_id", "student_guid"])


def core_candidates(conn, incoming):
    """LA children that can be candidates for these students (a superset of every blocking
    key the matcher uses, normalised the same way), GUID links, and officer-rejected pairs."""
    import pandas as pd

    from b2b.matching import CORE_COLUMNS, name_key, name_parts, postcode_key

    keys = (list(incoming["base_id"]), list(incoming["guid"]))
    links = pd.DataFrame(conn.execute(
        """SELECT l.base_id, l.student_guid AS guid, l.person_id, l.linked_by
             FROM core.child_link l
             JOIN unnest(%s::text[], %s::text[]) AS x(base_id, guid)
               ON l.base_id = x.base_id AND l.student_guid = x.guid""", keys).fetchall(),
        columns=["base_id", "guid", "person_id", "linked_by"])
    rejected = pd.DataFrame(conn.execute(
        """SELECT d.base_id, d.student_guid AS guid, d.person_id
             FROM results.match_decision d
             JOIN unnest(%s::text[], %s::text[]) AS x(base_id, guid)
               ON d.base_id = x.base_id AND d.student_guid = x.guid
            WHERE d.decision = 'reject'""", keys).fetchall(), columns=["base_id", "guid", "person_id"])
    dobs = pd.to_datetime(incoming["dob"], errors="coerce").dropna()
    swapped = [d.replace(month=d.day, day=d.month) for d in dobs if d.day <= 12]
    params = {
        "years": sorted({d.year for d in dobs}),
        "fns": sorted({name_key(f) for f in incoming["forename"].dropna()} - {""}),
        "fn1s": sorted({name_key(f)[:1] for f in incoming["forename"].dropna()} - {""}),
        "upns": sorted({str(u).upper().replace(" ", "") for u in incoming["upn"].dropna() if u}),
        "dobs": sorted({d.date() for d in dobs} | {d.date() for d in swapped}),
        "sns": sorted({name_key(s) for s in incoming["surname"].dropna()} - {""}),
        "parts": sorted({p for s in incoming["surname"].dropna() for p in name_parts(s) if len(p) >= 2}),
        "pcs": sorted({postcode_key(p) for p in incoming["postcode"].dropna()} - {""}),
        "pids": sorted(set(links["person_id"])),
    }
    # the m_* columns are the matcher's own keys, stored and indexed (migration 0010): every branch
    # is an index lookup, and together they cover every blocking key of b2b.matching
    cols = "c.person_id, c.upn, NULL::text AS guid, c.forename, c.middle_names, c.surname, c.gender, c.dob, " \
           "c.postcode, concat_ws(' ', c.paon, c.street) AS address_line1"
    rows = conn.execute(
        f"""SELECT {cols} FROM core.child c WHERE c.m_upn = ANY(%(upns)s)
            UNION SELECT {cols} FROM core.child c WHERE c.dob = ANY(%(dobs)s)
            UNION SELECT {cols} FROM core.child c WHERE c.person_id = ANY(%(pids)s)
            UNION SELECT {cols} FROM core.child c WHERE c.m_sn = ANY(%(sns)s) AND c.m_year = ANY(%(years)s)
                                                  AND left(c.m_fn, 1) = ANY(%(fn1s)s)
            UNION SELECT {cols} FROM core.child c WHERE c.m_sn_parts && %(parts)s::text[]
                                                  AND c.m_year = ANY(%(years)s) AND left(c.m_fn, 1) = ANY(%(fn1s)s)
            UNION SELECT {cols} FROM core.child c WHERE c.m_pc = ANY(%(pcs)s) AND c.m_year = ANY(%(years)s)
            UNION SELECT {cols} FROM core.child c WHERE c.m_fn = ANY(%(fns)s) AND c.m_sn = ANY(%(sns)s)
            ORDER BY 1""", params).fetchall()
    return pd.DataFrame(rows, columns=CORE_COLUMNS), links, rejected


def _write_matches(conn, ctx: RunContext, settings: Settings, incoming, decided) -> None:
    import pandas as pd

    d = decided.set_index("incoming_id")
    dob = pd.to_datetime(incoming["dob"], errors="coerce")
    as_of = ctx.window_end.date()
    ages = [None if pd.isna(b) else as_of.year - b.year - ((as_of.month, as_of.day) < (b.month, b.day)) for b in dob]
    with conn.cursor() as cur, cur.copy(
            "COPY results.match (file_id, base_id, student_guid, person_id, status, rule, score, hidden, age_years, "
            "window_order, explanation) FROM STDIN") as copy:
        for k, r in enumerate(incoming.itertuples(index=False)):
            row = d.loc[r.incoming_id]
            status = row["status"]
            explanation = json.loads(row["explanation"] or "{}")
            if row["conflicting_fields"]:
                explanation["differing_fields"] = row["conflicting_fields"].split(";")
            age = ages[k]
            hidden = status == "unmatched" and age is not None and age > settings.b2b_s_age
            score = row["score"]
            copy.write_row((r.file_id, r.base_id, r.student_guid, row["person_id"] or None, status, row["rule"],
                            None if score is None or pd.isna(score) else float(score), hidden, age,
                            ctx.window_order, json.dumps(explanation, sort_keys=True)))


# ------------------------------------------------------------------ conflicts
def compare_sql(field: str, la: str, inc: str) -> str:
    if field == "dob":
        return f"('dob', to_char({la}, 'YYYY-MM-DD'), to_char({inc}, 'YYYY-MM-DD'), {la} = {inc})"
    if field == "postcode":
        norm = "upper(replace({}, ' ', ''))"
        return f"('postcode', {la}, {inc}, {norm.format(la)} = {norm.format(inc)})"
    if field in CASE_INSENSITIVE:
        return f"('{field}', {la}, {inc}, lower(btrim({la})) = lower(btrim({inc})))"
    return f"('{field}', {la}, {inc}, btrim({la}) = btrim({inc}))"


def _link_as_of(alias: str) -> str:
    """Join the child a school student (rows ``alias``) is linked to as of the run window:
    the newest match decision up to this window, when it is a link (not possible/unmatched).
    An index lookup per student on results.match (base_id, student_guid, window_order)."""
    return (f"JOIN LATERAL (SELECT lm.person_id, lm.status FROM results.match lm "
            f"WHERE lm.base_id = {alias}.base_id AND lm.student_guid = {alias}.student_guid "
            f"AND lm.window_order <= %(order)s ORDER BY lm.window_order DESC LIMIT 1) m "
            f"ON m.status IN ('matched', 'matched_with_conflicts')")


# an observation not settled by an officer or Clear Conflicts (the same test as the results.conflict view;
# written against the observations so it uses their indexes instead of grouping every conflict)
_UNRESOLVED = """NOT EXISTS (SELECT 1 FROM results.conflict_resolution r
                              WHERE r.person_id = o.person_id AND r.field = o.field
                                AND r.la_value IS NOT DISTINCT FROM o.la_value
                                AND r.incoming_value IS NOT DISTINCT FROM o.incoming_value)"""


def conflicts(conn, ctx: RunContext) -> dict:
    """Record each field where a matched student's incoming value differs from the LA's (F17).

    Observations are per file; ``results.conflict`` folds identical ones from repeated
    imports into one row with first/last seen and times seen (F20).
    """
    student_values = ", ".join(compare_sql(f, f"c.{f}", f"s.{f}") for f in IDENTITY_FIELDS)
    address_values = ", ".join(compare_sql(f, f"c.{f}", f"a.{f}") for f in ADDRESS_FIELDS)
    with conn.transaction():
        files = run_files(conn, ctx)
        conn.execute("DELETE FROM results.conflict_observation WHERE file_id = ANY(%s)", (files,))
        params = {"files": files, "end": ctx.window_end, "order": ctx.window_order}
        conn.execute(
            f"""INSERT INTO results.conflict_observation (file_id, base_id, student_guid, person_id, field,
                                                          la_value, incoming_value, window_end)
                SELECT s.file_id, s.base_id, s.student_guid, m.person_id, v.field, v.la_value, v.inc_value, %(end)s
                  FROM staging.student s
                  {_link_as_of('s')}
                  JOIN core.child c ON c.person_id = m.person_id
                 CROSS JOIN LATERAL (VALUES {student_values}) AS v(field, la_value, inc_value, same)
                 WHERE s.file_id = ANY(%(files)s) AND v.la_value IS NOT NULL AND v.inc_value IS NOT NULL
                   AND NOT v.same""", params)
        conn.execute(
            f"""INSERT INTO results.conflict_observation (file_id, base_id, student_guid, person_id, field,
                                                          la_value, incoming_value, window_end)
                SELECT a.file_id, a.base_id, a.student_guid, m.person_id, v.field, v.la_value, v.inc_value, %(end)s
                  FROM staging.address a
                  {_link_as_of('a')}
                  JOIN core.child c ON c.person_id = m.person_id
                 CROSS JOIN LATERAL (VALUES {address_values}) AS v(field, la_value, inc_value, same)
                 WHERE a.file_id = ANY(%(files)s) AND v.la_value IS NOT NULL AND v.inc_value IS NOT NULL
                   AND NOT v.same""", params)
        # the run's match decisions: conflicts open for the child -> matched_with_conflicts
        conn.execute(
            f"""UPDATE results.match m
                  SET status = CASE WHEN EXISTS (SELECT 1 FROM results.conflict_observation o
                                                  WHERE o.person_id = m.person_id AND {_UNRESOLVED})
                                    THEN 'matched_with_conflicts' ELSE 'matched' END
                WHERE m.file_id = ANY(%s) AND m.status IN ('matched', 'matched_with_conflicts')""", (files,))
        observed = conn.execute("SELECT count(*) FROM results.conflict_observation WHERE file_id = ANY(%s)",
                                (files,)).fetchone()[0]
        students = conn.execute(
            "SELECT count(DISTINCT (base_id, student_guid)) FROM results.conflict_observation WHERE file_id = ANY(%s)",
            (files,)).fetchone()[0]
        open_for_base = conn.execute(
            f"""SELECT count(DISTINCT (o.person_id, o.field, o.la_value, o.incoming_value))
                  FROM results.conflict_observation o WHERE o.base_id = %s AND {_UNRESOLVED}""",
            (ctx.base_id,)).fetchone()[0]
        counts = {"conflicts": observed, "students_with_conflicts": students, "open_conflicts_base": open_for_base}
        log_stage(conn, ctx, "conflicts", counts,
                  f"conflicts: {observed} field differences for {students} students; "
                  f"{open_for_base} open for this base")
    return counts


# ------------------------------------------------------------------ apply
APPLIED_FIELDS = IDENTITY_FIELDS + SCHOOL_FIELDS
APPLIED_ADDRESS = ("paon", "saon", "street", "locality", "town", "county", "postcode")


# A whole list group (SEN needs, exclusions) of a matched child, as one jsonb value; a new
# version only when it differs from the child's latest earlier version (F6: SIMS Primary
# re-sends the whole group when any item changes).
_GROUP_SQL = """
    INSERT INTO core.{table} (file_id, person_id, base_id, student_guid, window_order{extra_cols}, {list_key})
    SELECT g.file_id, m.person_id, g.base_id, g.student_guid, %(order)s{extra_vals}, g.items
      FROM (SELECT b.file_id, b.base_id, b.student_guid, b.content,
                   coalesce((SELECT jsonb_agg(n ORDER BY {order})
                               FROM jsonb_array_elements(core.jsonb_list(b.content->'{list_key}')) n),
                            '[]'::jsonb) AS items
              FROM raw.inbound_block b
             WHERE b.file_id = ANY(%(files)s) AND b.block_type = '{block}' AND b.disposition = 'loaded') g
      {link_g}
      LEFT JOIN LATERAL (SELECT x.{list_key} AS items FROM core.{table} x
                          WHERE x.person_id = m.person_id AND x.window_order < %(order)s
                          ORDER BY x.window_order DESC LIMIT 1) p ON true
     WHERE p.items IS DISTINCT FROM g.items
    ON CONFLICT (file_id, person_id) DO NOTHING"""


def _apply_sql(table: str, staging: str, fields: tuple[str, ...]) -> str:
    cols = ", ".join(fields)
    s_cols = ", ".join(f"s.{f}" for f in fields)
    la_cols = ", ".join(f"c.{f}" for f in fields)
    prev_cols = ", ".join(f"p.{f}" for f in fields)
    return f"""
        INSERT INTO core.{table} (file_id, person_id, base_id, student_guid, window_order, {cols})
        SELECT s.file_id, m.person_id, s.base_id, s.student_guid, %(order)s, {s_cols}
          FROM staging.{staging} s
          {_link_as_of('s')}
          JOIN core.child c ON c.person_id = m.person_id
          LEFT JOIN LATERAL (SELECT * FROM core.{table} x
                              WHERE x.person_id = m.person_id AND x.window_order < %(order)s
                              ORDER BY x.window_order DESC LIMIT 1) p ON true
         WHERE s.file_id = ANY(%(files)s)
           AND CASE WHEN p.person_id IS NULL THEN ROW({s_cols}) IS DISTINCT FROM ROW({la_cols})
                    ELSE ROW({s_cols}) IS DISTINCT FROM ROW({prev_cols}) END
        ON CONFLICT (file_id, person_id) DO NOTHING"""


def apply(conn, ctx: RunContext) -> dict:
    """Record matched students' new school data for the LA's current view (F6).

    The LA's own record (``core.child``) is never edited here: the school's values go to
    ``core.child_applied`` / ``core.child_applied_address`` and ``core.child_current``
    overlays them (school-owned fields from the school; identity fields only where the LA
    holds none — a differing identity value is a conflict for an officer). A student whose
    data equals what the LA already shows adds nothing. Rows cascade from their file, so
    a rerun rebuilds them exactly.
    """
    with conn.transaction():
        files = run_files(conn, ctx)
        conn.execute("DELETE FROM core.child_applied WHERE file_id = ANY(%s)", (files,))
        conn.execute("DELETE FROM core.child_applied_address WHERE file_id = ANY(%s)", (files,))
        params = {"files": files, "order": ctx.window_order}
        students = conn.execute(_apply_sql("child_applied", "student", APPLIED_FIELDS), params).rowcount
        addresses = conn.execute(_apply_sql("child_applied_address", "address", APPLIED_ADDRESS), params).rowcount
        conn.execute("DELETE FROM core.child_sen WHERE file_id = ANY(%s)", (files,))
        conn.execute("DELETE FROM core.child_exclusion WHERE file_id = ANY(%s)", (files,))
        link = _link_as_of("g")
        sen = conn.execute(_GROUP_SQL.format(
            link_g=link, table="child_sen", block="sen", extra_cols=", start_date",
            extra_vals=", (g.content->>'start_date')::date", list_key="needs",
            order="(n->>'ranking')::int, n->>'type'"), params).rowcount
        excl = conn.execute(_GROUP_SQL.format(
            link_g=link, table="child_exclusion", block="exclusions", extra_cols="", extra_vals="",
            list_key="exclusions", order="n->>'start_date', n->>'category'"), params).rowcount
        counts = {"children_updated": students, "addresses_updated": addresses, "sen_groups_updated": sen,
                  "exclusion_groups_updated": excl}
        log_stage(conn, ctx, "apply", counts,
                  f"apply: new school data for {students} matched children, {addresses} addresses")
    return counts
