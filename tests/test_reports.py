"""The weekly per-school anomaly report and its return (F32, F33, F42) against real PostgreSQL."""
import io
from datetime import date, timedelta

import pytest

from b2b.outbound import reports
from tests.test_chain import ADDR, BASE, DAY1, JOE, core, ctx, page, run_chain  # noqa: F401 - core: fixture

WEEK_DAY = date(2026, 10, 5)  # ISO week 41
OTHER = "8862001"


@pytest.fixture
def joe(core):
    """Joe (school) vs Joseph (LA), ethnicity WIRI vs WBRI, postcode CT9 9ZZ vs CT1 2AB; the
    gazetteer knows 1 Green Abbey Road as CT1 2AB."""
    db = core
    db.execute("UPDATE core.child SET ethnicity = 'WBRI', town = 'Canterbury' WHERE person_id = 'P1'")
    db.execute("""INSERT INTO core.address_gazetteer (uprn, paon, street, town, postcode, m_pc)
                  VALUES ('100', '1', 'Green Abbey Road', 'Canterbury', 'CT1 2AB', 'CT12AB'),
                         ('101', '2', 'Green Abbey Road', 'Canterbury', 'CT1 2AB', 'CT12AB')""")
    db.commit()
    run_chain(db, ctx(), [page("student", [("g-joe", dict(JOE, ethnicity="WIRI"))]),
                          page("address", [("g-joe", dict(ADDR, postcode="CT9 9ZZ"))])])
    return db


def docx_text(data: bytes) -> tuple[str, set[str]]:
    from docx import Document

    doc = Document(io.BytesIO(data))
    texts = [p.text for p in doc.paragraphs]
    bold = set()
    for t in doc.tables:
        for row in t.rows:
            for cell in row.cells:
                texts.append(cell.text)
                for p in cell.paragraphs:
                    bold.update(r.text for r in p.runs if r.bold)
    for p in doc.paragraphs:
        bold.update(r.text for r in p.runs if r.bold)
    return "\n".join(texts), bold


def tick(xlsx: bytes, choices: dict[str, str], edit: dict | None = None) -> bytes:
    """What a school does in Excel: choose School/LA per item (by its label)."""
    from openpyxl import load_workbook

    wb = load_workbook(io.BytesIO(xlsx))
    ws = wb[reports.SHEET]
    for row in ws.iter_rows(min_row=3):
        label = row[3].value
        if label in choices:
            row[6].value = choices[label]
        for col, value in (edit or {}).get(label, {}).items():
            row[col].value = value
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def test_report_shows_each_difference_in_bold_with_postcode_check_and_count(joe):
    db = joe
    built = reports.build(db, BASE, WEEK_DAY, "Hillview Primary School")
    assert (built.name, built.students, built.items, built.postcode_checks) == ("B2BreportWeek41", 1, 3, 1)
    name, docx = reports.report_file(db, BASE, built.report_id, "docx")
    assert name == "B2BreportWeek41.docx"
    text, bold = docx_text(docx)
    assert "Please tick which is the correct legal forename." in text
    assert "\u2610 Joe" in bold and "\u2610 Joseph" in bold and "\u2610 WIRI" in bold
    assert "Bloggs" not in bold and "26/01/2016" in text  # the same value: printed, not bold
    assert ("The postcode you have provided is CT9 9ZZ which does not appear to be correct for the above "
            "address") in text
    assert "1, Green Abbey Road, Canterbury CT1 2AB" in text
    assert "1 pupil data records" in bold
    from openpyxl import load_workbook

    wb = load_workbook(io.BytesIO(reports.report_file(db, BASE, built.report_id, "xlsx")[1]))
    ws = wb[reports.SHEET]
    rows = [[c.value for c in r][:7] for r in ws.iter_rows(min_row=3)]
    assert rows == [[1, "F886200326001", "Joe Bloggs", "Forename", "Joe", "Joseph", None],
                    [2, "F886200326001", "Joe Bloggs", "Ethnicity", "WIRI", "WBRI", None],
                    [3, "F886200326001", "Joe Bloggs", "Postcode", "CT9 9ZZ", "CT1 2AB", None]]
    [dv] = ws.data_validations.dataValidation
    assert dv.formula1 == '"School,LA"' and str(dv.sqref) == "G3:G5"
    assert wb[reports.META_SHEET].sheet_state == "veryHidden" and ws.protection.sheet
    assert ws.column_dimensions["A"].hidden and ws.column_dimensions["I"].hidden


