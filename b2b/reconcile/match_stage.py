"""Match stage: link each student loaded in this run to an LA child with ``b2b.matching``.

Set-based around the matcher (issue 15): the run's blocking keys go to temporary tables by
COPY, and ONE statement finds every school part's candidate LA children (hash joins over
``core.child``, not one index-probe query per part); each part's candidates are then read by
the part number. The matcher decides a part (whole schools) at a time, so its frames stay
bounded however large the run; the decisions are written by one COPY per part, and the
two GUID guards are one UPDATE each over the run's ``results.match`` rows. A run of one small
part (a school's run) sends its keys as array parameters instead of temporary tables. A run
of several parts (an LA's first load) reads and prepares every active LA child once and
builds blocking's LA side once (``blocking.LAIndex``): each part is paired as ``b2b match``
pairs it, without the candidate statement. A run of a few students (a school's changed-data
run) is ~7 round trips: its statements go in pipelines whose rows are read after their sync,
and its few decisions are INSERTed (``_write_rows``) in the guards' round trip, not COPYed.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import closing, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from b2b import forked, gc_control
from b2b.config.settings import Settings
from b2b.context import RunContext, log_stage, run_files, scalar
from b2b.reconcile import stale_stats

if TYPE_CHECKING:
    from datetime import datetime

    from psycopg import Connection


def _object_strings(stage: Any) -> Any:
    """The stage runs with pandas' text as Python objects (``b2b.matching.object_strings``:
    a school run's many small frames, read back value by value, skip Arrow's conversions)."""
    import functools

    @functools.wraps(stage)
    def run(*args: Any, **kwargs: Any) -> Any:
        from b2b.matching import object_strings

        with object_strings():
            return stage(*args, **kwargs)

    return run


#: the cyclic garbage collector's youngest-generation threshold while the stage runs (Python's
#: default 700): a school run allocates ~25k tracked objects (key tuples, candidate rows, pairs),
#: few in cycles; at 700 the collector ran ~37 times a run, and a full collection (every
#: ~10 runs, over every object of the process) cost ~47 ms at 86k tracked objects: ~8.5 ms of
#: a run's ~100 ms of CPU in the bench, more in a task process holding Airflow's objects (issue 15;
#: ``b2b.gc_control``: the threshold back as it was when nothing runs under it)
GC_YOUNG_THRESHOLD = 50_000
@gc_control.young_threshold(GC_YOUNG_THRESHOLD)
@_object_strings
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
        # a rerun's earlier decisions, links and GUID anomalies (one statement), the students and
        # the school contacts (a rerun's carer decisions removed first): one round trip, the
        # rows read once the pipeline is synced (a read inside it is a round trip of its own)
        with conn.pipeline():
            conn.execute("""WITH m AS (DELETE FROM results.match WHERE file_id = ANY(%(files)s)),
                                 l AS (DELETE FROM core.child_link WHERE file_id = ANY(%(files)s))
                            DELETE FROM results.anomaly WHERE file_id = ANY(%(files)s) AND rule = %(rule)s""",
                         {"files": files, "rule": GUID_ELSEWHERE})
            outgrown = stale_stats.check(conn, GROWING_TABLES, growth=stale_stats.MATCH_GROWTH)
            students = conn.execute(_INCOMING, (ctx.window_end, files))
            school_contacts = _send_carer_contacts(conn, files)
        if students.rowcount > PART_STUDENTS:
            # an LA's first load (several parts): read again by COPY into Arrow columns, never
            # as Python rows (256k rows: ~280 MB the interpreter's allocator kept to the end,
            # and the forked processes copied as they reused it; issue 15)
            students.close()
            with matching.arrow_strings():
                incoming = copy_frame(conn, _INCOMING, (ctx.window_end, files), _INCOMING_COLUMNS,
                                      ints=("file_id", "ordinal"))
        else:
            incoming = _incoming(students.fetchall())
        del students
        outgrown.analyse()  # (one run at a time: the others go on with the statistics there are)
        # (a run without students, as many are on a changed-data day: no candidates, no matcher)
        # (the name frequencies: read with a small run's candidates, in one round trip)
        tf = PendingFrequencies(incoming) if settings.matcher != "legacy" and len(incoming) else None
        # a school at a time, several schools per part: the matcher's frames stay bounded however
        # large the run (a school stays whole: its roll is the evidence for twins the LA does not know)
        parts = list(school_parts(incoming)) if len(incoming) else []
        del incoming  # (the parts hold its rows: not twice in memory)
        # (the school contacts as Python rows once the decisions are made: an LA's first load
        # has ~1.5 a student; until then their result stays in the driver's compact buffer)
        contacts: list[tuple] = school_contacts.fetchall() if len(parts) <= 1 else []
        # a run of a few students (a school's changed-data run) sends its statements in
        # pipelines: its candidates' reads one round trip; its decisions (INSERTed, not
        # COPYed: _write_rows), the guards, the links, the counts and the carers' reads the next
        small = len(parts) <= 1 and sum(len(p) for p in parts) <= SMALL_WRITE_ROWS
        large = sum(len(p) for p in parts) > GUARD_JOIN_STUDENTS
        if small:
            with conn.pipeline():
                _decide_parts(conn, ctx, settings, files, parts, tf)
                counted_cur, reads = _guard_link_count(conn, ctx, settings, files, bool(parts), contacts, large)
        else:
            # several parts (an LA's first load): pandas' Arrow strings for their large frames
            with matching.arrow_strings() if len(parts) > 1 else nullcontext(), \
                    _arrow_on_the_c_heap() if len(parts) > 1 else nullcontext():
                _decide_parts(conn, ctx, settings, files, parts, tf)
            if len(parts) > 1:
                contacts = school_contacts.fetchall()
            with conn.pipeline():
                counted_cur, reads = _guard_link_count(conn, ctx, settings, files, bool(parts), contacts, large)
        del school_contacts
        counted = counted_cur.fetchall()
        # the carers' decisions and the stage's log row: one round trip (a few contacts: INSERTed)
        with conn.pipeline() if len(contacts) <= SMALL_WRITE_ROWS else nullcontext():
            carers = match_carers(conn, ctx, settings, files, contacts, reads)
            by_status: dict[str, int] = {}
            by_rule: dict[str, int] = {}
            hidden = 0
            for status, rule, hid, n in counted:
                by_status[status] = by_status.get(status, 0) + n
                by_rule[rule] = by_rule.get(rule, 0) + n
                hidden += n if hid else 0
            matched = by_status.get("matched", 0) + by_status.get("matched_with_conflicts", 0)
            counts = {"students": sum(by_status.values()), "matched": matched,
                      "possible": by_status.get("possible", 0), "unmatched": by_status.get("unmatched", 0),
                      "unmatched_hidden": hidden, "by_rule": by_rule, "matcher": settings.matcher, "carers": carers}
            log_stage(conn, ctx, "match", counts,
                      f"match ({settings.matcher}): {counts['students']} students, {matched} matched, "
                      f"{counts['possible']} possible, {counts['unmatched']} unmatched "
                      f"({hidden} hidden: older than B2B_S_AGE {settings.b2b_s_age})")
    return counts


def _guard_link_count(conn: Connection, ctx: RunContext, settings: Settings, files: list[int], decided: bool,
                      contacts: list[tuple], large: bool = False) -> tuple[Any, Any]:
    """:func:`match`'s statements after the decisions, sent together (the caller's pipeline: one
    round trip, issue 15): the guards, in order (each reads the changes of the one before; none
    without decisions), the automatic links, the counts by status and rule (a cursor, read once
    the pipeline is synced) and the carers' reads (after the guards: they read the own students'
    links). ``large``: a run of more than :data:`GUARD_JOIN_STUDENTS` students: the guards and the
    links run with nested loops off, whatever the statistics say (a replay of an LA's first
    load: :data:`_GUID_ELSEWHERE_LARGE_SQL`)."""
    if decided:
        if large:  # (no plan of a loop over every record: see _GUID_ELSEWHERE_LARGE_SQL)
            conn.execute(_NO_NESTLOOP)
        conn.execute(_GUID_ELSEWHERE_LARGE_SQL if large else _GUID_ELSEWHERE_SQL,
                     {"files": files})  # guid_linked_elsewhere
        conn.execute(_OTHER_GUID_SQL, (files,))  # child_linked_to_other_guid
        if settings.matcher != "legacy":
            conn.execute(_EARLIER_LINKS, {"files": files})  # earlier_overwhelming_links
        conn.execute(
            """INSERT INTO core.child_link (base_id, student_guid, person_id, linked_by, file_id)
               SELECT m.base_id, m.student_guid, m.person_id, 'match', m.file_id
                 FROM results.match m
                WHERE m.file_id = ANY(%s) AND m.status IN ('matched', 'matched_with_conflicts')
               ON CONFLICT (base_id, student_guid) DO NOTHING""", (files,))
        if large:
            conn.execute(_NESTLOOP_BACK)
    counted = conn.execute("SELECT status, rule, hidden, count(*) FROM results.match WHERE file_id = ANY(%s) "
                           "GROUP BY 1, 2, 3", (files,))
    reads = CarerReads(conn, contacts, ctx.window_end.date(), settings.carer_min, files) if contacts else None
    return counted, reads


#: the run tables the stage reads by key, which an LA's first snapshot outgrows (``stale_stats``):
#: the GUID guard's self-join of results.match, the carers' read joined to core.child_link
GROWING_TABLES = stale_stats.growing("results.match", "core.child_link")


def _decide_parts(conn: Connection, ctx: RunContext, settings: Settings, files: list[int], parts: list[Any],
                  tf: Any) -> None:
    """:func:`match`'s decisions, part by part, written to ``results.match``: each part decided
    by the matcher, then the parts whose decisions depend on other parts decided again."""
    from b2b import matching

    # the matcher prepares the run's candidate LA children once; each part takes its own
    prepared = settings.matcher != "legacy"
    cfg = matching.MatchConfig(guidmatch=settings.guidmatch, school_evidence=settings.school_evidence)
    # parts that may be decided again once every part is written: those with such a link, and
    # (several parts) those proposing a child to a record whose forename only resembles it
    again: dict[int, tuple] = {}
    # (several parts) which parts' results.match rows hold each LA child, as written
    holders = PartHolders() if len(parts) > 1 else None
    pending = tf if isinstance(tf, PendingFrequencies) else None
    candidates = run_candidates(conn, parts, prepared=prepared, frequencies=pending)
    # a run of several parts (an LA's first load) decides its parts in forked processes, one
    # per core (b2b.forked), the parent writing each part's decisions as they come, in order
    procs = forked.processes() if len(parts) > 1 and prepared else 1
    with _spill_dir() if procs > 1 else nullcontext() as spill_dir:
        firsts: Any
        if procs > 1:
            items = list(candidates)  # (each part's view of the LA prepared once: shared, not copied)
            if pending is not None:
                tf, pending = pending.result(conn), None
            firsts = _first_pass_forked(parts, items, cfg, tf, procs, str(spill_dir))
        else:
            firsts = _first_pass(conn, parts, candidates, settings, cfg, tf, pending)
        with closing(firsts):  # (a failure here stops and reaps the forked processes at once)
            for part_no, part, (core, links, rejected), decided, over, resembling, spilled in firsts:
                if over or resembling:
                    again[part_no] = (part, core, links, rejected, spilled, over)
                _write_matches(conn, ctx, settings, part, decided)
                if holders is not None:
                    holders.add(part_no, decided["person_id"].tolist())
                del decided
    if pending is not None:  # (resolved by the first pass, which read them: kept there)
        tf = pending.result(conn)
    # the children each part's records claim exactly from other parts (b2b match sees them in its batch)
    elsewhere = claims_in_other_parts(conn, files) if again and len(parts) > 1 else {}
    k_of = (lambda part_no: part_no) if len(parts) > 1 else (lambda part_no: None)
    # (several parts, several processes) the parts decided again in forked processes, each with
    # the claims as the first pass left them; below, in order, a part whose claims an earlier
    # part's new decisions changed is decided again here: the same decisions as one by one
    ahead: dict[int, Any] = {}
    results: Any = None
    if procs > 1 and len(again) > 1:
        asked = [(part_no, claimed_outside(conn, files, entry[5], k_of(part_no), holders) if entry[5] else set(),
                  elsewhere.get(part_no, set())) for part_no, entry in again.items()]
        asked = [a for a in asked if a[1] or a[2]]
        if len(asked) > 1:
            entries = [again[part_no] for part_no, _, _ in asked]
            results = forked.ordered_map(
                lambda i: _decide_again(entries[i], asked[i][1], asked[i][2], cfg, tf), len(asked), procs,
                PARTS_PER_PROCESS)
            ahead = {part_no: (claimed, results) for part_no, claimed, _ in asked}
    with closing(results) if results is not None else nullcontext():
        _decide_again_in_order(conn, ctx, settings, files, again, elsewhere, k_of, holders, ahead, cfg, tf)
    del again
    if settings.matcher != "legacy" and len(parts) > 1:
        claimed_exactly_in_another_part(conn, files)


def _decide_again_in_order(conn: Connection, ctx: RunContext, settings: Settings, files: list[int],
                           again: dict[int, tuple], elsewhere: dict[int, set[str]], k_of: Any,
                           holders: PartHolders | None, ahead: dict[int, Any], cfg: Any, tf: Any) -> None:
    """:func:`_decide_parts`' second pass, part by part in order: each part's claims from
    outside it as they are now (the parts before it written again), the part decided again
    with them (or its decisions from ``ahead``, made in a forked process, when they were made
    with the same claims), and the records whose decision changed written again."""
    for part_no, entry in again.items():
        part, core, links, rejected, spilled, over = entry
        # (a run of several parts keeps its records' part numbers in a table: match_in)
        claimed = claimed_outside(conn, files, over, k_of(part_no), holders) if over else set()
        claims = elsewhere.get(part_no, set())
        got = None
        if part_no in ahead:
            asked_claimed, results = ahead[part_no]
            got = next(results)  # (read in order, whether used or not)
            if asked_claimed != claimed:
                got = None
        if not claimed and not claims:
            if spilled is not None:
                spilled.close()
            continue
        if got is None:  # decided again as the matcher decides with those records in its batch
            got = _decide_again(entry, claimed, claims, cfg, tf)
        elif spilled is not None:
            spilled.close()
        changed, before, decided = got
        if changed is not None:  # only the records whose decision changed are written again
            if holders is not None:
                holders.remove(part_no, before)
                holders.add(part_no, decided["person_id"].tolist())
            part = part[changed]
        conn.execute(
            """DELETE FROM results.match m WHERE m.file_id = ANY(%s)
                  AND (m.base_id, m.student_guid) IN (SELECT * FROM unnest(%s::text[], %s::text[]))""",
            (files, part["base_id"].tolist(), part["student_guid"].tolist()))
        _write_matches(conn, ctx, settings, part, decided)


def _decide_again(entry: tuple, claimed: set[str], claims: set[str], cfg: Any, tf: Any) -> tuple:
    """A part decided again with the claims of records outside it (``claimed``: links checked
    across runs; ``claims``: exact claims of other parts), from its spilled first pass when
    there is one: (the rows whose decision changed (a boolean array), their children before,
    their new decisions), or (None, None, every new decision) without a first pass kept."""
    from b2b import matching

    part, core, links, rejected, spilled, _over = entry
    kept = _unspilled(spilled)
    decided = matching.match(core, part, cfg, links=links, rejected=rejected, tf=tf, claimed=claimed or None,
                             reuse=kept, claims_elsewhere=claims or None)
    if kept is None:
        return None, None, decided
    changed = _changed(kept["decided"], decided)
    return changed, kept["decided"]["person_id"][changed].tolist(), decided[changed]


def _first_pass(conn: Connection, parts: list[Any], candidates: Iterator[tuple[Any, Any, Any]], settings: Settings,
                cfg: Any, tf: Any, pending: Any) -> Iterator[tuple]:
    """:func:`_decide_parts`'s first pass in this process, part by part: (part number, part,
    its candidates, decisions, the children linked on rules checked across runs
    (:func:`cross_run_links`), whether a proposal rests on a forename that only resembles
    the child's, the matcher's kept inputs spilled to a file or None)."""
    from b2b import matching

    for part_no, (part, cands) in enumerate(zip(parts, candidates)):
        if pending is not None:  # (read with the first part's candidates, or now)
            tf, pending = pending.result(conn), None
        core, links, rejected = cands
        if settings.matcher == "legacy":
            yield (part_no, part, cands, matching.legacy_match(core, part, guidmatch=settings.guidmatch, links=links),
                   [], False, None)
            continue
        decided, over, resembling, kept = _decide_first(part, cands, cfg, tf, len(parts) > 1)
        yield part_no, part, cands, decided, over, resembling, _spilled(kept) if over or resembling else None


def _decide_first(part: Any, cands: tuple[Any, Any, Any], cfg: Any, tf: Any, several: bool) -> tuple:
    """A part's first decisions by the matcher: (decisions, :func:`cross_run_links`, whether a
    proposal rests on a resembling forename (several parts only), the matcher's kept inputs
    with the decisions, for deciding it again, or None)."""
    from b2b import matching

    core, links, rejected = cands
    # (a large run keeps the part's scored pairs, on disk, for deciding it again)
    kept: dict | None = {} if several else None
    decided = matching.match(core, part, cfg, links=links, rejected=rejected, tf=tf, reuse=kept)
    # (the explanations as text, a few a school run: no Series string maths)
    over = cross_run_links(decided)
    resembling = several and bool((decided["status"].ne("unmatched") & decided["explanation"]
                                   .str.contains(_RESEMBLING_FORENAME)).any())
    if kept is not None and (over or resembling):
        kept["decided"] = decided
    return decided, over, resembling, kept if over or resembling else None


def _first_pass_forked(parts: list[Any], items: list[tuple[Any, Any, Any]], cfg: Any, tf: Any, procs: int,
                       spill_dir: str) -> Iterator[tuple]:
    """:func:`_first_pass` with the parts decided in ``procs`` forked processes
    (:func:`b2b.forked.ordered_map`), yielded in order as they come: each child decides a
    part, spills the matcher's kept inputs to a file of ``spill_dir`` itself (a part decided
    again reads them back here), and sends the decisions. The same decisions as in one
    process: each part is decided by the same call on the same inputs."""
    def first(k: int) -> tuple:
        decided, over, resembling, kept = _decide_first(parts[k], items[k], cfg, tf, True)
        path = None
        if kept is not None:
            path = os.path.join(spill_dir, f"part-{k}.pickle")
            _spilled(kept, path).close()
        return decided, over, resembling, path

    # (a few records decided here first: what the matcher builds on the shared LA when first used
    # (blocking's value indexes, pandas' and Arrow's lazy state) is built once, not in each child)
    _decide_first(parts[0].iloc[:WARM_UP_STUDENTS], items[0], cfg, tf, False)
    firsts = forked.ordered_map(first, len(parts), procs, PARTS_PER_PROCESS)
    for k, (decided, over, resembling, path) in enumerate(firsts):
        spilled = None
        if path is not None:
            spilled = open(path, "rb")  # noqa: SIM115 (closed by _unspilled, or when not needed)
            os.unlink(path)  # (gone with its last handle)
        yield k, parts[k], items[k], decided, over, resembling, spilled


#: parts a forked process decides before it leaves and a new one is forked for the next
#: (b2b.forked.ordered_map's ``per_child``): what a process allocates lands in pages it shares
#: with the stage and copies them, part after part (300k x 250k, two processes, parts of
#: 5,000: tree peak 1,604 MB with one process per core throughout, ~1,010 MB with two parts
#: each; in parts of 2,000: one part each 939 MB but 140 s (a fork per part costs ~0.2 CPU-s),
#: two 979 MB in 126 s, four 996 MB in 128 s; issue 15)
PARTS_PER_PROCESS = 2
#: records the forked first pass decides in the parent first (:func:`_first_pass_forked`)
WARM_UP_STUDENTS = 50


@contextmanager
def _arrow_on_the_c_heap() -> Iterator[None]:
    """Inside: Arrow allocates from the C heap (``malloc``), not its own pool (mimalloc),
    restored on the way out. A large run's forked processes then allocate where the stage gave
    its free pages back before forking (:func:`b2b.forked.ordered_map`), not in a pool's pages
    the stage still holds, which they copied: 300k x 250k, two processes, tree peak 1,117 ->
    1,026 MB, and no slower (issue 15). Arrays made before keep their own pool."""
    import pyarrow as pa

    before = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(before)


@contextmanager
def _spill_dir() -> Iterator[str]:
    """A private directory for the forked first pass's spilled parts, removed afterwards."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="b2b-match-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _spilled(kept: dict | None, path: str | None = None) -> Any:
    """The matcher's kept inputs of a part (``reuse``) in a temporary file (``path``: that file,
    a forked process's, which the parent opens): a part decided again once the other parts are
    written reads its scored pairs back instead of blocking and scoring again (issue 15), and
    the run's memory does not hold every part's pairs."""
    if not kept:
        return None
    import pickle
    import tempfile

    f = open(path, "w+b") if path else tempfile.TemporaryFile()  # noqa: SIM115 (returned open)
    pickle.dump(kept, f, protocol=pickle.HIGHEST_PROTOCOL)
    return f


