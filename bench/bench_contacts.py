"""Contacts stage (issue 15): cost of a changed-data run as the base's history grows.

One base of ``--students`` students (2 contacts each, siblings sharing a parent), given
``--weeks`` weekly snapshots (every student and contacts block again, as SIMS sends them)
through the real chain (extract, hash filter, validate, load); after each week's snapshot,
a changed-data day touching ``--touched`` students. Prints, per week of history, the
changed day's contacts stage as :func:`contacts.sync` runs it (incremental) and a full
:func:`contacts.rebuild` of the same state (rolled back), in ms. The first is meant to stay
flat as history grows; the second grows with it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]


def _page(group: str, items: list) -> object:
    from b2b.ingest.extract import ReceivedMessage

    return ReceivedMessage(f"{group} p1/1", json.dumps({
        "organisationId": "o", "dataGroup": group, "page": 1, "pageSize": len(items), "totalItems": len(items),
        "totalPages": 1, "next": None,
        "items": [{"studentId": g, "changed": "2026-10-05T12:00:00+00:00", "data": d} for g, d in items]}).encode(),
        "application/json", group=group)


def _student(i: int) -> dict:
    return {"upn": None, "forename": f"Kid{i}", "surname": f"Family{i // 2}", "dob": "2016-01-26", "gender": "M",
            "ncy": "5", "enrol_status": "C", "end_date": None}


def _contact(pid: str, week: int, n: int) -> dict:
    return {"person_id": pid, "title": "Mrs", "forename": "Ann", "surname": f"S{n}", "gender": "F",
            "relationship": "PAM", "parental_responsibility": True, "priority": 1, "is_staff": False,
            "addresses": [{"type": "H", "paon": str(n), "street": "Green Road", "town": "Canterbury",
                           "postcode": "CT1 2AB", "start_date": "2020-01-01"}],
            "telephones": [{"type": "M", "number": f"07700 {n:06d}", "primary": True, "main": False}],
            "emails": [{"type": "H", "address": f"{pid.lower()}.{week}@example.com", "primary": True,
                        "main": False}]}


def _contacts_of(i: int, week: int) -> dict:
    # siblings (2i, 2i+1) share their first parent; the email changes each week (updates)
    return {"contacts": [_contact(f"P{i // 2}", week, i // 2), _contact(f"Q{i}", week, 100000 + i)]}


def _run(conn, ctx, msgs, settings, reports) -> None:
    from b2b import pipeline as chain

    chain.store_messages(conn, ctx, msgs)
    chain.hash_filter(conn, ctx, settings)
    chain.validate(conn, ctx, reports)
    chain.load(conn, ctx)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--students", type=int, default=400)
    ap.add_argument("--weeks", type=int, default=8)
    ap.add_argument("--touched", type=int, default=20)
    args = ap.parse_args(argv)
    import logging
    import warnings

    logging.disable(logging.INFO)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    import psycopg
    from psycopg.conninfo import make_conninfo

    from b2b import db
    from b2b import pipeline as chain
    from b2b.config.settings import Settings
    from b2b.context import RunContext
    from b2b.reconcile import contacts

    settings = Settings(matcher="legacy")
    reports = Path(tempfile.mkdtemp(prefix="b2b-bench-contacts-"))
    admin_url = db.database_url()
    name = f"b2b_bench_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    guids = [f"s-{i:05d}" for i in range(args.students)]
    start = datetime(2026, 9, 6, 17, 0, tzinfo=UTC)
    print(f"contacts: 1 base, {args.students} students, {args.touched} touched on each changed day")
    print(f"{'weeks':>5} {'history blocks':>14} {'persons in scope':>16} {'incremental ms':>14} "
          f"{'full rebuild ms':>15}")
    try:
        with db.connect(make_conninfo(admin_url, dbname=name), autocommit=True) as conn:
            db.upgrade(conn)
            for week in range(args.weeks):
                end = start + timedelta(days=7 * week)
                snap = RunContext(base_id="8860001", task_key="snapshot", dag_id="b2b__8860001__snapshot",
                                  run_id=f"s{week}", source="sims_primary", data_filter="snapshot",
                                  window_start=None, window_end=end)
                _run(conn, snap, [_page("student", [(g, _student(i)) for i, g in enumerate(guids)]),
                                  _page("contacts", [(g, _contacts_of(i, week)) for i, g in enumerate(guids)])],
                     settings, reports)
                contacts.sync(conn, snap)
                chain.commit(conn, snap)
                day = RunContext(base_id="8860001", task_key="changed_data", dag_id="b2b__8860001__changed_data",
                                 run_id=f"d{week}", source="sims_primary", data_filter="changed_data",
                                 window_start=end, window_end=end + timedelta(days=1))
                touched = [(i, g) for i, g in enumerate(guids)][week % 7::max(1, args.students // args.touched)]
                _run(conn, day, [_page("contacts", [(g, _contacts_of(i, week + 100)) for i, g in touched])],
                     settings, reports)
                with conn.transaction(force_rollback=True):
                    t = time.perf_counter()
                    contacts.rebuild(conn, day)
                    full = time.perf_counter() - t
                t = time.perf_counter()
                out = contacts.sync(conn, day)
                inc = time.perf_counter() - t
                chain.commit(conn, day)
                blocks = conn.execute("SELECT count(*) FROM raw.inbound_block").fetchone()[0]
                scope = out.get("incremental", {}).get("persons", "full")
                print(f"{week + 1:>5} {blocks:>14} {scope:>16} {1000 * inc:>14.1f} {1000 * full:>15.1f}")
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
