"""The weekly per-school anomaly report and its return (F32, F33, F42; seed 003).

For each school with differences, ``B2BreportWeekNN`` (NN the ISO week) is built as

* a **Word document** (python-docx) like seed 003's: a front page of instructions, then per
  student the school's data and the LA's side by side, each differing item in bold with an
  instruction and tick boxes, the **postcode check** against the LA's address gazetteer
  (``core.address_gazetteer``) and the count of records printed;
* a **spreadsheet** (openpyxl) with one row per difference and a validated "Which is
  correct" column (School / LA): what the school sends back. A very hidden sheet carries
  the report id and base; each row carries its row key and an HMAC of the values shown
  (keyed by a per-report secret that never leaves the database), so an upload of another
  school's report, of edited values or with unticked rows is refused before anything is
  stored.

Differences are the school's latest data against the LA's record (``core.child``) for
students linked to an LA child, compared with the one rule of :mod:`b2b.blocks`
(``compare_sql``). Reports are stored in ``results.school_report`` and purged after 30 days.

The return (F42): :func:`submit` stores a valid upload as "sent, not yet received"; the
school may :func:`recall` it until the LA :func:`receive` s it. On receipt each tick is a
recorded decision: "School" (the LA was wrong) amends the LA record through
:func:`b2b.ops.officer.resolve_conflict` (``--keep incoming``), "LA" (the school was wrong)
stays open until the school's next export agrees (:func:`close_agreed`).
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from b2b.blocks import (
    ADDRESS_COMPARED,
    COMPARED,
    COMPARED_BY_NAME,
    STUDENT_COMPARED,
    kind_norm_sql,
    norm_sql,
    same_sql,
    same_value,
    text_sql,
)
from b2b.context import scalar
from b2b.errors import OutboundError
from b2b.outbound.returns import XML_UNFIT, differences_sql, latest_sql

if TYPE_CHECKING:

    from psycopg import Connection

log = logging.getLogger(__name__)

RETENTION_DAYS = 30
CHOICES = ("School", "LA")
#: the identity lines every student block shows (seed 003), differing or not
SHOWN = ("forename", "surname", "dob", "gender", "upn")
#: the instruction printed with a difference (a field without one gets the generic sentence)
INSTRUCTIONS = {
    "forename": "Please tick which is the correct legal forename.",
    "middle_names": "Please tick which are the correct middle names.",
    "surname": "Please tick which is the correct legal surname.",
    "dob": "Please confirm which date of birth is correct.",
    "gender": "Please tick which gender is correct.",
    "upn": "Please tick which UPN is correct.",
}
BOX, TICKED = "\u2610", "\u2612"
META_SHEET = "b2b"
SHEET = "Differences"
#: what a spreadsheet program reads as a formula (or, for tab and CR, hides one behind) at the start of a
#: cell (OWASP CSV injection): such text is written as a string cell with a quote prefix, never a formula
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
#: what a mail header cannot carry: line breaks (CR, LF, NEL, U+2028/9) and other control characters
HEADER_UNFIT = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: printed in place of a character a Word or Excel file cannot hold (see :func:`printable`)
REPLACEMENT = "\ufffd"
HEADERS = ("Row", "UPN", "Student", "Item", "School data", "LA data - ONE", "Which is correct", "Instruction",
           "Check")


class ReportError(OutboundError):
    """A report that could not be built or an action on it that cannot be done."""

    retryable = False


class ReportRefused(ReportError):
    """An upload refused as a whole: nothing is stored or applied. ``reasons`` lists each problem."""

    def __init__(self, reasons: list[str], *, base: str | None = None, file: object | None = None) -> None:
        self.reasons = reasons
        super().__init__("upload refused: " + "; ".join(reasons), base=base, file=file)


def report_name(day: date) -> str:
    return f"B2BreportWeek{day.isocalendar()[1]:02d}"


def instruction(fld: str) -> str:
    return INSTRUCTIONS.get(fld, f"Please tick which {COMPARED_BY_NAME[fld].label.lower()} is correct.")


def printable(value: Any) -> str:
    """Text as a report prints it: a character neither Word nor Excel files can hold (a control
    character other than tab, LF and CR; U+FFFE/U+FFFF) is printed as U+FFFD, so one pupil's bad
    value never stops the school's report; :func:`build` logs which student and field."""
    return XML_UNFIT.sub(REPLACEMENT, "" if value is None else str(value))


def shown(fld: str, value: str | None) -> str:
    """A value as printed (dates dd/mm/yyyy, like the guidance)."""
    if value is None:
        return ""
    if COMPARED_BY_NAME.get(fld) is not None and COMPARED_BY_NAME[fld].kind == "date" and len(value) == 10:
        return f"{value[8:10]}/{value[5:7]}/{value[0:4]}"
    return printable(value)


