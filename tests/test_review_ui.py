"""The B2B review screens and school pages over real HTTP (uvicorn on loopback, Airflow's auth
manager and JWTs, real PostgreSQL): who may see what, and decisions recorded with the user."""
from __future__ import annotations

import json
import re
import socket
import threading
import time
from datetime import date, timedelta

import httpx
import pytest

from b2b.config.settings import Settings
from b2b.outbound import reports
from tests.test_chain import ADDR, BASE, DAY1, JOE, core, ctx, page, run_chain  # noqa: F401 - core: fixture

OTHER = "8862001"
AMY = {"upn": None, "forename": "Amy", "surname": "Twist", "dob": "2016-05-05", "gender": "F", "ncy": "5"}
USERS = {"jane": ("op", "jane-secret"), "reader": ("viewer", "reader-secret")}


@pytest.fixture
def lists(core):
    """Joe with conflicts (forename, postcode), Amy a possible match of two LA look-alikes, Zed unmatched;
    and a report for Joe's school."""
    db = core
    db.execute("""INSERT INTO core.child (person_id, forename, surname, gender, dob, postcode)
                  VALUES ('P4', 'Amy', 'Twist', 'F', '2016-05-05', 'CT1 2AB'),
                         ('P5', 'Amy', 'Twist', 'F', '2016-05-05', 'ME4 1AA')""")
    db.commit()
    zed = {"upn": None, "forename": "Zed", "surname": "Newcomer", "dob": "2017-02-02", "gender": "M"}
    run_chain(db, ctx(), [page("student", [("g-joe", JOE), ("g-zed", zed)]),
                          page("address", [("g-joe", dict(ADDR, postcode="CT9 9ZZ")), ("g-zed", ADDR)])])
    run_chain(db, ctx(DAY1 + timedelta(days=1)), [page("student", [("g-amy", AMY)])], Settings())
    reports.build(db, BASE, date(2026, 10, 5), "Hillview Primary School")
    db.commit()
    return db


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ui(db_url, tmp_path, monkeypatch):
    """The B2B app mounted at /b2b next to Airflow's auth manager app at /auth, as the Airflow
    api-server mounts them, served by uvicorn on 127.0.0.1."""
    import uvicorn
    from fastapi import FastAPI

    from b2b.cli.airflow_env import migrate_airflow_db

    # Airflow's auth checks a token against its metadata DB (revoked tokens): on a fresh
    # clone this fixture may be the first to need it (test_browser runs early)
    migrate_airflow_db()

    pw = tmp_path / "passwords.json"
    pw.write_text(json.dumps({u: p for u, (_, p) in USERS.items()}))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", ",".join(f"{u}:{r}" for u, (r, _) in USERS.items()))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(pw))
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "test-only-jwt-secret-0123456789abcdef-0123456789abcdef-0123456789abcdef")
    monkeypatch.setenv("B2B_DATABASE_URL", db_url)
    # the screens reach the warehouse as the b2b_ui login (F41, password auth), never as the admin
    import psycopg

    from b2b import db as b2bdb

    with psycopg.connect(db_url, autocommit=True) as admin:
        b2bdb.ensure_roles(admin, home=tmp_path)
    monkeypatch.setenv("B2B_UI_DATABASE_URL", b2bdb.role_url("b2b_ui", db_url, home=tmp_path))
    from airflow.api_fastapi.app import init_auth_manager
    from b2b_ui.review_app import create_app

    root = FastAPI()
    init_auth_manager(root)
    root.mount("/b2b", create_app())
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "the test server did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def login(base_url: str, user: str) -> str:
    """Airflow's own login endpoint (simple auth manager): a JWT for the user."""
    r = httpx.post(f"{base_url}/auth/token", json={"username": user, "password": USERS[user][1]})
    assert r.status_code == 201, r.text
    return r.json()["access_token"]


_CLIENTS: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def client(base_url: str, follow_redirects: bool = True, **kwargs) -> httpx.Client:
    c = httpx.Client(base_url=base_url, follow_redirects=follow_redirects, **kwargs)
    _CLIENTS.append(c)
    return c


