"""The B2B review screens (officers) and school pages, as one FastAPI app.

Airflow mounts it at ``/b2b`` (``b2b_ui.b2b_review_plugin``): officers use ``/b2b/review/``
(a "B2B review" entry in Airflow's navigation), schools ``/b2b/school/``. Pages are plain
server-rendered HTML with relative links, so the app works under any prefix. Every decision
is one click plus a confirmation, goes through the same domain functions as the ``b2b
officer`` commands (``b2b.ops.officer``) and records the logged-in user. See docs/screens.md.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html import escape
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from b2b_ui.auth import COOKIE_SCHOOL, NotLoggedIn, check_csrf, current_officer, school_token

if TYPE_CHECKING:
    from psycopg import Connection

MAX_UPLOAD = 5 * 1024 * 1024
SCREENS = (("", "Overview"), ("unmatched", "Unmatched"), ("possible", "Possible matches"),
           ("conflicts", "Matched with conflicts"), ("contacts", "Rejected contacts"),
           ("suspense", "Files in suspense"), ("returns", "School returns"))

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1a202c;font-size:14px}
header{background:#017cee;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center;flex-wrap:wrap}
header a{color:#fff;text-decoration:none;padding:4px 8px;border-radius:4px}
header a.on{background:#0a5fb4}
header .who{margin-left:auto;font-size:12px}
main{padding:12px 16px}
table{border-collapse:collapse;margin:8px 0;width:100%}
th,td{border:1px solid #cbd5e0;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#edf2f7}
td.diff{font-weight:bold;background:#fff5f5}
form.inline{display:inline}
button{cursor:pointer;padding:2px 8px;margin:1px}
.msg{background:#f0fff4;border:1px solid #9ae6b4;padding:6px;margin:6px 0}
.err{background:#fff5f5;border:1px solid #feb2b2;padding:6px;margin:6px 0}
.side{display:flex;gap:16px;flex-wrap:wrap}.side>div{flex:1;min-width:260px}
small{color:#4a5568}
"""


def _db() -> Iterator[Any]:
    """The screens' warehouse connection: ``$B2B_UI_DATABASE_URL`` — the least-privilege
    ``b2b_ui`` login (F41) that may act for the logged-in officer — else the warehouse URL."""
    import os

    from b2b import db

    with db.connect(os.environ.get("B2B_UI_DATABASE_URL") or None, autocommit=True) as conn:
        yield conn


Conn = Annotated[Any, Depends(_db)]
Officer = Annotated[str, Depends(current_officer)]


def h(v: Any) -> str:
    if v is None:
        return ""
    return escape(str(v))


def page(title: str, body: str, *, screen: str | None = None, who: str | None = None,
         request: Request | None = None, status: int = 200) -> HTMLResponse:
    nav = ""
    if screen is not None:
        links = "".join(f'<a href="./{s}" class="{"on" if s == screen else ""}">{h(t)}</a>' for s, t in SCREENS)
        nav = f'<header><b>B2B review</b>{links}<span class="who">{h(who)}</span></header>'
    msg = ""
    if request is not None:
        if request.query_params.get("msg"):
            msg = f'<div class="msg" role="status">{h(request.query_params["msg"])}</div>'
        if request.query_params.get("err"):
            msg += f'<div class="err" role="alert">{h(request.query_params["err"])}</div>'
    html = (f"<!doctype html><html><head><meta charset='utf-8'><title>{h(title)}</title>"
            f"<style>{CSS}</style></head><body>{nav}<main><h2>{h(title)}</h2>{msg}{body}</main></body></html>")
    return HTMLResponse(html, status_code=status)


def action(act: str, label: str, confirm: str, csrf: str, back: str, **fields: Any) -> str:
    """One click plus a confirmation: a POST form whose submit asks the browser to confirm."""
    hidden = "".join(f'<input type="hidden" name="{h(k)}" value="{h(v)}">' for k, v in fields.items())
    return (f'<form class="inline" method="post" action="act/{act}" '
            f'onsubmit="return confirm({h(json.dumps(confirm))})">{hidden}'
            f'<input type="hidden" name="csrf" value="{h(csrf)}"><input type="hidden" name="back" value="{h(back)}">'
            f'<button type="submit" name="do" value="{h(act)}">{h(label)}</button></form>')