def _changed(before: Any, after: Any) -> Any:
    """The rows (a boolean array) whose ``results.match`` values differ between two decisions
    of the same records (row-aligned)."""
    import numpy as np

    out = np.zeros(len(after), bool)
    for col in ("status", "person_id", "rule", "score", "explanation"):
        a, b = before[col].to_numpy(dtype=object), after[col].to_numpy(dtype=object)
        out |= ~((a == b) | (before[col].isna().to_numpy() & after[col].isna().to_numpy()))
    return out


def _unspilled(f: Any) -> dict | None:
    """:func:`_spilled`'s inputs back (the file is closed: gone)."""
    if f is None:
        return None
    import pickle

    with f:
        f.seek(0)
        return pickle.load(f)


GUID_ELSEWHERE = "guid_linked_elsewhere"
#: a run of more students than this (an LA's first load) is matched in parts, whole schools
#: each, against the whole LA read once (:func:`_whole_la_parts`)
PART_STUDENTS = 20_000
#: ... of about this many students each (at most PART_STUDENTS), divided by the processes that
#: decide them (B2B_MATCH_PROCESSES): the matcher's frames of the parts decided at once are
#: the run's memory over the LA's (300k x 250k, one process: peak 1,177 MB with parts of
#: 20,000, 890 with 5,000, the same time; two processes, the whole tree: 1,088 MB in parts
#: of 4,000 (118 s), 979 MB in parts of 2,000 (126 s); issue 15)
SPLIT_STUDENTS = 4_000
#: runs of at most this many students find their candidates by index probes (the planner's
#: choice), larger ones by hash joins over core.child: the same rows either way
SMALL_RUN_STUDENTS = 2_000
#: runs of more students run the guards after the decisions as hashed joins, with nested loops
#: off (:func:`_guard_link_count`, :data:`_GUID_ELSEWHERE_LARGE_SQL`); a school's run probes
GUARD_JOIN_STUDENTS = SMALL_RUN_STUDENTS
#: a larger run of one part with at least this share of the LA's children (a few large files of
#: an LA's first load, a bench) reads and prepares every LA child, as a run of several parts
#: does (:func:`_whole_la_parts`), not its candidates by hash joins into temporary tables: its
#: candidates are most of the LA anyway. Measured at 30k LA children (``bench_match_dag.py``),
#: the candidates' step for 15k students 1.12 -> 0.53 s, 6k 0.70 -> 0.52 s, 3k 0.44 -> 0.48 s
#: (issue 15); the same decisions (``tests/test_match_stage.py``)
WHOLE_LA_SHARE = 0.1


