"""Match stage: link each student loaded in this run to an LA child with ``b2b.matching``."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from b2b.config.settings import Settings
from b2b.context import RunContext, log_stage, one, run_files, scalar

if TYPE_CHECKING:
    from datetime import datetime

    from psycopg import Connection


def match(conn: Connection, ctx: RunContext, settings: Settings) -> dict:
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
        conn.execute("DELETE FROM results.anomaly WHERE file_id = ANY(%s) AND rule = %s", (files, GUID_ELSEWHERE))
        incoming = incoming_frame(conn, files, ctx.window_end)
        tf = term_frequencies(conn, incoming) if settings.matcher != "legacy" else None
        # a school at a time, several schools per part: the candidate query and the matcher's
        # frames stay bounded however large the run (a school stays whole: its roll is the
        # evidence for twins the LA does not know)
        for part in school_parts(incoming):
            core, links, rejected = core_candidates(conn, part)
            if settings.matcher == "legacy":
                decided = matching.legacy_match(core, part, guidmatch=settings.guidmatch, links=links)
            else:
                decided = matching.match(core, part, matching.MatchConfig(guidmatch=settings.guidmatch),
                                         links=links, rejected=rejected, tf=tf)
            decided = guid_linked_elsewhere(conn, part, decided)
            decided = child_linked_to_other_guid(conn, part, decided)
            _write_matches(conn, ctx, settings, part, decided)
        carers = match_carers(conn, ctx, settings, files)
        conn.execute(
            """INSERT INTO core.child_link (base_id, student_guid, person_id, linked_by, file_id)
               SELECT m.base_id, m.student_guid, m.person_id, 'match', m.file_id
                 FROM results.match m
                WHERE m.file_id = ANY(%s) AND m.status IN ('matched', 'matched_with_conflicts')
               ON CONFLICT (base_id, student_guid) DO NOTHING""", (files,))
        by_status: dict[str, int] = dict(conn.execute(
            "SELECT status, count(*) FROM results.match WHERE file_id = ANY(%s) GROUP BY status", (files,)).fetchall())
        by_rule: dict[str, int] = dict(conn.execute(
            "SELECT rule, count(*) FROM results.match WHERE file_id = ANY(%s) GROUP BY rule", (files,)).fetchall())
        hidden = scalar(conn, "SELECT count(*) FROM results.match WHERE file_id = ANY(%s) AND hidden",
                              (files,))
        matched = by_status.get("matched", 0) + by_status.get("matched_with_conflicts", 0)
        counts = {"students": sum(by_status.values()), "matched": matched,
                  "possible": by_status.get("possible", 0), "unmatched": by_status.get("unmatched", 0),
                  "unmatched_hidden": hidden, "by_rule": by_rule, "matcher": settings.matcher, "carers": carers}
        log_stage(conn, ctx, "match", counts,
                  f"match ({settings.matcher}): {counts['students']} students, {matched} matched, "
                  f"{counts['possible']} possible, {counts['unmatched']} unmatched "
                  f"({hidden} hidden: older than B2B_S_AGE {settings.b2b_s_age})")
    return counts


GUID_ELSEWHERE = "guid_linked_elsewhere"
#: students matched together (whole schools): bounds the candidate query and the matcher's memory
PART_STUDENTS = 20_000


def guid_linked_elsewhere(conn: Connection, incoming: Any, decided: Any) -> Any:
    """A pupil carrying a GUID that is linked to an LA child under another base (issue 9 item 3).

    An MIS GUID belongs to one school's record; the same GUID arriving from a second base is a
    copied or corrupted record. It is never linked a second time: the record goes to review
    (``possible``, rule ``guid_linked_elsewhere``, with the matcher's candidate or else the
    child linked under the other base), and a ``results.anomaly`` row names the base, the file
    and the record's position (the other base's id is its value: no personal data)."""
    import numpy as np
    import pandas as pd

    if not len(incoming):
        return decided
    rows = conn.execute(
        """SELECT DISTINCT ON (x.iid) x.iid, l.base_id, l.person_id
             FROM core.child_link l
             JOIN unnest(%s::text[], %s::text[], %s::text[]) AS x(iid, base_id, guid)
               ON l.student_guid = x.guid AND l.base_id <> x.base_id
            ORDER BY x.iid, l.base_id""",
        (list(incoming["incoming_id"]), list(incoming["base_id"]), list(incoming["guid"]))).fetchall()
    if not rows:
        return decided
    other = pd.DataFrame(rows, columns=["incoming_id", "other_base", "other_person"]).set_index("incoming_id")
    decided = decided.copy()
    hit = decided["incoming_id"].isin(other.index).values
    o = other.reindex(decided["incoming_id"].values[hit])
    pid = decided["person_id"].values[hit]
    decided.loc[hit, "person_id"] = np.where(pid == "", o["other_person"].values, pid)
    decided.loc[hit, "status"] = "possible"
    decided.loc[hit, "rule"] = GUID_ELSEWHERE
    expl = []
    for e, b in zip(decided["explanation"].values[hit], o["other_base"].values):
        d = json.loads(e or "{}")
        d[GUID_ELSEWHERE] = {"base_id": b}
        d["why_not_auto"] = [*d.get("why_not_auto", []), GUID_ELSEWHERE]
        expl.append(json.dumps(d, sort_keys=True))
    decided.loc[hit, "explanation"] = expl
    pos = incoming.drop_duplicates("incoming_id").set_index("incoming_id")
    with conn.cursor() as cur, cur.copy(
            "COPY results.anomaly (file_id, ordinal, base_id, student_guid, block_type, rule, field, value) "
            "FROM STDIN") as copy:
        for iid, b in zip(o.index, o["other_base"].values):
            r = pos.loc[iid]
            copy.write_row((r["file_id"], r["ordinal"], r["base_id"], r["student_guid"], "student", GUID_ELSEWHERE,
                            "student_guid", b))
    return decided


OTHER_GUID = "child_linked_to_other_guid"


def child_linked_to_other_guid(conn: Connection, incoming: Any, decided: Any) -> Any:
    """An automatic link to a child the LA already links, under the same base, to another
    GUID is not made: one school holds one record per child. The record goes to review
    (``possible``, ``why_not_auto`` ``child_linked_to_other_guid``). This is the guard for the
    twin the LA does not know that arrives alone (a changed-data run without the other twin)
    carrying its twin's UPN: the other twin's GUID link stops it. Officer links stand."""
    import numpy as np

    auto = decided["status"].isin(["matched", "matched_with_conflicts"]).values & \
        (decided["rule"].values != "officer_link")
    if not auto.any():
        return decided
    rows = conn.execute(
        """SELECT DISTINCT x.iid
             FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) AS x(iid, base_id, guid, person_id)
             JOIN core.child_link l ON l.base_id = x.base_id AND l.person_id = x.person_id
                                   AND l.student_guid <> x.guid""",
        (list(decided["incoming_id"].values[auto]), list(incoming["base_id"].values[auto]),
         list(incoming["guid"].values[auto]), list(decided["person_id"].values[auto]))).fetchall()
    if not rows:
        return decided
    decided = decided.copy()
    hit = decided["incoming_id"].isin({r[0] for r in rows}).values & auto
    decided.loc[hit, "status"] = "possible"
    expl = []
    for e in decided["explanation"].values[hit]:
        d = json.loads(e or "{}")
        d["why_not_auto"] = [*d.get("why_not_auto", []), OTHER_GUID]
        expl.append(json.dumps(d, sort_keys=True))
    decided.loc[hit, "explanation"] = np.array(expl, dtype=object)
    return decided


def incoming_frame(conn: Connection, files: list[int], window_end: datetime) -> Any:
    """The run's students as matcher input, with their latest address as of the window."""
    import pandas as pd

    from b2b.matching import INCOMING_COLUMNS

    rows = conn.execute(
        """SELECT s.file_id::text || '|' || s.student_guid, s.base_id, s.upn, s.student_guid, s.forename,
                  s.middle_names, s.surname, s.gender, s.dob, a.postcode, a.address_line1, s.file_id, s.student_guid,
                  s.ordinal
             FROM staging.student s
             LEFT JOIN LATERAL (
                  SELECT sa.postcode, concat_ws(' ', sa.paon, sa.street) AS address_line1
                    FROM staging.address sa JOIN raw.inbound_file f ON f.file_id = sa.file_id
                   WHERE sa.base_id = s.base_id AND sa.student_guid = s.student_guid AND f.window_end <= %s
                   ORDER BY f.window_end DESC, sa.file_id DESC LIMIT 1) a ON true
            WHERE s.file_id = ANY(%s)
            ORDER BY s.file_id, s.student_guid""", (window_end, files)).fetchall()
    return pd.DataFrame(rows, columns=INCOMING_COLUMNS + ["file_id", "student_guid", "ordinal"])