def test_no_differences_no_report_and_same_week_rebuild_replaces(joe):
    db = joe
    assert reports.build(db, OTHER, WEEK_DAY) is None  # a school without linked students
    first = reports.build(db, BASE, WEEK_DAY)
    second = reports.build(db, BASE, WEEK_DAY + timedelta(days=2))
    assert second.report_id != first.report_id
    assert db.execute("SELECT count(*) FROM results.school_report").fetchone()[0] == 1


def test_round_trip_amends_the_la_where_the_school_was_right(joe):
    db = joe
    built = reports.build(db, BASE, WEEK_DAY)
    xlsx = reports.report_file(db, BASE, built.report_id, "xlsx")[1]
    ticked = tick(xlsx, {"Forename": "School", "Ethnicity": "LA", "Postcode": "LA"})
    up = reports.submit(db, BASE, "B2BreportWeek41.xlsx", ticked, by=f"school:{BASE}")
    assert [u["status"] for u in reports.uploads(db, BASE)] == ["sent"]
    reports.recall(db, BASE, up, by=f"school:{BASE}")
    assert [u["status"] for u in reports.uploads(db, BASE)] == ["recalled"]
    up = reports.submit(db, BASE, "B2BreportWeek41.xlsx", ticked, by=f"school:{BASE}")
    assert [u["upload_id"] for u in reports.pending_uploads(db)] == [up]
    assert db.execute("SELECT forename FROM core.child WHERE person_id = 'P1'").fetchone() == ("Joseph",)  # not yet
    counts = reports.receive(db, up, by="officer.jane")
    assert counts == {"applied": 1, "open": 2, "not_applied": 0}
    assert db.execute("SELECT forename, postcode, ethnicity FROM core.child WHERE person_id = 'P1'").fetchone() == (
        "Joe", "CT1 2AB", "WBRI")
    assert [(f, r, by.split(" via ")[0]) for f, r, by in db.execute(
        "SELECT field, resolution, resolved_by FROM results.conflict_resolution")] == [
        ("forename", "accepted_incoming", "officer.jane")]
    with pytest.raises(reports.ReportError, match="only a file not yet received can be recalled"):
        reports.recall(db, BASE, up, by=f"school:{BASE}")
    assert sorted(d["field"] for d in reports.decisions(db, BASE, "open")) == ["ethnicity", "postcode"]
    # the school's next export agrees with the LA on ethnicity and postcode: the decisions close
    run_chain(db, ctx(DAY1 + timedelta(days=1)), [page("student", [("g-joe", dict(JOE, ethnicity="WBRI"))]),
                                                  page("address", [("g-joe", ADDR)])])
    assert reports.close_agreed(db, BASE) == 2
    assert reports.decisions(db, BASE, "open") == []
    # nothing left to report: the next week has no report
    assert reports.build(db, BASE, WEEK_DAY + timedelta(days=7)) is None


def test_a_report_is_sent_back_once(joe):
    db = joe
    built = reports.build(db, BASE, WEEK_DAY)
    ticked = tick(reports.report_file(db, BASE, built.report_id, "xlsx")[1],
                  {"Forename": "LA", "Ethnicity": "LA", "Postcode": "LA"})
    reports.submit(db, BASE, "r.xlsx", ticked, by="s")
    with pytest.raises(reports.ReportRefused, match="has already been sent back"):
        reports.submit(db, BASE, "r.xlsx", ticked, by="s")
    # the unique index settles a race the status check cannot see
    db.execute("UPDATE results.school_report SET status = 'issued'")
    with pytest.raises(reports.ReportRefused, match="already been sent back"):
        reports.submit(db, BASE, "r.xlsx", ticked, by="s")
    assert db.execute("SELECT count(*) FROM results.school_upload").fetchone() == (1,)

def school_answers_la_everywhere(db):
    """This week's report built, the school ticks "LA" on every row, an officer receives it."""
    built = reports.build(db, BASE, WEEK_DAY)
    xlsx = reports.report_file(db, BASE, built.report_id, "xlsx")[1]
    up = reports.submit(db, BASE, "r.xlsx", tick(xlsx, {"Forename": "LA", "Ethnicity": "LA", "Postcode": "LA"}),
                        by="s")
    reports.receive(db, up, by="officer.jane")
    return built