def unprintable(students: list[StudentReport]) -> list[tuple[str, str]]:
    """(student guid, field) of every value printed with U+FFFD (see :func:`printable`)."""
    out: set[tuple[str, str]] = set()
    for st in students:
        for side in (st.school, st.la):
            out.update((st.student_guid, f) for f, v in side.items() if isinstance(v, str) and XML_UNFIT.search(v))
        for d in st.diffs:
            if any(isinstance(v, str) and XML_UNFIT.search(v) for v in (d["school_value"], d["la_value"])):
                out.add((st.student_guid, d["field"]))
        if st.postcode and any(XML_UNFIT.search(v or "") for v in st.postcode.values()):
            out.add((st.student_guid, "address"))
    return sorted(out)


# ------------------------------------------------------------------ what differs
#: a difference the school already answered "the LA is right" for: not asked again
_ANSWERED = """NOT EXISTS (SELECT 1 FROM results.school_report_decision d
                            WHERE d.person_id = l.person_id AND d.field = v.field AND d.status = 'open'
                              AND d.la_value IS NOT DISTINCT FROM v.la_value
                              AND d.school_value IS NOT DISTINCT FROM v.inc_value)"""


def differences(conn: Connection, base_id: str) -> list[dict]:
    """Every compared field where a linked student's latest school value differs from the LA's."""
    order = {c.name: i for i, c in enumerate(COMPARED)}
    rows = conn.execute(differences_sql(STUDENT_COMPARED, ADDRESS_COMPARED, _ANSWERED), {"base": base_id}).fetchall()
    out = [{"student_guid": g, "person_id": p, "field": f, "la_value": la, "school_value": inc}
           for g, p, f, la, inc in rows]
    return sorted(out, key=lambda d: (d["student_guid"], order[d["field"]]))


def postcode_checks(conn: Connection, base_id: str) -> list[dict]:
    """Linked students whose school address is in the LA's gazetteer with another postcode."""
    rows = conn.execute(
        f"""WITH a AS ({latest_sql('address')}),
                 l AS (SELECT student_guid, person_id FROM results.current_link WHERE base_id = %(base)s)
            SELECT a.student_guid, l.person_id, a.postcode, g.paon, g.street, g.locality, g.town, g.postcode
              FROM a JOIN l USING (student_guid)
              JOIN LATERAL (
                   SELECT min(g.paon) AS paon, min(g.street) AS street, min(g.locality) AS locality,
                          min(g.town) AS town, min(g.postcode) AS postcode, count(DISTINCT g.m_pc) AS n,
                          min(g.m_pc) AS m_pc
                     FROM core.address_gazetteer g
                    WHERE {same_sql('street', 'g.street', 'a.street')}
                      AND {same_sql('paon', 'g.paon', 'a.paon')}
                      AND (a.saon IS NULL OR g.saon IS NULL
                           OR {kind_norm_sql('name', 'g.saon')} = {kind_norm_sql('name', 'a.saon')})) g
                ON g.n = 1
             WHERE a.postcode IS NOT NULL
               AND {norm_sql('postcode', 'a.postcode')} <> g.m_pc
             ORDER BY a.student_guid""", {"base": base_id}).fetchall()
    return [{"student_guid": r[0], "person_id": r[1], "school_postcode": r[2],
             "address": ", ".join(p for p in (r[3], r[4], r[5], r[6]) if p) + f" {r[7]}"} for r in rows]


@dataclass
class StudentReport:
    student_guid: str
    person_id: str
    school: dict                      # field -> school text value
    la: dict                          # field -> LA text value
    diffs: list[dict] = field(default_factory=list)
    postcode: dict | None = None


def _records(conn: Connection, base_id: str, guids: list[str]) -> dict[str, tuple[dict, dict]]:
    cols = SHOWN
    school_sel = ", ".join(f"{text_sql(f, 's.' + f)}" for f in cols)
    la_sel = ", ".join(f"{text_sql(f, 'c.' + f)}" for f in cols)
    rows = conn.execute(
        f"""WITH s AS ({latest_sql('student')})
            SELECT s.student_guid, {school_sel}, {la_sel}
              FROM s JOIN results.current_link l ON l.base_id = s.base_id AND l.student_guid = s.student_guid
              JOIN core.child c ON c.person_id = l.person_id
             WHERE s.student_guid = ANY(%(guids)s)""", {"base": base_id, "guids": guids}).fetchall()
    n = len(cols)
    return {r[0]: (dict(zip(cols, r[1:1 + n])), dict(zip(cols, r[1 + n:]))) for r in rows}


