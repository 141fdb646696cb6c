"""The ``b2b`` command line. Every subcommand imports what it needs lazily."""
from __future__ import annotations

import argparse
import logging
import sys


def _cmd_config_check(args) -> int:
    from b2b.catalogue import main_check

    return main_check(args.path)


def _cmd_db_upgrade(args) -> int:
    from b2b import db

    url = db.database_url(args.url)
    with db.connect(url) as conn:
        applied = db.upgrade(conn)
    print(f"database {db.redact(url)}: " + (f"applied {', '.join(applied)}" if applied else "up to date"))
    return 0


def _cmd_db_url(args) -> int:
    from b2b import db

    print(db.database_url())
    return 0


def _cmd_db_stop(args) -> int:
    from b2b import db

    print("embedded PostgreSQL stopped" if db.stop_embedded() else "embedded PostgreSQL was not running")
    return 0


def _cmd_demo(args) -> int:
    from b2b.demo import run_demo

    return run_demo(days=args.days, fresh=args.fresh)


def _cmd_airflow(args) -> int:
    """Run ``airflow standalone`` on this project with the simulator serving the demo schools."""
    import os
    import subprocess

    from b2b.airflow_env import connection_env, prepare_airflow_env
    from simulator.server import start_server
    from simulator.world import World, WorldConfig

    world = World(WorldConfig.demo())
    server = start_server(world, host="127.0.0.1", port=args.simulator_port)
    os.environ.update(connection_env(world.airflow_connections(server.base_url)))
    env = prepare_airflow_env()
    print(f"SIMS simulator on {server.base_url}; Airflow home {env['AIRFLOW_HOME']}")
    try:
        return subprocess.run([os.path.join(os.path.dirname(sys.executable), "airflow"), "standalone"],
                              env=env).returncode
    finally:
        server.shutdown()


def _cmd_airflow_env(args) -> int:
    from b2b.airflow_env import prepare_airflow_env

    env = prepare_airflow_env(start_simulator=False)
    for k, v in sorted(env.items()):
        if k.startswith("AIRFLOW__") or k in ("AIRFLOW_HOME", "B2B_DATABASE_URL", "B2B_HOME"):
            print(f"export {k}={v!r}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="b2b", description="B2B:Student pipeline tools")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    cfg = sub.add_parser("config", help="task catalogue").add_subparsers(dest="config_cmd", required=True)
    check = cfg.add_parser("check", help="validate the task catalogue (schema + rules)")
    check.add_argument("path", nargs="?", default=None, help="catalogue file (default: $B2B_CATALOGUE or the demo)")
    check.set_defaults(func=_cmd_config_check)

    dbp = sub.add_parser("db", help="warehouse database").add_subparsers(dest="db_cmd", required=True)
    up = dbp.add_parser("upgrade", help="apply pending schema migrations (idempotent)")
    up.add_argument("--url", default=None, help="database URL (default: $B2B_DATABASE_URL or embedded)")
    up.set_defaults(func=_cmd_db_upgrade)
    dbp.add_parser("url", help="print the warehouse URL (starts the embedded server if needed)").set_defaults(func=_cmd_db_url)
    dbp.add_parser("stop", help="stop the embedded PostgreSQL").set_defaults(func=_cmd_db_stop)

    demo = sub.add_parser("demo", help="run the demo LA end to end through real Airflow DAG runs")
    demo.add_argument("--days", type=int, default=3, help="changed-data days after the snapshot")
    demo.add_argument("--fresh", action="store_true", default=None,
                      help="drop the warehouse's B2B data first (the default on the embedded database)")
    demo.add_argument("--keep", dest="fresh", action="store_false",
                      help="keep earlier runs' data (the default when B2B_DATABASE_URL is set)")
    demo.set_defaults(func=_cmd_demo)

    af = sub.add_parser("airflow", help="airflow standalone on this project, with the simulator")
    af.add_argument("--simulator-port", type=int, default=8765)
    af.set_defaults(func=_cmd_airflow)
    sub.add_parser("airflow-env", help="prepare and print the Airflow environment for this project").set_defaults(
        func=_cmd_airflow_env)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