def _large_share_of_la(conn: Connection, students: int) -> bool:
    """Whether a run of ``students`` (more than :data:`SMALL_RUN_STUDENTS`) is at least
    :data:`WHOLE_LA_SHARE` of the LA's children: the planner's estimate of ``core.child``'s
    rows, or a count where there is none yet."""
    if students <= SMALL_RUN_STUDENTS:
        return False
    children = scalar(conn, "SELECT reltuples FROM pg_class WHERE oid = 'core.child'::regclass")
    if children is None or children <= 0:
        children = scalar(conn, "SELECT count(*) FROM core.child")
    return students >= WHOLE_LA_SHARE * float(children)


#: A pupil carrying a GUID that is linked to an LA child under another base (issue 9 item 3). An
#: MIS GUID belongs to one school's record; the same GUID arriving from a second base is a copied
#: or corrupted record. It is never linked a second time: the record goes to review (``possible``,
#: rule ``guid_linked_elsewhere``, with the matcher's candidate or else the child linked under the
#: other base, the first base by id), and a ``results.anomaly`` row names the base, the file and
#: the record's position (the other base's id is its value: no personal data). One statement over
#: the run's ``results.match`` rows (:func:`match` sends the guards together, in a pipeline).
#: the guard's records and the other base's link of each (the first base by id): per record,
#: probes of the GUID index (child_link_guid_idx); a join let the planner hash the whole of
#: core.child_link, ~34 ms a school run at 55k links (issue 15)
_GUID_OTHER_PROBES = """
                SELECT m.file_id, m.student_guid, l.base_id, l.person_id
                  FROM results.match m
                 CROSS JOIN LATERAL (
                       SELECT l.base_id, l.person_id FROM core.child_link l
                        WHERE l.student_guid = m.student_guid AND l.base_id <> m.base_id
                        ORDER BY l.base_id LIMIT 1) l
                 WHERE m.file_id = ANY(%(files)s)"""
#: the same rows by one join (a large run: :data:`_GUID_ELSEWHERE_LARGE_SQL`)
_GUID_OTHER_JOIN = """
                SELECT DISTINCT ON (m.file_id, m.student_guid) m.file_id, m.student_guid, l.base_id, l.person_id
                  FROM results.match m
                  JOIN core.child_link l ON l.student_guid = m.student_guid AND l.base_id <> m.base_id
                 WHERE m.file_id = ANY(%(files)s)
                 ORDER BY m.file_id, m.student_guid, l.base_id"""
_GUID_ELSEWHERE_SQL = f"""WITH other AS ({_GUID_OTHER_PROBES}),
            hit AS (
                UPDATE results.match m
                   SET status = 'possible', rule = '{GUID_ELSEWHERE}', hidden = false,
                       person_id = coalesce(m.person_id, o.person_id),
                       explanation = m.explanation || jsonb_build_object(
                           '{GUID_ELSEWHERE}', jsonb_build_object('base_id', o.base_id),
                           'why_not_auto', coalesce(m.explanation -> 'why_not_auto', '[]'::jsonb)
                                           || '["{GUID_ELSEWHERE}"]'::jsonb)
                  FROM other o
                 WHERE m.file_id = o.file_id AND m.student_guid = o.student_guid
                RETURNING m.file_id, m.student_guid, o.base_id AS other_base)
            INSERT INTO results.anomaly (file_id, ordinal, base_id, student_guid, block_type, rule, field, value)
            SELECT s.file_id, s.ordinal, s.base_id, s.student_guid, 'student', '{GUID_ELSEWHERE}', 'student_guid',
                   h.other_base
              FROM hit h JOIN staging.student s ON s.file_id = h.file_id AND s.student_guid = h.student_guid
            RETURNING 1"""
#: :data:`_GUID_ELSEWHERE_SQL` for a large run (more than :data:`GUARD_JOIN_STUDENTS` students:
#: an LA's first load): one join, hashed (the stage runs the guards of a large run with nested
#: loops off, :func:`_guard_link_count`), not a probe per record. A probe per record is planned
#: on statistics, and a large run's statistics can say its tables are empty while they hold
#: the run: a replay of an LA's first load (its earlier decisions and links deleted in the
#: stage's own transaction, their index entries still there) probed child_link's primary key
#: on its second column and results.match's key index likewise, a pass over every entry per
#: record — over 10 minutes at 100k x 80k, where the first run took 30 s (issue 15). The same
#: rows: per record the other base's link first by base id.
_GUID_ELSEWHERE_LARGE_SQL = _GUID_ELSEWHERE_SQL.replace(_GUID_OTHER_PROBES, _GUID_OTHER_JOIN)
assert _GUID_ELSEWHERE_LARGE_SQL != _GUID_ELSEWHERE_SQL


#: an explanation whose forename level only resembles the child's (``resembling_name_only``)
_RESEMBLING_FORENAME = r'"forename": \{"level": "(?:typo|typed error|initial only)"'


def claims_in_other_parts(conn: Connection, files: list[int]) -> dict[int, set[str]]:
    """Per part of a run of several: the LA children linked or proposed to its records on a
    forename that only resembles theirs which records of another part link automatically under
    their exact forename. ``b2b.matching.match`` sees such a claim in its batch: the record is
    not linked (``claimed_twice``) and is another child (``claimed_at_another_school``:
    ``unmatched``, ``claimed_elsewhere``); a part sees only its own schools, so it is decided
    again with these claims (``claims_elsewhere``)."""
    out: dict[int, set[str]] = {}
    for part, person_id in conn.execute(
            # (counted per child and per child and part with window functions: a self-join of the
            # run's rows on the child planned as a nested loop took minutes at 100k x 80k)
            """WITH r AS (
                   SELECT x.part, m.person_id, m.status, m.explanation #>> '{fields,forename,level}' AS fl
                     FROM results.match m JOIN match_in x ON x.base_id = m.base_id AND x.guid = m.student_guid
                    WHERE m.file_id = ANY(%(files)s) AND m.rule = 'weights' AND m.person_id IS NOT NULL),
               c AS (
                   SELECT part, person_id, status, fl,
                          count(*) FILTER (WHERE status IN ('matched', 'matched_with_conflicts') AND fl = 'exact')
                              OVER (PARTITION BY person_id) AS claims,
                          count(*) FILTER (WHERE status IN ('matched', 'matched_with_conflicts') AND fl = 'exact')
                              OVER (PARTITION BY person_id, part) AS own_claims
                     FROM r)
               SELECT DISTINCT part, person_id FROM c
                WHERE status <> 'unmatched' AND fl IN ('typo', 'typed error', 'initial only') AND claims > own_claims""",
            {"files": files}).fetchall():
        out.setdefault(part, set()).add(person_id)
    return out


def _planner_settings(**values: str) -> tuple[str, str]:
    """Two statements: the first keeps each setting's value in a variable of the transaction's
    own (``b2b.kept_*``) and sets ``values`` for the transaction (a target list is evaluated in
    order); the second puts them back, so the statements after plan as before (an error ends
    the transaction, and the settings with it). Neither outlives the transaction (PgBouncer)."""
    return ("SELECT " + ", ".join([f"set_config('b2b.kept_{n}', current_setting('{n}'), true)" for n in values]
                                  + [f"set_config('{n}', '{v}', true)" for n, v in values.items()]),
            "SELECT " + ", ".join(f"set_config('{n}', current_setting('b2b.kept_{n}'), true)" for n in values))


def claimed_exactly_in_another_part(conn: Connection, files: list[int]) -> int:
    """The matcher's cross-school guard across parts: a child one school's record claims with
    its exact forename is not auto-linked to another school's record whose forename is only a
    form or a typo of it (``b2b.matching.decide``: ``claimed_twice``). Within a part the
    matcher applied it; a part holds whole schools, so only claims from other parts are left:
    such a link goes to review (``possible``, ``why_not_auto`` ``["claimed_twice"]``, as the
    matcher writes it for a record that was otherwise safe). The claims are the matcher's
    (rule ``weights``, forename level ``exact``), whether kept or themselves claimed twice."""
    # (no nested loop: both sides' filters are on explanation paths the planner cannot estimate,
    # so it guessed one row each and joined the claims to the links by a loop over every pair —
    # 1.6 s at 30k x 15k in parts of 5,000, and growing with the square of the run)
    conn.execute(_NO_NESTLOOP)
    updated = conn.execute(_CLAIMED_EXACTLY, {"files": files}).rowcount
    conn.execute(_NESTLOOP_BACK)
    return updated


_CLAIMED_EXACTLY = """WITH claim AS (
               SELECT DISTINCT m.person_id FROM results.match m
                WHERE m.file_id = ANY(%(files)s) AND m.rule = 'weights'
                  AND m.explanation #>> '{fields,forename,level}' = 'exact'
                  AND (m.status IN ('matched', 'matched_with_conflicts')
                       OR m.explanation -> 'why_not_auto' ? 'claimed_twice'))
           UPDATE results.match m
              SET status = 'possible',
                  explanation = m.explanation || '{"why_not_auto": ["claimed_twice"]}'::jsonb
             FROM claim c
            WHERE m.file_id = ANY(%(files)s) AND m.person_id = c.person_id AND m.rule = 'weights'
              AND m.status IN ('matched', 'matched_with_conflicts')
              AND m.explanation #>> '{fields,forename,level}' <> 'exact'"""
#: the planner's nested loops off for some statements, and back (:func:`_planner_settings`)
_NO_NESTLOOP, _NESTLOOP_BACK = _planner_settings(enable_nestloop="off")


OTHER_GUID = "child_linked_to_other_guid"
LINKED_ELSEWHERE = "linked_elsewhere"
#: the matcher's explanation keys of links whose "no other record claims the child" guard sees
#: only its own call (``b2b.matching.decide``): checked again across runs and parts
CROSS_RUN_RULES = ("overwhelming", "typed_forename_at_home")


def _cross_run(alias: str) -> str:
    """SQL: the ``results.match`` row ``alias`` is a link of :data:`CROSS_RUN_RULES`."""
    return f"{alias}.explanation ?| ARRAY[{', '.join(repr(r) for r in CROSS_RUN_RULES)}]"


def cross_run_links(decided: Any) -> list[str]:
    """The LA children of a part's decisions whose explanation holds a :data:`CROSS_RUN_RULES`
    key at its top level (what ``explanation ?| ARRAY[...]`` finds once they are written), in
    order of first sight: read from the decisions in hand, not back from ``results.match``
    (a pass over every row's explanation of the part: ~50 ms at 15k students). Only an
    explanation whose text names such a key is parsed."""
    import json

    out: dict[str, None] = {}
    for pid, e in zip(decided["person_id"].tolist(), decided["explanation"].tolist()):
        if isinstance(e, str) and isinstance(pid, str) and pid and any(f'"{r}"' in e for r in CROSS_RUN_RULES):
            top = json.loads(e)
            if isinstance(top, dict) and any(r in top for r in CROSS_RUN_RULES):
                out[pid] = None
    return list(out)


class PartHolders:
    """Per LA child, how many of each part's ``results.match`` rows of the run name it, kept as
    :func:`_decide_parts` writes and rewrites them: what :func:`claimed_outside` asks of
    another part's rows, without a pass over the run's rows per part (~0.3 s a part at 300k x
    250k: ``person_id`` has no index of its own). A row without a child names none (NULL)."""

    def __init__(self) -> None:
        self.parts: dict[str, dict[int, int]] = {}

    def add(self, part_no: int, person_ids: list) -> None:
        for pid in person_ids:
            if isinstance(pid, str) and pid:
                held = self.parts.setdefault(pid, {})
                held[part_no] = held.get(part_no, 0) + 1

    def remove(self, part_no: int, person_ids: list) -> None:
        for pid in person_ids:
            if isinstance(pid, str) and pid:
                held = self.parts[pid]
                held[part_no] -= 1
                if not held[part_no]:
                    del held[part_no]

    def elsewhere(self, part_no: int, person_ids: list[str]) -> set[str]:
        """Of ``person_ids``, those a row of another part names."""
        return {pid for pid in person_ids if any(q != part_no for q in self.parts.get(pid, ()))}


