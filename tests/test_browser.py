"""The review screens and the school round trip in a real browser: Playwright driving Debian's
Chromium (never a downloaded browser) against the app served by uvicorn on loopback, with
Airflow's own login page and auth manager.

Screenshots of each screen go to ``$B2B_SCREENSHOTS`` when set (``docs/screenshots`` is made
with ``B2B_SCREENSHOTS=docs/screenshots``), else to the test's temporary folder.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from b2b.outbound import reports
from tests.test_chain import BASE, core  # noqa: F401 - fixture
from tests.test_reports import tick
from tests.test_review_ui import USERS, lists, ui  # noqa: F401 - fixtures

CHROMIUM = os.environ.get("B2B_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM} (CI installs Debian's chromium package)")
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium); CI is not set")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("B2B_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)

    def shot(page, name: str) -> None:
        # Chromium can refuse a capture while the page is still painting on a busy machine
        # ("Unable to capture screenshot"): wait for the load, retry a few times
        from playwright.sync_api import Error

        page.wait_for_load_state("load")
        for attempt in range(4):
            try:
                page.screenshot(path=str(folder / f"{name}.png"))
                return
            except Error:
                if attempt == 3:
                    raise
                page.wait_for_timeout(1000)
    return shot


def new_page(browser):
    context = browser.new_context(viewport={"width": 1180, "height": 640}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30000)  # generous: CI shares 2 cores with Airflow and Postgres
    page.on("dialog", lambda d: d.accept())  # the confirmation of each decision
    return page


def officer_login(page, ui_url: str, user: str = "jane") -> None:
    """Through Airflow's own login page (simple auth manager), back to the review screens."""
    page.goto(f"{ui_url}/auth/login?next=/b2b/review/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(USERS[user][1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/b2b/review/")


def nav(page, name: str) -> None:
    page.get_by_role("banner").get_by_role("link", name=name).click()


def row(page, text: str):
    return page.locator("tr", has_text=text)


def test_officer_confirms_a_possible_match_and_resolves_a_conflict(lists, ui, browser, shots):
    db = lists
    page = new_page(browser)
    page.goto(f"{ui}/b2b/review/")
    assert "Log in to Airflow" in page.content()
    officer_login(page, ui)
    shots(page, "overview")
    nav(page, "Unmatched")
    assert row(page, "Newcomer").count() == 1
    shots(page, "unmatched")
    nav(page, "Possible matches")
    shots(page, "possible")
    row(page, "Amy").first.get_by_role("button", name="Confirm").click()
    assert "Confirmed: linked to LA child" in page.get_by_role("status").inner_text()
    nav(page, "Matched with conflicts")
    shots(page, "conflicts")
    row(page, "Forename").get_by_role("button", name="Keep school").click()
    assert "Resolved forename of P1" in page.get_by_role("status").inner_text()
    assert row(page, "Forename").count() == 0 and row(page, "Postcode").count() == 1
    nav(page, "Overview")
    decisions = page.locator("table").nth(1).inner_text()
    assert "confirm" in decisions and "accepted_incoming" in decisions and decisions.count("jane") == 2
    shots(page, "overview_after")
    for screen, name in (("contacts", "Rejected contacts"), ("suspense", "Files in suspense")):
        nav(page, name)
        shots(page, screen)
    # the web user is recorded with the database login that vouched for it (F41: "jane via <login>")
    assert [r[0].split(" via ")[0] for r in db.execute("SELECT decided_by FROM results.match_decision")] == ["jane"]
    assert db.execute("SELECT forename FROM core.child WHERE person_id = 'P1'").fetchone() == ("Joe",)


def test_school_downloads_ticks_and_uploads_and_the_la_record_changes(lists, ui, browser, shots, tmp_path):
    db = lists
    key = reports.issue_token(db, BASE)
    db.commit()
    school = new_page(browser)
    school.goto(f"{ui}/b2b/school/")
    shots(school, "school_login")
    school.get_by_label("Your school's access key").fill(key)
    school.get_by_role("button", name="Open").click()
    shots(school, "school_reports")
    with school.expect_download() as dl:
        school.get_by_role("link", name="B2BreportWeek41.xlsx").click()
    xlsx = Path(dl.value.path()).read_bytes()
    with school.expect_download() as dl:
        school.get_by_role("link", name="B2BreportWeek41.docx").click()
    assert Path(dl.value.path()).read_bytes()[:2] == b"PK"
    ticked = tmp_path / "B2BreportWeek41.xlsx"
    ticked.write_bytes(tick(xlsx, {"Forename": "School", "Postcode": "LA"}))  # the school's Joe is right
    school.locator("input[type=file]").set_input_files(str(ticked))
    school.get_by_role("button", name="Upload & send").click()
    assert "uploaded and sent" in school.get_by_role("status").inner_text()
    assert row(school, "B2BreportWeek41.xlsx").filter(has_text="sent, not yet received").count() == 1
    shots(school, "school_sent")
    # the LA receives it
    officer = new_page(browser)
    officer_login(officer, ui)
    nav(officer, "School returns")
    shots(officer, "returns")
    row(officer, BASE).get_by_role("button", name="Receive").click()
    assert "1 LA record(s) amended, 1 left for the school" in officer.get_by_role("status").inner_text()
    assert db.execute("SELECT forename, postcode FROM core.child WHERE person_id = 'P1'").fetchone() == (
        "Joe", "CT1 2AB")
    school.reload()
    assert row(school, "B2BreportWeek41.xlsx").filter(has_text="received").count() >= 1
    assert school.get_by_role("button", name="Recall").count() == 0