def collect(conn: Connection, base_id: str) -> list[StudentReport]:
    """The students of a school's report, each with its differences and postcode check."""
    diffs = differences(conn, base_id)
    checks = {c["student_guid"]: c for c in postcode_checks(conn, base_id)}
    guids = sorted({d["student_guid"] for d in diffs} | set(checks))
    records = _records(conn, base_id, guids)
    out: dict[str, StudentReport] = {}
    for g in guids:
        school, la = records.get(g, ({}, {}))
        pid = next((d["person_id"] for d in diffs if d["student_guid"] == g), None) or checks[g]["person_id"]
        out[g] = StudentReport(g, pid, school, la, postcode=checks.get(g))
    for d in diffs:
        out[d["student_guid"]].diffs.append(d)
    return sorted(out.values(), key=lambda s: ((s.school.get("surname") or "").lower(),
                                               (s.school.get("forename") or "").lower(), s.student_guid))


# ------------------------------------------------------------------ the documents
def _row_mac(secret: bytes, report_id: int, base_id: str, cells: list[str]) -> str:
    msg = json.dumps([report_id, base_id, *cells], ensure_ascii=False).encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()[:32]


def _row_cells(st: StudentReport, d: dict, row_key: int) -> list[str]:
    """The spreadsheet's shown cells of one difference (what the MAC covers)."""
    f = d["field"]
    return [str(row_key), printable(st.school.get("upn") or st.la.get("upn")), _name(st), COMPARED_BY_NAME[f].label,
            shown(f, d["school_value"]), shown(f, d["la_value"])]


def _name(st: StudentReport) -> str:
    return printable(" ".join(x for x in (st.school.get("forename"), st.school.get("surname")) if x))


def _append(ws: Any, values: list[Any]) -> None:
    """A spreadsheet row whose text stays text: openpyxl writes a str starting with "=" as a
    formula (=HYPERLINK(...) in a pupil's name would be a live link, and a formula cell reads back
    empty, so the school could not send the report back); such text is a string cell, exactly as
    given, with a quote prefix so that Excel keeps it text when the cell is edited."""
    ws.append(values)
    for cell in ws[ws.max_row]:
        if isinstance(cell.value, str) and cell.value.startswith(FORMULA_START):
            cell.data_type = "s"
            cell.quotePrefix = True