def claimed_outside(conn: Connection, files: list[int], over: list[str], part_no: int | None = None,
                    holders: PartHolders | None = None) -> set[str]:
    """Of ``over``, the LA children a part linked on overwhelming evidence (or a forename typed
    at home, :data:`CROSS_RUN_RULES`; :func:`cross_run_links`), those that records outside the
    part claim: linked to another school's record by an earlier run (``core.child_link``), or
    another part's record of this run (``results.match``: ``holders``). The matcher's own guard
    (``b2b.matching.decide.claimed_by_another_record``) sees only the records of its call.

    ``part_no``: the part's number in the run's ``match_in`` table (a run of several parts,
    :func:`_whole_la_parts`); ``None``: the run is one part, so the part's records are the
    run's ``results.match`` rows and no other record of the run can claim the child."""
    # the links by array: one statement with them as EXISTS under an OR was planned as a
    # subplan per child, each a pass over the run's results.match rows when the planner
    # misjudged them: 5 s per 20k-student part at 100k x 80k, minutes at 300k x 250k
    if not over:
        return set()
    if part_no is None:
        # (an earlier run's links: the run's own records, found by key, are not outside the part)
        return {r[0] for r in conn.execute(
            """SELECT l.person_id FROM core.child_link l
                WHERE l.person_id = ANY(%(over)s)
                  AND NOT EXISTS (SELECT 1 FROM results.match m
                                   WHERE m.file_id = ANY(%(files)s)
                                     AND m.base_id = l.base_id AND m.student_guid = l.student_guid)""",
            {"over": over, "files": files})}
    assert holders is not None
    return holders.elsewhere(part_no, over) | {r[0] for r in conn.execute(
        """SELECT l.person_id FROM core.child_link l
            WHERE l.person_id = ANY(%(over)s)
              AND (l.base_id, l.student_guid) NOT IN (SELECT base_id, guid FROM match_in WHERE part = %(k)s)""",
        {"k": part_no, "over": over})}


#: A link this run makes to a child that an earlier run of another school linked on overwhelming
#: evidence without a compatible forename, or on a forename typed at home (the record the earlier
#: run could not know was claimed: a twin the LA never knew, on another roll) sends that earlier
#: link to review (``possible``, ``why_not_auto`` ``linked_elsewhere``) and removes its GUID link.
#: The earlier links are found through the partial index of migration 0041, whose predicate is
#: this statement's (a test keeps them in step).
_EARLIER_LINKS = f"""WITH mine AS (
                SELECT DISTINCT m.person_id FROM results.match m
                 WHERE m.file_id = ANY(%(files)s) AND m.status IN ('matched', 'matched_with_conflicts')),
            hit AS (
                UPDATE results.match o
                   SET status = 'possible',
                       explanation = o.explanation || jsonb_build_object(
                           'why_not_auto', coalesce(o.explanation -> 'why_not_auto', '[]'::jsonb)
                                           || '["{LINKED_ELSEWHERE}"]'::jsonb)
                  FROM mine
                 WHERE o.person_id = mine.person_id AND NOT o.file_id = ANY(%(files)s)
                   AND o.status IN ('matched', 'matched_with_conflicts') AND o.rule = 'weights'
                   AND {_cross_run('o')}
                RETURNING o.base_id, o.student_guid, o.person_id),
            gone AS (
                DELETE FROM core.child_link l USING hit
                 WHERE l.base_id = hit.base_id AND l.student_guid = hit.student_guid
                   AND l.person_id = hit.person_id AND l.linked_by = 'match')
            SELECT count(*) FROM hit"""


#: An automatic link to a child the LA already links, under the same base, to another GUID is not
#: made: one school holds one record per child. The record goes to review (``possible``,
#: ``why_not_auto`` ``child_linked_to_other_guid``). This is the guard for the twin the LA does
#: not know that arrives alone (a changed-data run without the other twin) carrying its twin's
#: UPN: the other twin's GUID link stops it. Officer links stand. One statement over the run's
#: ``results.match`` rows.
_OTHER_GUID_SQL = f"""UPDATE results.match m
               SET status = 'possible',
                   explanation = m.explanation || jsonb_build_object(
                       'why_not_auto', coalesce(m.explanation -> 'why_not_auto', '[]'::jsonb)
                                       || '["{OTHER_GUID}"]'::jsonb)
             WHERE m.file_id = ANY(%s) AND m.status IN ('matched', 'matched_with_conflicts')
               AND m.rule <> 'officer_link'
               AND EXISTS (SELECT 1 FROM core.child_link l
                            WHERE l.base_id = m.base_id AND l.person_id = m.person_id
                              AND l.student_guid <> m.student_guid)"""


#: the run's students as matcher input (:func:`incoming_frame`), with their latest address as of
#: the window: parameters (window end, files)
_INCOMING = """SELECT s.file_id::text || '|' || s.student_guid, s.base_id, s.upn, s.student_guid, s.forename,
                  s.middle_names, s.surname, s.gender, s.dob, a.postcode, a.address_line1, s.file_id, s.student_guid,
                  s.ordinal
             FROM staging.student s
             LEFT JOIN LATERAL (
                  SELECT sa.postcode, concat_ws(' ', sa.paon, sa.street) AS address_line1
                    FROM staging.address sa JOIN raw.inbound_file f ON f.file_id = sa.file_id
                   WHERE sa.base_id = s.base_id AND sa.student_guid = s.student_guid AND f.window_end <= %s
                   ORDER BY f.window_end DESC, sa.file_id DESC LIMIT 1) a ON true
            WHERE s.file_id = ANY(%s)
            ORDER BY s.file_id, s.student_guid"""


def incoming_frame(conn: Connection, files: list[int], window_end: datetime) -> Any:
    """The run's students as matcher input, with their latest address as of the window."""
    return _incoming(conn.execute(_INCOMING, (window_end, files)).fetchall())


def _incoming(rows: list[tuple]) -> Any:
    """:data:`_INCOMING`'s rows as the matcher's incoming frame."""
    import pandas as pd

    return pd.DataFrame(rows, columns=_INCOMING_COLUMNS)


#: :data:`_INCOMING`'s columns: the matcher's (b2b.matching.INCOMING_COLUMNS, written out as
#: _CORE_FIELDS below is: a test holds them equal), then the run's keys
_INCOMING_COLUMNS = ["incoming_id", "base_id", "upn", "guid", "forename", "middle_names", "surname", "gender", "dob",
                     "postcode", "address_line1", "file_id", "student_guid", "ordinal"]


#: the LA child columns the matcher reads (b2b.matching.CORE_COLUMNS, in order; not imported
#: here: the matcher's package costs ~150 ms to import, and a test holds the two equal), each
#: with the expression that reads it from core.child ``c``
_CORE_FIELDS = (("person_id", "c.person_id"), ("upn", "c.upn"), ("guid", "NULL::text"), ("forename", "c.forename"),
                ("middle_names", "c.middle_names"), ("surname", "c.surname"), ("gender", "c.gender"),
                ("dob", "c.dob"), ("postcode", "c.postcode"), ("address_line1", "concat_ws(' ', c.paon, c.street)"),
                ("base_id", "c.base_id"))
#: their names, and a select list of them
_CORE_NAMES = tuple(name for name, _ in _CORE_FIELDS)
CORE_SELECT = ", ".join(expr if expr == f"c.{name}" else f"{expr} AS {name}" for name, expr in _CORE_FIELDS)

#: every blocking key of b2b.matching as a join of one key table (filled by COPY) with core.child;
#: each branch pairs a part's students with exactly the LA children that key can pair them with
#: (no more: a DOB alone or a surname alone would pull in most of a large LA). The m_* columns
#: are the matcher's own keys, stored on core.child (migration 0010).
_KEY_TABLES = {
    "match_k_upn": "upn text",
    "match_k_dsn": "d date, l text",
    "match_k_dfn": "d date, l text",
    "match_k_syf": "s text, y int, l text",
    # (w: the part is the student's whole surname key, whose whole-surname probe is syf's own)
    "match_k_pyf": "p text, y int, l text, w bool",
    "match_k_py": "p text, y int",
    "match_k_ps": "p text, l text",
    "match_k_pf": "p text, l text",
    # forename + surname (blocking.KEYS' five such keys): one probe of the names per student,
    # the key's other part a condition on each namesake (was five probes of the same index)
    "match_k_fs": "f text, s text, p text, md int, y int, ny int, nd bool",
}
#: the blocking keys' branches both candidate statements share: (key table, its join with
#: core.child ``c``, a condition on the pair or None); the GUID links' and the surname parts'
#: branches are written per statement (below)
_KEY_BRANCHES = (
    ("match_k_upn", "c.m_upn = k.upn", None),
    ("match_k_dsn", "c.dob = k.d AND left(c.m_sn, 1) = k.l", None),
    ("match_k_dfn", "c.dob = k.d AND left(c.m_fn, 1) = k.l", None),
    ("match_k_syf", "c.m_sn = k.s AND c.m_year = k.y AND left(c.m_fn, 1) = k.l", None),
    ("match_k_pyf", "c.m_sn = k.p AND c.m_year = k.y AND left(c.m_fn, 1) = k.l", "NOT k.w"),
    ("match_k_py", "c.m_pc = k.p AND c.m_year = k.y", None),
    ("match_k_fs", "c.m_fn = k.f AND c.m_sn = k.s",
     """k.nd OR c.dob IS NULL OR c.m_pc = k.p
              OR extract(month FROM c.dob) * 100 + extract(day FROM c.dob) = k.md
              OR (c.m_year = k.y - 1 AND extract(month FROM c.dob) = 12) OR c.m_year = k.ny"""),
    ("match_k_ps", "c.m_pc = k.p AND left(c.m_sn, 1) = k.l", None),
    ("match_k_pf", "c.m_pc = k.p AND left(c.m_fn, 1) = k.l", None),
)


def _union(select: str, links: str, parts: str) -> str:
    """The branches of a candidate statement as ``UNION ALL``: each key branch of
    :data:`_KEY_BRANCHES` starting ``select`` (``… FROM``), the GUID links' branch ``links``
    after the UPN's, the surname parts' branch ``parts`` after the surname-part + year + initial one."""
    branches = []
    for table, on, where in _KEY_BRANCHES:
        branches.append(f"{select} {table} k JOIN core.child c ON {on}" + (f"\n           WHERE {where}" if where else ""))
        branches += [links] if table == "match_k_upn" else [parts] if table == "match_k_pyf" else []
    return "\nUNION ALL ".join(branches)


_CANDIDATES = """
CREATE TEMP TABLE match_cand ON COMMIT DROP AS
SELECT u.part, u.person_id FROM (
          """ + _union(
    "SELECT k.part, c.person_id FROM",
    """SELECT x.part, l.person_id FROM match_in x
            JOIN core.child_link l ON l.base_id = x.base_id AND l.student_guid = x.guid""",
    """SELECT k.part, c.person_id FROM core.child c CROSS JOIN LATERAL unnest(c.m_sn_parts) AS cp(p)
            JOIN match_k_pyf k ON cp.p = k.p AND c.m_year = k.y AND left(c.m_fn, 1) = k.l
           WHERE cardinality(c.m_sn_parts) > 1""") + """
) u"""


#: each branch of :data:`_SMALL_CANDIDATES`: the child's :data:`CORE_SELECT` columns and ``active``
_PROBED = f"SELECT {CORE_SELECT}, c.active FROM"