def core_candidates(conn: Connection, incoming: Any) -> Any:
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
    # the matcher's own keys per student, as tuples: each branch below asks for exactly the LA
    # children one blocking key of b2b.matching can pair with these students (no more: a
    # DOB alone or a surname alone would pull in most of a large LA)
    dob = pd.to_datetime(incoming["dob"], errors="coerce")
    fn = incoming["forename"].map(lambda v: name_key(v) if isinstance(v, str) else "")
    sn = incoming["surname"].map(lambda v: name_key(v) if isinstance(v, str) else "")
    pc = incoming["postcode"].map(lambda v: postcode_key(v) if isinstance(v, str) else "")
    year = dob.dt.year.fillna(0).astype(int)
    has = dob.notna()

    def tuples(*cols: Any, keep: Any = None) -> Any:
        df = pd.DataFrame({f"k{k}": c.values for k, c in enumerate(cols)})
        ok = pd.Series(True, index=df.index) if keep is None else pd.Series(keep.values, index=df.index)
        for c in df.columns:
            ok &= df[c].notna() & (df[c].astype(str) != "") & (df[c].astype(str) != "0")
        df = df[ok].drop_duplicates()
        return [df[c].tolist() for c in df.columns]

    d = dob.dt.date
    swap_ok = has & (dob.dt.day <= 12) & (dob.dt.day != dob.dt.month)
    swapped = pd.Series([x.replace(month=x.day, day=x.month) if ok else None for x, ok in zip(dob, swap_ok)],
                        dtype=object).map(lambda x: x.date() if x is not None else None)
    dob_sn = [a + b for a, b in zip(tuples(d, sn.str[:1], keep=has), tuples(swapped, sn.str[:1], keep=swap_ok))]
    parts = incoming["surname"].map(lambda v: [p for p in name_parts(v) if len(p) >= 2] if isinstance(v, str) else [])
    ex = pd.DataFrame({"p": parts, "y": year, "l": fn.str[:1]}).explode("p")
    params = {
        "upns": sorted({str(u).upper().replace(" ", "") for u in incoming["upn"].dropna() if u}),
        "pids": sorted(set(links["person_id"])),
        "dsn_d": dob_sn[0], "dsn_l": dob_sn[1],
        **dict(zip(("dfn_d", "dfn_l"), tuples(d, fn.str[:1], keep=has))),
        **dict(zip(("syf_s", "syf_y", "syf_l"), tuples(sn, year, fn.str[:1]))),
        **dict(zip(("pyf_p", "pyf_y", "pyf_l"), tuples(ex["p"], ex["y"], ex["l"]))),
        **dict(zip(("py_p", "py_y"), tuples(pc, year))),
        **dict(zip(("fs_f", "fs_s"), tuples(fn, sn))),
    }
    # the m_* columns are the matcher's own keys, stored and indexed (migration 0010): every branch
    # is an index lookup, and together they cover every blocking key of b2b.matching
    cols = "c.person_id, c.upn, NULL::text AS guid, c.forename, c.middle_names, c.surname, c.gender, c.dob, " \
           "c.postcode, concat_ws(' ', c.paon, c.street) AS address_line1"
    # inactive children (gone from the LA's full extract, b2b core load) are never candidates
    rows = conn.execute(
        f"""SELECT {cols} FROM core.child c WHERE c.active AND c.person_id IN (
                  SELECT c.person_id FROM core.child c WHERE c.m_upn = ANY(%(upns)s)
            UNION SELECT c.person_id FROM core.child c WHERE c.person_id = ANY(%(pids)s)
            UNION SELECT c.person_id FROM core.child c
                    JOIN unnest(%(dsn_d)s::date[], %(dsn_l)s::text[]) x(d, l) ON c.dob = x.d AND left(c.m_sn, 1) = x.l
            UNION SELECT c.person_id FROM core.child c
                    JOIN unnest(%(dfn_d)s::date[], %(dfn_l)s::text[]) x(d, l) ON c.dob = x.d AND left(c.m_fn, 1) = x.l
            UNION SELECT c.person_id FROM core.child c
                    JOIN unnest(%(syf_s)s::text[], %(syf_y)s::int[], %(syf_l)s::text[]) x(s, y, l)
                      ON c.m_sn = x.s AND c.m_year = x.y AND left(c.m_fn, 1) = x.l
            UNION SELECT c.person_id FROM core.child c
                    JOIN unnest(%(pyf_p)s::text[], %(pyf_y)s::int[], %(pyf_l)s::text[]) x(p, y, l)
                      ON c.m_sn = x.p AND c.m_year = x.y AND left(c.m_fn, 1) = x.l
            UNION SELECT c.person_id FROM core.child c CROSS JOIN LATERAL unnest(c.m_sn_parts) AS cp(p)
                    JOIN unnest(%(pyf_p)s::text[], %(pyf_y)s::int[], %(pyf_l)s::text[]) x(p, y, l)
                      ON cp.p = x.p AND c.m_year = x.y AND left(c.m_fn, 1) = x.l
                   WHERE cardinality(c.m_sn_parts) > 1
            UNION SELECT c.person_id FROM core.child c
                    JOIN unnest(%(py_p)s::text[], %(py_y)s::int[]) x(p, y) ON c.m_pc = x.p AND c.m_year = x.y
            UNION SELECT c.person_id FROM core.child c
                    JOIN unnest(%(fs_f)s::text[], %(fs_s)s::text[]) x(f, s) ON c.m_fn = x.f AND c.m_sn = x.s
            ) ORDER BY 1""", params).fetchall()
    return pd.DataFrame(rows, columns=CORE_COLUMNS), links, rejected