def build_docx(students: list[StudentReport], school: str, base_id: str, name: str) -> bytes:
    from docx import Document
    from docx.enum.text import WD_BREAK
    from docx.shared import Pt

    doc = Document()
    doc.styles["Normal"].font.size = Pt(10)
    doc.add_heading("B2B (Data Synchronisation between Schools and the LA)", level=0)
    school = printable(school)
    doc.add_heading(f"{name}: {base_id} {school}", level=1)
    for para in (
        "Management Information has compared the data your MIS sent this week with the LA's records. "
        "Each student below has at least one difference; the differing data items are printed in bold "
        "together with an instructional comment and tick boxes.",
        "Please verify every difference from your paper records. Where your MIS is incorrect please amend "
        "your data on your system.",
        f"Please indicate which information is correct: tick the box on this document with a large bold X "
        f"and, in the spreadsheet {name}.xlsx that came with it, choose School or LA in the column "
        "\"Which is correct\" for every row. Upload the ticked spreadsheet on your school's B2B page.",
        "Where the LA's data is incorrect, on return of the spreadsheet we will amend our data to match "
        "yours. You can see whether the LA has received your file, and recall it until then.",
        "Where a postcode check is printed, the postcode you provided does not appear in the LA's address "
        "gazetteer for the address: if the address we have is correct please amend your system.",
    ):
        doc.add_paragraph(para)
    doc.paragraphs[-1].add_run().add_break(WD_BREAK.PAGE)
    doc.add_heading(f"{base_id} {school}", level=2)
    for st in students:
        table = doc.add_table(rows=1, cols=4)
        table.style = "Table Grid"
        for cell, text in zip(table.rows[0].cells, ("Student Details", "School Data", "LA Data - ONE", "")):
            cell.paragraphs[0].add_run(text).bold = True
        differing = {d["field"]: d for d in st.diffs}
        fields = list(SHOWN) + [d["field"] for d in st.diffs if d["field"] not in SHOWN]
        for f in fields:
            row = table.add_row().cells
            label = COMPARED_BY_NAME[f].label + ":"
            if f in differing:
                d = differing[f]
                row[0].paragraphs[0].add_run(label)
                row[1].paragraphs[0].add_run(f"{BOX} {shown(f, d['school_value'])}").bold = True
                row[2].paragraphs[0].add_run(f"{BOX} {shown(f, d['la_value'])}").bold = True
                row[3].paragraphs[0].add_run(instruction(f))
            else:
                row[0].paragraphs[0].add_run(label)
                row[1].paragraphs[0].add_run(shown(f, st.school.get(f)))
                row[2].paragraphs[0].add_run(shown(f, st.la.get(f)))
        if st.postcode:
            row = table.add_row().cells
            row[0].paragraphs[0].add_run("LA Address:")
            row[1].paragraphs[0].add_run(f"{BOX} {printable(st.postcode['address'])}").bold = True
            merged = row[2].merge(row[3])
            merged.paragraphs[0].add_run(
                f"The postcode you have provided is {printable(st.postcode['school_postcode'])} which does not appear to "
                "be correct for the above address. If the address we have is correct please amend your system.")
        doc.add_paragraph()
    p = doc.add_paragraph("For reference a total of ")
    p.add_run(f"{len(students)} pupil data records").bold = True
    p.add_run(" were printed")
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def build_xlsx(students: list[StudentReport], report_id: int, base_id: str, name: str, secret: bytes,
               school: str) -> tuple[bytes, list[dict]]:
    """The spreadsheet the school ticks and sends back, and the items (row key -> difference)."""
    from openpyxl import Workbook
    from openpyxl.styles import Font, Protection
    from openpyxl.worksheet.datavalidation import DataValidation

    wb = Workbook()
    ws = wb.active
    ws.title = SHEET
    _append(ws, [f"{name} {base_id} {printable(school)}: choose School or LA in \"Which is correct\" for every row"])
    ws.append(list(HEADERS))
    for c in ws[2]:
        c.font = Font(bold=True)
    items = []
    row_key = 0
    for st in students:
        for d in st.diffs:
            row_key += 1
            cells = _row_cells(st, d, row_key)
            _append(ws, [row_key, *cells[1:], None, instruction(d["field"]),
                         _row_mac(secret, report_id, base_id, cells)])
            items.append({"row_key": row_key, "student_guid": st.student_guid, "person_id": st.person_id,
                          "field": d["field"], "school_value": d["school_value"], "la_value": d["la_value"]})
    last = ws.max_row
    dv = DataValidation(type="list", formula1='"' + ",".join(CHOICES) + '"', allow_blank=False,
                        showErrorMessage=True, errorTitle="Which is correct",
                        error="Choose School or LA")
    ws.add_data_validation(dv)
    if items:
        dv.add(f"G3:G{last}")
        for r in range(3, last + 1):
            ws.cell(row=r, column=7).protection = Protection(locked=False)
    ws.column_dimensions["A"].hidden = True
    ws.column_dimensions["I"].hidden = True
    for col, width in zip("BCDEFGH", (16, 24, 20, 22, 22, 18, 48)):
        ws.column_dimensions[col].width = width
    ws.protection.sheet = True
    ws.protection.password = secrets.token_hex(8)  # locks the shown values; not a secret
    checks = wb.create_sheet("Postcode checks")
    checks.append(["Student", "LA address (gazetteer)", "Postcode you provided"])
    for st in students:
        if st.postcode:
            _append(checks, [_name(st), printable(st.postcode["address"]), printable(st.postcode["school_postcode"])])
    meta = wb.create_sheet(META_SHEET)
    meta.append(["report_id", report_id])
    meta.append(["base_id", base_id])
    meta.append(["name", name])
    meta.append(["items", len(items)])
    meta.append(["check", _row_mac(secret, report_id, base_id, [name, str(len(items))])])
    meta.sheet_state = "veryHidden"
    meta.protection.sheet = True
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue(), items


# ------------------------------------------------------------------ building and storing
@dataclass
class Built:
    report_id: int
    base_id: str
    name: str
    students: int
    items: int
    postcode_checks: int