#: The candidate statement of one small part (:func:`_one_small_part`): :data:`_CANDIDATES`'
#: branches (the same keys and conditions, :data:`_KEY_BRANCHES`; a test holds their rows
#: equal), each returning its children's :data:`CORE_SELECT` columns from the row its index
#: probe already reached, then one row per active child in ``person_id`` order: not the union's
#: person ids read from ``core.child`` again (~2,650 primary-key probes, a third of the
#: statement's buffers, at 80k children; issue 15). The surname-parts branch probes the parts'
#: GIN index for a few keys (``@>``), not the parts of every LA child unnested (a pass over
#: core.child per run). The key tables are read from array parameters (:func:`_as_arrays`).
_SMALL_CANDIDATES = f"""
SELECT DISTINCT ON (u.person_id) {', '.join('u.' + c for c in _CORE_NAMES)} FROM (
          """ + _union(
    _PROBED,
    f"""{_PROBED} match_in x
            JOIN core.child_link l ON l.base_id = x.base_id AND l.student_guid = x.guid
            JOIN core.child c ON c.person_id = l.person_id""",
    f"""{_PROBED} match_k_pyf k
            JOIN core.child c ON c.m_sn_parts @> ARRAY[k.p] AND c.m_year = k.y AND left(c.m_fn, 1) = k.l
           WHERE cardinality(c.m_sn_parts) > 1""") + """
) u
 WHERE u.active ORDER BY u.person_id"""


def run_candidates(conn: Connection, parts: list[Any], *, prepared: bool = False,
                   frequencies: PendingFrequencies | None = None) -> Iterator[tuple[Any, Any, Any]]:
    """Per part (in order): the LA children that can be candidates for its students (every
    blocking key the matcher uses, normalised the same way; active children only: inactive
    ones, gone from the LA's full extract, are never candidates), the GUID links, and the
    officer-rejected pairs. One candidate statement for the whole run; each part is then read
    by its number. Call inside a transaction (the temporary tables go with it).

    ``prepared``: the candidates come as a :class:`b2b.matching.PreparedCore`: the run's
    candidate children (the union over its parts) are read and prepared ONCE, and each part
    takes its own rows by position (in ``person_id`` order, as a part's own read gives them),
    so a child that is a candidate for many parts is normalised once (issue 15).
    ``frequencies``: a small run reads them in its candidates' round trip (else left unread)."""
    import pandas as pd

    from b2b.matching import CORE_COLUMNS

    if not parts:
        return
    if len(parts) == 1 and len(parts[0]) <= SMALL_RUN_STUDENTS:
        yield _one_small_part(conn, parts[0], prepared=prepared, frequencies=frequencies)
        return
    if prepared and (len(parts) > 1 or _large_share_of_la(conn, sum(len(p) for p in parts))):
        yield from _whole_la_parts(conn, parts)
        return
    _stage_keys(conn, parts)
    if sum(len(p) for p in parts) <= SMALL_RUN_STUDENTS:
        # a few students (a changed-data day): index probes per key, not a pass over the whole
        # LA per key (hash joins cost 36 ms per run at 20k LA children, growing with the LA)
        conn.execute("ANALYZE " + ", ".join(["match_in", *_KEY_TABLES]))
        conn.execute(_CANDIDATES)
    else:
        # hash joins, each one pass over core.child for the whole run (index probes per key were
        # 7x slower at 300k x 250k); duplicates stay (a part's read below is a semi-join)
        conn.execute(_NO_NESTLOOP)
        conn.execute(_CANDIDATES)
        conn.execute(_NESTLOOP_BACK)
    conn.execute("CREATE INDEX ON match_cand (part)")
    conn.execute("ANALYZE match_cand")
    links = pd.DataFrame(conn.execute(_LINKS).fetchall(), columns=["part", "base_id", "guid", "person_id", "linked_by"])
    rejected = pd.DataFrame(conn.execute(_REJECTED).fetchall(), columns=["part", "base_id", "guid", "person_id"])
    if prepared:
        yield from _prepared_parts(conn, len(parts), links, rejected)
        return
    for k in range(len(parts)):
        rows = conn.execute(
            f"""SELECT {CORE_SELECT} FROM core.child c
                 WHERE c.active AND c.person_id IN (SELECT m.person_id FROM match_cand m WHERE m.part = %s)
                 ORDER BY c.person_id""", (k,)).fetchall()
        yield (pd.DataFrame(rows, columns=CORE_COLUMNS),
               links[links["part"] == k].drop(columns="part").reset_index(drop=True),
               rejected[rejected["part"] == k].drop(columns="part").reset_index(drop=True))


_LINKS = """SELECT x.part, l.base_id, l.student_guid AS guid, l.person_id, l.linked_by
              FROM match_in x JOIN core.child_link l ON l.base_id = x.base_id AND l.student_guid = x.guid"""
_REJECTED = """SELECT x.part, d.base_id, d.student_guid AS guid, d.person_id
                 FROM match_in x JOIN results.match_decision d ON d.base_id = x.base_id AND d.student_guid = x.guid
                WHERE d.decision = 'reject'"""


#: the planner settings of a school run's candidate reads (:func:`_one_small_part`), and back
_PROBE_SETTINGS, _PLANNER_SETTINGS_BACK = _planner_settings(
    enable_hashjoin="off", enable_mergejoin="off", max_parallel_workers_per_gather="0")


def _one_small_part(conn: Connection, part: Any, *, prepared: bool,
                    frequencies: PendingFrequencies | None = None) -> tuple[Any, Any, Any]:
    """:func:`run_candidates` for a run of one small part (a school's changed-data day or
    snapshot): the same candidate, link and rejection statements with the keys as array
    parameters (:func:`_as_arrays`), no temporary tables: three statements, not ~30; with
    ``frequencies``, the run's name-frequency read goes in the same round trip (its rows set
    on it: issue 15, a changed-data run's match)."""
    import pandas as pd

    from b2b import matching

    rows = _key_rows([part])
    # (the candidates' columns straight from the branches' probes: _SMALL_CANDIDATES)
    cand, params = _as_arrays(_SMALL_CANDIDATES, rows)
    # the links and rejections likewise by key probes (a hash join read the whole of
    # core.child_link each run: ~20-50 ms at 55k links, growing with the LA)
    links_sql, lp = _as_arrays(_LINKS, {"match_in": rows["match_in"]})
    rejected_sql, rp = _as_arrays(_REJECTED, {"match_in": rows["match_in"]})
    # index probes per key, never a hash join over the whole LA per key (at 80k children, 400
    # students: 135-180 ms vs 240-290 ms; 3 students: the same); and no parallel workers (~20 ms
    # of their start-up per run at 80k children, 2 cores). Never prepared: an Airflow task runs
    # one school run on its own connection, so a prepared statement would never be reused
    # there; only a long-lived connection (the stage bench's) would prepare them from their
    # 6th run, and an earlier stop measured a cached plan for arrays of unknown size at 45 ms
    # for 3 students, not 10 (this stop, on one connection: 0.5 ms instead of 2.0 at 80k
    # children, a gain no task would see)
    # one round trip (a pipeline): the settings kept in the transaction's own variables and
    # set (a target list is evaluated in order), the three reads, the settings put back
    with conn.pipeline():
        freq_cur = conn.execute(frequencies.SQL, frequencies.params) if frequencies is not None else None
        conn.execute(_PROBE_SETTINGS)
        core_cur = conn.execute(cand, params, prepare=False)
        links_cur = conn.execute(links_sql, lp, prepare=False)
        rejected_cur = conn.execute(rejected_sql, rp, prepare=False)
        conn.execute(_PLANNER_SETTINGS_BACK)
    # (read once the pipeline is synced: a read inside it would be a round trip of its own)
    core = pd.DataFrame(core_cur.fetchall(), columns=matching.CORE_COLUMNS)
    # (without the part number, from the rows: no frame built and then copied without it)
    links = pd.DataFrame([r[1:] for r in links_cur.fetchall()], columns=["base_id", "guid", "person_id", "linked_by"])
    rejected = pd.DataFrame([r[1:] for r in rejected_cur.fetchall()], columns=["base_id", "guid", "person_id"])
    if frequencies is not None and freq_cur is not None:
        frequencies.rows = freq_cur.fetchall()
    return matching.prepare_core(core) if prepared else core, links, rejected


def _prepared_parts(conn: Connection, n_parts: int, links: Any, rejected: Any) -> Iterator[tuple[Any, Any, Any]]:
    """:func:`run_candidates` with the run's candidate children prepared once: their positions
    in ``person_id`` order (``match_pos``), one read of their columns, then per part the
    positions of its candidates (integers) select the prepared rows."""
    import numpy as np
    import pandas as pd

    from b2b import matching

    conn.execute("DROP TABLE IF EXISTS pg_temp.match_pos")
    conn.execute(
        """CREATE TEMP TABLE match_pos ON COMMIT DROP AS
           SELECT c.person_id, (row_number() OVER (ORDER BY c.person_id) - 1)::int AS pos
             FROM core.child c
            WHERE c.active AND c.person_id IN (SELECT m.person_id FROM match_cand m)""")
    conn.execute("ANALYZE match_pos")
    rows = conn.execute(f"SELECT {CORE_SELECT} FROM match_pos p JOIN core.child c ON c.person_id = p.person_id "
                        "ORDER BY p.pos").fetchall()
    whole = matching.prepare_core(pd.DataFrame(rows, columns=matching.CORE_COLUMNS))
    del rows
    # blocking's LA side built once for the run: each part pairs its own candidates' rows
    # (the same pairs as blocking on whole.take(pos)), no copy of the rows per part
    from b2b.matching.blocking import LAIndex

    blocks = LAIndex(whole.prep, matching.MatchConfig().block_cap)
    for k in range(n_parts):
        pos = np.fromiter((r[0] for r in conn.execute(
            """SELECT p.pos FROM match_pos p
                WHERE p.person_id IN (SELECT m.person_id FROM match_cand m WHERE m.part = %s)
                ORDER BY p.pos""", (k,))), dtype=np.int64)
        yield (matching.PreparedCore(whole.raw, whole.prep, blocks=blocks, rows=pos),
               links[links["part"] == k].drop(columns="part").reset_index(drop=True),
               rejected[rejected["part"] == k].drop(columns="part").reset_index(drop=True))


def _whole_la_parts(conn: Connection, parts: list[Any]) -> Iterator[tuple[Any, Any, Any]]:
    """:func:`run_candidates` for a run of several parts (more than :data:`PART_STUDENTS`
    students: an LA's first load, a bench), or of one part that is a large share of the LA
    (:data:`WHOLE_LA_SHARE`): every active LA child, read and prepared once, and
    blocking's LA side built once (:class:`b2b.matching.blocking.LAIndex`); each part is paired
    against all of them, exactly as ``b2b match`` pairs it. The candidate statement is not run:
    each part's candidates were most of the LA (~70% at 300k x 250k), and its keys (a million
    rows COPYed at 256k students), hash joins and per-part reads cost more than they saved.
    The same decisions: the statement finds exactly the LA children blocking pairs (its keys
    are blocking's, normalised alike), and a key's block size counts the same children."""
    import pandas as pd

    from b2b import matching
    from b2b.matching.blocking import LAIndex

    conn.execute("DROP TABLE IF EXISTS pg_temp.match_in")
    conn.execute("CREATE TEMP TABLE match_in (part int, base_id text, guid text) ON COMMIT DROP")
    with conn.cursor() as cur, cur.copy("COPY match_in (part, base_id, guid) FROM STDIN") as copy:
        for k, frame in enumerate(parts):
            for row in dict.fromkeys(zip([k] * len(frame), frame["base_id"].tolist(), frame["guid"].tolist())):
                copy.write_row(row)
    conn.execute("ANALYZE match_in")
    links = pd.DataFrame(conn.execute(_LINKS).fetchall(), columns=["part", "base_id", "guid", "person_id", "linked_by"])
    rejected = pd.DataFrame(conn.execute(_REJECTED).fetchall(), columns=["part", "base_id", "guid", "person_id"])
    # (COPYed as CSV into Arrow columns: the rows as Python tuples were the stage's largest
    # transient, ~300 MB at 300k, whose freed pages the forked processes then copied)
    frame = copy_frame(conn, f"SELECT {CORE_SELECT} FROM core.child c WHERE c.active ORDER BY c.person_id", None,
                       matching.CORE_COLUMNS)
    whole = matching.prepare_core(frame)
    del frame
    blocks = LAIndex(whole.prep, matching.MatchConfig().block_cap)
    for k in range(len(parts)):
        yield (matching.PreparedCore(whole.raw, whole.prep, blocks=blocks),
               links[links["part"] == k].drop(columns="part").reset_index(drop=True),
               rejected[rejected["part"] == k].drop(columns="part").reset_index(drop=True))


