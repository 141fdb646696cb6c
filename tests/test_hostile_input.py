"""Hostile and broken schools (issue 9 items 2, 8, 9, 10, 11, 14; issue 10 part 5).

Misbehaving schools are real HTTP servers on 127.0.0.1 started here; the chain runs on the real
embedded PostgreSQL; messages come from the real simulator. Nothing of ours is mocked.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from b2b import pipeline as chain
from b2b.config.settings import Settings
from b2b.errors import SourceDeadlineError, SourceLimitError, SourceRequestError, SourceUnavailableError
from b2b.ingest.extract import ReceivedMessage, RunContext, store_messages
from b2b_hooks.sims7 import Sims7Hook
from b2b_hooks.sims_primary import SimsPrimaryHook
from simulator.server import start_server
from simulator.world import World, WorldConfig

UNTIL = datetime(2026, 10, 5, 17, tzinfo=UTC)
ORG = "org-7f3e9c-secret-ish"
LEGACY = Settings(matcher="legacy")


# ------------------------------------------------------------------ a misbehaving school
class School:
    """A local HTTP server whose every request is answered by ``handler(request) -> None``; it
    records what each request carried (path and headers) so tests can prove what was sent."""

    def __init__(self, handler: Callable[[BaseHTTPRequestHandler], None]):
        school = self
        self.requests: list[dict] = []
        self.sent_bytes = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                school.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                        "body": body})
                try:
                    handler(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def school():
    servers = []

    def make(handler):
        s = School(handler)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def reply(h, status=200, body=b"", headers=None):
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    if "Content-Length" not in (headers or {}):
        h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if body:
        h.wfile.write(body)


def primary_conn(monkeypatch, cid, url):
    monkeypatch.setenv(f"AIRFLOW_CONN_{cid.upper()}", json.dumps({
        "conn_type": "http", "host": url, "login": "client-id", "password": "the-secret-xyz",
        "extra": {"subscription_key": "sub-key-xyz", "organisation_id": ORG}}))


def sims7_conn(monkeypatch, cid, url):
    monkeypatch.setenv(f"AIRFLOW_CONN_{cid.upper()}", json.dumps({
        "conn_type": "http", "host": url, "login": "school-user", "password": "b2b-password-xyz"}))


def token(h):
    reply(h, 200, json.dumps({"access_token": "tok-abc", "token_type": "Bearer", "expires_in": 3600}).encode(),
          {"Content-Type": "application/json"})


def page_body(page, total_pages, nxt, items=()):
    return json.dumps({"organisationId": ORG, "dataGroup": "student", "page": page, "pageSize": 1,
                       "totalItems": total_pages, "totalPages": total_pages, "next": nxt,
                       "items": list(items)}).encode()


def ctx(base="8862001", source="sims7", data_filter="snapshot", dag=None, end=UNTIL, **kw):
    return RunContext(base_id=base, task_key=data_filter, dag_id=dag or f"b2b__{base}__{data_filter}",
                      run_id=f"r{end:%m%d}", source=source, data_filter=data_filter, window_start=None,
                      window_end=end, **kw)


def run_chain(db, c, messages, tmp_path, settings=LEGACY):
    out = {"extract": store_messages(db, c, messages)}
    out["hash"] = chain.hash_filter(db, c, settings)
    out["validate"] = chain.validate(db, c, tmp_path)
    out["load"] = chain.load(db, c)
    out["match"] = chain.match(db, c, settings)
    return out


def task_log(db):
    return db.execute("SELECT base_id, level, message, counts FROM ops.task_log ORDER BY log_id").fetchall()


# ------------------------------------------------------------------ item 8: deadline and caps
def test_trickling_server_is_cut_off_at_the_message_deadline_and_logged(school, monkeypatch, db):
    def trickle(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/xml")
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(200):  # one byte every 0.3 s: the per-read timeout never fires
            h.wfile.write(b"<")
            h.wfile.flush()
            time.sleep(0.3)

    srv = school(trickle)
    sims7_conn(monkeypatch, "slow_school", srv.url)
    # the operator's settings reach the hook: the deadline comes from B2B_MESSAGE_DEADLINE_S
    monkeypatch.setenv("B2B_MESSAGE_DEADLINE_S", "1.5")
    from b2b_operators.extract import ExtractOperator

    op = ExtractOperator(task_id="extract", conn_id="slow_school", base_id="8862001", base_kind="sims7",
                         task_key="snapshot", data_filter="snapshot")
    started = time.monotonic()
    with pytest.raises(SourceDeadlineError, match=r"deadline of 1.5 s"):
        store_messages(db, ctx(), op.messages(None, UNTIL))
    assert time.monotonic() - started < 5
    (base, level, message, counts), = task_log(db)
    assert (base, level, counts["source_error"]) == ("8862001", "error", "SimsDeadlineError")
    assert "B2B_MESSAGE_DEADLINE_S" in message and "b2b-password-xyz" not in message


def test_server_that_stalls_after_its_headers_is_cut_off_at_the_deadline(school, monkeypatch):
    def stall(h):
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.end_headers()
        h.wfile.write(b"<B2B")
        h.wfile.flush()
        time.sleep(4)  # then nothing: only the per-read timeout (300 s) would end this

    srv = school(stall)
    sims7_conn(monkeypatch, "stalled_school", srv.url)
    started = time.monotonic()
    with pytest.raises(SourceDeadlineError):
        Sims7Hook(sims7_conn_id="stalled_school", message_deadline_s=1.0).export("8862001", filter="snapshot",
                                                                                  until=UNTIL)
    assert time.monotonic() - started < 4


def test_server_trickling_its_headers_is_cut_off_at_the_deadline(school, monkeypatch):
    def trickle_headers(h):
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 200:
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(0.2)

    srv = school(trickle_headers)
    sims7_conn(monkeypatch, "slow_headers_school", srv.url)
    started = time.monotonic()
    with pytest.raises(SourceDeadlineError):
        Sims7Hook(sims7_conn_id="slow_headers_school", message_deadline_s=1.0).export(
            "8862001", filter="snapshot", until=UNTIL)
    assert time.monotonic() - started < 3


def test_body_declaring_more_than_the_size_cap_is_refused_before_reading(school, monkeypatch):
    def huge(h):
        h.send_response(200)
        h.send_header("Content-Length", str(100 * 1024 * 1024))
        h.end_headers()
        try:
            for _ in range(100 * 16):
                h.wfile.write(b"x" * 65536)
                school_srv.sent_bytes += 65536
        except OSError:
            pass

    school_srv = school(huge)
    sims7_conn(monkeypatch, "big_school", school_srv.url)
    hook = Sims7Hook(sims7_conn_id="big_school", max_message_bytes=1024 * 1024)
    with pytest.raises(SourceLimitError, match=r"size cap of 1,048,576 bytes"):
        hook.export("8862001", filter="snapshot", until=UNTIL)
    time.sleep(0.3)
    assert school_srv.sent_bytes < 20 * 1024 * 1024  # refused on its Content-Length, not read


def test_chunked_body_is_stopped_at_the_size_cap_not_read_whole(school, monkeypatch):
    def chunked(h):
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        try:
            for _ in range(1600):  # would be 100 MB
                h.wfile.write(b"10000\r\n" + b"x" * 65536 + b"\r\n")
                srv.sent_bytes += 65536
            h.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass

    srv = school(chunked)
    sims7_conn(monkeypatch, "chunky_school", srv.url)
    hook = Sims7Hook(sims7_conn_id="chunky_school", max_message_bytes=2 * 1024 * 1024)
    with pytest.raises(SourceLimitError, match="B2B_MAX_MESSAGE_BYTES"):
        hook.export("8862001", filter="snapshot", until=UNTIL)
    time.sleep(0.3)
    assert srv.sent_bytes < 20 * 1024 * 1024  # the reader stopped; the school could not push 100 MB


def test_compressed_bomb_is_stopped_at_the_size_cap_after_decompression(school, monkeypatch):
    import gzip

    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))  # 50 MB in about 50 kB
    srv = school(lambda h: reply(h, 200, bomb, {"Content-Encoding": "gzip", "Content-Length": str(len(bomb))}))
    sims7_conn(monkeypatch, "bomb_school", srv.url)
    with pytest.raises(SourceLimitError, match="size cap"):
        Sims7Hook(sims7_conn_id="bomb_school", max_message_bytes=1024 * 1024).export(
            "8862001", filter="snapshot", until=UNTIL)


def test_redirect_to_another_host_is_not_followed(school, monkeypatch):
    thief = school(lambda h: reply(h, 200, b"<B2BMessage/>"))
    srv = school(lambda h: reply(h, 302, b"", {"Location": f"{thief.url}/steal"}))
    sims7_conn(monkeypatch, "redirect_school", srv.url)
    with pytest.raises(SourceRequestError, match="HTTP 302"):
        Sims7Hook(sims7_conn_id="redirect_school").export("8862001", filter="snapshot", until=UNTIL)
    assert thief.requests == []


def test_group_claiming_a_billion_pages_is_refused_at_the_page_cap(school, monkeypatch, db):
    def pages(h):
        if h.path.endswith("/token"):
            return token(h)
        n = int(re.search(r"page=(\d+)", h.path).group(1))
        nxt = re.sub(r"page=\d+", f"page={n + 1}", h.path)
        reply(h, 200, page_body(n, 10 ** 9, nxt), {"Content-Type": "application/json"})

    srv = school(pages)
    primary_conn(monkeypatch, "pages_school", srv.url)
    hook = SimsPrimaryHook(sims_primary_conn_id="pages_school", max_pages=5)
    messages = (ReceivedMessage(f"student p{p.page}", p.content, "application/json", group="student")
                for p in hook.iter_pages("student", until=UNTIL))
    with pytest.raises(SourceLimitError, match=r"claims 1,000,000,000 pages, over the page cap of 5"):
        store_messages(db, ctx(base="8862003", source="sims_primary"), messages)
    assert len([r for r in srv.requests if "/datagroups/" in r["path"]]) == 1
    (base, level, message, counts), = task_log(db)  # a clear task-log error, nothing stored
    assert (base, level, counts["source_error"], counts["retryable"]) == ("8862003", "error", "SimsLimitError",
                                                                         False)
    assert "B2B_MAX_PAGES" in message and ORG not in message
    assert db.execute("SELECT count(*) FROM raw.inbound_file").fetchone()[0] == 0


def test_endless_next_links_stop_at_the_page_cap(school, monkeypatch):
    def pages(h):
        if h.path.endswith("/token"):
            return token(h)
        n = int(re.search(r"page=(\d+)", h.path).group(1))
        nxt = re.sub(r"page=\d+", f"page={n + 1}", h.path)
        reply(h, 200, page_body(n, 7, nxt), {"Content-Type": "application/json"})  # 7 pages, next forever

    srv = school(pages)
    primary_conn(monkeypatch, "endless_school", srv.url)
    hook = SimsPrimaryHook(sims_primary_conn_id="endless_school", max_pages=7)
    with pytest.raises(SourceLimitError, match="more than 7 pages"):
        list(hook.iter_pages("student", until=UNTIL))
    assert len([r for r in srv.requests if "/datagroups/" in r["path"]]) == 7


# the pages received must run 1..totalPages in order (fault sweep): a short or skipped pagination lost
# pupils silently; now the hook raises a request error naming the data group and pages, nothing is stored
def _paged_school(school, monkeypatch, cid, answer):
    """A SIMS Primary school whose data-group page n is ``answer(n, path)`` (bytes)."""
    def pages(h):
        if h.path.endswith("/token"):
            return token(h)
        n = int(re.search(r"page=(\d+)", h.path).group(1))
        reply(h, 200, answer(n, h.path), {"Content-Type": "application/json"})

    srv = school(pages)
    primary_conn(monkeypatch, cid, srv.url)
    return srv


def _primary_messages(cid):
    hook = SimsPrimaryHook(sims_primary_conn_id=cid)
    return (ReceivedMessage(f"student p{p.page}/{p.total_pages}", p.content, "application/json", group="student")
            for p in hook.iter_pages("student", until=UNTIL))


def _joe(n):
    return [{"studentId": f"g{n}", "data": {"upn": "F886200326001", "forename": "Joe", "surname": "Bloggs",
                                             "dob": "2016-01-26", "gender": "M", "ncy": "5"}}]


@pytest.mark.parametrize("answer, error", [
    # page 1 of 3 says next = null: pages 2 and 3 would never be asked for
    (lambda n, path: page_body(n, 3, None, _joe(n)), r"data group student ended at page 1 of 3 .*2\.\.3 missing"),
    # page 1's next link jumps to page 3
    (lambda n, path: page_body(n, 3, re.sub(r"page=\d+", f"page={n + 2}", path), _joe(n)),
     r"data group student: expected page 2, received page 3"),
    # page 2 of 3 is served again instead of page 3
    (lambda n, path: page_body(min(n, 2), 3, re.sub(r"page=\d+", f"page={n + 1}", path), _joe(n)),
     r"data group student: expected page 3, received page 2"),
    # page 2 says the group has 2 pages where page 1 said 3, and ends there
    (lambda n, path: page_body(n, 3 if n == 1 else 2, re.sub(r"page=\d+", f"page={n + 1}", path) if n == 1 else None,
                               _joe(n)), r"data group student: page 2 says 2 page\(s\), page 1 said 3"),
])
def test_short_or_skipped_primary_pagination_is_a_clear_error_and_nothing_is_stored(school, monkeypatch, db,
                                                                                    answer, error):
    _paged_school(school, monkeypatch, "short_school", answer)
    with pytest.raises(SourceRequestError, match=error) as err:
        store_messages(db, ctx(base="8862003", source="sims_primary"), _primary_messages("short_school"))
    assert "'short_school'" in str(err.value) and ORG not in str(err.value) and "the-secret-xyz" not in str(err.value)
    assert db.execute("SELECT count(*) FROM raw.inbound_file").fetchone()[0] == 0  # no page of the run kept
    assert db.execute("SELECT count(*) FROM raw.inbound_block").fetchone()[0] == 0
    (base, level, message, counts), = task_log(db)
    assert (base, level, counts["source_error"], counts["retryable"]) == ("8862003", "error", "SimsRequestError",
                                                                         False)
    assert ORG not in message and "Bloggs" not in message


@pytest.mark.parametrize("total", [b"1e999", b"2.5", b'"3"', b"true", b"-1", b"null"])
def test_primary_page_count_that_is_not_a_whole_number_is_a_clear_error(school, monkeypatch, total):
    """``totalPages: 1e999`` raised an uncaught OverflowError (int(inf)); 2.5 was read as 2."""
    _paged_school(school, monkeypatch, "odd_school",
                  lambda n, path: page_body(n, 1, None).replace(b'"totalPages": 1', b'"totalPages": ' + total))
    with pytest.raises(SourceRequestError, match=r"'odd_school': data group student page 1 is not a SIMS Primary "
                                                 r"page \(totalPages is not a whole number\)") as err:
        list(SimsPrimaryHook(sims_primary_conn_id="odd_school").iter_pages("student", until=UNTIL))
    assert ORG not in str(err.value)


def test_primary_page_nested_too_deeply_is_a_clear_error_not_a_recursion_error(school, monkeypatch):
    deep = page_body(1, 1, None).replace(b'"items": []', b'"items": [], "x": ' + b"[" * 100_000 + b"]" * 100_000)
    _paged_school(school, monkeypatch, "deep_school", lambda n, path: deep)
    with pytest.raises(SourceRequestError, match=r"data group student page 1 is not a SIMS Primary page "
                                                 r"\(its JSON is nested too deeply to be read\)"):
        list(SimsPrimaryHook(sims_primary_conn_id="deep_school").iter_pages("student", until=UNTIL))


def test_complete_primary_pagination_still_loads_every_page(school, monkeypatch, db):
    _paged_school(school, monkeypatch, "whole_school",
                  lambda n, path: page_body(n, 3, re.sub(r"page=\d+", f"page={n + 1}", path) if n < 3 else None,
                                            _joe(n)))
    out = store_messages(db, ctx(base="8862003", source="sims_primary"), _primary_messages("whole_school"))
    assert (out.files, out.failed, out.pupils) == (3, 0, 3)


# ------------------------------------------------------------------ issue 10 part 5: security
def test_next_link_to_another_host_is_refused_and_that_host_gets_nothing(school, monkeypatch):
    thief = school(lambda h: reply(h, 200, page_body(2, 2, None), {"Content-Type": "application/json"}))

    def pages(h):
        if h.path.endswith("/token"):
            return token(h)
        reply(h, 200, page_body(1, 2, f"{thief.url}/sims-primary/api/v1/organisations/{ORG}/datagroups/student"
                                      "?page=2"), {"Content-Type": "application/json"})

    srv = school(pages)
    primary_conn(monkeypatch, "redirecting_school", srv.url)
    hook = SimsPrimaryHook(sims_primary_conn_id="redirecting_school")
    got = []
    with pytest.raises(SourceRequestError, match="refused to follow a link to another host") as err:
        for page in hook.iter_pages("student", until=UNTIL):
            got.append(page)
    assert len(got) == 1 and thief.requests == []  # no token, no subscription key, no request at all
    assert "tok-abc" not in str(err.value) and "sub-key-xyz" not in str(err.value)


def test_next_link_that_parsers_read_differently_is_refused_and_that_host_gets_nothing(school, monkeypatch):
    """"http://<thief>\\@<own>/…": Python's urlsplit saw the school's own host after the "@",
    requests connected to the thief's, and the thief got the bearer token and the subscription
    key (found by a fault sweep). The link is now read as the HTTP library reads it, and one
    that parsers read differently is refused before anything is sent."""
    thief = school(lambda h: reply(h, 200, page_body(2, 2, None), {"Content-Type": "application/json"}))
    thief_port = thief.httpd.server_address[1]

    def pages(h):
        if h.path.endswith("/token"):
            return token(h)
        own = srv.httpd.server_address[1]
        reply(h, 200, page_body(1, 2, f"http://127.0.0.1:{thief_port}\\@127.0.0.1:{own}/sims-primary/x?page=2"),
              {"Content-Type": "application/json"})

    srv = school(pages)
    primary_conn(monkeypatch, "backslash_school", srv.url)
    with pytest.raises(SourceRequestError, match="refused to follow a link to another host"):
        list(SimsPrimaryHook(sims_primary_conn_id="backslash_school").iter_pages("student", until=UNTIL))
    assert thief.requests == []


@pytest.mark.parametrize("link,same", [
    ("http://school.example:8080/a?page=2", True),
    ("http://SCHOOL.example:8080/a", True),
    ("http://thief.example\\@school.example:8080/a", False),
    ("http://school.example:8080\\@thief.example/a", False),
    ("http://user@school.example:8080/a", False),
    ("http://thief.example:8080@school.example:8080/a", False),
    ("http://school.example:8080/a b", False),
    ("http://school.example:8080/a\tb", False),
    ("http://school.example:9090/a", False),
    ("https://school.example:8080/a", False),
    ("http://school.example:99999/a", False),
    ("http://[::1]:8080/a", False),
])
def test_same_origin_reads_links_as_the_http_library_does(link, same):
    from b2b_hooks._http import same_origin

    assert same_origin(link, "http://school.example:8080") is same


def test_relative_and_same_origin_next_links_are_still_followed(school, monkeypatch):
    def pages(h):
        if h.path.endswith("/token"):
            return token(h)
        n = int(re.search(r"page=(\d+)", h.path).group(1))
        nxt = {1: f"{srv.url}/sims-primary/api/v1/organisations/{ORG}/datagroups/student?page=2",
               2: "student?page=3", 3: None}[n]
        reply(h, 200, page_body(n, 3, nxt), {"Content-Type": "application/json"})

    srv = school(pages)
    primary_conn(monkeypatch, "good_school", srv.url)
    pages_seen = [p.page for p in SimsPrimaryHook(sims_primary_conn_id="good_school").iter_pages(
        "student", until=UNTIL)]
    assert pages_seen == [1, 2, 3]


def test_unavailable_error_does_not_print_the_organisation_id(school, monkeypatch):
    srv = school(lambda h: token(h) if h.path.endswith("/token") else reply(h, 503, b"{}"))
    primary_conn(monkeypatch, "down_school", srv.url)
    hook = SimsPrimaryHook(sims_primary_conn_id="down_school", max_retries=1, sleep=lambda s: None)
    with pytest.raises(SourceUnavailableError) as err:
        list(hook.iter_pages("student", until=UNTIL))
    assert ORG not in str(err.value) and "data group student" in str(err.value)


def test_a_servers_error_text_does_not_carry_the_organisation_id_into_the_error(school, monkeypatch):
    """A 404 whose body says "unknown organisation <id>" (the simulator's own wording) put the
    Organisation ID in the task log (a fault sweep); the server's words stay, its echo of the
    connection's settings does not."""
    srv = school(lambda h: token(h) if h.path.endswith("/token") else
                 reply(h, 404, json.dumps({"error": f"unknown organisation {ORG}"}).encode(),
                       {"Content-Type": "application/json"}))
    primary_conn(monkeypatch, "unknown_org_school", srv.url)
    with pytest.raises(SourceRequestError) as err:
        list(SimsPrimaryHook(sims_primary_conn_id="unknown_org_school").iter_pages("student", until=UNTIL))
    assert "HTTP 404 unknown organisation" in str(err.value) and ORG not in str(err.value)


def test_a_subscription_key_with_a_line_break_is_sent_trimmed_and_never_printed(school, monkeypatch):
    """A key pasted with its line break: requests refused the header and its error quoted the
    key (a fault sweep). Settings are trimmed; a value a header still cannot carry is named, not
    printed."""
    seen = []

    def pages(h):
        if h.path.endswith("/token"):
            return token(h)
        seen.append(h.headers.get("Ocp-Apim-Subscription-Key"))
        reply(h, 200, page_body(1, 1, None), {"Content-Type": "application/json"})

    srv = school(pages)
    monkeypatch.setenv("AIRFLOW_CONN_PASTED_SCHOOL", json.dumps({
        "conn_type": "http", "host": srv.url, "login": "client-id", "password": "the-secret-xyz",
        "extra": {"subscription_key": "sub-key-xyz\n", "organisation_id": ORG}}))
    assert len(list(SimsPrimaryHook(sims_primary_conn_id="pasted_school").iter_pages("student", until=UNTIL))) == 1
    assert seen == ["sub-key-xyz"]
    monkeypatch.setenv("AIRFLOW_CONN_BROKEN_SCHOOL", json.dumps({
        "conn_type": "http", "host": srv.url, "login": "client-id", "password": "the-secret-xyz",
        "extra": {"subscription_key": "sub-key\nxyz", "organisation_id": ORG}}))
    with pytest.raises(SourceRequestError, match="cannot carry") as err:
        list(SimsPrimaryHook(sims_primary_conn_id="broken_school").iter_pages("student", until=UNTIL))
    assert "sub-key" not in str(err.value) and "xyz" not in str(err.value)


# ------------------------------------------------------------------ item 9: F9 failures are logged
def test_connection_refused_is_recorded_in_the_task_log(monkeypatch, db):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    sims7_conn(monkeypatch, "gone_school", f"http://127.0.0.1:{port}")
    hook = Sims7Hook(sims7_conn_id="gone_school", max_retries=1, sleep=lambda s: None)

    def messages():
        msg = hook.export("8862001", filter="snapshot", until=UNTIL)
        yield ReceivedMessage("export", msg.content, msg.content_type)

    with pytest.raises(SourceUnavailableError):
        store_messages(db, ctx(), messages())
    (base, level, message, counts), = task_log(db)
    assert (base, level, counts["source_error"], counts["retryable"]) == ("8862001", "error",
                                                                         "SimsUnavailableError", True)
    assert "ConnectionError" in message
    assert db.execute("SELECT count(*) FROM raw.inbound_file").fetchone()[0] == 0


def test_refused_credentials_are_recorded_with_the_status_and_no_secret(school, monkeypatch, db):
    srv = school(lambda h: reply(h, 401, b'{"error": "invalid credentials"}'))
    sims7_conn(monkeypatch, "locked_school", srv.url)
    hook = Sims7Hook(sims7_conn_id="locked_school")

    def messages():
        msg = hook.export("8862001", filter="snapshot", until=UNTIL)
        yield ReceivedMessage("export", msg.content, msg.content_type)

    with pytest.raises(Exception, match="HTTP 401"):
        store_messages(db, ctx(), messages())
    (base, level, message, counts), = task_log(db)
    assert (base, level, counts["source_error"]) == ("8862001", "error", "SimsAuthError")
    assert "HTTP 401" in message and "b2b-password-xyz" not in message
    # a later successful attempt at the window keeps that history row
    store_messages(db, ctx(), [])
    assert [r[1] for r in task_log(db)] == ["error", "info"]


# ------------------------------------------------------------------ item 2: the same pupil twice
@pytest.fixture(scope="module")
def world():
    return World(WorldConfig.demo())


def _pupils(xml: bytes) -> list[bytes]:
    return re.findall(rb"<Pupil>.*?</Pupil>", xml, flags=re.S)


def _all_guids(pupils: list[bytes]) -> set[str]:
    return {re.search(rb"<ApplicationReference>(.*?)</ApplicationReference>", p).group(1).decode() for p in pupils}


def _invalid_by_gx(db) -> set[str]:
    """Pupils whose student block the expectation suites refused (the world's entry errors)."""
    return {r[0] for r in db.execute("""SELECT student_guid FROM results.anomaly WHERE block_type = 'student'
                                         AND severity = 'error' AND rule NOT IN ('duplicate_pupil', 'pupil_schema')""")}


def test_same_pupil_twice_in_a_sims7_file_is_an_anomaly_and_neither_copy_is_loaded(db, world, tmp_path):
    xml = world.export_sims7("8862001", "snapshot", UNTIL, None)
    pupils = _pupils(xml)
    twice = xml.replace(b"</Pupils>", pupils[2] + b"</Pupils>")  # pupil #3 again as the last pupil
    guid = re.search(rb"<ApplicationReference>(.*?)</ApplicationReference>", pupils[2]).group(1).decode()
    out = run_chain(db, ctx(), [ReceivedMessage("export", twice, "application/xml")], tmp_path)
    assert out["extract"].duplicate_pupils == 2
    n = len(pupils) + 1
    rows = db.execute("""SELECT rule, severity, student_guid, value FROM results.anomaly
                          WHERE rule = 'duplicate_pupil' ORDER BY value""").fetchall()
    assert [(r[0], r[1], r[2]) for r in rows] == [("duplicate_pupil", "error", guid)] * 2
    assert "pupil #3 of file" in rows[0][3] + rows[1][3] and f"pupil #{n} of file" in rows[0][3] + rows[1][3]
    # neither copy reaches staging; every other pupil does, and match ran
    staged = {r[0] for r in db.execute("SELECT student_guid FROM staging.student")}
    assert staged == _all_guids(pupils) - {guid} - _invalid_by_gx(db)
    assert db.execute("SELECT count(*) FROM results.match WHERE student_guid = %s", (guid,)).fetchone()[0] == 0
    assert db.execute("SELECT count(DISTINCT student_guid) FROM results.match").fetchone()[0] == len(staged)


def _primary_page(n, total, items):
    return ReceivedMessage(f"student p{n}/{total}", json.dumps({
        "organisationId": "o", "dataGroup": "student", "page": n, "pageSize": 2, "totalItems": 3,
        "totalPages": total, "next": None,
        "items": [{"studentId": g, "changed": "2026-10-05T12:00:00+00:00", "data": d} for g, d in items]}).encode(),
        "application/json", group="student")


def test_same_pupil_on_two_primary_pages_is_an_anomaly_and_neither_copy_is_loaded(db, tmp_path):
    joe = {"upn": "F886200326001", "forename": "Joe", "surname": "Bloggs", "dob": "2016-01-26", "gender": "M",
           "ncy": "5", "enrol_status": "C"}
    emma = {"upn": "V886200326002", "forename": "Emma", "surname": "Davids", "dob": "2017-09-21", "gender": "F",
            "ncy": "4", "enrol_status": "C"}
    c = ctx(base="8862003", source="sims_primary", data_filter="snapshot")
    pages = [_primary_page(1, 2, [("g1", joe), ("g2", emma)]), _primary_page(2, 2, [("g1", dict(joe, ncy="6"))])]
    out = run_chain(db, c, pages, tmp_path)
    assert out["extract"].duplicate_pupils == 2
    anomalies = db.execute("""SELECT a.student_guid, f.label, a.value FROM results.anomaly a
                                JOIN raw.inbound_file f USING (file_id)
                               WHERE a.rule = 'duplicate_pupil' ORDER BY f.seq""").fetchall()
    assert [(g, label) for g, label, _ in anomalies] == [("g1", "student p1/2"), ("g1", "student p2/2")]
    assert "pupil #1 of file" in anomalies[0][2]
    assert db.execute("SELECT student_guid FROM staging.student").fetchall() == [("g2",)]


# ------------------------------------------------------------------ item 11: one bad pupil
def test_one_invalid_dob_loads_the_other_pupils_and_reports_the_bad_one(db, world, tmp_path):
    xml = world.export_sims7("8862001", "snapshot", UNTIL, None)
    pupils = _pupils(xml)
    bad = re.sub(rb"<DOB>[^<]*</DOB>", b"<DOB>2016-13-45</DOB>", pupils[4], count=1)
    xml = xml.replace(pupils[4], bad)
    line = xml[: xml.index(b"2016-13-45")].count(b"\n") + 1
    guid = re.search(rb"<ApplicationReference>(.*?)</ApplicationReference>", bad).group(1).decode()
    out = run_chain(db, ctx(), [ReceivedMessage("export", xml, "application/xml")], tmp_path)
    assert out["extract"].failed == 0 and out["extract"].rejected_pupils == 1
    assert db.execute("SELECT status FROM raw.inbound_file").fetchone()[0] == "loaded"
    staged = {r[0] for r in db.execute("SELECT student_guid FROM staging.student")}
    assert staged == _all_guids(pupils) - {guid} - _invalid_by_gx(db)
    assert len(staged) >= len(pupils) - 3
    (rule, field, severity, value), = db.execute(
        "SELECT rule, field, severity, value FROM results.anomaly WHERE student_guid = %s", (guid,)).fetchall()
    assert (rule, field, severity) == ("pupil_schema", "DOB", "error")
    assert value.startswith(f"pupil #5, line {line}: element <DOB>") and "2016-13-45" not in value
    # the task log says so too, without the value
    logs = " ".join(r[2] for r in task_log(db))
    assert "1 pupil(s) not imported" in logs and "2016-13-45" not in logs


# fault sweep: one SIMS Primary pupil with a value PostgreSQL cannot store (NUL, an unpaired
# surrogate, NaN/Infinity), nested too deeply, or a list where one value is expected, made the COPY fail:
# the whole run rolled back, retried for ever, and psycopg's error quoted the COPY line (names, DOB)
JOE = {"upn": "F886200326001", "forename": "Joe", "surname": "Bloggs", "dob": "2016-01-26", "gender": "M",
       "ncy": "5"}


def _deep(levels):
    value: object = "x"
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("bad, field, rule", [
    ({"surname": "Blo\u0000ggs"}, "surname", "not storable text"),
    ({"surname": "Blo\ud800ggs"}, "surname", "not storable text"),
    ({"forename": "Jo\udfffe"}, "forename", "not storable text"),
    ({"contacts_note": {"Blo\u0000ggs": "1"}}, "contacts_note.?", "a key is not storable text"),
    ({"x": float("nan")}, "x", "not a finite number"),
    ({"x": float("inf")}, "x", "not a finite number"),
    ({"extra": [{"n": float("-inf")}]}, "extra[0].n", "not a finite number"),
    ({"x": _deep(200)}, "x" + "[0]" * 31, "nested more than 32 levels"),
    # item 2: a list or an object where a staging column takes one value loaded as JSON text
    ({"surname": ["Bloggs"]}, "surname", "a list where a single value is expected"),
    ({"forename": {"a": 1}}, "forename", "an object where a single value is expected"),
    ({"dob": ["2016-01-26"]}, "dob", "a list where a single value is expected"),
])
def test_one_bad_primary_value_rejects_only_that_pupil(db, tmp_path, bad, field, rule):
    pages = [_primary_page(1, 2, [("g1", dict(JOE, **bad)), ("g3", dict(JOE, forename="Sam"))]),
             _primary_page(2, 2, [("g2", dict(JOE, forename="Ann"))])]
    c = ctx(base="8862003", source="sims_primary", data_filter="snapshot")
    out = run_chain(db, c, pages, tmp_path)
    assert (out["extract"].failed, out["extract"].rejected_pupils) == (0, 1)
    assert {r[0] for r in db.execute("SELECT student_guid FROM staging.student")} == {"g2", "g3"}
    (guid, block_type, a_rule, a_field, severity, value), = db.execute(
        "SELECT student_guid, block_type, rule, field, severity, value FROM results.anomaly").fetchall()
    assert (guid, block_type, a_rule, a_field, severity) == ("g1", "student", "pupil_schema", field, "error")
    assert value.startswith(f"pupil #1: student data, field {field}: {rule}")
    texts = [value] + [r[2] + json.dumps(r[3]) for r in task_log(db)]
    assert "1 pupil(s) not imported" in " ".join(texts)
    for personal in ("Blo", "Joe", "2016", "F886"):  # the pupil is named by guid, field and rule only
        assert not any(personal in t for t in texts), personal


def test_primary_contacts_item_with_a_list_for_a_name_rejects_that_pupil(db):
    contacts = {"contacts": [{"person_id": "c1", "surname": "Bloggs"}, {"person_id": "c2", "forename": ["Jo"]}]}
    page = ReceivedMessage("contacts p1/1", json.dumps({
        "organisationId": "o", "dataGroup": "contacts", "page": 1, "pageSize": 2, "totalItems": 2, "totalPages": 1,
        "next": None, "items": [{"studentId": "g1", "data": contacts},
                                {"studentId": "g2", "data": {"contacts": contacts["contacts"][:1]}}]}).encode(),
        "application/json", group="contacts")
    out = store_messages(db, ctx(base="8862003", source="sims_primary"), [page])
    assert (out.failed, out.rejected_pupils, out.blocks) == (0, 1, 2)  # g2's block and g1's anchor
    (rule, field, detail), = db.execute("SELECT rule, field, detail FROM raw.rejected_block").fetchall()
    assert (rule, field) == ("pupil_schema", "contacts[1].forename")
    assert detail == "pupil #1: contacts data, field contacts[1].forename: a list where a single value is expected"


@pytest.mark.parametrize("sid", ["  ", "", {"x": 1}, ["g1"], True, 1.5, None, "g\u0000"])
def test_primary_item_without_a_usable_student_id_puts_its_page_in_suspense(db, sid):
    """A blank or non-text id became the pupil's guid ("  ", or "{'x': 1}" by Python's repr). As in
    SIMS 7 (an empty ApplicationReference), a pupil without its id cannot be reported or matched."""
    bad = json.loads(_primary_page(1, 2, [("g1", JOE)]).content)
    bad["items"][0]["studentId"] = sid
    pages = [ReceivedMessage("student p1/2", json.dumps(bad).encode(), "application/json", group="student"),
             _primary_page(2, 2, [("g2", dict(JOE, forename="Ann"))])]
    out = store_messages(db, ctx(base="8862003", source="sims_primary"), pages)
    assert (out.files, out.failed, out.pupils) == (2, 1, 1)
    rows = db.execute("SELECT label, status, error FROM raw.inbound_file ORDER BY seq").fetchall()
    assert [(r[0], r[1]) for r in rows] == [("student p1/2", "suspense"), ("student p2/2", "parsed")]
    assert rows[0][2] in ("item without studentId or data (pupil #1)",
                          "item whose studentId is not a usable id (blank, not text or a whole number, "
                          "or not storable text) (pupil #1)")
    assert db.execute("SELECT student_guid FROM raw.inbound_block").fetchall() == [("g2",)]


def test_primary_student_id_is_stripped_as_in_sims7(db):
    page = json.loads(_primary_page(1, 1, [("g1", JOE)]).content)
    page["items"][0]["studentId"] = "  g1\t"
    page["items"].append({"studentId": 42, "data": dict(JOE, forename="Ann")})
    store_messages(db, ctx(base="8862003", source="sims_primary"),
                   [ReceivedMessage("student p1/1", json.dumps(page).encode(), "application/json", group="student")])
    assert db.execute("SELECT student_guid FROM raw.inbound_block ORDER BY ordinal").fetchall() == [("g1",), ("42",)]


def test_primary_page_nested_beyond_the_json_parser_goes_to_suspense(db):
    deep = (b'{"dataGroup": "student", "page": 1, "totalPages": 2, "items": [{"studentId": "g1", "data": {"x": '
            + b"[" * 100_000 + b"]" * 100_000 + b"}}]}")
    pages = [ReceivedMessage("student p1/2", deep, "application/json", group="student"),
             _primary_page(2, 2, [("g2", JOE)])]
    out = store_messages(db, ctx(base="8862003", source="sims_primary"), pages)
    assert (out.files, out.failed, out.pupils) == (2, 1, 1)
    status, error = db.execute("SELECT status, error FROM raw.inbound_file ORDER BY seq LIMIT 1").fetchone()
    assert (status, error) == ("suspense", "page is not valid JSON: nested too deeply to be read")


def test_a_block_postgres_refuses_fails_the_run_without_quoting_it(db, monkeypatch):
    """Should a value the parser lets through still be refused by PostgreSQL, psycopg's error
    (which quotes the COPY line) does not reach the log: a project error naming the file does."""
    from b2b.ingest import messages

    monkeypatch.setattr(messages, "_primary_problem", lambda group, data: None, raising=False)
    page = _primary_page(1, 1, [("g1", dict(JOE, surname="Blo\u0000ggs"))])
    with pytest.raises(Exception) as err:
        store_messages(db, ctx(base="8862003", source="sims_primary"), [page])
    assert "PostgreSQL refused a block" in str(err.value) and err.value.__suppress_context__
    (base, level, message, counts), = task_log(db)
    assert counts["retryable"] is False and "PostgreSQL refused a block" in message
    for personal in ("Blo", "Joe", "2016"):
        assert personal not in str(err.value) and personal not in message
    assert db.execute("SELECT count(*) FROM raw.inbound_file").fetchone()[0] == 0


def test_truly_malformed_file_still_goes_to_suspense(db, world, tmp_path):
    xml = world.export_sims7("8862001", "snapshot", UNTIL, None)
    broken = xml.replace(b"</Pupils>", b"<Pupil><ApplicationReference>x</ApplicationReference>")
    out = run_chain(db, ctx(), [ReceivedMessage("export", broken, "application/xml")], tmp_path)
    assert out["extract"].failed == 1 and out["load"]["loaded"] == 0
    status, error = db.execute("SELECT status, error FROM raw.inbound_file").fetchone()
    assert status == "suspense" and "not well-formed XML" in error and "line" in error


def test_libxml2_quoting_the_document_puts_no_pupil_data_in_the_error_or_the_logs(db, world):
    """An unfinished CDATA section: libxml2's message carries the section's text (a pupil's name
    and address) on its next line, and it reached raw.inbound_file.error and the task log (a
    fault sweep). The suspense reason keeps the kind of error and the line, not the text."""
    xml = world.export_sims7("8862001", "snapshot", UNTIL, None)
    m = re.search(rb"<Surname>([^<]+)</Surname>", xml)
    cut = xml[:m.start()] + b"<Surname><![CDATA[" + m.group(1) + b" 12 Secret Road"
    store_messages(db, ctx(), [ReceivedMessage("export", cut, "application/xml")])
    status, error = db.execute("SELECT status, error FROM raw.inbound_file").fetchone()
    assert status == "suspense" and "CData section not finished" in error and "line" in error
    logged = " ".join(str(r) for r in task_log(db))
    for text in (m.group(1).decode(), "Secret"):
        assert text not in error and text not in logged


# ------------------------------------------------------------------ item 14: F23 on SIMS Primary
@pytest.fixture
def sim(monkeypatch):
    w = World(WorldConfig.demo())
    srv = start_server(w)
    for cid, c in w.airflow_connections(srv.base_url).items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{cid.upper()}", json.dumps(c))
    yield w, srv
    srv.shutdown()


def _extract_op(dfe, group_type):
    from b2b_operators.extract import ExtractOperator

    return ExtractOperator(task_id="extract", conn_id=f"sims_primary_{dfe}", base_id=dfe, base_kind="sims_primary",
                           task_key=f"{group_type}_snapshot", data_filter="snapshot", group_type=group_type)


def _students(messages):
    guids = []
    for m in messages:
        if m.group == "student":
            guids += [(i["studentId"], i["data"]) for i in json.loads(m.content)["items"]]
    return guids


def test_primary_lac_task_fetches_only_looked_after_children(sim):
    world, _ = sim
    dfe = "8862003"
    got = _students(_extract_op(dfe, "lac").messages(None, UNTIL))
    st = world.state(UNTIL).students[dfe]
    lac = {g for g, s in st.items() if s.blocks["student"]["looked_after"] and s.blocks["student"]["end_date"] is None}
    assert lac and {g for g, _ in got} == lac
    assert all(d["looked_after"] for _, d in got)
    assert len(lac) < sum(1 for s in st.values() if s.blocks["student"]["end_date"] is None)


def test_primary_leavers_task_fetches_only_leavers_sent_before(sim):
    world, _ = sim
    dfe = "8862003"
    later = UNTIL + timedelta(days=40)
    assert _students(_extract_op(dfe, "leavers").messages(None, UNTIL)) == []  # none sent before: none now
    sent = {g for g, _ in _students(_extract_op(dfe, "ncy").messages(None, UNTIL))}
    leavers = _students(_extract_op(dfe, "leavers").messages(None, later))
    assert leavers, "the demo world has leavers within 40 days"
    assert all(d["end_date"] is not None for _, d in leavers)
    assert {g for g, _ in leavers} <= sent


def test_f19_attainment_reaches_staging_with_only_the_tasks_aspect_hierarchies(sim, db, tmp_path):
    from b2b_operators.extract import ExtractOperator

    world, _ = sim
    dfe = "8862001"
    op = ExtractOperator(task_id="extract", conn_id=f"sims7_{dfe}", base_id=dfe, base_kind="sims7",
                         task_key="attainment", data_filter="attainment", hierarchies=["B2B KS1"])
    c = ctx(base=dfe, data_filter="attainment")
    run_chain(db, c, op.messages(None, UNTIL), tmp_path)
    rows = db.execute("SELECT student_guid, hierarchy, aspect, result FROM staging.attainment").fetchall()
    expected = sorted((g, r["hierarchy"], r["aspect"], r["result"])
                      for g, s in world.state(UNTIL).students[dfe].items()
                      if s.blocks["student"]["end_date"] is None
                      for r in s.blocks.get("attainment", {}).get("results", [])
                      if r["hierarchy"] == "B2B KS1")
    assert expected and sorted(rows) == expected
    assert {r[1] for r in rows} == {"B2B KS1"}  # phonics (year 2) was not asked for
    assert any(r["hierarchy"] == "B2B Phonics" for s in world.state(UNTIL).students[dfe].values()
               for r in s.blocks.get("attainment", {}).get("results", []))


def test_catalogue_yaml_syntax_error_is_a_clear_error_not_a_traceback(tmp_path):
    from b2b.config.catalogue import CatalogueError, read_raw

    bad = tmp_path / "broken.yaml"
    bad.write_text('version: 1\nla:\n  code: "886\n  name: x\nbases: [a, b\n')
    with pytest.raises(CatalogueError) as err:
        read_raw(bad)
    assert "broken.yaml" in str(err.value) and "not valid YAML" in str(err.value) and "line " in str(err.value)