def attachment(filename: str) -> dict[str, str]:
    """The download header of a file name (a school's upload keeps the name it had): RFC 6266's
    ASCII ``filename`` with anything but letters, digits, space and ``._()-`` as ``_``, and the
    exact name as ``filename*``. A raw name broke the response (500 on a non-Latin-1 character
    such as an en dash) or added parameters (a ``"`` then ``; filename*=…evil.html``)."""
    fallback = re.sub(r"[^A-Za-z0-9 ._()-]", "_", filename) or "download"
    return {"Content-Disposition": f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"}


def _back(request: Request) -> str:
    q = str(request.url.query)
    return request.url.path.rsplit("/", 1)[-1] + (f"?{q}" if q else "")


def _safe_back(back: str | None, default: str) -> str:
    if not back or back.startswith(("/", "\\")) or "://" in back or "\n" in back:
        return default
    return back.split("?")[0]


def redirect(back: str, **params: str) -> RedirectResponse:
    return RedirectResponse(f"../{back}?{urlencode(params)}" if params else f"../{back}", status_code=303)


def school_filter(conn: Connection, base: str | None, extra: str = "") -> str:
    from b2b.ops import review

    opts = "".join(f'<option value="{h(b)}" {"selected" if b == base else ""}>{h(b)}</option>'
                   for b in review.schools(conn))
    return (f'<form method="get"><label>School <select name="base"><option value="">all</option>{opts}</select>'
            f'</label> {extra} <button type="submit">Show</button></form>')


def pager(request: Request, next_after: str | None) -> str:
    if not next_after:
        return ""
    params = dict(request.query_params)
    params.pop("msg", None)
    params.pop("err", None)
    params["after"] = next_after
    return f'<p><a href="?{h(urlencode(params))}">Next page &raquo;</a></p>'


def table(headers: list[str], rows: list[str], empty: str = "Nothing to show.") -> str:
    if not rows:
        return f"<p><i>{h(empty)}</i></p>"
    head = "".join(f"<th>{h(x)}</th>" for x in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def create_app() -> FastAPI:
    app = FastAPI(title="B2B review", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Any:
        body = f'<div class="err" role="alert">{h(exc.detail)}</div>'
        if isinstance(exc, NotLoggedIn):
            nxt = str(request.url.path)
            body += f'<p><a href="{h("/auth/login?" + urlencode({"next": nxt}))}">Log in to Airflow</a></p>'
        return page("B2B review", body, status=exc.status_code)

    @app.get("/", include_in_schema=False)
    def root() -> Any:
        return RedirectResponse("review/", status_code=307)

    # ------------------------------------------------------------ officers
    @app.get("/review/", response_class=HTMLResponse)
    def overview(request: Request, conn: Conn, who: Officer) -> Any:
        from b2b.ops import review

        c = review.counts(conn)
        rows = [f'<tr><td><a href="./{s}">{h(t)}</a></td><td>{c[k]}</td></tr>' for (s, t), k in zip(
            SCREENS[1:], ("unmatched", "possible", "conflicts", "rejected_contacts", "suspense", "returns"))]
        recent = [f"<tr><td>{h(d['at']):.19}</td><td>{h(d['by'])}</td><td>{h(d['what'])}</td>"
                  f"<td>{h(d['subject'])}</td><td>{h(d['detail'])}</td></tr>" for d in review.recent_decisions(conn)]
        body = (table(["List", "Open"], rows) + "<h3>Recent decisions</h3>" +
                table(["When (UTC)", "Who", "Decision", "On", "Detail"], recent, "No decisions yet."))
        return page("Overview", body, screen="", who=who, request=request)

    @app.get("/review/unmatched", response_class=HTMLResponse)
    def unmatched_screen(request: Request, conn: Conn, who: Officer, base: str | None = None,
                         hidden: bool = False, after: str | None = None) -> Any:
        from b2b.ops import review

        base = base or None
        p = review.unmatched(conn, base, hidden, after)
        csrf, back = request.state.b2b_csrf, _back(request)
        rows = []
        for r in p.rows:
            link_q = urlencode({"base": r["base_id"], "guid": r["student_guid"], "q": r["surname"] or ""})
            rows.append(
                f"<tr><td>{h(r['base_id'])}</td><td>{h(r['forename'])} {h(r['surname'])}</td><td>{h(r['dob'])}</td>"
                f"<td>{h(r['gender'])}</td><td>{h(r['upn'])}</td><td>{h(r['age_years'])}"
                f"{' (older than B2B_S_AGE)' if r['hidden'] else ''}</td><td>"
                + action("new_child", "Create new child", f"Create a new LA child from {r['forename']} "
                         f"{r['surname']} ({r['base_id']})?", csrf, back, base=r["base_id"], guid=r["student_guid"])
                + f' <a href="link?{h(link_q)}">Link by search…</a></td></tr>')
        extra = (f'<label><input type="checkbox" name="hidden" value="true" {"checked" if hidden else ""}> '
                 "show students older than B2B_S_AGE</label>")
        body = school_filter(conn, base, extra) + table(
            ["School", "Student", "DOB", "Gender", "UPN", "Age", "Decision"], rows,
            "No unmatched students.") + pager(request, p.next_after)
        return page("Unmatched", body, screen="unmatched", who=who, request=request)

    @app.get("/review/link", response_class=HTMLResponse)
    def link_screen(request: Request, conn: Conn, who: Officer, base: str, guid: str, q: str = "",
                    dob: str | None = None) -> Any:
        from b2b.ops import review

        rec = review.school_record(conn, base, guid)
        if rec is None:
            raise HTTPException(404, "No such school student.")
        found = review.search_children(conn, q, dob or None)
        csrf = request.state.b2b_csrf
        rows = [f"<tr><td>{h(c['person_id'])}</td><td>{h(c['forename'])} {h(c['surname'])}</td><td>{h(c['dob'])}</td>"
                f"<td>{h(c['gender'])}</td><td>{h(c['upn'])}</td><td>{h(c['postcode'])}</td><td>"
                + action("link", "Link", f"Link {rec['forename']} {rec['surname']} to LA child {c['person_id']}?",
                         csrf, "unmatched", base=base, guid=guid, person_id=c["person_id"]) + "</td></tr>"
                for c in found]
        body = (f"<p>School record: <b>{h(rec['forename'])} {h(rec['surname'])}</b>, born {h(rec['dob'])}, "
                f"{h(rec['gender'])}, UPN {h(rec['upn'])}, {h(rec['postcode'])} ({h(base)})</p>"
                f'<form method="get"><input type="hidden" name="base" value="{h(base)}">'
                f'<input type="hidden" name="guid" value="{h(guid)}">'
                f'<label>Surname, UPN or person id <input name="q" value="{h(q)}"></label> '
                f'<label>Date of birth <input name="dob" type="date" value="{h(dob)}"></label> '
                '<button type="submit">Search</button></form>'
                + table(["Person", "Name", "DOB", "Gender", "UPN", "Postcode", ""], rows, "No LA child found."))
        return page("Link by search", body, screen="unmatched", who=who, request=request)

    @app.get("/review/possible", response_class=HTMLResponse)
    def possible_screen(request: Request, conn: Conn, who: Officer, base: str | None = None,
                        after: str | None = None) -> Any:
        from b2b.ops import review

        base = base or None
        p = review.possible(conn, base, after)
        csrf, back = request.state.b2b_csrf, _back(request)
        rows = []
        for r in p.rows:
            ex = r["explanation"] or {}
            weights = ", ".join(f"{k} {v:+.1f}" for k, v in sorted((ex.get("weights") or {}).items(),
                                                                     key=lambda kv: -abs(kv[1])))
            why = ", ".join(ex.get("why_not_auto") or []) or "below the automatic threshold"
            detail_q = urlencode({"base": r["base_id"], "guid": r["student_guid"]})

            def cell(a: Any, b: Any) -> Any:
                return f'<td class="{"diff" if str(a or "").lower() != str(b or "").lower() else ""}">{h(a)}</td>'

            rows.append(
                f"<tr><td>{h(r['base_id'])}</td><td>{h(r['forename'])} {h(r['surname'])}<br><small>{h(r['dob'])} "
                f"{h(r['gender'])} {h(r['upn'])}</small></td>"
                f"<td>{h(r['person_id'])}: {h(r['la_forename'])} {h(r['la_surname'])}<br><small>{h(r['la_dob'])} "
                f"{h(r['la_gender'])} {h(r['la_upn'])} {h(r['la_postcode'])}</small></td>"
                + cell(r["forename"], r["la_forename"]) + cell(r["dob"], r["la_dob"])
                + f"<td>{h(r['score'])}</td><td><small>{h(weights)}</small></td><td>{h(why)}</td><td>"
                + action("confirm", "Confirm", f"Confirm that {r['forename']} {r['surname']} is LA child "
                         f"{r['person_id']}?", csrf, back, base=r["base_id"], guid=r["student_guid"],
                         person_id=r["person_id"])
                + action("reject", "Reject", f"Reject LA child {r['person_id']} for {r['forename']} "
                         f"{r['surname']}? It will not be proposed again.", csrf, back, base=r["base_id"],
                         guid=r["student_guid"], person_id=r["person_id"])
                + f' <a href="candidates?{h(detail_q)}">All candidates…</a></td></tr>')
        body = school_filter(conn, base) + table(
            ["School", "School record", "LA candidate", "Forename", "DOB", "Score", "Per-field weights",
             "Why not linked automatically", "Decision"], rows, "No possible matches.") + pager(request, p.next_after)
        return page("Possible matches", body, screen="possible", who=who, request=request)

    @app.get("/review/candidates", response_class=HTMLResponse)
    def candidates_screen(request: Request, conn: Conn, who: Officer, base: str, guid: str) -> Any:
        from b2b.ops import officer, review

        rec = review.school_record(conn, base, guid)
        if rec is None:
            raise HTTPException(404, "No such school student.")
        try:
            cands = officer.candidates(conn, base, guid, top=3)
        except Exception:  # noqa: BLE001 - the matcher needs the student's loaded blocks
            cands = []
        kids = review.children(conn, [c["person_id"] for c in cands])
        csrf = request.state.b2b_csrf
        fields = ("upn", "forename", "middle_names", "surname", "gender", "dob", "paon", "street", "postcode")
        cols = "".join(f"<th>{h(c['person_id'])} (score {h(c['score'])})</th>" for c in cands)
        rows = []
        for f in fields:
            cells = "".join(
                f'<td class="{"diff" if str(kids.get(c["person_id"], {}).get(f) or "").lower() != str(rec.get(f) or "").lower() else ""}">'
                f'{h(kids.get(c["person_id"], {}).get(f))} <small>{c["weights"].get(f, "")}</small></td>' for c in cands)
            rows.append(f"<tr><th>{h(f)}</th><td>{h(rec.get(f))}</td>{cells}</tr>")
        acts = ""
        for c in cands:
            pid = c["person_id"]
            acts += ("<td>" + action("confirm", "Confirm", f"Confirm LA child {pid}?", csrf, "possible", base=base,
                                     guid=guid, person_id=pid)
                     + action("reject", "Reject", f"Reject LA child {pid}?", csrf, "possible", base=base, guid=guid,
                              person_id=pid) + "</td>")
        rows.append(f"<tr><th></th><td></td>{acts}</tr>")
        body = f"<table><thead><tr><th>Field</th><th>School record</th>{cols}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        return page(f"Candidates for {rec['forename']} {rec['surname']}", body, screen="possible", who=who,
                    request=request)

    @app.get("/review/conflicts", response_class=HTMLResponse)
    def conflicts_screen(request: Request, conn: Conn, who: Officer, base: str | None = None,
                         referred: bool = False, after: str | None = None) -> Any:
        from b2b.blocks import RETURNABLE
        from b2b.ops import review

        base = base or None
        p = review.conflicts(conn, base, after, include_referred=referred)
        csrf, back = request.state.b2b_csrf, _back(request)
        rows = []
        for r in p.rows:
            who_txt = f"{r['forename']} {r['surname']} ({r['person_id']})"
            returned = " It is returned to the school (F28)." if r["field"] in RETURNABLE else ""
            acts = (action("resolve", "Keep LA", f"Keep the LA's {r['label']} for {who_txt}?{returned}", csrf, back,
                           person_id=r["person_id"], field=r["field"], keep="la")
                    + action("resolve", "Keep school", f"Change the LA's {r['label']} for {who_txt} to the "
                             "school's value?", csrf, back, person_id=r["person_id"], field=r["field"], keep="incoming")
                    + action("resolve", "Send to school", f"Ask the school which {r['label']} is right for "
                             f"{who_txt} on its weekly report?", csrf, back, person_id=r["person_id"],
                             field=r["field"], keep="school"))
            rows.append(
                f"<tr><td>{h(r['base_id'])}</td><td>{h(who_txt)}</td><td>{h(r['label'])}</td>"
                f'<td class="diff">{h(r["incoming_value"])}</td><td class="diff">{h(r["la_value"])}</td>'
                f"<td>{h(r['times_seen'])} × <small>last {h(r['last_seen']):.10}</small>"
                f"{' <small>(sent to school)</small>' if r['referred'] else ''}</td><td>{acts}</td></tr>")
        extra = (f'<label><input type="checkbox" name="referred" value="true" {"checked" if referred else ""}> '
                 "include those sent to the school</label>")
        body = school_filter(conn, base, extra) + table(
            ["School", "Child", "Item", "School value", "LA value", "Seen", "Decision"], rows,
            "No open conflicts.") + pager(request, p.next_after)
        return page("Matched with conflicts", body, screen="conflicts", who=who, request=request)

    def listed(request: Request, conn: Any, who: Any, base: str | None, after: str | None, fetch: Any,
               headers: list[str], cells: Any, empty: str, title: str, screen: str) -> Any:
        """A read-only list screen: a school filter, one row per record (``cells`` gives its
        escaped cells), keyset paging."""
        base = base or None
        p = fetch(conn, base, after)
        rows = ["<tr>" + "".join(f"<td>{c}</td>" for c in cells(r)) + "</tr>" for r in p.rows]
        body = school_filter(conn, base) + table(headers, rows, empty) + pager(request, p.next_after)
        return page(title, body, screen=screen, who=who, request=request)

    @app.get("/review/contacts", response_class=HTMLResponse)
    def contacts_screen(request: Request, conn: Conn, who: Officer, base: str | None = None,
                        after: str | None = None) -> Any:
        from b2b.ops import review

        return listed(request, conn, who, base, after, review.rejected_contacts,
                      ["School", "Contact", "Name", "Email", "Reason", "Detail", "Students"],
                      lambda r: [h(r["base_id"]), h(r["person_id"]), f"{h(r['forename'])} {h(r['surname'])}",
                                 h(r["email"]), h(r["reason"]), h(r["detail"]), h(r["students"])],
                      "No rejected contacts.", "Rejected contacts", "contacts")

    @app.get("/review/suspense", response_class=HTMLResponse)
    def suspense_screen(request: Request, conn: Conn, who: Officer, base: str | None = None,
                        after: str | None = None) -> Any:
        from b2b.ops import review

        return listed(request, conn, who, base, after, review.suspense,
                      ["File", "School", "Task", "Message", "Status", "Reason", "Received"],
                      lambda r: [h(r["file_id"]), h(r["base_id"]), h(r["dag_id"]), h(r["label"]), h(r["status"]),
                                 h(r["error"]), f"{h(r['received_at']):.19}"],
                      "No files in suspense.", "Files in suspense", "suspense")

    @app.get("/review/returns", response_class=HTMLResponse)
    def returns_screen(request: Request, conn: Conn, who: Officer) -> Any:
        from b2b.outbound import reports

        csrf, back = request.state.b2b_csrf, _back(request)
        rows = [f"<tr><td>{h(u['base_id'])}</td><td>{h(u['name'])}</td><td>{h(u['filename'])}</td>"
                f"<td>{h(u['uploaded_at']):.19}</td><td>{h(u['ticks'])}</td><td>"
                + action("receive", "Receive", f"Receive {u['name']} from {u['base_id']}? Where the school says "
                         "the LA is wrong the LA record is amended.", csrf, back, upload_id=u["upload_id"])
                + "</td></tr>" for u in reports.pending_uploads(conn)]
        body = ("<p>Ticked reports the schools sent back, not yet received.</p>" +
                table(["School", "Report", "File", "Sent", "Ticks", ""], rows, "Nothing waiting."))
        return page("School returns", body, screen="returns", who=who, request=request)

    @app.post("/review/act/{act}")
    def decide(act: str, request: Request, conn: Conn, who: Officer, csrf: Annotated[str, Form()] = "",
               back: Annotated[str, Form()] = "", base: Annotated[str, Form()] = "",
               guid: Annotated[str, Form()] = "", person_id: Annotated[str, Form()] = "",
               field: Annotated[str, Form()] = "", keep: Annotated[str, Form()] = "",
               upload_id: Annotated[int, Form()] = 0) -> Any:
        from b2b.errors import B2BError
        from b2b.ops import officer, review
        from b2b.outbound import reports

        check_csrf(request, csrf)
        default = {"new_child": "unmatched", "link": "unmatched", "confirm": "possible", "reject": "possible",
                   "resolve": "conflicts", "receive": "returns"}.get(act)
        if default is None:
            raise HTTPException(404, "No such decision.")
        target = _safe_back(back, default)
        try:
            if act == "new_child":
                pid = officer.new_child(conn, base, guid, by=who)
                msg = f"Created LA child {pid} and linked it."
            elif act == "link":
                officer.link(conn, base, guid, person_id, by=who)
                msg = f"Linked to LA child {person_id}."
            elif act == "confirm":
                officer.confirm(conn, base, guid, person_id, by=who)
                msg = f"Confirmed: linked to LA child {person_id}."
            elif act == "reject":
                officer.reject(conn, base, guid, person_id, by=who)
                msg = f"Rejected LA child {person_id}: it will not be proposed again."
            elif act == "resolve" and keep == "school":
                review.refer_to_school(conn, person_id, field, by=who)
                msg = f"Sent {field} of {person_id} to the school."
            elif act == "resolve":
                n = officer.resolve_conflict(conn, person_id, field, keep, by=who)
                msg = f"Resolved {field} of {person_id} ({'kept the LA value' if keep == 'la' else 'took the school value'}; {n} row(s))."
            else:
                c = reports.receive(conn, upload_id, by=who)
                msg = (f"Received: {c['applied']} LA record(s) amended, {c['open']} left for the school to "
                       f"correct, {c['not_applied']} not applied.")
        except B2BError as e:
            return redirect(target, err=e.message)
        return redirect(target, msg=msg)

    # ------------------------------------------------------------ schools
    def school_base(conn: Connection, request: Request) -> str | None:
        from b2b.outbound import reports

        return reports.school_for_token(conn, school_token(request))

    @app.get("/school/", response_class=HTMLResponse)
    def school_home(request: Request, conn: Conn, show: str = "all") -> Any:
        from b2b.outbound import reports

        base = school_base(conn, request)
        if base is None:
            body = ('<form method="post" action="login"><label>Your school\'s access key '
                    '<input name="key" type="password" autocomplete="off" required></label> '
                    '<button type="submit">Open</button></form>'
                    "<p><small>The key comes with your school's B2B registration; the LA can issue a new one."
                    "</small></p>")
            return page("School B2B reports", body, request=request)
        rows = [f"<tr><td>{h(r['name'])}</td><td>{h(r['created_at']):.10}</td><td>{h(r['students'])}</td>"
                f"<td>{h(r['items'])}</td><td>{h(r['postcode_checks'])}</td><td>{h(r['status'])}</td>"
                f'<td><a href="file/{r["report_id"]}/docx">{h(r["name"])}.docx</a> '
                f'<a href="file/{r["report_id"]}/xlsx">{h(r["name"])}.xlsx</a></td></tr>'
                for r in reports.reports(conn, base)]
        status = {"all": None, "sent": "sent", "received": "received"}.get(show)
        labels = {"sent": "sent, not yet received", "received": "received", "recalled": "recalled"}
        sent = []
        for u in reports.uploads(conn, base, status):
            recall = ""
            if u["status"] == "sent":
                recall = (f'<form class="inline" method="post" action="recall" onsubmit="return confirm('
                          f'{h(json.dumps("Recall " + u["filename"] + "? The LA will not see it."))})">'
                          f'<input type="hidden" name="upload_id" value="{u["upload_id"]}">'
                          '<button type="submit">Recall</button></form>')
            sent.append(f"<tr><td><a href=\"sent/{u['upload_id']}\">{h(u['filename'])}</a></td><td>{h(u['name'])}</td>"
                        f"<td>{h(u['uploaded_at']):.19}</td><td>{h(labels[u['status']])}</td>"
                        f"<td>{h(u['received_at']):.19} {h(u['received_by'])}</td><td>{recall}</td></tr>")
        filt = " ".join(f'<a href="?show={k}">{t}</a>' for k, t in (("all", "All"), ("sent", "Sent and not yet received"),
                                                                       ("received", "Received")))
        body = (f"<p>School {h(base)}. Download your report, choose School or LA in the column \"Which is "
                "correct\" of the spreadsheet for every row, and send the spreadsheet back here.</p>"
                + table(["Report", "Created", "Students", "Differences", "Postcode checks", "Status", "Files"], rows,
                        "No reports in the last 30 days.")
                + '<h3>Send a ticked spreadsheet</h3><form method="post" action="upload" enctype="multipart/form-data">'
                '<input type="file" name="file" accept=".xlsx" required> <button type="submit">Upload &amp; send'
                "</button></form>"
                + f"<h3>Files previously sent</h3><p>{filt}</p>"
                + table(["File", "Report", "Sent", "Status", "Received", ""], sent, "Nothing sent.")
                + '<form method="post" action="logout"><button type="submit">Close</button></form>')
        return page("School B2B reports", body, request=request)

    @app.post("/school/login")
    def school_login(request: Request, conn: Conn, key: Annotated[str, Form()]) -> Any:
        from b2b.outbound import reports

        if reports.school_for_token(conn, key) is None:
            return page("School B2B reports", '<div class="err" role="alert">That access key is not valid.</div>'
                        '<p><a href="./">Try again</a></p>', status=403)
        resp = RedirectResponse("./", status_code=303)
        resp.set_cookie(COOKIE_SCHOOL, key, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        max_age=8 * 3600)
        return resp

    @app.post("/school/logout")
    def school_logout() -> Any:
        resp = RedirectResponse("./", status_code=303)
        resp.delete_cookie(COOKIE_SCHOOL)
        return resp

    def require_school(conn: Connection, request: Request) -> str:
        base = school_base(conn, request)
        if base is None:
            raise HTTPException(401, "Open your school's page with its access key first.")
        return base

    @app.get("/school/file/{report_id}/{kind}")
    def school_file(report_id: int, kind: str, request: Request, conn: Conn) -> Any:
        from b2b.outbound import reports

        base = require_school(conn, request)
        try:
            name, data = reports.report_file(conn, base, report_id, kind)
        except reports.ReportError:
            raise HTTPException(404, "No such report for your school.") from None
        media = ("application/vnd.openxmlformats-officedocument.wordprocessingml.document" if kind == "docx"
                 else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
        return Response(data, media_type=media, headers=attachment(name))

    @app.get("/school/sent/{upload_id}")
    def school_sent(upload_id: int, request: Request, conn: Conn) -> Any:
        base = require_school(conn, request)
        row = conn.execute("SELECT filename, file FROM results.school_upload WHERE upload_id = %s AND base_id = %s",
                           (upload_id, base)).fetchone()
        if row is None:
            raise HTTPException(404, "No such file sent by your school.")
        return Response(bytes(row[1]), media_type="application/octet-stream", headers=attachment(row[0]))

    @app.post("/school/upload", response_class=HTMLResponse)
    async def school_upload(request: Request, conn: Conn, file: Annotated[UploadFile, File()]) -> Any:
        from b2b.outbound import reports

        base = require_school(conn, request)
        data = await file.read(MAX_UPLOAD + 1)
        if len(data) > MAX_UPLOAD:
            return page("Upload refused", '<div class="err" role="alert">The file is larger than 5 MB.</div>'
                        '<p><a href="./">Back</a></p>', status=400)
        try:
            reports.submit(conn, base, file.filename or "upload.xlsx", data, by=f"school:{base}")
        except reports.ReportRefused as e:
            items = "".join(f"<li>{h(r)}</li>" for r in e.reasons)
            return page("Upload refused", f'<div class="err" role="alert">Your file was not sent; nothing was '
                        f"applied:<ul>{items}</ul></div><p><a href=\"./\">Back</a></p>", status=400)
        return RedirectResponse("./?" + urlencode({"msg": "Your file has been uploaded and sent to the LA."}),
                                status_code=303)

    @app.post("/school/recall")
    def school_recall(request: Request, conn: Conn, upload_id: Annotated[int, Form()]) -> Any:
        from b2b.outbound import reports

        base = require_school(conn, request)
        try:
            reports.recall(conn, base, upload_id, by=f"school:{base}")
        except reports.ReportError as e:
            return RedirectResponse("./?" + urlencode({"err": e.message}), status_code=303)
        return RedirectResponse("./?" + urlencode({"msg": "Recalled: the LA will not see that file."}),
                                status_code=303)

    return app