def officer_client(base_url: str, user: str = "jane") -> httpx.Client:
    return client(base_url, cookies={"_token": login(base_url, user)})


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def test_review_screens_refuse_requests_without_login_or_officer_role(lists, ui):
    anonymous = client(ui, follow_redirects=False)
    for path in ("/b2b/review/", "/b2b/review/unmatched", "/b2b/review/conflicts", "/b2b/review/returns"):
        r = anonymous.get(path)
        assert r.status_code == 401 and "Log in to Airflow" in r.text and "Joseph" not in r.text
    r = anonymous.post("/b2b/review/act/resolve", data={"person_id": "P1", "field": "forename", "keep": "incoming"})
    assert r.status_code == 401
    assert httpx.get(f"{ui}/b2b/review/", headers={"Authorization": "Bearer not.a.jwt"}).status_code == 401
    reader = officer_client(ui, "reader")
    r = reader.get("/b2b/review/conflicts")
    assert r.status_code == 403 and "does not hold the B2B officer role" in r.text and "Joseph" not in r.text
    jane = officer_client(ui)
    r = jane.get("/b2b/review/conflicts")
    assert r.status_code == 200 and "Joseph" in r.text and "jane" in r.text
    # the bearer header works too (API clients), and a school's cookie is no officer login
    token = login(ui, "jane")
    assert httpx.get(f"{ui}/b2b/review/possible", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    key = reports.issue_token(lists, BASE)
    lists.commit()
    assert httpx.get(f"{ui}/b2b/review/", cookies={"b2b_school": key}).status_code == 401
    # nothing changed
    assert lists.execute("SELECT forename FROM core.child WHERE person_id = 'P1'").fetchone() == ("Joseph",)


def test_officer_decisions_go_through_the_domain_and_record_the_user(lists, ui):
    db = lists
    jane = officer_client(ui)
    html = jane.get("/b2b/review/possible").text
    assert "Amy" in html and "Why not linked automatically" in html
    assert jane.post("/b2b/review/act/confirm", data={"base": BASE, "guid": "g-amy", "person_id": "P4"}).status_code == 403
    token = csrf(html)
    r = jane.post("/b2b/review/act/confirm", data={"base": BASE, "guid": "g-amy", "person_id": "P4", "csrf": token,
                                                   "back": "possible"})
    assert r.status_code == 200 and "Confirmed: linked to LA child P4" in r.text
    # recorded as "<web user> via <database login>" (F41): the UI vouches for the Airflow user
    assert [(d, p, by.split(" via ")[0]) for d, p, by in db.execute(
        "SELECT decision, person_id, decided_by FROM results.match_decision")] == [("confirm", "P4", "jane")]
    r = jane.post("/b2b/review/act/resolve", data={"person_id": "P1", "field": "forename", "keep": "incoming",
                                                   "csrf": token, "back": "conflicts"})
    assert "Resolved forename of P1" in r.text
    forename, updated_by = db.execute("SELECT forename, updated_by FROM core.child WHERE person_id = 'P1'").fetchone()
    assert forename == "Joe" and updated_by.startswith("officer:jane")
    r = jane.post("/b2b/review/act/resolve", data={"person_id": "P1", "field": "postcode", "keep": "school",
                                                   "csrf": token, "back": "conflicts"})
    assert "Sent postcode of P1 to the school" in r.text and "CT9 9ZZ" not in r.text  # left the open list
    # a referral is recorded like a decision: the web user and the login it came through
    assert db.execute("SELECT field, referred_by FROM results.conflict_referral").fetchall() == [
        ("postcode", "jane via b2b_ui")]
    r = jane.post("/b2b/review/act/new_child", data={"base": BASE, "guid": "g-zed", "csrf": token})
    assert "Created LA child B2B0000001" in r.text
    overview = jane.get("/b2b/review/").text
    assert overview.count("<td>jane") == 4  # each decision names the web user (and the login it came through)
    # a decision that cannot be applied is a clear message, not a crash
    r = jane.post("/b2b/review/act/link", data={"base": BASE, "guid": "g-none", "person_id": "P1", "csrf": token})
    assert r.status_code == 200 and "no imported student g-none" in r.text


def test_unmatched_search_and_paging(lists, ui):
    from b2b.ops import review

    jane = officer_client(ui)
    html = jane.get("/b2b/review/unmatched", params={"base": BASE}).text
    assert "Newcomer" in html and "Create new child" in html
    html = jane.get("/b2b/review/link", params={"base": BASE, "guid": "g-zed", "q": "twist"}).text
    assert "P4" in html and "P5" in html
    assert [c["person_id"] for c in review.search_children(lists, "F886200326001")] == ["P1"]
    lists.execute("UPDATE results.match SET status = 'unmatched', person_id = NULL WHERE student_guid = 'g-joe'")
    first = review.unmatched(lists, BASE, limit=1)
    second = review.unmatched(lists, BASE, after=first.next_after, limit=1)
    assert [r["surname"] for r in first.rows + second.rows] == ["Bloggs", "Newcomer"]
    assert second.next_after is None


def test_a_school_page_shows_only_its_own_reports(lists, ui):
    db = lists
    other = reports.build(db, OTHER, date(2026, 10, 5))
    assert other is None  # nothing differs for the other school: give it a report by hand
    db.execute("""INSERT INTO results.school_report (base_id, iso_year, week, name, docx, xlsx, secret, students,
                                                    items, postcode_checks)
                  VALUES (%s, 2026, 41, 'B2BreportWeek41', 'OTHERDOC', 'x', 's', 1, 0, 0)""", (OTHER,))
    db.commit()
    other_id = db.execute("SELECT report_id FROM results.school_report WHERE base_id = %s", (OTHER,)).fetchone()[0]
    mine = db.execute("SELECT report_id FROM results.school_report WHERE base_id = %s", (BASE,)).fetchone()[0]
    key = reports.issue_token(db, BASE)
    other_key = reports.issue_token(db, OTHER)
    db.commit()
    anonymous = client(ui)
    assert "access key" in anonymous.get("/b2b/school/").text
    assert anonymous.get(f"/b2b/school/file/{mine}/docx").status_code == 401
    assert anonymous.post("/b2b/school/login", data={"key": "guessed"}).status_code == 403
    school = client(ui)
    r = school.post("/b2b/school/login", data={"key": key})
    assert r.status_code == 200 and f"School {BASE}" in r.text and f"/{other_id}/" not in r.text
    assert school.get(f"/b2b/school/file/{other_id}/docx").status_code == 404
    r = school.get(f"/b2b/school/file/{mine}/xlsx")
    assert r.status_code == 200 and r.headers["content-disposition"] == (
        'attachment; filename="B2BreportWeek41.xlsx"; filename*=UTF-8\'\'B2BreportWeek41.xlsx')
    # the other school's spreadsheet uploaded here is refused with its reason
    from tests.test_reports import tick

    theirs = tick(reports.report_file(db, BASE, mine, "xlsx")[1], {"Forename": "School", "Postcode": "School"})
    other_school = client(ui)
    other_school.post("/b2b/school/login", data={"key": other_key})
    r = other_school.post("/b2b/school/upload", files={"file": ("B2BreportWeek41.xlsx", theirs)})
    assert r.status_code == 400 and "this report belongs to another school" in r.text
    r = school.post("/b2b/school/upload", files={"file": ("B2BreportWeek41.xlsx", theirs)})
    assert "uploaded and sent" in r.text and "sent, not yet received" in r.text
    upload_id = reports.uploads(db, BASE)[0]["upload_id"]
    assert other_school.post("/b2b/school/recall", data={"upload_id": upload_id}).status_code == 200
    assert reports.uploads(db, BASE)[0]["status"] == "sent"  # not recalled by the other school
    r = school.post("/b2b/school/recall", data={"upload_id": upload_id})
    assert "Recalled" in r.text and reports.uploads(db, BASE)[0]["status"] == "recalled"


def test_through_a_real_airflow_api_server_the_plugin_is_listed_and_protected(lists, db_url, tmp_path):
    """``airflow api-server`` loads the plugin from plugins/: the "B2B review" view is listed and
    its pages need an Airflow login with the officer role."""
    import os
    import subprocess
    import sys

    from b2b import PROJECT_ROOT
    from b2b.cli.airflow_env import migrate_airflow_db, project_airflow_settings

    migrate_airflow_db()
    pw = tmp_path / "passwords.json"
    pw.write_text(json.dumps({u: p for u, (_, p) in USERS.items()}))
    port = _free_port()
    env = dict(os.environ, **project_airflow_settings(), B2B_DATABASE_URL=db_url,
               AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=",".join(f"{u}:{r}" for u, (r, _) in USERS.items()),
               AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(pw),
               AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="False",
               AIRFLOW__API_AUTH__JWT_SECRET="test-only-jwt-secret-0123456789abcdef-0123456789abcdef-0123456789abcdef",
               AIRFLOW__CORE__LAZY_LOAD_PLUGINS="False")
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "plugins")])
    airflow = os.path.join(os.path.dirname(sys.executable), "airflow")
    log = (tmp_path / "api-server.log").open("w")
    proc = subprocess.Popen([airflow, "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1", "--apps", "core"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "api-server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("the api-server did not start in 180 s")
        assert httpx.get(f"{url}/b2b/review/conflicts").status_code == 401
        reader = login(url, "reader")
        assert httpx.get(f"{url}/b2b/review/conflicts", cookies={"_token": reader}).status_code == 403
        token = login(url, "jane")
        r = httpx.get(f"{url}/b2b/review/conflicts", cookies={"_token": token})
        assert r.status_code == 200 and "Joseph" in r.text
        plugins = httpx.get(f"{url}/api/v2/plugins", headers={"Authorization": f"Bearer {token}"}).json()
        [ours] = [p for p in plugins["plugins"] if p["name"] == "b2b_review"]
        assert [(v["name"], v["href"]) for v in ours["external_views"]] == [("B2B review", "b2b/review/")]
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


XSS = ('<img src=x onerror=alert(1)>', '"><script>alert(1)</script>', "javascript:alert(1)//'", "</small>&amp;")


def test_hostile_school_values_are_escaped_on_every_screen_and_download(core, ui):
    """A school's names, a filename it uploads: text on every officer and school page, never markup
    (each page's HTML, attributes and inline confirm() text); a download keeps its header."""
    from html import escape
    from urllib.parse import quote

    db = core
    hostile = dict(JOE, forename=XSS[0])
    zed = {"upn": None, "forename": XSS[1], "surname": XSS[2] + XSS[3], "dob": "2017-02-02", "gender": "M"}
    run_chain(db, ctx(), [page("student", [("g-joe", hostile), ("g-zed", zed)]),
                          page("address", [("g-joe", dict(ADDR, postcode="CT9 9ZZ")), ("g-zed", ADDR)])])
    built = reports.build(db, BASE, date(2026, 10, 5), '<b>Hill</b>"view')
    key = reports.issue_token(db, BASE)
    db.commit()
    school = client(ui)
    school.post("/b2b/school/login", data={"key": key})
    from tests.test_reports import tick

    ticked = tick(reports.report_file(db, BASE, built.report_id, "xlsx")[1],
                  {"Forename": "LA", "Postcode": "LA"})
    name = 'a"; filename*=UTF-8\'\'evil.html <img src=x onerror=alert(1)> \u2013 \u00e9.xlsx'
    r = school.post("/b2b/school/upload", files={"file": (name, ticked)})
    assert "uploaded and sent" in r.text, r.text
    [u] = reports.uploads(db, BASE)
    assert u["filename"] == name.replace('"', "%22")  # as the browser (httpx) sends a quote in a file name
    r = school.get(f"/b2b/school/sent/{u['upload_id']}")
    assert r.status_code == 200 and r.content == ticked  # was a 500: the en dash is not Latin-1
    assert r.headers["content-disposition"] == (
        "attachment; filename=\"a_22_ filename__UTF-8__evil.html _img src_x onerror_alert(1)_ _ _.xlsx\"; "
        "filename*=UTF-8''" + quote(u["filename"], safe=""))  # the name exactly, and no parameter of its own
    pages = [school.get("/b2b/school/").text]
    jane = officer_client(ui)
    pages += [jane.get(f"/b2b/review/{s}").text for s in ("", "unmatched", "possible", "conflicts", "returns")]
    pages += [jane.get("/b2b/review/link", params={"base": BASE, "guid": "g-zed", "q": XSS[1]}).text,
              jane.get("/b2b/review/candidates", params={"base": BASE, "guid": "g-zed"}).text,
              jane.get("/b2b/review/unmatched", params={"err": XSS[0], "msg": XSS[1]}).text]
    seen = "\n".join(pages)
    for x in (*XSS, u["filename"]):
        assert escape(x) in seen or escape(json.dumps(x)) in seen
    for raw in ("<img", "<script", "</small>&amp;", "<b>Hill"):
        assert raw not in seen