def match_carers(conn: Connection, ctx: RunContext, settings: Settings, files: list[int]) -> dict:
    """F14: the run's school contacts matched to the LA's person records, with the student
    matcher: LA adults (``core.adult``) and LA children at least ``settings.carer_min`` years
    old on the window's date. A contact has no DOB, so a missing DOB does not stop a link;
    name, gender, home postcode and address carry it, with the same margin and corroboration
    (a son of the same name at the same address makes it ambiguous: an officer decides).
    Decisions go to ``results.carer_match``, one row per contact per file."""
    import pandas as pd

    from b2b import matching

    conn.execute("DELETE FROM results.carer_match WHERE file_id = ANY(%s)", (files,))
    rows = conn.execute(
        """SELECT DISTINCT ON (c.file_id, c.person_id)
                  c.file_id::text || '|' || c.person_id, c.base_id, NULL, c.person_id, c.forename, NULL, c.surname,
                  c.gender, NULL::date, h.postcode, h.line, c.file_id, c.student_guid, c.person_id
             FROM staging.contact c
             LEFT JOIN LATERAL (
                  SELECT a->>'postcode' AS postcode, concat_ws(' ', a->>'paon', a->>'street') AS line
                    FROM jsonb_array_elements(coalesce(c.addresses, '[]')) a
                   WHERE a->>'type' = 'H' ORDER BY a->>'start_date' DESC NULLS LAST LIMIT 1) h ON true
            WHERE c.file_id = ANY(%s) AND c.person_id IS NOT NULL
            ORDER BY c.file_id, c.person_id, c.student_guid""", (files,)).fetchall()
    if not rows:
        return {"contacts": 0, "matched": 0, "possible": 0}
    contacts = pd.DataFrame(rows, columns=matching.INCOMING_COLUMNS + ["file_id", "student_guid", "contact_id"])
    sns = sorted({matching.name_key(v) for v in contacts["surname"].dropna()} - {""})
    pcs = sorted({matching.postcode_key(v) for v in contacts["postcode"].dropna()} - {""})
    norm_sn = "regexp_replace(lower(surname), '[^a-z]', '', 'g')"
    cols = "person_id, upn, NULL::text, forename, middle_names, surname, gender, dob, postcode, " \
           "concat_ws(' ', paon, street)"
    people = conn.execute(
        f"""SELECT {cols}, 'child' FROM core.child WHERE active AND (m_sn = ANY(%(sns)s) OR m_pc = ANY(%(pcs)s))
                AND dob <= (%(asof)s::date - make_interval(years => %(min)s))
            UNION ALL
            SELECT person_id, NULL, NULL, forename, middle_names, surname, gender, dob, postcode,
                   concat_ws(' ', paon, street), 'adult'
              FROM core.adult WHERE {norm_sn} = ANY(%(sns)s) OR upper(replace(postcode, ' ', '')) = ANY(%(pcs)s)
            ORDER BY 1""",
        {"sns": sns, "pcs": pcs, "asof": ctx.window_end.date(), "min": settings.carer_min}).fetchall()
    core = pd.DataFrame(people, columns=matching.CORE_COLUMNS + ["kind"])
    cfg = matching.MatchConfig(guidmatch=False, dob_required=False)
    decided = matching.match(core[matching.CORE_COLUMNS], contacts[matching.INCOMING_COLUMNS], cfg,
                             min_age=settings.carer_min, as_of=ctx.window_end.date())
    kind = dict(zip(core["person_id"], core["kind"]))
    d = decided.set_index("incoming_id")
    with conn.cursor() as cur, cur.copy(
            "COPY results.carer_match (file_id, base_id, contact_id, student_guid, person_id, person_kind, status, "
            "rule, score, explanation) FROM STDIN") as copy:
        for r in contacts.itertuples(index=False):
            row = d.loc[r.incoming_id]
            pid = row["person_id"] or None
            score = row["score"]
            copy.write_row((r.file_id, r.base_id, r.contact_id, r.student_guid, pid, kind.get(pid) if pid else None,
                            row["status"], row["rule"], None if pd.isna(score) else float(score),
                            row["explanation"]))
    counts = decided["status"].value_counts().to_dict()
    return {"contacts": len(contacts), "matched": counts.get("matched", 0) + counts.get("matched_with_conflicts", 0),
            "possible": counts.get("possible", 0)}