def test_school_wrong_answer_is_not_asked_again_while_open(joe):
    db = joe
    school_answers_la_everywhere(db)
    again = reports.build(db, BASE, WEEK_DAY + timedelta(days=7))
    # every difference answered, awaiting the school; the gazetteer's postcode check stays until fixed
    assert (again.items, again.postcode_checks) == (0, 1)


@pytest.mark.parametrize("case, reason", [
    ("other_school", "this report belongs to another school"),
    ("edited", "row 1: the values shown were edited"),
    ("unticked", "row 2: not ticked"),
    ("garbage", "not a B2B report spreadsheet"),
    ("row_removed", "rows missing: 3"),
])
def test_malformed_or_tampered_uploads_are_refused_and_nothing_is_applied(joe, case, reason):
    from openpyxl import load_workbook

    db = joe
    built = reports.build(db, BASE, WEEK_DAY)
    xlsx = reports.report_file(db, BASE, built.report_id, "xlsx")[1]
    all_ticked = {"Forename": "School", "Ethnicity": "School", "Postcode": "School"}
    base = BASE
    if case == "other_school":
        data, base = tick(xlsx, all_ticked), OTHER
    elif case == "edited":
        data = tick(xlsx, all_ticked, edit={"Forename": {5: "Joe"}})  # "the LA says Joe too"
    elif case == "unticked":
        data = tick(xlsx, {"Forename": "School", "Postcode": "School"})
    elif case == "garbage":
        data = b"PK\x03\x04 not really a workbook"
    else:
        wb = load_workbook(io.BytesIO(tick(xlsx, all_ticked)))
        wb[reports.SHEET].delete_rows(5)
        buf = io.BytesIO()
        wb.save(buf)
        data = buf.getvalue()
    with pytest.raises(reports.ReportRefused) as e:
        reports.submit(db, base, "x.xlsx", data, by="s")
    assert reason in str(e.value)
    assert db.execute("SELECT count(*) FROM results.school_upload").fetchone() == (0,)
    assert db.execute("SELECT status FROM results.school_report").fetchone() == ("issued",)
    assert db.execute("SELECT forename FROM core.child WHERE person_id = 'P1'").fetchone() == ("Joseph",)


def test_a_school_sees_and_downloads_only_its_own_reports(joe):
    db = joe
    built = reports.build(db, BASE, WEEK_DAY)
    token = reports.issue_token(db, BASE, "office@hillview.example")
    assert reports.school_for_token(db, token) == BASE and reports.school_for_token(db, "guess") is None
    assert db.execute("SELECT token_hash <> %s FROM ops.school_portal", (token,)).fetchone() == (True,)
    assert reports.reports(db, OTHER) == []
    with pytest.raises(reports.ReportError, match="no such report"):
        reports.report_file(db, OTHER, built.report_id, "docx")


def test_reports_are_purged_after_30_days_and_decisions_stay(joe):
    db = joe
    school_answers_la_everywhere(db)
    assert reports.purge(db) == 0
    db.execute("UPDATE results.school_report SET created_at = now() - interval '31 days'")
    db.commit()
    assert reports.purge(db) == 1
    assert db.execute("SELECT count(*) FROM results.school_upload").fetchone() == (0,)
    assert len(reports.decisions(db, BASE)) == 3


def test_delete_files_purges_school_reports_even_when_the_report_dag_does_not_run(joe, tmp_path):
    """F44: a school's report (names, DOB, address in the Word and Excel files, each row's two
    values, the school's upload) went only with the weekly report DAG's purge: an LA whose
    report DAG is paused or has no schools kept them for ever. Delete Files purges them too."""
    from datetime import UTC, datetime

    from b2b.config.settings import Settings
    from b2b.ops.maintenance import enforce_retention

    db = joe
    school_answers_la_everywhere(db)
    db.commit()
    assert enforce_retention(db, Settings(), home=tmp_path)["school_reports"] == 0  # this week's: kept
    later = datetime.now(UTC) + timedelta(days=reports.RETENTION_DAYS + 1)
    assert enforce_retention(db, Settings(), now=later, home=tmp_path)["school_reports"] == 1
    for table in ("school_report", "school_report_item", "school_upload"):
        assert db.execute(f"SELECT count(*) FROM results.{table}").fetchone() == (0,), table
    assert len(reports.decisions(db, BASE)) == 3  # the decisions (audit trail) stay


