"""``python -m simulator`` / ``b2b-simulator``: serve the fake SIMS, write messages, export LA core."""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from datetime import datetime
from pathlib import Path


def _world(args):
    from simulator.world import World, WorldConfig

    if args.schools:
        return World(WorldConfig.generated(args.schools, args.students, seed=args.seed or 7))
    return World(WorldConfig.demo(**({"seed": args.seed} if args.seed else {})))


def _dt(s: str | None):
    return None if s is None else datetime.fromisoformat(s.replace("Z", "+00:00"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="b2b-simulator", description="Fake SIMS 7 / SIMS Primary for B2B:Student")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--schools", type=int, default=0, help="generated LA instead of the demo preset")
    p.add_argument("--students", type=int, default=4000)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve over HTTP until Ctrl-C")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--preset", default="demo", choices=["demo"])
    w = sub.add_parser("write", help="write one task run's message(s) to a folder")
    w.add_argument("--base", required=True)
    w.add_argument("--filter", required=True, choices=["snapshot", "changed_data", "attendance", "attainment"])
    w.add_argument("--until", required=True)
    w.add_argument("--since")
    w.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("core", help="the LA's own child records as CSV")
    c.add_argument("--out", type=Path, required=True)
    lf = sub.add_parser("la-files", help="the LA's own files (children, gazetteer) for b2b core load")
    lf.add_argument("--out", type=Path, required=True, help="folder, e.g. $B2B_HOME/inbound/core")
    lf.add_argument("--style", choices=["b2b", "la"], default="b2b",
                    help="la: an LA system's headers and dates, with the mapping.yaml that maps them")
    k = sub.add_parser("connections", help="Airflow connections (JSON) for every school")
    k.add_argument("--base-url", default="http://127.0.0.1:8765")
    k.add_argument("--format", choices=["json", "env"], default="json",
                   help="env: shell 'export AIRFLOW_CONN_<ID>=...' lines (eval them)")
    args = p.parse_args(argv)
    world = _world(args)

    if args.cmd == "serve":
        from simulator.server import start_server

        srv = start_server(world, args.host, args.port)
        print(f"SIMS simulator serving {len(world.bases)} schools on {srv.base_url} (Ctrl-C to stop)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            srv.shutdown()
        return 0
    if args.cmd == "write":
        args.out.mkdir(parents=True, exist_ok=True)
        base = world.bases[args.base]
        until, since = _dt(args.until), _dt(args.since)
        if base.kind == "sims7":
            path = args.out / f"{args.base}_{args.filter}_{until:%Y%m%dT%H%M}.xml"
            path.write_bytes(world.export_sims7(args.base, args.filter, until, since))
            print(path)
        else:
            groups = ("attendance",) if args.filter == "attendance" else ("student", "address", "contacts", "sen", "exclusions")
            for g in groups:
                path = args.out / f"{args.base}_{g}_{until:%Y%m%dT%H%M}.json"
                path.write_text(json.dumps({"dataGroup": g, "items": world.primary_datagroup(args.base, g, until, since)}))
                print(path)
        return 0
    if args.cmd == "core":
        rows = world.la_core()
        cols = ["person_id", "upn", "guid", "forename", "middle_names", "surname", "gender", "dob", "postcode",
                "address_line1", "base_dfe"]
        with open(args.out, "w", newline="", encoding="utf-8") as fh:
            wr = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
            wr.writeheader()
            for r in rows:
                wr.writerow({k: ("" if r.get(k) is None else r[k]) for k in cols})
        print(f"wrote {len(rows)} LA child records to {args.out}")
        return 0
    if args.cmd == "la-files":
        from simulator.la_files import write_la_files

        for path in write_la_files(args.out, world, style=args.style):
            print(path)
        return 0
    conns = world.airflow_connections(args.base_url)
    if args.format == "env":
        import shlex

        for cid, c in conns.items():
            print(f"export AIRFLOW_CONN_{cid.upper()}={shlex.quote(json.dumps(c))}")
        return 0
    print(json.dumps(conns, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