def term_frequencies(conn: Connection, incoming: Any) -> Any:
    """The LA's name frequencies for these students' names (counted over every LA child, as
    ``b2b match`` counts them over the whole CORE.csv), for the term-frequency adjustment."""
    from b2b.matching import name_key
    from b2b.matching.comparisons import TermFrequencies

    counts: dict[str, dict] = {}
    totals: dict[str, Any] = {}
    for col, key, values in (("fn", "m_fn", incoming["forename"]), ("sn", "m_sn", incoming["surname"])):
        keys = sorted({name_key(v) for v in values.dropna()} - {""})
        counts[col] = dict(conn.execute(f"SELECT {key}, count(*) FROM core.child WHERE {key} = ANY(%s) GROUP BY 1",
                                        (keys,)).fetchall())
        n, sq = one(conn, f"""SELECT coalesce(sum(c), 0), coalesce(sum(c * c), 0)
                                   FROM (SELECT count(*) AS c FROM core.child WHERE {key} <> '' GROUP BY {key}) x""")
        totals[col] = (int(n), int(sq))
    return TermFrequencies(counts, totals)


def school_parts(incoming: Any, size: int = PART_STUDENTS) -> Iterator[Any]:
    """The run's students in parts of about ``size``, whole schools each."""
    if len(incoming) <= size:
        yield incoming
        return
    counts = incoming.groupby("base_id", sort=True).size()
    part, n = [], 0
    for base, k in counts.items():
        part.append(base)
        n += k
        if n >= size:
            yield incoming[incoming["base_id"].isin(part)]
            part, n = [], 0
    if part:
        yield incoming[incoming["base_id"].isin(part)]