def build(conn: Connection, base_id: str, day: date, school: str | None = None) -> Built | None:
    """Build and store the school's report for ``day``'s ISO week; None when nothing differs.

    A report not yet sent back is rebuilt (replaced) by a second build in the same week; one
    the school has sent back or the LA has received is kept as it is.
    """
    iso_year, week, _ = day.isocalendar()
    name = report_name(day)
    school = school or base_id
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('b2b.school_report:' || %s))", (base_id,))
        old = conn.execute("SELECT report_id, status FROM results.school_report "
                           "WHERE base_id = %s AND iso_year = %s AND week = %s", (base_id, iso_year, week)).fetchone()
        if old and old[1] != "issued":
            log.info("report %s for base %s already returned: kept", name, base_id)
            return None
        students = collect(conn, base_id)
        if old:
            conn.execute("DELETE FROM results.school_report WHERE report_id = %s", (old[0],))
        if not students:
            return None
        for guid, fld in unprintable(students):  # never the value: it is a pupil's
            log.warning("report %s for base %s: student %s's %s has a character a Word or Excel file cannot hold: "
                        "printed as U+FFFD", name, base_id, guid, fld)
        secret = secrets.token_bytes(32)
        report_id = scalar(conn, "SELECT nextval(pg_get_serial_sequence('results.school_report', 'report_id'))"
                                 )
        xlsx, items = build_xlsx(students, report_id, base_id, name, secret, school)
        docx = build_docx(students, school, base_id, name)
        checks = sum(1 for s in students if s.postcode)
        conn.execute(
            """INSERT INTO results.school_report (report_id, base_id, iso_year, week, name, docx, xlsx, secret,
                                                 students, items, postcode_checks)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (report_id, base_id, iso_year, week, name, docx, xlsx, secret, len(students), len(items), checks))
        if items:
            with conn.cursor().copy(
                    "COPY results.school_report_item (report_id, row_key, student_guid, person_id, field, "
                    "school_value, la_value) FROM STDIN") as copy:
                for it in items:
                    copy.write_row((report_id, it["row_key"], it["student_guid"], it["person_id"], it["field"],
                                    it["school_value"], it["la_value"]))
    log.info("report %s for base %s: %d students, %d differences, %d postcode checks", name, base_id,
             len(students), len(items), checks)
    return Built(report_id, base_id, name, len(students), len(items), checks)


def build_all(conn: Connection, day: date, schools: dict[str, str]) -> list[Built]:
    """This week's reports for every school (``{dfe: name}``) with differences."""
    close_agreed(conn)
    built = []
    for base_id, school in sorted(schools.items()):
        b = build(conn, base_id, day, school)
        if b:
            built.append(b)
    return built


def purge(conn: Connection, days: int = RETENTION_DAYS, now: datetime | None = None) -> int:
    """Delete reports (and the files sent back) older than ``days`` before ``now`` (the database's
    clock when None); decisions stay. Returns how many. Delete Files (F44) calls it too."""
    with conn.transaction():
        n = conn.execute("""DELETE FROM results.school_report
                             WHERE created_at < coalesce(%s::timestamptz, now()) - make_interval(days => %s)""",
                         (now, days)).rowcount
    return n


def reports(conn: Connection, base_id: str) -> list[dict]:
    """The school's reports (newest first) with the state of what it sent back."""
    rows = conn.execute(
        """SELECT r.report_id, r.name, r.iso_year, r.week, r.created_at, r.status, r.students, r.items,
                  r.postcode_checks
             FROM results.school_report r WHERE r.base_id = %s ORDER BY r.created_at DESC, r.report_id DESC""",
        (base_id,)).fetchall()
    keys = ("report_id", "name", "iso_year", "week", "created_at", "status", "students", "items", "postcode_checks")
    return [dict(zip(keys, r)) for r in rows]


def report_file(conn: Connection, base_id: str, report_id: int, kind: str) -> tuple[str, bytes]:
    """One of the school's own report files (``docx`` or ``xlsx``); another school's is not found."""
    if kind not in ("docx", "xlsx"):
        raise ReportError(f"unknown report file kind {kind!r}")
    row = conn.execute(f"SELECT name, {kind} FROM results.school_report WHERE report_id = %s AND base_id = %s",
                       (report_id, base_id)).fetchone()
    if row is None:
        raise ReportError("no such report for this school", base=base_id, record=report_id)
    return f"{row[0]}.{kind}", bytes(row[1])


def uploads(conn: Connection, base_id: str, status: str | None = None) -> list[dict]:
    """What the school sent back (F42 "Files previously sent"): all, sent, or received."""
    rows = conn.execute(
        """SELECT u.upload_id, u.report_id, r.name, u.filename, u.status, u.uploaded_by, u.uploaded_at,
                  u.received_at, u.received_by, u.recalled_at
             FROM results.school_upload u JOIN results.school_report r USING (report_id)
            WHERE u.base_id = %s AND (%s::text IS NULL OR u.status = %s)
            ORDER BY u.uploaded_at DESC, u.upload_id DESC""", (base_id, status, status)).fetchall()
    keys = ("upload_id", "report_id", "name", "filename", "status", "uploaded_by", "uploaded_at", "received_at",
            "received_by", "recalled_at")
    return [dict(zip(keys, r)) for r in rows]


# ------------------------------------------------------------------ the return (F42)
def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, datetime):
        return v.strftime("%d/%m/%Y")
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)  # exactly as written: a value may start or end with white space (a tab, CR)