def copy_frame(conn: Connection, select: str, params: Any, columns: list[str], ints: tuple[str, ...] = (),
               dates: tuple[str, ...] = ("dob",)) -> Any:
    """The rows of ``select`` as a DataFrame of Arrow columns, COPYed as CSV and parsed by
    Arrow: no Python object per value (a large run's LA, issue 15). The same frame as
    ``pd.DataFrame(rows, columns=columns)`` under :func:`b2b.matching.arrow_strings`: text as
    ``str`` (NULL missing, an empty text empty), ``dates`` as ``datetime.date`` objects,
    ``ints`` as int64, a column of NULLs only as Python ``None`` objects."""
    import io

    import pandas as pd
    import pyarrow as pa
    from pyarrow import csv

    buf = io.BytesIO()
    with conn.cursor() as cur, cur.copy(f"COPY ({select}) TO STDOUT WITH (FORMAT csv)", params) as copy:
        for data in copy:
            buf.write(data)
    if not buf.tell():  # (no rows: Arrow reads no empty CSV; as pandas builds it from no rows)
        return pd.DataFrame([], columns=columns)
    types = {c: pa.int64() if c in ints else pa.date32() if c in dates else pa.string() for c in columns}
    table = csv.read_csv(pa.py_buffer(buf.getbuffer()),
                         read_options=csv.ReadOptions(column_names=columns, encoding=conn.info.encoding),
                         convert_options=csv.ConvertOptions(column_types=types, strings_can_be_null=True,
                                                            quoted_strings_can_be_null=False))
    del buf
    frame = table.to_pandas(date_as_object=True)
    for c in columns:  # (pandas infers objects for a column of Nones)
        if table.column(c).null_count == len(table) and c not in ints:
            frame[c] = pd.Series([None] * len(frame), dtype=object)
    return frame


def core_candidates(conn: Connection, incoming: Any) -> Any:
    """LA children that can be candidates for these students, GUID links, and officer-rejected
    pairs (:func:`run_candidates` for one part)."""
    with conn.transaction():
        return next(run_candidates(conn, [incoming]))


#: each key table's columns (after ``part``), as _KEY_TABLES declares them
_KEY_COLUMNS = {"match_in": ("base_id", "guid"),
                **{t: tuple(c.split()[0] for c in cols.split(", ")) for t, cols in _KEY_TABLES.items()}}
_KEY_TYPES = {"match_in": ("text", "text"),
              **{t: tuple(c.split()[1] for c in cols.split(", ")) for t, cols in _KEY_TABLES.items()}}


def _key_rows(parts: list[Any]) -> dict[str, dict[tuple, None]]:
    """The run's students (part, base, GUID) and their blocking keys: per key table the
    distinct (part, key...) rows whose key columns are all present (not "", not 0), each key
    the matcher's own normalisation (``name_key``, ``name_parts``, ``postcode_key``) of a
    distinct value once (no frames: a per-school run has a few rows)."""
    from datetime import date

    import pandas as pd

    from b2b.matching import name_key, name_parts, postcode_key

    rows: dict[str, dict[tuple, None]] = {name: {} for name in ("match_in", *_KEY_TABLES)}
    # (each table's dict bound once; a key is present when no part of it is None, "", 0 or "0":
    # tested inline per column, the hot loop of a school run's ~3,000 key rows)
    r_in, r_upn, r_dsn, r_dfn, r_syf, r_pyf, r_py, r_fs, r_ps, r_pf = (rows[t] for t in (
        "match_in", "match_k_upn", "match_k_dsn", "match_k_dfn", "match_k_syf", "match_k_pyf", "match_k_py",
        "match_k_fs", "match_k_ps", "match_k_pf"))
    memo: dict[tuple[Any, str], Any] = {}

    def norm(fn: Any, v: Any) -> Any:
        if not isinstance(v, str):
            return ""
        key = (fn, v)
        if key not in memo:
            memo[key] = fn(v)
        return memo[key]

    def surname_parts(v: str) -> list[str]:
        return [p for p in name_parts(v) if len(p) >= 2]

    absent = ("", "0")  # (a text key part that is no key value)
    for k, frame in enumerate(parts):
        if not len(frame):
            continue
        dobs = frame["dob"].tolist()
        if all(v is None or (type(v) is date and 1678 <= v.year <= 2261) for v in dobs):
            # what the database gives (dates within pandas' range): the parts read, no Series maths
            has = [v is not None for v in dobs]
            ys, ms, ds = ([0 if v is None else v.year for v in dobs], [0 if v is None else v.month for v in dobs],
                          [0 if v is None else v.day for v in dobs])
        else:
            dob = pd.to_datetime(frame["dob"], errors="coerce")
            has = dob.notna().tolist()
            ys, ms, ds = (dob.dt.year.fillna(0).astype(int).tolist(), dob.dt.month.fillna(0).astype(int).tolist(),
                          dob.dt.day.fillna(0).astype(int).tolist())
        for b, g, upn, fore, sur, post, h, y, m, d in zip(
                frame["base_id"].tolist(), frame["guid"].tolist(), frame["upn"].tolist(), frame["forename"].tolist(),
                frame["surname"].tolist(), frame["postcode"].tolist(), has, ys, ms, ds):
            r_in[(k, b, g)] = None
            # every UPN given (as the matcher's own key: upper case, no spaces)
            if isinstance(upn, str) and upn != "":
                u = upn.upper().replace(" ", "")
                if u not in absent:
                    r_upn[(k, u)] = None
            fn, sn, pc = norm(name_key, fore), norm(name_key, sur), norm(postcode_key, post)
            fi, si = fn[:1], sn[:1]
            fi_ok, si_ok, pc_ok = fi not in absent, si not in absent, pc not in absent
            year = y if h else 0
            if h:
                iso = f"{y:04d}-{m:02d}-{d:02d}"
                if si_ok:
                    r_dsn[(k, iso, si)] = None
                    if d <= 12 and d != m:
                        r_dsn[(k, f"{y:04d}-{d:02d}-{m:02d}", si)] = None
                if fi_ok:
                    r_dfn[(k, iso, fi)] = None
                    r_dsn[(k, iso, fi)] = None  # forename and surname the other way round
            if year and fi_ok:
                if sn not in absent:
                    r_syf[(k, sn, year, fi)] = None
                for p in norm(surname_parts, sur) or ():
                    if p not in absent:
                        # (a part that is the whole surname key: its LA namesakes are syf's, the
                        # same three conditions; only the double-barrelled LA children's probe reads it)
                        r_pyf[(k, p, year, fi, p == sn)] = None
            if pc_ok and year:
                r_py[(k, pc, year)] = None
            # forename + surname with the postcode, with the birthday, across a new year, or
            # alone when either record has no DOB (blocking.KEYS), one row per student: the LA
            # namesakes at the postcode (p), on the birthday (md), born in the December before
            # the student's birth year (y), in the year after a December birth (ny), without a
            # DOB (always), or every namesake for a student without a DOB (nd)
            if fn and sn:
                r_fs[(k, fn, sn, pc if pc_ok else None, 100 * m + d if h else None,
                      y if h else None, y + 1 if h and m == 12 else None, not h)] = None
            if pc_ok:
                if si_ok:
                    r_ps[(k, pc, si)] = None
                if fi_ok:
                    r_pf[(k, pc, fi)] = None
    return rows


def _stage_keys(conn: Connection, parts: list[Any]) -> None:
    """:func:`_key_rows` in temporary tables (COPY)."""
    for name, cols in {"match_in": "base_id text, guid text", **_KEY_TABLES}.items():
        conn.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")
        conn.execute(f"CREATE TEMP TABLE {name} (part int, {cols}) ON COMMIT DROP")
    conn.execute("DROP TABLE IF EXISTS pg_temp.match_cand")
    for name, keyed in _key_rows(parts).items():
        if not keyed:
            continue
        with conn.cursor() as cur, cur.copy(f"COPY {name} (part, {', '.join(_KEY_COLUMNS[name])}) FROM STDIN") as copy:
            for row in keyed:
                copy.write_row(row)
    if sum(len(p) for p in parts) > SMALL_RUN_STUDENTS:
        for name in ("match_in", *_KEY_TABLES):
            conn.execute(f"ANALYZE {name}")


def _as_arrays(sql: str, rows: dict[str, dict[tuple, None]]) -> tuple[str, dict[str, str]]:
    """``sql`` with each key table read from array parameters (``unnest``) instead of its
    temporary table: the same statement for one small part, without creating ten tables."""
    params: dict[str, str] = {}
    for name, keyed in rows.items():
        types = ("int", *_KEY_TYPES[name])
        values = list(zip(*keyed)) if keyed else [()] * len(types)
        for n, typ in enumerate(types):
            params[f"{name}_{n}"] = _array_literal(values[n], typ)
    return _arrays_sql(sql, tuple(rows)), params


@functools.lru_cache(maxsize=32)
def _arrays_sql(sql: str, names: tuple[str, ...]) -> str:
    """:func:`_as_arrays`' statement text: each key table of ``names`` an ``unnest`` of its
    parameters (the same text every run: made once, not ~12 regular expressions a call)."""
    import re

    for name in names:
        cols = ("part", *_KEY_COLUMNS[name])
        types = ("int", *_KEY_TYPES[name])
        args = [f"%({name}_{n})s::{typ}[]" for n, typ in enumerate(types)]
        sql = re.sub(rf"\b{name}\b", f"(SELECT * FROM unnest({', '.join(args)}) AS t({', '.join(cols)}))", sql)
    return sql


def _array_literal(values: Any, typ: str) -> str:
    """A Postgres array literal of key values (whole numbers, booleans, or text: each element
    quoted, backslash and double quote escaped; ``None`` is NULL): psycopg's list dumper
    handles each element in Python, ~10 ms of a 400-student school run's ~70 key arrays
    (issue 15). The common case (every value a Python ``int``, or every value a ``str`` with
    no backslash or double quote) is one ``join`` (~0.1 us a value, not ~0.6)."""
    if typ == "int":
        if all(type(v) is int for v in values):
            return "{" + ",".join(map(str, values)) + "}"
        return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"
    if typ == "bool":
        return "{" + ",".join("NULL" if v is None else "t" if v else "f" for v in values) + "}"
    if all(type(v) is str for v in values):
        raw = "".join(values)
        if "\\" not in raw and '"' not in raw:
            return '{"' + '","'.join(values) + '"}' if values else "{}"
    return "{" + ",".join("NULL" if v is None else '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
                          for v in values) + "}"


def carer_contacts(conn: Connection, files: list[int]) -> list[tuple]:
    """The run's school contacts as :func:`match_carers` reads them (matcher input columns, then
    file, student GUID, contact id), a rerun's carer decisions removed first."""
    return _send_carer_contacts(conn, files).fetchall()


def _send_carer_contacts(conn: Connection, files: list[int]) -> Any:
    """:func:`carer_contacts`' statements, sent (in a pipeline: in the caller's round trip): the
    cursor of the contacts' read."""
    conn.execute("DELETE FROM results.carer_match WHERE file_id = ANY(%s)", (files,))
    # (one row per contact, the lowest student's, before its home address is read: a contact of
    # several students is read once)
    return conn.execute(
        """SELECT c.file_id::text || '|' || c.person_id, c.base_id, NULL, c.person_id, c.forename, NULL, c.surname,
                  c.gender, NULL::date, h.postcode, h.line, c.file_id, c.student_guid, c.person_id
             FROM (SELECT DISTINCT ON (c.file_id, c.person_id) c.*
                     FROM staging.contact c
                    WHERE c.file_id = ANY(%s) AND c.person_id IS NOT NULL
                    ORDER BY c.file_id, c.person_id, c.student_guid) c
             LEFT JOIN LATERAL (
                  SELECT a->>'postcode' AS postcode, concat_ws(' ', a->>'paon', a->>'street') AS line
                    FROM jsonb_array_elements(coalesce(c.addresses, '[]')) a
                   WHERE a->>'type' = 'H' ORDER BY a->>'start_date' DESC NULLS LAST LIMIT 1) h ON true
            ORDER BY c.file_id, c.person_id""", (files,))


