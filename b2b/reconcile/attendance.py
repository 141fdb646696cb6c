"""The LA's attendance store (issue 4; F8, F22, F24, F30): one marks string per student per
academic year, the DX_XML_Attend model.

A marks string has one character per session, AM then PM, for every weekday from the
academic year's start date (1 September); ``-`` is a session with no mark. Codes are the
DfE national codes (``docs/protocol.md``).

How an incoming attendance block changes the stored string:

* ``all_current`` / ``all_previous`` (and a SIMS Primary attendance snapshot) carry every
  mark from the start of their month window: positions from the window start are
  **replaced**, earlier ones kept;
* ``unauthorised_current`` / ``absences_current`` carry only some codes (others ``-``):
  the marks they carry are **overlaid**, nothing else changes;
* SIMS Primary "attendance changed data" carries ``changes`` (date, session, code): each is
  **inserted at its offset**, the rest untouched — in the string of the academic year the
  date belongs to (a window across 1 September touches two years).

A change is read by :func:`read_change`: a date written ``YYYY-MM-DD`` on a weekday, a session
``AM`` or ``PM``, a code of one character (or none: no mark). The validate stage refuses a
pupil's block with a change that is not (rules ``attendance_change_date``, ``_session``,
``_code``: :func:`change_problems`), so it never reaches the load; should one still get there,
:func:`store_marks` stops with an :class:`AttendanceError` naming the base, file and pupil.

Rows of ``core.attendance_marks`` are versions per file (rerun-safe like every derived
table); ``core.attendance_current`` is the latest per (base, student, year).
"""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from b2b.errors import IngestError
from b2b.reconcile import stale_stats

if TYPE_CHECKING:
    from psycopg import Connection

    from b2b.context import RunContext

#: the run tables :func:`store_marks` joins, which an LA's first snapshot outgrows
#: (``b2b.reconcile.stale_stats``; checked in the load stage's first round trip)
GROWING_TABLES = stale_stats.growing("staging.attendance", "core.attendance_marks")

PRESENT = "/\\LBDJPVWK"
AUTHORISED = "CEIMRSTQH"
UNAUTHORISED = "GNOU"
NOT_COUNTED = "XYZ#"
NO_MARK = "-"
FULL_FILTERS = ("all_current", "all_previous")
SESSIONS = ("AM", "PM")
#: how far into the academic year next to the one a changed-data block names its changes may
#: reach, from the run's window end: a window across 1 September touches two years, and a
#: changed-data run sends nothing older than three months (F5)
ADJACENT_YEAR_REACH = timedelta(days=92)
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class AttendanceError(IngestError):
    """An attendance block cannot be applied to the stored marks (load stage). It names the base,
    the file and the pupil, never a date, session or mark; a retry cannot help."""


class ChangeError(ValueError):
    """A changed mark is not well formed; the message names the field and the problem, no value."""


def academic_year_of(d: date) -> int:
    return d.year if d.month >= 9 else d.year - 1


def year_start(ay: int) -> date:
    return date(ay, 9, 1)


def session_offset(ay_start: date, d: date, session: str) -> int:
    """Index of (date, AM/PM) in the marks string of the year starting ``ay_start``."""
    if d.weekday() >= 5:
        raise ValueError(f"{d} is not a school day (weekend)")
    if d < ay_start:
        raise ValueError(f"{d} is before the academic year starting {ay_start}")
    if not isinstance(session, str) or session.upper() not in SESSIONS:
        raise ValueError("a session is AM or PM")
    days = (d - ay_start).days
    weeks, rest = divmod(days, 7)
    weekdays = weeks * 5 + sum(1 for k in range(rest) if (ay_start + timedelta(days=k)).weekday() < 5)
    return 2 * weekdays + SESSIONS.index(session.upper())


# ------------------------------------------------------------------ one changed mark
def date_problem(v: Any) -> str | None:
    """Why ``v`` is not a change's date (a weekday written YYYY-MM-DD), or None. No value is quoted."""
    if v is None:
        return "missing"
    if not isinstance(v, str):
        return "not text"
    if not _ISO_DATE.fullmatch(v):
        return "not YYYY-MM-DD"
    try:
        d = date.fromisoformat(v)
    except ValueError:
        return "not a real date"
    if d.weekday() >= 5:
        return "not a school day (weekend)"
    if academic_year_of(d) < 1:
        return "outside the academic year"
    return None