def check_upload(conn: Connection, base_id: str, data: bytes) -> tuple[int, dict[int, str]]:
    """The report an uploaded spreadsheet answers and its ticks (``row_key -> 'school' | 'la'``),
    or :class:`ReportRefused` naming every problem."""
    from openpyxl import load_workbook

    try:
        wb = load_workbook(io.BytesIO(data), data_only=True)
        meta = {str(r[0]): r[1] for r in wb[META_SHEET].iter_rows(values_only=True) if r and r[0]}
        ws = wb[SHEET]
        report_id = int(meta["report_id"])
    except Exception as e:  # noqa: BLE001 - anything unreadable is the same refusal
        raise ReportRefused([f"not a B2B report spreadsheet ({type(e).__name__})"], base=base_id) from None
    row = conn.execute("SELECT base_id, name, secret, status FROM results.school_report WHERE report_id = %s",
                       (report_id,)).fetchone()
    if row is None:
        raise ReportRefused(["the report is unknown or was replaced or purged: download this week's report"],
                            base=base_id, file=report_id)
    owner, name, secret, status = row[0], row[1], bytes(row[2]), row[3]
    if owner != base_id or str(meta.get("base_id")) != base_id:
        raise ReportRefused(["this report belongs to another school"], base=base_id, file=report_id)
    if status != "issued":
        raise ReportRefused([f"{name} has already been sent back"], base=base_id, file=report_id)
    items = {r[0]: r[1:] for r in conn.execute(
        "SELECT row_key, field, school_value, la_value FROM results.school_report_item WHERE report_id = %s",
        (report_id,)).fetchall()}
    reasons: list[str] = []
    if str(meta.get("check")) != _row_mac(secret, report_id, base_id, [name, str(len(items))]):
        reasons.append("the report's identifiers were edited")
    ticks: dict[int, str] = {}
    seen: set[int] = set()
    for r in ws.iter_rows(min_row=3, values_only=True):
        if not r or all(v is None for v in r):
            continue
        cells = [_cell(v) for v in r[:9]] + [""] * max(0, 9 - len(r))
        try:
            key = int(cells[0])
        except ValueError:
            reasons.append(f"a row without its row key ({cells[2] or 'unnamed'})")
            continue
        if key not in items or key in seen:
            reasons.append(f"row {key}: not a row of {name}")
            continue
        seen.add(key)
        fld, school_value, la_value = items[key]
        if cells[4] != shown(fld, school_value) or cells[5] != shown(fld, la_value) or \
                not hmac.compare_digest(cells[8], _row_mac(secret, report_id, base_id, cells[:6])):
            reasons.append(f"row {key}: the values shown were edited")
            continue
        choice = cells[6].strip().lower()
        if choice not in ("school", "la"):
            reasons.append(f"row {key}: not ticked (choose School or LA)")
            continue
        ticks[key] = choice
    missing = sorted(set(items) - seen)
    if missing:
        reasons.append("rows missing: " + ", ".join(map(str, missing)))
    if reasons:
        raise ReportRefused(reasons, base=base_id, file=report_id)
    return report_id, ticks


def submit(conn: Connection, base_id: str, filename: str, data: bytes, by: str) -> int:
    """Store a ticked spreadsheet the school sent back ("sent, not yet received"); its id."""
    import psycopg

    report_id, ticks = check_upload(conn, base_id, data)
    try:
        with conn.transaction():
            upload_id = scalar(conn,
                """INSERT INTO results.school_upload (report_id, base_id, filename, file, choices, uploaded_by)
                   VALUES (%s, %s, %s, %s, %s, %s) RETURNING upload_id""",
                (report_id, base_id, filename[:200], data, json.dumps({str(k): v for k, v in ticks.items()}),
                 by))
            conn.execute("UPDATE results.school_report SET status = 'returned' WHERE report_id = %s", (report_id,))
    except psycopg.errors.UniqueViolation:  # two uploads of one report at the same moment: the first wins
        raise ReportRefused(["this report has already been sent back"], base=base_id, file=report_id) from None
    log.info("base %s sent back report %s (upload %s, %d ticks)", base_id, report_id, upload_id, len(ticks))
    return upload_id


def recall(conn: Connection, base_id: str, upload_id: int, by: str) -> None:
    """The school takes back a file the LA has not received yet."""
    with conn.transaction():
        row = conn.execute("SELECT report_id, status FROM results.school_upload WHERE upload_id = %s AND base_id = %s "
                           "FOR UPDATE", (upload_id, base_id)).fetchone()
        if row is None:
            raise ReportError("no such file sent by this school", base=base_id, record=upload_id)
        if row[1] != "sent":
            raise ReportError(f"the file is {row[1]}: only a file not yet received can be recalled",
                              base=base_id, record=upload_id)
        conn.execute("UPDATE results.school_upload SET status = 'recalled', recalled_at = now() WHERE upload_id = %s",
                     (upload_id,))
        conn.execute("UPDATE results.school_report SET status = 'issued' WHERE report_id = %s", (row[0],))
    log.info("base %s recalled upload %s (%s)", base_id, upload_id, by)


def pending_uploads(conn: Connection) -> list[dict]:
    """Files schools sent that the LA has not received yet (the officers' screen)."""
    rows = conn.execute(
        """SELECT u.upload_id, u.base_id, r.name, u.filename, u.uploaded_by, u.uploaded_at,
                  (SELECT count(*) FROM jsonb_object_keys(u.choices))
             FROM results.school_upload u JOIN results.school_report r USING (report_id)
            WHERE u.status = 'sent' ORDER BY u.uploaded_at, u.upload_id""").fetchall()
    keys = ("upload_id", "base_id", "name", "filename", "uploaded_by", "uploaded_at", "ticks")
    return [dict(zip(keys, r)) for r in rows]