def match_carers(conn: Connection, ctx: RunContext, settings: Settings, files: list[int],
                 rows: list[tuple] | None = None, reads: CarerReads | None = None) -> dict:
    """F14: the run's school contacts matched to the LA's person records, with the student
    matcher: LA adults (``core.adult``) and LA children at least ``settings.carer_min`` years
    old on the window's date. A contact has no DOB, so a missing DOB does not stop a link;
    name, gender, home postcode and address carry it, with the same margin and corroboration
    (a son of the same name at the same address makes it ambiguous: an officer decides).
    A contact is never its own student (:func:`carer_candidates`' ``own`` pairs, the
    matcher's ``rejected``). Decisions go to ``results.carer_match``, one row per contact per
    file (a few: one INSERT, which a caller's pipeline sends in its round trip). ``rows``: the
    contacts as :func:`carer_contacts` read them (which also removes a rerun's decisions);
    ``reads``: their candidates' reads, already sent (:class:`CarerReads` of these ``rows``
    and ``files``, after this run's decisions and links)."""
    import pandas as pd

    from b2b import matching

    if rows is None:
        rows = carer_contacts(conn, files)
    if not rows:
        return {"contacts": 0, "matched": 0, "possible": 0}
    if reads is None:
        with conn.pipeline():
            reads = CarerReads(conn, rows, ctx.window_end.date(), settings.carer_min, files)
    columns, keyed = reads.columns, reads.memo  # (the names keyed once for both)
    people, _, tf = reads.read()
    # only the contacts that share a blocking key with a candidate go to the matcher (most share
    # none: preparing and deciding them gave "no candidate" at a cost per contact); the others
    # are written as the matcher decides a record without candidates (no frame is built for
    # them: most school runs' contacts have no candidate)
    paired = carer_paired(columns, _Columns(people, matching.CORE_COLUMNS + ["kind"]), keyed)
    d: dict[str, tuple] = {}
    counts: dict[str, int] = {}
    if people and any(paired):
        core, tf = reads.result()
        some = reads.contacts[paired]
        cfg = matching.MatchConfig(guidmatch=False, dob_required=False)
        own = pd.DataFrame([(b, c, p) for p, pairs in zip(core["person_id"].tolist(), core["own"].tolist())
                            for b, c in (pairs or ())], columns=["base_id", "guid", "person_id"])
        decided = matching.match(core[matching.CORE_COLUMNS], some[matching.INCOMING_COLUMNS], cfg,
                                 min_age=settings.carer_min, as_of=ctx.window_end.date(), tf=tf, rejected=own)
        d = {r[0]: r[1:] for r in zip(*(decided[c].tolist() for c in ("incoming_id", "person_id", "status", "rule",
                                                                       "score", "explanation")))}
        counts = decided["status"].value_counts().to_dict()
    kind = {r[0]: r[-1] for r in people}
    out = []
    for iid, file_id, base_id, contact_id, guid in zip(*(columns[c].tolist() for c in (
            "incoming_id", "file_id", "base_id", "contact_id", "student_guid"))):
        pid, status, rule, score, expl = d.get(iid, NO_CANDIDATE)
        pid = pid or None
        out.append((file_id, base_id, contact_id, guid, pid, kind.get(pid) if pid else None, status, rule,
                    None if pd.isna(score) else float(score), expl))
    _write_rows(conn, "results.carer_match", _CARER_MATCH_COLUMNS, out)
    return {"contacts": len(columns), "matched": counts.get("matched", 0) + counts.get("matched_with_conflicts", 0),
            "possible": counts.get("possible", 0)}


#: results.carer_match's columns as :func:`match_carers` writes them, with their types
_CARER_MATCH_COLUMNS = (("file_id", "bigint"), ("base_id", "text"), ("contact_id", "text"), ("student_guid", "text"),
                        ("person_id", "text"), ("person_kind", "text"), ("status", "text"), ("rule", "text"),
                        ("score", "numeric"), ("explanation", "jsonb"))
#: results.match's columns as :func:`_write_matches` writes them, with their types
_MATCH_COLUMNS = (("file_id", "bigint"), ("base_id", "text"), ("student_guid", "text"), ("person_id", "text"),
                  ("status", "text"), ("rule", "text"), ("score", "numeric"), ("hidden", "bool"),
                  ("age_years", "int"), ("window_order", "text"), ("explanation", "jsonb"))
#: at most this many rows are written by one INSERT of array literals (a statement a pipeline
#: sends with others: one round trip, where a COPY is two of its own and cannot be pipelined);
#: more by COPY (its rows cost less to send and parse: 20 decisions 0.9 ms by COPY, 1.35 ms by
#: INSERT; 400, a snapshot's school run, ~8 ms against ~13 ms)
SMALL_WRITE_ROWS = 10


def _write_rows(conn: Connection, table: str, columns: tuple[tuple[str, str], ...], rows: list[tuple]) -> None:
    """``rows`` into ``table`` (``columns``: name and type of each value): a few by one INSERT
    of unnested array literals (numbers and JSON as their text, cast as COPY's text reads
    them), more by COPY; the same values either way (a test holds them equal)."""
    if not rows:
        return
    names = ", ".join(c for c, _ in columns)
    if len(rows) > SMALL_WRITE_ROWS:
        with conn.cursor() as cur, cur.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    params, args, cols = [], [], []
    for k, ((_, typ), values) in enumerate(zip(columns, zip(*rows))):
        literal = "int" if typ in ("bigint", "int") else "bool" if typ == "bool" else "text"
        if literal == "text":  # (and what COPY reads from text: a number as its repr, JSON)
            values = tuple(None if v is None else repr(float(v)) if typ == "numeric" else v if type(v) is str
                           else str(v) for v in values)
        params.append(_array_literal(values, literal))
        args.append(f"%s::{'text' if literal == 'text' else typ}[]")
        cols.append(f"v{k}::{typ}" if literal == "text" and typ != "text" else f"v{k}")
    conn.execute(f"INSERT INTO {table} ({names}) SELECT {', '.join(cols)} "
                 f"FROM unnest({', '.join(args)}) AS t({', '.join(f'v{k}' for k in range(len(columns)))})", params)


#: the matcher's decision for a record without any candidate pair (b2b.matching.match: person,
#: status, rule, score, explanation; a test holds them equal)
NO_CANDIDATE = ("", "unmatched", "none", 0.0, '{"candidates": 0}')


def _name_keyer(memo: dict[Any, str]) -> Any:
    """``name_key`` remembered in ``memo``: the carers key a run's contact names once, for
    the candidates and for the pairing."""
    from b2b.matching import name_key

    def key(v: Any) -> str:
        if v not in memo:
            memo[v] = name_key(v)
        return memo[v]

    return key


def carer_paired(contacts: Any, core: Any, memo: dict[Any, str] | None = None) -> list[bool]:
    """The contacts that share a blocking key with one of the candidate people ``core``: a
    contact has no DOB, UPN or GUID, so of the matcher's keys (``blocking.KEYS`` and the
    surname parts, each with a DOB part but these) only forename + surname and the postcode
    with the forename or surname initial can pair it. A contact sharing none has no candidate
    pair, and no other record's decision reads it: the matcher's batch rules read records with
    a DOB (twins on a roll; a name and DOB twice in the batch, for a link on a rare name and
    DOB) or with a candidate (one LA person claimed by two records). The 200-school bench's
    88,295 contacts decide the same with and without the others (issue 15). ``memo``: names
    already keyed (:func:`carer_candidates` keys the contacts' names first)."""
    from b2b import matching

    memo = {} if memo is None else memo

    key = _name_keyer(memo)

    def pc(v: Any) -> str:
        return matching.postcode_key(v) if isinstance(v, str) else ""

    names: set[tuple[str, str]] = set()
    homes: set[tuple[str, str, str]] = set()
    for f, s, p in zip(core["forename"].tolist(), core["surname"].tolist(), core["postcode"].tolist()):
        f, s, p = key(f), key(s), pc(p)
        names.add((f, s))
        if p:
            homes.update(((p, "f", f[:1]), (p, "s", s[:1])))
    out = []
    for f, s, p in zip(contacts["forename"].tolist(), contacts["surname"].tolist(), contacts["postcode"].tolist()):
        f, s, p = key(f), key(s), pc(p)
        out.append(bool(f and s and (f, s) in names)
                   or bool(p and ((f and (p, "f", f[:1]) in homes) or (s and (p, "s", s[:1]) in homes))))
    return out


#: the LA people a contact can be paired with (F14): LA children at least CARER_MIN years old on
#: the day and LA adults, whose forename + surname keys are a contact's (``kf``/``ks``), or who
#: live at a contact's postcode (``pcs``) with its forename (``hf_*``) or surname (``hs_*``)
#: initial; each branch an index read (the matching keys of core.child and core.adult)
_CARER_CHILD = """SELECT c.person_id, c.upn, NULL::text, c.forename, c.middle_names, c.surname, c.gender, c.dob,
           c.postcode, concat_ws(' ', c.paon, c.street), NULL::text, 'child' AS kind
      FROM core.child c WHERE c.active AND c.dob <= (%(asof)s::date - make_interval(years => %(min)s)) AND """
_CARER_ADULT = """SELECT a.person_id, NULL, NULL, a.forename, a.middle_names, a.surname, a.gender, a.dob, a.postcode,
           concat_ws(' ', a.paon, a.street), NULL, 'adult'
      FROM core.adult a WHERE """
_CARER_BY_NAME = "({t}.m_fn, {t}.m_sn) IN (SELECT * FROM unnest(%(kf)s::text[], %(ks)s::text[]))"
_CARER_BY_HOME = """{t}.m_pc = ANY(%(pcs)s::text[])
       AND (({t}.m_pc, left({t}.m_fn, 1)) IN (SELECT * FROM unnest(%(hf_pc)s::text[], %(hf_i)s::text[]))
            OR ({t}.m_pc, left({t}.m_sn, 1)) IN (SELECT * FROM unnest(%(hs_pc)s::text[], %(hs_i)s::text[])))"""
_CARER_CANDIDATES = "\n    UNION\n    ".join(
    [_CARER_CHILD + _CARER_BY_NAME.format(t="c"), _CARER_CHILD + _CARER_BY_HOME.format(t="c"),
     _CARER_ADULT + _CARER_BY_NAME.format(t="a"), _CARER_ADULT + _CARER_BY_HOME.format(t="a")]) + "\n    ORDER BY 1"
#: per run contact (base, contact id), the LA children its own students are linked to: a contact
#: is never its own student, so these pairs are never proposed (the matcher's ``rejected``;
#: F14: a parent with the very name of their teenage child at the same home is otherwise a link
#: to the child). This run's automatic links (``results.match``: a student's record and its
#: contacts may come in different files of the run) and every earlier or officer link
#: (``core.child_link``), by each one's primary key, per contact row: no join the planner could
#: turn into a hash of core.child_link (~30 ms at 80k children) or a nested loop over a table
#: whose statistics lag behind a snapshot's growth (a candidate statement that joined them took
#: 0.2-7 s a run in the 200-school bench)
_OWN_STUDENTS = """SELECT DISTINCT c.base_id, c.person_id, x.person_id
             FROM staging.contact c
            CROSS JOIN LATERAL (
                  SELECT m.person_id FROM results.match m
                   WHERE m.file_id = ANY(%(files)s) AND m.student_guid = c.student_guid AND m.base_id = c.base_id
                     AND m.status IN ('matched', 'matched_with_conflicts')
                  UNION ALL
                  SELECT l.person_id FROM core.child_link l
                   WHERE l.base_id = c.base_id AND l.student_guid = c.student_guid) x
            WHERE c.file_id = ANY(%(files)s) AND c.person_id IS NOT NULL"""


