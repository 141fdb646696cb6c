"""The ``b2b`` command line. Every subcommand imports what it needs lazily."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any


def _cmd_config_check(args: argparse.Namespace) -> int:
    from b2b.config.catalogue import main_check

    rc = main_check(args.path)
    if rc == 0 and args.write_dags:  # issue 15: the DAG files of `make airflow` ($AIRFLOW_HOME/dags)
        from b2b.cli.airflow_env import split_dags_folder, write_split_dags

        folder = split_dags_folder()
        counts = write_split_dags(folder, args.path)
        print(f"DAG files in {folder}: {counts['written']} written, {counts['unchanged']} unchanged, "
              f"{counts['removed']} removed", flush=True)
        if args.watch:  # docker-compose's dag-processor: rewrite them whenever the catalogue changes
            import time

            from b2b.cli.airflow_env import watch_catalogue

            watch_catalogue(folder, args.watch, args.path)
            while True:
                time.sleep(3600)
    return rc


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from b2b import db

    url = db.database_url(args.url)
    with db.connect(url) as conn:
        applied = db.upgrade(conn)
    print(f"database {db.redact(url)}: " + (f"applied {', '.join(applied)}" if applied else "up to date"))
    return 0


def _cmd_db_url(args: argparse.Namespace) -> int:
    from b2b import db

    print(db.database_url())
    return 0


def _cmd_db_roles(args: argparse.Namespace) -> int:
    """Set the F41 roles' passwords (generated once, kept 0600 under B2B_HOME) and, on the
    embedded server, require password authentication for them."""
    import os

    from b2b import db

    embedded = not (args.url or os.environ.get("B2B_DATABASE_URL"))
    url = db.database_url(args.url)
    with db.connect(url, autocommit=True) as conn:
        db.upgrade(conn)
        done = db.ensure_roles(conn, pgdata=db.b2b_home() / "pgdata" if embedded else None)
    print(f"roles {', '.join(done)}: passwords set (stored in {db.roles_file()}, mode 0600)"
          + ("; the embedded server now requires them" if embedded else ""))
    return 0


def _cmd_db_stop(args: argparse.Namespace) -> int:
    """Stop the embedded server(s); exit 1 when one is still running (and say why)."""
    from pathlib import Path

    from b2b import db

    dirs = db.embedded_data_dirs() if args.all else [Path(args.pgdata) if args.pgdata else db.b2b_home() / "pgdata"]
    if not dirs:
        print(f"no embedded PostgreSQL running under {db.b2b_home()}")
    ok = True
    for pgdata in dirs:
        result = db.stop_embedded(pgdata, if_unused=args.if_unused)
        print(result.message, file=sys.stdout if result.ok else sys.stderr)
        ok = ok and result.ok
    return 0 if ok else 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from b2b.cli.demo import run_demo

    return run_demo(days=args.days, fresh=args.fresh)


def _cmd_airflow(args: argparse.Namespace) -> int:
    """Run ``airflow standalone`` on this project: the simulator serving the demo schools, their
    connections and ``b2b_warehouse`` imported into Airflow's metadata DB, the LA's records loaded."""
    import os

    from b2b import db
    from b2b.cli import airflow_env as af
    from b2b.ops import core_load
    from simulator.la_files import write_la_files
    from simulator.server import start_server
    from simulator.world import World, WorldConfig

    # --schools: a generated LA for bench/bench_scheduler.py (its catalogue in B2B_CATALOGUE)
    world = World(WorldConfig.generated(args.schools, args.students) if args.schools else WorldConfig.demo())
    server = start_server(world, host="127.0.0.1", port=args.simulator_port)
    try:
        embedded = not os.environ.get("B2B_DATABASE_URL")
        warehouse = db.database_url()
        os.environ.setdefault("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", af.STANDALONE_USERS)
        os.environ["AIRFLOW__API__PORT"] = str(args.port)
        os.environ["AIRFLOW__API__HOST"] = "127.0.0.1"
        os.environ["AIRFLOW__API__BASE_URL"] = f"http://127.0.0.1:{args.port}"
        os.environ["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://127.0.0.1:{args.port}/execution/"
        env = af.prepare_airflow_env(metadata_url=af.standalone_metadata_url(), split_dags=True)
        # the LA's own files, as its systems would drop them, loaded the way `b2b core load` does
        la_files = write_la_files(db.b2b_home() / "la_files", world)
        children_csv, gazetteer_csv, adults_csv = la_files[0], la_files[1], la_files[-1]
        with db.connect(warehouse, autocommit=True) as conn:
            db.upgrade(conn)
            c = core_load.load_children_file(conn, children_csv, full=False)
            gaz = core_load.load_gazetteer_file(conn, gazetteer_csv)
            adults = core_load.load_adults_file(conn, adults_csv)
            # F41: DAG runs reach the warehouse as b2b_pipeline (password auth), never as superuser
            db.ensure_roles(conn, pgdata=db.b2b_home() / "pgdata" if embedded else None)
        # the review screens (plugin in the api-server) act for the logged-in officer as b2b_ui
        os.environ["B2B_UI_DATABASE_URL"] = db.role_url("b2b_ui", warehouse)
        core = {"records": c["records"], "changed": c["new"] + c["updated"]}
        connections = world.airflow_connections(server.base_url)
        connections["b2b_warehouse"] = af.warehouse_connection(db.role_url("b2b_pipeline", warehouse))
        conn_file = af.import_connections(connections)
        users = af.ensure_password_file(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"])
        print("\n".join([
            f"B2B: SIMS simulator on {server.base_url}; warehouse {db.redact(warehouse)}",
            f"B2B: LA records loaded from {children_csv.parent}: {core['records']} children "
            f"({core['changed']} new or changed), {gaz['addresses']} gazetteer addresses, {adults['adults']} adults",
            f"B2B: {len(connections)} connections imported into Airflow ({', '.join(sorted(connections))}) "
            f"from {conn_file}",
            f"B2B: Airflow home {env['AIRFLOW_HOME']}; metadata {db.redact(env['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN'])}",
            f"B2B: UI on http://127.0.0.1:{args.port}  log in as {', '.join(sorted(users))}; "
            f"password(s) in {af.password_file()}",
            "B2B: for airflow commands in another shell: eval \"$(.venv/bin/b2b airflow-env)\"",
        ]), flush=True)
        if args.prepare_only:
            return 0
        af.watch_catalogue(Path(env["AIRFLOW__CORE__DAGS_FOLDER"]))  # a catalogue edit rewrites its DAG files
        return af.run_standalone(env)  # Ctrl-C / SIGTERM stop every Airflow process it started
    finally:
        server.shutdown()


def _cmd_airflow_env(args: argparse.Namespace) -> int:
    """Shell exports that give `airflow …` commands the same home, metadata DB, DAGs and PATH
    as `make airflow` (use: eval "$(.venv/bin/b2b airflow-env)")."""
    import shlex

    from b2b.cli import airflow_env as af

    env = af.prepare_airflow_env(metadata_url=af.standalone_metadata_url(), split_dags=True)
    for k, v in sorted(env.items()):
        if k.startswith("AIRFLOW__") or k in ("AIRFLOW_HOME", "B2B_DATABASE_URL", "B2B_HOME", "PYTHONPATH", "PATH"):
            print(f"export {k}={shlex.quote(v)}")
    return 0


#: ``b2b match`` stops when more than this share of a file's DOBs are not dates (and more than
#: :data:`MATCH_BAD_DOB_MIN` of them): the file's dates are in a format it does not read (month
#: first, say), and matching on them would be matching without DOBs
MATCH_BAD_DOB_SHARE = 0.01
MATCH_BAD_DOB_MIN = 10


def _read_match_csv(path: Path, columns: Any, id_col: str, optional: Any = ()) -> Any:
    """One of ``b2b match``'s CSV files as the matcher's frame, or a clear error (exit 2) naming
    the file and the rows (as a spreadsheet numbers them: the header is row 1): UTF-8 (a
    byte-order mark allowed), UTF-16 with its mark, else read as Windows-1252 (said); commas,
    or semicolons or tabs when the header has no comma (said); headers in any case with stray
    spaces, each once; no row longer than the header (an unquoted comma would shift every
    field after it); every record with an id of its own; DOBs as ``YYYY-MM-DD`` or
    ``DD/MM/YYYY`` (never month first: :func:`b2b.matching.normalise.dob_dates`; the few that
    are not dates are named and taken as missing, too many stop the run)."""
    import csv
    import io
    import re
    import warnings

    import pandas as pd

    from b2b.matching.normalise import dob_problems
    from b2b.ops import core_load

    def fail(msg: str) -> Any:
        print(f"b2b match: {path}: {msg}", file=sys.stderr)
        raise SystemExit(2)

    def rows(positions: Any) -> str:  # (row 1 is the header)
        return ", ".join(str(int(k) + 2) for k in positions)

    # (read and decoded as core load reads the LA's extracts: one rule for an LA's spreadsheets)
    try:
        text, used = core_load.decode_text(Path(path).read_bytes(), "utf-8-sig", Path(path).name)
    except OSError as exc:
        fail(exc.strerror or "cannot be read")
    except core_load.CoreLoadError as exc:
        fail(str(exc))
    if used == "cp1252":
        print(f"b2b match: {path}: not UTF-8; read as Windows-1252 (save it as UTF-8 to be sure of accented names)",
              file=sys.stderr)
    sep, said = core_load.sniff_delimiter(text)
    if said:
        print(f"b2b match: {path}: read with {said} between fields", file=sys.stderr)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, sep=sep, index_col=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            fail(f"not a CSV file b2b match can read ({str(exc).strip()})")
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in seen):
        # every row longer than the header: pandas reads on, each value after the extra comma
        # in the next column (an address "1, Green Road" fills the school column); refused, even
        # when the extra field is empty (a comma ending each row looks exactly like that shift
        # when the last column is empty)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep)
        width = len(next(reader, []))
        long = [k for k, r in enumerate(reader) if len(r) > width]
        fail(f"{len(long)} row(s) have more fields than the header (an unquoted comma in a value, or one "
             f"ending each row?): row(s) {rows(long[:5])}")
    names = [str(c).strip().lower() for c in df.columns]
    twice = sorted({c for c in names if names.count(c) > 1} |
                   {m.group(1) for c in names if (m := re.fullmatch(r"(.+)\.\d+", c)) and m.group(1) in names})
    if twice:
        fail(f"column(s) {', '.join(twice)} appear more than once in the header")
    df.columns = names
    missing = [c for c in columns if c not in df.columns and c not in optional]
    if missing:
        hint = "; optional: " + ",".join(optional) if optional else ""
        fail(f"missing column(s) {', '.join(missing)} (expected {','.join(c for c in columns if c not in optional)}"
             f"{hint})")
    ids = df[id_col].str.strip()
    if (ids == "").any():
        fail(f"{int((ids == '').sum())} record(s) without a {id_col}: row(s) {rows((ids == '').to_numpy().nonzero()[0][:5])}")
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        first_dup = ids[dup].iloc[0]
        fail(f"{id_col} must name one record each: {ids[dup].nunique()} appear more than once "
             f"(\"{first_dup}\" on rows {rows((ids == first_dup).to_numpy().nonzero()[0][:5])})")
    df[id_col] = ids
    if "base_id" in df.columns:  # a school's DfE number as 886/2001, 886-2001 or 886 2001: 8862001 (as core load)
        df["base_id"] = df["base_id"].str.strip().map(core_load.dfe_number)
    df = df.replace({"": None})
    n_bad, first_bad = dob_problems(df["dob"])
    if n_bad:
        given = int(df["dob"].notna().sum())
        # (the value's shape, not the value: a DOB is personal data, and stderr ends up in logs)
        shown = "; ".join(f"row {k + 2} ({id_col} {df[id_col].iloc[k]}): shaped {core_load.shape(v)!r}" for k, v in first_bad)
        if n_bad > MATCH_BAD_DOB_MIN and n_bad > MATCH_BAD_DOB_SHARE * given:
            fail(f"{n_bad} of {given} DOBs are not dates b2b match reads ({shown}, ...): write them as "
                 "YYYY-MM-DD or DD/MM/YYYY (day first; month-first dates are not read)")
        print(f"b2b match: {path}: {n_bad} DOB(s) not a date, matched as if missing: {shown}", file=sys.stderr)
    return df


def _cmd_match(args: argparse.Namespace) -> int:
    """CSV in, CSV out: the same matcher as the DAGs (b2b.matching.match)."""
    import time

    from b2b import matching

    core = _read_match_csv(args.core, matching.CORE_COLUMNS, "person_id", matching.CORE_OPTIONAL)
    inc = _read_match_csv(args.incoming, matching.INCOMING_COLUMNS, "incoming_id")
    t = time.perf_counter()
    if args.train:
        from b2b.matching import train

        result = train.train(core, inc)
        print(train.report(result))
        if args.weights_out:
            train.write(result, args.weights_out, note=f"learned by b2b match --train on {len(core)} LA records and "
                                                       f"{len(inc)} school records; review before shipping")
            print(f"b2b match: learned weights written to {args.weights_out} (review, then replace "
                  f"{train.WEIGHTS_FILE.name} to use them)", file=sys.stderr)
        return 0
    if not args.out:
        print("b2b match: --out is required (or --train)", file=sys.stderr)
        return 2
    if args.legacy:
        out = matching.legacy_match(core, inc)
    else:
        out = matching.match(core, inc, matching.MatchConfig(guidmatch=not args.no_guid),
                             min_age=args.carer_min, as_of=args.as_of)
    cols = ["incoming_id", "status", "person_id", "rule", "score", "conflicting_fields"]
    if args.explain:
        cols.append("explanation")
    out[cols].to_csv(args.out, index=False)
    counts = out["status"].value_counts().to_dict()
    print(f"b2b match: {len(inc)} incoming vs {len(core)} LA records in {time.perf_counter() - t:.1f}s: "
          + ", ".join(f"{k} {counts.get(k, 0)}" for k in matching.STATUSES) + f" -> {args.out}", file=sys.stderr)
    return 0


def _officer_conn() -> Any:
    from b2b import db

    conn = db.connect(db.database_url(), autocommit=True)
    db.upgrade(conn)
    return conn


def _cmd_officer(args: argparse.Namespace) -> int:
    from b2b.ops import officer

    with _officer_conn() as conn:
        try:
            if args.officer_cmd == "unmatched":
                print(officer.as_json(officer.unmatched(conn, args.base, args.include_hidden)))
            elif args.officer_cmd == "possible":
                print(officer.as_json(officer.possible(conn, args.base)))
            elif args.officer_cmd == "candidates":
                print(officer.as_json(officer.candidates(conn, args.base, args.student)))
            elif args.officer_cmd in ("confirm", "reject", "link"):
                who = getattr(officer, args.officer_cmd)(conn, args.base, args.student, args.person, note=args.note)
                print(f"{args.officer_cmd}: base {args.base} student {args.student} / child {args.person} "
                      f"recorded as {who}")
            elif args.officer_cmd == "new-child":
                pid = officer.new_child(conn, args.base, args.student)
                print(f"new child {pid} created from base {args.base} student {args.student} and linked")
            elif args.officer_cmd == "resolve":
                n = officer.resolve_conflict(conn, args.person, args.field, args.keep)
                print(f"resolved {n} conflict(s) on {args.person}.{args.field}: kept {args.keep}")
        except officer.OfficerError as exc:
            print(f"b2b officer: {exc}", file=sys.stderr)
            return 1
    return 0


def _cmd_maintenance(args: argparse.Namespace) -> int:
    from b2b.ops import maintenance

    with _officer_conn() as conn:
        if args.maint_cmd == "clear-conflicts":
            print(f"clear conflicts: {maintenance.clear_conflicts(conn, args.by)} cleared")
        elif args.maint_cmd == "clear-cache":
            print(f"clear cached data: {maintenance.clear_cached_data(conn, args.base)} cache entries removed")
        elif args.maint_cmd == "delete-files" and args.days is not None:
            print(f"delete files: {maintenance.delete_files(conn, args.days)} payload(s) purged")
        elif args.maint_cmd == "delete-files":
            from b2b.config.catalogue import load_catalogue

            counts = maintenance.enforce_retention(conn, load_catalogue(args.catalogue).la.settings)
            print("delete files (retention, F44): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _cmd_core_load(args: argparse.Namespace) -> int:
    from b2b.ops import core_load

    try:
        mapping = core_load.ColumnMapping.load(args.mapping)
        full = False if args.partial else None
        with _officer_conn() as conn:
            if args.gazetteer:
                counts = core_load.load_gazetteer_file(conn, args.file, mapping, full=full)
            elif args.adults:
                counts = core_load.load_adults_file(conn, args.file, mapping, full=full)
            else:
                counts = core_load.load_children_file(conn, args.file, mapping, full=full,
                                                      allow_large_drop=args.allow_large_drop)
    except core_load.CoreLoadError as exc:
        print(f"b2b core load: {exc}", file=sys.stderr)
        return 1
    print(f"b2b core load {args.file.name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from b2b.errors import B2BError
    from b2b.ingest import manual

    try:
        with _officer_conn() as conn:
            result = manual.ingest_file(conn, args.file, args.base, data_filter=args.filter,
                                        catalogue_path=args.catalogue, group=args.group)
    except B2BError as exc:
        print(f"b2b ingest: {exc}", file=sys.stderr)
        return 1
    print(f"b2b ingest {args.file.name}: " + ", ".join(f"{k} {v}" for k, v in result.items() if k != "stages"))
    return 0 if result.get("status") == "loaded" else 1


def _cmd_base_migrate(args: argparse.Namespace) -> int:
    import os
    from datetime import date
    from pathlib import Path

    from b2b.config.catalogue import DEFAULT_PATH
    from b2b.ops.base_migration import MigrationError, migrate_base

    secret = sys.stdin.readline().strip() if args.secret == "-" else args.secret
    path = Path(args.catalogue or os.environ.get("B2B_CATALOGUE") or DEFAULT_PATH)
    try:
        r = migrate_base(path, args.base, client_id=args.client_id, secret=secret,
                         subscription_key=args.subscription_key, org_id=args.org_id,
                         migrated_on=date.fromisoformat(args.on) if args.on else date.today(), conn_id=args.conn_id)
    except MigrationError as exc:
        print(f"b2b base migrate: {exc}", file=sys.stderr)
        return 1
    print(f"base {r.dfe} now uses SIMS Primary, migrated on {r.migrated_on} (the changed-data watermark, F5)")
    print(f"  tasks regrouped: {', '.join(r.moved) or 'none'}; inactive for it (F3): {', '.join(r.inactive) or 'none'}")
    print(f"  connection {r.conn_id} written to {r.connection_file} (mode 0600); load it with:")
    print(f"    airflow connections import {r.connection_file}")
    if r.snapshot_dag:
        print("  next: queue a snapshot so the LA holds the whole data set from SIMS Primary:")
        print(f"    airflow dags trigger {r.snapshot_dag}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="b2b", description="B2B:Student pipeline tools")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    cfg = sub.add_parser("config", help="task catalogue").add_subparsers(dest="config_cmd", required=True)
    check = cfg.add_parser("check", help="validate the task catalogue (schema + rules)")
    check.add_argument("path", nargs="?", default=None, help="catalogue file (default: $B2B_CATALOGUE or the demo)")
    check.add_argument("--write-dags", action="store_true",
                       help="then rewrite the changed DAG files in $B2B_DAGS_FOLDER or $AIRFLOW_HOME/dags "
                            "(what `make airflow` and docker-compose parse)")
    check.add_argument("--watch", type=float, default=0, metavar="SECONDS",
                       help="with --write-dags: keep running, rewriting them when the catalogue changes")
    check.set_defaults(func=_cmd_config_check)

    dbp = sub.add_parser("db", help="warehouse database").add_subparsers(dest="db_cmd", required=True)
    up = dbp.add_parser("upgrade", help="apply pending schema migrations (idempotent)")
    up.add_argument("--url", default=None, help="database URL (default: $B2B_DATABASE_URL or embedded)")
    up.set_defaults(func=_cmd_db_upgrade)
    dbp.add_parser("url", help="print the warehouse URL (starts the embedded server if needed)").set_defaults(func=_cmd_db_url)
    st = dbp.add_parser("stop", help="stop the embedded PostgreSQL (pg_ctl stop on its data directory); "
                                     "exit status 1 when it could not be stopped, with the reason")
    st.add_argument("--all", action="store_true", help="every embedded server under $B2B_HOME (demo and tests)")
    st.add_argument("--pgdata", help="data directory (default $B2B_HOME/pgdata)")
    st.add_argument("--if-unused", action="store_true",
                    help="leave it running while another live process holds a handle on it")
    st.set_defaults(func=_cmd_db_stop)
    ro = dbp.add_parser("roles", help="give the roles b2b_pipeline/analyst/officer/ui their passwords (F41)")
    ro.add_argument("--url", default=None, help="admin database URL (default: $B2B_DATABASE_URL or embedded)")
    ro.set_defaults(func=_cmd_db_roles)

    demo = sub.add_parser("demo", help="run the demo LA end to end through real Airflow DAG runs")
    demo.add_argument("--days", type=int, default=3, help="changed-data days after the snapshot")
    demo.add_argument("--fresh", action="store_true", default=None,
                      help="drop the warehouse's B2B data first (the default on the embedded database)")
    demo.add_argument("--keep", dest="fresh", action="store_false",
                      help="keep earlier runs' data (the default when B2B_DATABASE_URL is set)")
    demo.set_defaults(func=_cmd_demo)

    af = sub.add_parser("airflow", help="airflow standalone on this project, with the simulator")
    af.add_argument("--simulator-port", type=int, default=8765)
    af.add_argument("--port", type=int, default=8080, help="the UI / API port (127.0.0.1)")
    af.add_argument("--schools", type=int, default=0, help=argparse.SUPPRESS)  # bench: a generated LA
    af.add_argument("--students", type=int, default=20000, help=argparse.SUPPRESS)
    af.add_argument("--prepare-only", action="store_true",
                    help="migrate, load and import connections, print the login, but do not start Airflow")
    af.set_defaults(func=_cmd_airflow)
    sub.add_parser("airflow-env", help="prepare and print the Airflow environment for this project").set_defaults(
        func=_cmd_airflow_env)

    m = sub.add_parser("match", help="match a CSV of school records to a CSV of LA records (same matcher as the DAGs)")
    m.add_argument("--core", required=True, help="CORE.csv: person_id,upn,guid,forename,middle_names,surname,"
                                                  "gender,dob,postcode,address_line1[,base_id] (base_id: the "
                                                  "school the LA holds for the child, optional)")
    m.add_argument("--incoming", required=True, help="INCOMING.csv: incoming_id,base_id,upn,guid,forename,"
                                                      "middle_names,surname,gender,dob,postcode,address_line1")
    m.add_argument("--out", help="OUT.csv: incoming_id,status,person_id,rule,score,conflicting_fields")
    m.add_argument("--train", action="store_true",
                   help="estimate the weights from these files (EM, bounded by the hand weights) and print them "
                        "next to the hand weights instead of matching")
    m.add_argument("--weights-out", help="with --train: write the learned weights here, for review")
    m.add_argument("--explain", action="store_true", help="add the explanation (per-field weights) column")
    m.add_argument("--legacy", action="store_true", help="the vendor rule instead (for comparison)")
    m.add_argument("--no-guid", action="store_true", help="GUIDMATCH off")
    m.add_argument("--carer-min", type=int, default=None,
                   help="matching carers: LA records younger than this (CARER_MIN, F14) are not candidates")
    m.add_argument("--as-of", default=None, help="date for --carer-min ages (default today)")
    m.set_defaults(func=_cmd_match)

    off = sub.add_parser("officer", help="work the Unmatched / Possible / Conflicts lists (decisions are recorded "
                                         "under the database login: see docs/using-for-your-la.md)").add_subparsers(
        dest="officer_cmd", required=True)
    o = off.add_parser("unmatched", help="the Unmatched list (F13)")
    o.add_argument("--base")
    o.add_argument("--include-hidden", action="store_true", help="also those older than B2B_S_AGE")
    o = off.add_parser("possible", help="proposed candidates awaiting an officer")
    o.add_argument("--base")
    o = off.add_parser("candidates", help="best LA candidates for one student, with explanations")
    o.add_argument("base")
    o.add_argument("student", help="the student's MIS GUID")
    for name, doc in (("confirm", "confirm a proposed candidate"), ("reject", "reject a candidate (never again)"),
                      ("link", "link a student to a child by hand")):
        o = off.add_parser(name, help=doc)
        o.add_argument("base")
        o.add_argument("student")
        o.add_argument("person")
        o.add_argument("--note")
    o = off.add_parser("new-child", help="create an LA child from an unmatched student and link it")
    o.add_argument("base")
    o.add_argument("student")
    o = off.add_parser("resolve", help="resolve a conflict: keep the LA value or accept the incoming one")
    o.add_argument("person")
    o.add_argument("field")
    o.add_argument("--keep", choices=["la", "incoming"], required=True)
    off.required = True
    off_parent = sub.choices["officer"]
    off_parent.set_defaults(func=_cmd_officer)

    from pathlib import Path

    from b2b.ops.core_load import __doc__ as core_doc

    core = sub.add_parser("core", help="the LA's own records").add_subparsers(dest="core_cmd", required=True)
    cl = core.add_parser("load", help="load the LA's children CSV (or its gazetteer, or its adults) into core",
                         description="Load an LA extract. " + (core_doc or "").split("\n\n", 1)[1],
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    cl.add_argument("file", type=Path, help="children CSV (or gazetteer CSV with --gazetteer, adults CSV with --adults)")
    cl.add_argument("--mapping", type=Path, help="YAML column mapping for the LA system's export (see above)")
    kind = cl.add_mutually_exclusive_group()
    kind.add_argument("--gazetteer", action="store_true", help="FILE is the address gazetteer (LLPG extract)")
    kind.add_argument("--adults", action="store_true", help="FILE lists the adults (parents, carers) the LA holds (F14)")
    cl.add_argument("--partial", action="store_true",
                    help="a changes-only extract: records not in it stay active (default: full extract)")
    cl.add_argument("--allow-large-drop", action="store_true",
                    help="load a full children extract even though it would mark over 20%% of the LA's active "
                         "children inactive (refused otherwise: an export cut short or filtered looks so)")
    cl.set_defaults(func=_cmd_core_load)

    from b2b.ingest.manual import __doc__ as ingest_doc

    ing = sub.add_parser("ingest", help="import a message file received by hand (F39), like a DAG run",
                         description=ingest_doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ing.add_argument("file", type=Path, help="SIMS 7 XML export, or a SIMS Primary data-group JSON page")
    ing.add_argument("--base", required=True, help="the school's DfE number (must be in the catalogue)")
    ing.add_argument("--filter", default="snapshot", choices=["snapshot", "changed_data", "attendance", "attainment"],
                     help="what the file holds (default snapshot)")
    ing.add_argument("--group", help="SIMS Primary data group of a JSON page (default: read from the file)")
    ing.add_argument("--catalogue", type=Path, help="catalogue file (default $B2B_CATALOGUE or the demo)")
    ing.set_defaults(func=_cmd_ingest)

    bp = sub.add_parser("base", help="bases (schools)").add_subparsers(dest="base_cmd", required=True)
    bm = bp.add_parser("migrate", help="make a SIMS 7 base a SIMS Primary base (irreversible; F1, F3, F4, F5)")
    bm.add_argument("base", help="DfE number")
    bm.add_argument("--client-id", required=True)
    bm.add_argument("--secret", required=True, help="the Secret, or '-' to read it from standard input")
    bm.add_argument("--subscription-key", required=True)
    bm.add_argument("--org-id", required=True)
    bm.add_argument("--on", help="migration date YYYY-MM-DD (default today): the changed-data watermark")
    bm.add_argument("--conn-id", help="Airflow connection id (default sims_primary_<DfE>)")
    bm.add_argument("--catalogue", help="catalogue file (default $B2B_CATALOGUE or the demo)")
    bm.set_defaults(func=_cmd_base_migrate)

    mt = sub.add_parser("maintenance", help="F18 maintenance tasks")
    mts = mt.add_subparsers(dest="maint_cmd", required=True)
    o = mts.add_parser("clear-conflicts", help="drop conflicts where the LA data now equals the incoming")
    o.add_argument("--by", default="maintenance")
    o = mts.add_parser("clear-cache", help="flush the hash cache (all bases or one)")
    o.add_argument("--base")
    o = mts.add_parser("delete-files", help="enforce the LA's retention settings (F44; docs/data-protection.md)")
    o.add_argument("--days", type=int, help="only purge stored message payloads older than N days")
    o.add_argument("--catalogue", help="catalogue whose la.settings apply (default $B2B_CATALOGUE or the demo)")
    mt.set_defaults(func=_cmd_maintenance)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # its INFO chatter hides ours
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