def receive(conn: Connection, upload_id: int, by: str) -> dict:
    """The LA receives a school's file: each tick becomes a recorded decision. "School" (the LA
    was wrong) amends the LA record like ``b2b officer resolve … --keep incoming``; "LA" (the
    school was wrong) stays open until the school's next export agrees. Returns the counts."""
    from b2b.ops import officer

    counts = {"applied": 0, "open": 0, "not_applied": 0}
    with conn.transaction():
        row = conn.execute("SELECT report_id, base_id, status, choices FROM results.school_upload "
                           "WHERE upload_id = %s FOR UPDATE", (upload_id,)).fetchone()
        if row is None:
            raise ReportError("no such upload", record=upload_id)
        report_id, base_id, status, choices = row
        if status != "sent":
            raise ReportError(f"the file is {status}: only a sent file can be received", base=base_id,
                              record=upload_id)
        items = conn.execute(
            """SELECT row_key, student_guid, person_id, field, school_value, la_value
                 FROM results.school_report_item WHERE report_id = %s ORDER BY row_key""", (report_id,)).fetchall()
        for key, guid, person_id, fld, school_value, la_value in items:
            correct = choices[str(key)]
            note = None
            if correct == "la":
                state = "open"
            else:
                state, note = _amend(conn, officer, person_id, fld, school_value, la_value, by)
            counts[state] += 1
            conn.execute(
                """INSERT INTO results.school_report_decision (report_id, row_key, upload_id, base_id, student_guid,
                                                              person_id, field, school_value, la_value, correct,
                                                              status, note, decided_by)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (report_id, key, upload_id, base_id, guid, person_id, fld, school_value, la_value, correct, state,
                 note, by))
        conn.execute("UPDATE results.school_upload SET status = 'received', received_at = now(), received_by = %s "
                     "WHERE upload_id = %s", (by, upload_id))
        conn.execute("UPDATE results.school_report SET status = 'received' WHERE report_id = %s", (report_id,))
    log.info("upload %s of base %s received by %s: %s", upload_id, base_id, by, counts)
    return counts


def _amend(conn: Connection, officer: Any, person_id: str, fld: str, school_value: Any, la_value: Any, by: str) -> tuple[str, str | None]:
    """Accept the school's value for one field through the officer's resolution, when the LA's
    record and the open conflict still hold exactly the values the school ticked."""
    current = conn.execute(f"SELECT {text_sql(fld, fld)} FROM core.child WHERE person_id = %s",
                           (person_id,)).fetchone()
    if current is None or not same_value(fld, current[0], la_value) or current[0] is None:
        return "not_applied", "the LA record changed since the report"
    latest = conn.execute("""SELECT la_value, incoming_value FROM results.conflict WHERE person_id = %s AND field = %s
                              ORDER BY last_seen DESC LIMIT 1""", (person_id, fld)).fetchone()
    if latest is None:
        return "not_applied", "no open conflict: an officer already settled it"
    if not same_value(fld, latest[1], school_value) or latest[1] is None:
        return "not_applied", "the school has since sent another value"
    officer.resolve_conflict(conn, person_id, fld, "incoming", by=by)
    return "applied", None


def close_agreed(conn: Connection, base_id: str | None = None) -> int:
    """Close the "school was wrong" decisions the school's latest export now agrees with."""
    cases = " ".join(
        f"WHEN '{c.name}' THEN {same_sql(c.name, 'd.la_value', text_sql(c.name, ('s.' if c.block == 'student' else 'a.') + c.name))}"
        for c in COMPARED)
    with conn.transaction():
        n = conn.execute(
            f"""UPDATE results.school_report_decision d SET status = 'closed', closed_at = now()
                 WHERE d.status = 'open' AND (%(base)s::text IS NULL OR d.base_id = %(base)s)
                   AND coalesce((
                       SELECT CASE d.field {cases} END
                         FROM (SELECT 1) one
                         LEFT JOIN LATERAL (SELECT s.* FROM staging.student s JOIN raw.inbound_file f USING (file_id)
                                             WHERE s.base_id = d.base_id AND s.student_guid = d.student_guid
                                             ORDER BY f.window_order DESC, s.file_id DESC LIMIT 1) s ON true
                         LEFT JOIN LATERAL (SELECT a.* FROM staging.address a JOIN raw.inbound_file f USING (file_id)
                                             WHERE a.base_id = d.base_id AND a.student_guid = d.student_guid
                                             ORDER BY f.window_order DESC, a.file_id DESC LIMIT 1) a ON true), false)""",
            {"base": base_id}).rowcount
    return n


def decisions(conn: Connection, base_id: str, status: str | None = None) -> list[dict]:
    rows = conn.execute(
        """SELECT report_id, row_key, student_guid, person_id, field, school_value, la_value, correct, status, note,
                  decided_by, decided_at, closed_at
             FROM results.school_report_decision WHERE base_id = %s AND (%s::text IS NULL OR status = %s)
            ORDER BY decided_at, report_id, row_key""", (base_id, status, status)).fetchall()
    keys = ("report_id", "row_key", "student_guid", "person_id", "field", "school_value", "la_value", "correct",
            "status", "note", "decided_by", "decided_at", "closed_at")
    return [dict(zip(keys, r)) for r in rows]


# ------------------------------------------------------------------ the school's page and notice
def issue_token(conn: Connection, base_id: str, email: str | None = None) -> str:
    """A new access key for the school's page (only its hash is stored); replaces the old one."""
    token = secrets.token_urlsafe(24)
    digest = hashlib.sha256(token.encode()).hexdigest()
    with conn.transaction():
        conn.execute(
            """INSERT INTO ops.school_portal (base_id, email, token_hash, token_created_at)
               VALUES (%s, %s, %s, now())
               ON CONFLICT (base_id) DO UPDATE SET token_hash = EXCLUDED.token_hash, token_created_at = now(),
                                                  email = coalesce(EXCLUDED.email, ops.school_portal.email)""",
            (base_id, email, digest))
    return token


def school_for_token(conn: Connection, token: str | None) -> str | None:
    """The base an access key belongs to (None for an unknown key)."""
    if not token:
        return None
    digest = hashlib.sha256(token.encode()).hexdigest()
    row = conn.execute("SELECT base_id FROM ops.school_portal WHERE token_hash = %s", (digest,)).fetchone()
    return row[0] if row else None


def header_text(text: str) -> str:
    """Text for a mail header: a line break or other control character becomes a space (one in a
    school's name made the mail library refuse the whole message, or could have added a header)."""
    return HEADER_UNFIT.sub(" ", text)


def notice(built: Built, school: str, page_url: str) -> tuple[str, str]:
    """The email notice (subject, body) for a new report: no personal data, only the file names."""
    subject = header_text(f"B2B: new report {built.name} for {school}")
    body = "\n".join([
        f"New documents have been made available for {school} ({built.base_id}) by the LA's Management "
        "Information team.", "",
        "Documents:", f"  {built.name}.docx", f"  {built.name}.xlsx", "",
        f"{built.students} pupil data records were printed. Please log in to your school's B2B page with your "
        "school's access key to download them, tick which data is correct in the spreadsheet and upload it:",
        page_url, "",
        "If you have received this email through your headteacher@ address please forward it to the colleagues "
        "responsible for data in your school.", "",
        "Thank you", "Management Information"])
    return subject, body


def notify(conn: Connection, built_reports: list[Built], schools: dict[str, str], send: Any, page_url: str) -> int:
    """Email each school with a new report (``send(to, subject, body)``); records when. Returns how many."""
    sent = 0
    emails: dict[str, str] = dict(conn.execute("SELECT base_id, email FROM ops.school_portal WHERE email IS NOT NULL").fetchall())
    for b in built_reports:
        to = emails.get(b.base_id)
        if not to:
            log.warning("base %s has no notice address: report %s not announced", b.base_id, b.name)
            continue
        if HEADER_UNFIT.search(to):  # never sent on: it would add a header or stop the other schools' notices
            log.warning("base %s's notice address has a line break or control character: report %s not announced",
                        b.base_id, b.name)
            continue
        subject, body = notice(b, schools.get(b.base_id, b.base_id), page_url)
        send(to, subject, body)
        with conn.transaction():
            conn.execute("UPDATE results.school_report SET notified_at = now() WHERE report_id = %s", (b.report_id,))
        sent += 1
    return sent


def write_week(conn: Connection, schools: dict[str, str], folder: Any, day: date | None = None, out: Callable[..., Any] = print) -> list[Built]:
    """Build this week's reports for ``schools`` and write their files under ``folder`` (the demo).

    Each school gets a page access key (written to ``folder/school_keys.txt``, mode 0600, never
    printed) and a demo notice address, so ``make airflow`` shows the school pages at once."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    built = build_all(conn, day or date.today(), schools)
    keys = []
    for b in built:
        token = issue_token(conn, b.base_id, f"office@{b.base_id}.school.example")
        keys.append(f"{b.base_id}\t{token}\t{schools.get(b.base_id, b.base_id)}")
        for kind in ("docx", "xlsx"):
            name, data = report_file(conn, b.base_id, b.report_id, kind)
            (folder / f"{b.base_id}_{name}").write_bytes(data)
        out(f"report {b.name} for {b.base_id}: {b.students} students, {b.items} differences, "
            f"{b.postcode_checks} postcode checks")
    if keys:
        path = folder / "school_keys.txt"
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text("\n".join(keys) + "\n")
        out(f"school reports in {folder} (school page access keys: {path})")
    return built