@pytest.fixture
def smtp_server():
    """A real SMTP server on loopback (aiosmtpd) keeping what arrives."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    class Keep(Message):
        def __init__(self):
            super().__init__()
            self.messages = []

        def handle_message(self, message):
            self.messages.append(message)

    import socket

    with socket.socket() as s:  # a free loopback port (aiosmtpd checks readiness on the port it is given)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = Keep()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield controller, handler.messages
    controller.stop()


def test_weekly_dag_builds_reports_and_emails_each_school_a_notice(joe, db_url, smtp_server, monkeypatch):
    import json

    import pendulum

    from b2b.cli.airflow_env import migrate_airflow_db
    from b2b.config.catalogue import load_catalogue
    from b2b_operators.report_dags import DAG_ID, build_report_dags

    controller, inbox = smtp_server
    db = joe
    reports.issue_token(db, BASE, "office@hillview.example")
    monkeypatch.setenv("B2B_DATABASE_URL", db_url)
    monkeypatch.setenv("B2B_SCHOOL_PAGE_URL", "http://127.0.0.1:8080/b2b/school/")
    monkeypatch.setenv("AIRFLOW_CONN_B2B_SMTP", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": controller.port,
        "extra": {"disable_tls": True, "disable_ssl": True, "from_email": "mi@la.example", "retry_limit": 0}}))
    migrate_airflow_db()
    dag = build_report_dags(load_catalogue())[DAG_ID]
    run = dag.test(logical_date=pendulum.datetime(2026, 10, 5, 6, tz="Europe/London"))
    assert str(run.state).endswith("success")
    [r] = reports.reports(db, BASE)
    assert r["name"] == "B2BreportWeek41"  # the ISO week of the run
    [msg] = inbox
    assert msg["To"] == "office@hillview.example" and msg["From"] == "mi@la.example"
    assert msg["Subject"] == "B2B: new report B2BreportWeek41 for Hillview Primary School"
    body = msg.get_payload()[0].get_payload(decode=True).decode() if msg.is_multipart() else msg.get_payload()
    assert "B2BreportWeek41.xlsx" in body and "http://127.0.0.1:8080/b2b/school/" in body
    assert "Joe" not in body and "Bloggs" not in body  # a notice, no personal data
    assert db.execute("SELECT notified_at IS NOT NULL FROM results.school_report").fetchone() == (True,)


def test_demo_writes_this_weeks_reports_and_private_school_keys(joe, tmp_path):
    db = joe
    lines = []
    [b] = reports.write_week(db, {BASE: "Hillview Primary School", OTHER: "Green Abbey"}, tmp_path, WEEK_DAY,
                             out=lines.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"{BASE}_B2BreportWeek41.docx", f"{BASE}_B2BreportWeek41.xlsx", "school_keys.txt"]
    keys = tmp_path / "school_keys.txt"
    assert keys.stat().st_mode & 0o077 == 0
    token = keys.read_text().split("\t")[1]
    assert reports.school_for_token(db, token) == BASE and token not in "\n".join(lines)


def hostile_joe(db, **school):
    """Joe as the school sends him with ``school`` values (the LA holds Joseph Bloggs)."""
    run_chain(db, ctx(), [page("student", [("g-joe", dict(JOE, **school))]), page("address", [("g-joe", ADDR)])])


@pytest.mark.parametrize("forename", ['=HYPERLINK("http://evil.example","x")', "=cmd|' /C calc'!A0", "+1+1",
                                      "-2+3", "@SUM(A1)", "\t=1+1", "\rJoe", " Joe "])
def test_a_value_like_a_formula_is_text_in_the_spreadsheet_and_round_trips(core, forename):
    """OWASP CSV injection: openpyxl wrote a str starting with "=" as a formula (a live link in
    the school's Excel, and read back empty: the school could not send its report back)."""
    from openpyxl import load_workbook

    db = core
    hostile_joe(db, forename=forename)
    built = reports.build(db, BASE, WEEK_DAY, "Hillview Primary School")
    xlsx = reports.report_file(db, BASE, built.report_id, "xlsx")[1]
    ws = load_workbook(io.BytesIO(xlsx))[reports.SHEET]
    [row] = [r for r in ws.iter_rows(min_row=3) if r[3].value == "Forename"]
    assert [c.value for c in row[2:6]] == [f"{forename} Bloggs", "Forename", forename, "Joseph"]
    assert all(c.data_type != "f" for r in ws.iter_rows() for c in r)
    risky = forename.startswith(reports.FORMULA_START)  # kept text when the cell is edited in Excel
    assert row[2].data_type == row[4].data_type == "s" and row[2].quotePrefix == row[4].quotePrefix == risky
    up = reports.submit(db, BASE, "B2BreportWeek41.xlsx", tick(xlsx, {"Forename": "School"}),
                        by=f"school:{BASE}")
    reports.receive(db, up, by="officer.jane")
    assert db.execute("SELECT forename FROM core.child WHERE person_id = 'P1'").fetchone() == (forename,)


def test_a_control_character_is_printed_as_a_replacement_and_the_report_is_built(core, monkeypatch):
    """openpyxl and python-docx refuse a control character (IllegalCharacterError quoting the
    name, ValueError): one pupil's value stopped the school's report and every school's after it."""
    from openpyxl import load_workbook

    db = core
    hostile_joe(db, forename="Jo\x01e\x1b")
    warned = []  # Airflow's logging, once imported, is not caplog's
    monkeypatch.setattr(reports.log, "warning", lambda msg, *args: warned.append(msg % args))
    built = reports.build(db, BASE, WEEK_DAY, "Hillview\x0b Primary")
    text, bold = docx_text(reports.report_file(db, BASE, built.report_id, "docx")[1])
    assert "\u2610 Jo\ufffde\ufffd" in bold and "Hillview\ufffd Primary" in text
    xlsx = reports.report_file(db, BASE, built.report_id, "xlsx")[1]
    ws = load_workbook(io.BytesIO(xlsx))[reports.SHEET]
    assert [c.value for c in ws[3][2:6]] == ["Jo\ufffde\ufffd Bloggs", "Forename", "Jo\ufffde\ufffd", "Joseph"]
    assert warned == ["report B2BreportWeek41 for base 8862003: student g-joe's forename has a character a Word "
                      "or Excel file cannot hold: printed as U+FFFD"]  # never the value
    # the round trip keeps the value exact: the school's forename is what the LA takes
    up = reports.submit(db, BASE, "B2BreportWeek41.xlsx", tick(xlsx, {"Forename": "School"}),
                        by=f"school:{BASE}")
    reports.receive(db, up, by="officer.jane")
    assert db.execute("SELECT forename FROM core.child WHERE person_id = 'P1'").fetchone() == ("Jo\x01e\x1b",)


def test_a_line_break_in_a_school_name_or_notice_address_never_reaches_a_mail_header(joe, monkeypatch):
    """The mail library refused a header with a line break (HeaderParseError quoting it) in the
    middle of the notices: the schools after it were not told; a header could have been added."""
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    db = joe
    built = reports.build(db, BASE, WEEK_DAY)
    third = "8862002"
    reports.issue_token(db, BASE, "office@hillview.example")
    reports.issue_token(db, OTHER, "office@green.example\r\nBcc: thief@evil.example")
    reports.issue_token(db, third, "office@third.example")
    hook = SmtpHook(smtp_conn_id="b2b_smtp")
    mails = []

    def send(to, subject, body):  # as SmtpHook.send_email_smtp builds and sends it
        msg, recipients = hook._build_mime_message("mi@la.example", to, subject, body)
        mails.append((recipients, msg.as_string()))

    schools = {BASE: "Hillview\r\nBcc: thief@evil.example", OTHER: "Green Abbey", third: "Third\u2028School"}
    other = [reports.Built(built.report_id + 1, OTHER, built.name, 1, 1, 0),
             reports.Built(built.report_id + 2, third, built.name, 1, 1, 0)]
    warned = []  # Airflow's logging, once imported, is not caplog's
    monkeypatch.setattr(reports.log, "warning", lambda msg, *args: warned.append(msg % args))
    assert reports.notify(db, [built, *other], schools, send, "http://127.0.0.1/b2b/school/") == 2
    assert [r for r, _ in mails] == [["office@hillview.example"], ["office@third.example"]]
    assert "Subject: B2B: new report B2BreportWeek41 for Hillview  Bcc: thief@evil.example\n" in mails[0][1]
    assert "\nBcc" not in mails[0][1] and "thief" not in mails[1][1]
    assert warned == [f"base {OTHER}'s notice address has a line break or control character: report "
                      "B2BreportWeek41 not announced"]