def session_problem(v: Any) -> str | None:
    """Why ``v`` is not a change's session (AM or PM), or None."""
    if v is None:
        return "missing"
    if not isinstance(v, str):
        return "not text"
    return None if v.upper() in SESSIONS else "not AM or PM"


def code_problem(v: Any) -> str | None:
    """Why ``v`` is not a change's code (one character; none or empty: no mark), or None. Which
    characters are DfE codes is the suite's ``attendance_code`` rule (``change_codes``)."""
    if v is None:
        return None
    if not isinstance(v, str):
        return "not text"
    return None if len(v) <= 1 else "more than one character"


def year_problem(d: date, named_year: int, as_of: date) -> str | None:
    """Whether a change's date lies outside the academic year its block names: the year next to
    it is allowed only within :data:`ADJACENT_YEAR_REACH` of the run's window end ``as_of``."""
    year = academic_year_of(d)
    if year == named_year or (abs(year - named_year) == 1 and abs(d - as_of) <= ADJACENT_YEAR_REACH):
        return None
    return "outside the academic year"


def change_problems(changes: list, academic_year: Any, as_of: date) -> dict[str, str | None]:
    """The validate stage's view of a block's changes: per field (``date``, ``session``, ``code``),
    the distinct problems of its changes joined by ``; `` (None when every change is right).

    ``academic_year`` is the block's (JSON number or text, as the staging table reads it); when
    it is not a whole number the year of the run's window end ``as_of`` stands in."""
    named = _whole(academic_year)
    named = academic_year_of(as_of) if named is None else named
    found: dict[str, set[str]] = {"date": set(), "session": set(), "code": set()}
    for ch in changes:
        if not isinstance(ch, dict):  # the file is put in suspense before this is read
            continue
        v = ch.get("date")
        problem = date_problem(v)
        if problem is None and isinstance(v, str):
            problem = year_problem(date.fromisoformat(v), named, as_of)
        if problem:
            found["date"].add(problem)
        if problem := session_problem(ch.get("session")):
            found["session"].add(problem)
        if problem := code_problem(ch.get("code")):
            found["code"].add(problem)
    return {k: "; ".join(sorted(v)) or None for k, v in found.items()}