def _write_matches(conn: Connection, ctx: RunContext, settings: Settings, incoming: Any, decided: Any) -> None:
    """COPY one ``results.match`` row per incoming student (``decided`` is row-aligned with it)."""
    import pandas as pd

    assert len(decided) == len(incoming)
    dob = pd.to_datetime(incoming["dob"], errors="coerce")
    as_of = ctx.window_end.date()
    ages = [None if pd.isna(b) else as_of.year - b.year - ((as_of.month, as_of.day) < (b.month, b.day)) for b in dob]
    cols = [incoming[c].tolist() for c in ("file_id", "base_id", "student_guid")] + \
        [decided[c].tolist() for c in ("person_id", "status", "rule", "score", "conflicting_fields", "explanation")]
    with conn.cursor() as cur, cur.copy(
            "COPY results.match (file_id, base_id, student_guid, person_id, status, rule, score, hidden, age_years, "
            "window_order, explanation) FROM STDIN") as copy:
        for (file_id, base_id, guid, pid, status, rule, score, _differ, expl), age in zip(zip(*cols), ages):
            # the explanation already names the differing fields (b2b.matching.decide)
            hidden = status == "unmatched" and age is not None and age > settings.b2b_s_age
            copy.write_row((file_id, base_id, guid, pid or None, status, rule,
                            None if score is None or pd.isna(score) else float(score), hidden, age,
                            ctx.window_order, expl or "{}"))