def carer_candidates(conn: Connection, contacts: Any, asof: Any, carer_min: int,
                     files: list[int] | None = None, memo: dict[Any, str] | None = None) -> tuple[Any, Any]:
    """The LA people the contacts can be paired with, and the name frequencies to score them.

    A contact has no DOB, UPN or GUID, so of the matcher's blocking keys (``blocking.KEYS``) only
    forename + surname and the postcode with either initial can pair it: the candidates are the
    people whose normalised forename and surname are a contact's, or who live at its postcode
    with its forename or surname initial (read by the matching keys of core.child and
    core.adult, migrations 0010 and 0042).

    The name frequencies are those of the whole carer population (every LA adult and every
    active LA child at least ``carer_min`` years old on ``asof``), as the students' are those
    of every LA child: a rare name agreeing is worth more than a common one in the LA, not
    among the neighbours a run happens to read. They are cached in Postgres per state of
    core.child and core.adult and per day (no school stage writes either: a snapshot's runs all
    read one cache), and read for the contacts' names only (``core.carer_name_counts``,
    migration 0042; issue 15), with the candidates in one round trip. With the run's ``files``, each candidate child comes with the contacts
    whose own students it is linked to (column ``own``: :data:`_OWN_STUDENTS`, in the same pipeline).
    ``memo``: the names keyed (``name_key``), kept for :func:`carer_paired`. (:class:`CarerReads`:
    the same reads sent in a caller's round trip.)"""
    with conn.pipeline():
        reads = CarerReads(conn, contacts, asof, carer_min, files, memo)
    return reads.result()


class CarerReads:
    """:func:`carer_candidates`' statements for the contacts (a frame, or :func:`carer_contacts`'
    rows), sent when made (a caller's pipeline sends them with its others: :func:`match` sends
    them after its decisions, guards and links, which :data:`_OWN_STUDENTS` reads); their
    result read by :meth:`result` (frames) or :meth:`read` (rows) once the pipeline is synced.
    ``columns``: the contacts column by column; ``memo``: their names keyed."""

    def __init__(self, conn: Connection, contacts: Any, asof: Any, carer_min: int, files: list[int] | None = None,
                 memo: dict[Any, str] | None = None) -> None:
        from b2b import matching

        # (rows: read column by column, a frame built only when a contact goes to the matcher)
        self._frame = None if isinstance(contacts, list) else contacts
        self.columns = _Columns(contacts, _contact_columns()) if isinstance(contacts, list) else contacts
        self.files = files
        self.memo = memo = {} if memo is None else memo
        self._read: tuple[list, list, Any] | None = None
        key = _name_keyer(memo)
        fns = [key(v) for v in self.columns["forename"].tolist()]
        sns = [key(v) for v in self.columns["surname"].tolist()]
        pcs = [matching.postcode_key(v) if isinstance(v, str) else "" for v in self.columns["postcode"].tolist()]
        # the forename + surname key (both present), and the postcode with either initial
        k = sorted({(f, s) for f, s in zip(fns, sns) if f and s})
        hf = sorted({(p, f[:1]) for f, p in zip(fns, pcs) if p and f})
        hs = sorted({(p, s[:1]) for s, p in zip(sns, pcs) if p and s})
        # the counts and the candidates (the key arrays as array literals: psycopg's list
        # dumper takes each element in Python)
        self.counted = conn.execute(
            "SELECT col, name, n, sq FROM core.carer_name_counts(%s, %s, %s::text[], %s::text[])",
            (asof, carer_min, _array_literal(sorted(set(fns) - {""}), "text"),
             _array_literal(sorted(set(sns) - {""}), "text")))
        self.found = conn.execute(_CARER_CANDIDATES, {
            **{name: _array_literal(values, "text") for name, values in (
                ("kf", [f for f, _ in k]), ("ks", [s for _, s in k]), ("hf_pc", [p for p, _ in hf]),
                ("hf_i", [i for _, i in hf]), ("hs_pc", [p for p, _ in hs]), ("hs_i", [i for _, i in hs]),
                ("pcs", sorted({p for p, _ in hf + hs})))},
            "asof": asof, "min": carer_min}) if k or hf or hs else None
        self.own = conn.execute(_OWN_STUDENTS, {"files": files}) \
            if files is not None and self.found is not None else None

    @property
    def contacts(self) -> Any:
        """The contacts' frame (:func:`carer_contacts`' columns)."""
        if self._frame is None:
            import pandas as pd

            self._frame = pd.DataFrame(self.columns.rows, columns=_contact_columns())
        return self._frame

    def read(self) -> tuple[list, list, Any]:
        """(the candidates' rows: ``CORE_COLUMNS`` and ``kind``; the own-student rows: base,
        contact, child; the name frequencies), read once."""
        if self._read is None:
            from b2b.matching.comparisons import TermFrequencies

            counts: dict[str, dict[str, int]] = {"fn": {}, "sn": {}}
            totals: dict[str, tuple[int, int]] = {}
            for col, name, n, sq in self.counted.fetchall():
                if name is None:
                    totals[col] = (int(n), int(sq))
                else:
                    counts[col][name] = int(n)
            self._read = (self.found.fetchall() if self.found is not None else [],
                          self.own.fetchall() if self.own is not None else [], TermFrequencies(counts, totals))
        return self._read

    def result(self) -> tuple[Any, Any]:
        """(the candidates' frame, the name frequencies), as :func:`carer_candidates` gives them."""
        import pandas as pd

        from b2b import matching

        people, own_rows, tf = self.read()
        core = pd.DataFrame(people, columns=matching.CORE_COLUMNS + ["kind"])
        if self.files is not None:
            # (each candidate child with the run's contacts whose own students it is linked to)
            own: dict[str, list[tuple[str, str]]] = {}
            for base_id, contact, child in own_rows:
                own.setdefault(child, []).append((base_id, contact))
            kinds = core["kind"].tolist()
            core["own"] = [own.get(p) if kind == "child" else None
                           for p, kind in zip(core["person_id"].tolist(), kinds)]
        return core, tf


def _contact_columns() -> list[str]:
    """:func:`carer_contacts`' columns: the matcher's input columns, then file, student, contact."""
    from b2b.matching import INCOMING_COLUMNS

    return INCOMING_COLUMNS + ["file_id", "student_guid", "contact_id"]


class _Columns:
    """Rows read column by column as a frame's ``frame[col].tolist()`` reads them: a school
    run's few contacts and their candidates, without building DataFrames (~0.2 ms each)."""

    def __init__(self, rows: list[tuple], columns: list[str]) -> None:
        self.rows, self._at = rows, {c: k for k, c in enumerate(columns)}

    def __getitem__(self, col: str) -> _ColumnList:
        k = self._at[col]
        return _ColumnList([r[k] for r in self.rows])

    def __len__(self) -> int:
        return len(self.rows)


class _ColumnList(list):
    """A column of :class:`_Columns` (a list, ``tolist`` as a Series has it)."""

    def tolist(self) -> list:
        return list(self)


def term_frequencies(conn: Connection, incoming: Any) -> Any:
    """The LA's name frequencies for these students' names (counted over every LA child, as
    ``b2b match`` counts them over the whole CORE.csv), for the term-frequency adjustment."""
    pending = PendingFrequencies(incoming)
    return pending.result(conn)


class PendingFrequencies:
    """:func:`term_frequencies`' statement, to be sent in a round trip of the caller's (a small
    run sends it with its candidate reads: :func:`_one_small_part`) or on its own
    (:meth:`result`). One statement: the counts per name, cached per state of core.child
    (migration 0038), not a count over every child bearing one of the run's names (a share of
    the LA per run); and the totals over every LA child (cached likewise, migration 0033)."""

    SQL = """SELECT 'count', col, name, n, NULL::bigint FROM core.child_name_counts(%(fn)s, %(sn)s)
               UNION ALL
               SELECT 'total', col, NULL, n, sq FROM core.child_name_totals()"""

    def __init__(self, incoming: Any) -> None:
        from b2b.matching import name_key
        from b2b.matching.normalise import is_missing

        self.params = {col: sorted({name_key(v) for v in incoming[name].tolist() if not is_missing(v)} - {""})
                       for col, name in (("fn", "forename"), ("sn", "surname"))}
        self.rows: list[tuple] | None = None  # (set by whoever sent the statement)
        self._result: Any = None

    def result(self, conn: Connection) -> Any:
        """The frequencies: from the rows already read, else read now (once: kept)."""
        from b2b.matching.comparisons import TermFrequencies

        if self._result is not None:
            return self._result
        rows = self.rows if self.rows is not None else conn.execute(self.SQL, self.params).fetchall()
        counts: dict[str, dict] = {"fn": {}, "sn": {}}
        totals = {}
        for kind, col, value, n, sq in rows:
            if kind == "count":
                counts[col][value] = n
            else:
                totals[col] = (int(n), int(sq))
        self._result = TermFrequencies(counts, totals)
        return self._result


def school_parts(incoming: Any, size: int | None = None) -> Iterator[Any]:
    """The run's students in parts of about ``size``, whole schools each; by default (read at
    call time) one part up to :data:`PART_STUDENTS`, beyond it parts of :data:`SPLIT_STUDENTS`
    divided by the processes deciding them (:func:`b2b.forked.processes`)."""
    if size is None:
        if len(incoming) <= PART_STUDENTS:
            yield incoming
            return
        # (several processes: parts as many times smaller, so that their parts' frames together
        # take what one process's do; each part's fixed cost is then shared by as many cores)
        size = min(PART_STUDENTS, max(1, SPLIT_STUDENTS // forked.processes()))
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
    """One ``results.match`` row per incoming student (``decided`` is row-aligned with it), from
    plain lists (the explanation already names the differing fields, b2b.matching.decide), by
    :func:`_write_rows`; an empty text is NULL, as in CSV."""
    from datetime import date

    import pandas as pd

    assert len(decided) == len(incoming)
    as_of = ctx.window_end.date()
    ages: list[Any] = incoming["dob"].tolist()
    if all(v is None or type(v) is date for v in ages):  # what the database gives: no Series maths
        ages = [None if v is None else as_of.year - v.year - ((v.month, v.day) > (as_of.month, as_of.day))
                for v in ages]
    else:
        dob = pd.to_datetime(incoming["dob"], errors="coerce")
        later = (dob.dt.month > as_of.month) | ((dob.dt.month == as_of.month) & (dob.dt.day > as_of.day))
        ages = (as_of.year - dob.dt.year - later.astype(int)).astype("Int64").tolist()  # <NA> without a DOB
    score = decided["score"].tolist() if decided["score"].dtype.kind == "f" else \
        pd.to_numeric(decided["score"], errors="coerce").astype(float).tolist()

    def text(v: Any) -> Any:
        return None if v is None or v is pd.NA or (isinstance(v, float) and v != v) or v == "" else v

    window_order = ctx.window_order  # (a property computed per call: once, not per row)
    rows = []
    for file_id, base_id, guid, pid, status, rule, sc, a, expl in zip(
            incoming["file_id"].tolist(), incoming["base_id"].tolist(), incoming["student_guid"].tolist(),
            decided["person_id"].tolist(), decided["status"].tolist(), decided["rule"].tolist(), score,
            ages, decided["explanation"].tolist()):
        a = None if a is pd.NA or a is None else int(a)
        rows.append((file_id, text(base_id), text(guid), text(pid), text(status), text(rule),
                     None if sc != sc else sc, status == "unmatched" and a is not None and a > settings.b2b_s_age,
                     a, window_order, text(expl) or "{}"))
    # (a school run's few rows: one INSERT, sent in the stage's pipeline with the guards)
    _write_rows(conn, "results.match", _MATCH_COLUMNS, rows)