def _whole(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            return None
    return None


def read_change(ch: Any) -> tuple[date, int, str]:
    """(date, session index 0/1, code) of one change; ValueError, naming the field and the
    problem but no value, when it is not well formed."""
    if not isinstance(ch, dict):
        raise ChangeError("a change is not an object")
    for name, check in (("date", date_problem), ("session", session_problem), ("code", code_problem)):
        problem = check(ch.get(name))
        if problem:
            raise ChangeError(f"change {name}: {problem}")
    return date.fromisoformat(ch["date"]), SESSIONS.index(ch["session"].upper()), ch.get("code") or NO_MARK


def merge(existing: str | None, incoming: str, mode: str, from_offset: int = 0) -> str:
    """Apply an incoming marks string to the stored one.

    ``replace``: positions >= ``from_offset`` come from ``incoming`` (shorter incoming ends
    the string there), earlier positions are kept; ``overlay``: only marks (not ``-``) of
    ``incoming`` are written.
    """
    old = existing or ""
    if mode == "replace":
        head = old[:from_offset].ljust(from_offset, NO_MARK)
        return (head + incoming[from_offset:]).rstrip(NO_MARK) or NO_MARK
    if mode == "overlay":
        width = max(len(old), len(incoming))
        o, n = old.ljust(width, NO_MARK), incoming.ljust(width, NO_MARK)
        return "".join(b if b != NO_MARK else a for a, b in zip(o, n)).rstrip(NO_MARK) or NO_MARK
    raise ValueError(f"unknown merge mode {mode!r}")


def apply_changes(existing: str | None, ay: int, changes: list[dict]) -> str:
    """Insert SIMS Primary changed marks (date, session, code) at their offsets.

    Raises :class:`ChangeError` on a change that is not well formed (:func:`read_change`)."""
    marks = list(existing or "")
    start = year_start(ay)
    # in date and session order; of two changes of one session the later in the list wins
    for d, session, code in sorted(map(read_change, changes), key=lambda c: (c[0], c[1])):
        if academic_year_of(d) != ay:
            continue
        k = session_offset(start, d, SESSIONS[session])
        if k >= len(marks):
            marks.extend(NO_MARK * (k + 1 - len(marks)))
        marks[k] = code
    return "".join(marks).rstrip(NO_MARK) or NO_MARK


def window_offset(ay: int, window_end: datetime, months: int | None, attendance: str | None = None) -> int:
    """Offset of the first session a months-limited full task carries (0 = the whole year).

    The month window (F24) counts back from the run and applies to the *current* academic
    year only: a previous-year task (``all_previous``, F30) sends that whole year, so its
    string is replaced from the start (a months filter on it must never blank its first
    sessions, nor leave a first run empty)."""
    if not months or attendance == "all_previous" or ay != academic_year_of(window_end.date()):
        return 0
    first = window_end.date() - timedelta(days=30 * months)
    start = year_start(ay)
    if first <= start:
        return 0
    while first.weekday() >= 5:
        first += timedelta(days=1)
    return session_offset(start, first, "AM")


def store_marks(conn: Connection, ctx: RunContext, files: list[int], *, months: int | None = None) -> int:
    """Merge the run's loaded attendance blocks into ``core.attendance_marks`` (one query to
    read what is stored as of the window, one COPY to write the new versions)."""
    import json

    rows = conn.execute(
        """SELECT a.file_id, a.base_id, a.student_guid, a.academic_year, a.marks, a.changes
             FROM staging.attendance a WHERE a.file_id = ANY(%s) ORDER BY a.file_id, a.ordinal""",
        (files,)).fetchall()
    if not rows:
        return 0
    keys = sorted({(r[1], r[2]) for r in rows})
    stored = {}
    for base, guid, ay, marks in conn.execute(
            """SELECT DISTINCT ON (m.base_id, m.student_guid, m.academic_year)
                      m.base_id, m.student_guid, m.academic_year, m.marks
                 FROM core.attendance_marks m
                 JOIN unnest(%s::text[], %s::text[]) AS k(base_id, guid)
                   ON m.base_id = k.base_id AND m.student_guid = k.guid
                WHERE m.window_order < %s
                ORDER BY m.base_id, m.student_guid, m.academic_year, m.window_order DESC""",
            ([k[0] for k in keys], [k[1] for k in keys], ctx.window_order)):
        stored[(base, guid, ay)] = marks
    out: dict[tuple, tuple] = {}
    mode = "replace" if ctx.attendance in FULL_FILTERS or ctx.attendance is None else "overlay"
    for file_id, base, guid, ay, marks, changes in rows:
        if changes is not None:
            try:
                changes = changes if isinstance(changes, list) else json.loads(changes)
                if not isinstance(changes, list):
                    raise ChangeError("changes is not a list")
                for year in sorted({academic_year_of(read_change(c)[0]) for c in changes}):
                    key = (base, guid, year)
                    current = out.get(key, (None, stored.get(key)))[1]
                    out[key] = (file_id, apply_changes(current, year, changes))
            except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
                # the validate stage refuses such a block; this is the guard for what it did not foresee.
                # Our own messages name a field and a problem, never a value; others only their type.
                why = str(exc) if isinstance(exc, ChangeError) else type(exc).__name__
                raise AttendanceError(f"attendance changes cannot be applied ({why}); nothing of the run is "
                                      "loaded", base=base, file=file_id, record=f"pupil {guid}") from None
        elif marks is not None and ay is not None:
            key = (base, guid, ay)
            current = out.get(key, (None, stored.get(key)))[1]
            offset = window_offset(ay, ctx.window_end, months, ctx.attendance) if mode == "replace" else 0
            out[key] = (file_id, merge(current, marks, mode, offset))
    changed = {k: v for k, v in out.items() if stored.get(k) != v[1]}
    with conn.cursor() as cur, cur.copy(
            "COPY core.attendance_marks (file_id, base_id, student_guid, academic_year, window_order, marks) "
            "FROM STDIN") as copy:
        for (base, guid, ay), (file_id, marks) in sorted(changed.items()):
            copy.write_row((file_id, base, guid, ay, ctx.window_order, marks))
    return len(changed)
