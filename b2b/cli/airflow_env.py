"""Point Airflow at this project: its home, DAGs, plugins, metadata DB, PATH and connections.

Used by ``make airflow`` (``b2b airflow``), ``b2b airflow-env``, ``b2b demo`` and the tests.
Must run before the first ``import airflow`` of the process, because Airflow reads its
config at import.

``b2b airflow`` keeps Airflow's metadata in a database ``airflow`` on the embedded PostgreSQL
(next to the warehouse) so the scheduler, a backfill and the UI can write at the same time
(SQLite allows one writer: "database is locked"); with ``B2B_DATABASE_URL`` set (a real
warehouse) it uses SQLite under ``$AIRFLOW_HOME`` unless ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``
says otherwise. The school connections and ``b2b_warehouse`` are imported into the metadata
database (``airflow connections import``), so the UI lists them.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from b2b import PROJECT_ROOT
from b2b.db import b2b_home

#: the simple auth manager's users (``user:role``) for ``make airflow``; passwords are generated
#: into ``$AIRFLOW_HOME/simple_auth_manager_passwords.json.generated`` on first start
STANDALONE_USERS = "admin:admin"
#: libraries whose INFO lines are noise in task logs (ours stay at INFO)
NAMESPACE_LEVELS = "great_expectations=WARNING"


def venv_bin() -> Path:
    """The folder of this interpreter's scripts (``.venv/bin``): ``airflow standalone`` starts its
    components by name, so it must be on PATH."""
    return Path(sys.executable).parent


def _path_with_venv() -> str:
    parts = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    first = str(venv_bin())
    return os.pathsep.join([first] + [p for p in parts if p != first])


#: the dag-processor with the catalogue split into files per bucket of bases (issue 15,
#: b2b/config/dag_files.py): a file is re-parsed as soon as its mtime changes (a catalogue edit
#: rewrites the changed buckets' files only) and otherwise left alone, so a cycle with nothing
#: changed parses and writes nothing; new files are listed within REFRESH_INTERVAL seconds
DAG_PROCESSOR_SETTINGS = {
    "AIRFLOW__DAG_PROCESSOR__FILE_PARSING_SORT_MODE": "modified_time",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "86400",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
}


def default_parallelism() -> str:
    """LocalExecutor's task slots for ``b2b airflow``: ``$AIRFLOW__CORE__PARALLELISM`` when set,
    else two per CPU core (at least 4). Airflow's default of 32 forks 32 task processes on any
    machine; on 2 cores 32 concurrent runs only wait for each other (issue 15, docs/speed.md:
    a 20-school changed-data day took 20 s of wall time and 36 s of stage time with 4 slots)."""
    return os.environ.get("AIRFLOW__CORE__PARALLELISM") or str(max(4, 2 * (os.cpu_count() or 2)))


def split_dags_folder(home: Path | None = None) -> Path:
    """Where the catalogue's DAG files go: ``$B2B_DAGS_FOLDER`` (docker-compose), else
    ``$AIRFLOW_HOME/dags`` (``b2b airflow``: one per Airflow home, so two homes with different
    catalogues never share one)."""
    if home is None and os.environ.get("B2B_DAGS_FOLDER"):
        return Path(os.environ["B2B_DAGS_FOLDER"])
    return Path(home or os.environ.get("AIRFLOW_HOME") or b2b_home() / "airflow") / "dags"


def split_dag_settings(home: Path | None = None) -> dict[str, str]:
    """DAGS_FOLDER on the split files and the dag-processor settings that go with them."""
    return {"AIRFLOW__CORE__DAGS_FOLDER": str(split_dags_folder(home)), **DAG_PROCESSOR_SETTINGS}


def project_airflow_settings(home: Path | None = None, *, metadata_url: str | None = None) -> dict[str, str]:
    home = Path(home or os.environ.get("AIRFLOW_HOME") or b2b_home() / "airflow")
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url or f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__NAMESPACE_LEVELS": NAMESPACE_LEVELS,
        "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), str(PROJECT_ROOT / "plugins")]),
        "PATH": _path_with_venv(),
    }


def connection_env(connections: dict[str, dict]) -> dict[str, str]:
    """``{conn_id: airflow-json}`` -> ``AIRFLOW_CONN_<ID>`` environment variables."""
    return {f"AIRFLOW_CONN_{cid.upper()}": json.dumps(c) for cid, c in connections.items()}


def warehouse_connection(url: str) -> dict:
    """The ``b2b_warehouse`` Airflow connection (Postgres) for a warehouse URL (a socket path works)."""
    from psycopg.conninfo import conninfo_to_dict

    d = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    conn: dict = {"conn_type": "postgres", "host": d.get("host") or "localhost",
                  "schema": d.get("dbname") or "postgres", "login": d.get("user") or None,
                  "password": d.get("password") or None}
    if d.get("port"):
        conn["port"] = int(d["port"])
    return {k: v for k, v in conn.items() if v is not None}


def embedded_metadata_url(warehouse_url: str, dbname: str = "airflow") -> str:
    """A SQLAlchemy URL for Airflow's metadata in database ``dbname`` of the warehouse's server
    (created when missing)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from sqlalchemy.engine import URL

    with psycopg.connect(warehouse_url, autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            admin.execute(f'CREATE DATABASE "{dbname}"')
    d = {k: str(v) for k, v in conninfo_to_dict(make_conninfo(warehouse_url)).items() if v is not None}
    query = {"host": d["host"]} if d.get("host", "").startswith("/") else {}
    return URL.create("postgresql+psycopg2", username=d.get("user"), password=d.get("password") or None,
                      host=None if query else d.get("host"), port=int(d["port"]) if d.get("port") else None,
                      database=dbname, query=query).render_as_string(hide_password=False)


def standalone_metadata_url() -> str | None:
    """The metadata DB of ``b2b airflow`` / ``b2b airflow-env``: an explicit
    ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``, else Postgres on the embedded server, else (a real
    warehouse in ``B2B_DATABASE_URL``) None = SQLite."""
    if os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        return os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    if os.environ.get("B2B_DATABASE_URL"):
        return None
    from b2b import db

    return embedded_metadata_url(db.embedded_url())


def prepare_airflow_env(*, quiet: bool = False, metadata_url: str | None = None,
                        split_dags: bool = False) -> dict[str, str]:
    """Set the environment for this process (and its children) and migrate Airflow's metadata DB.
    With ``split_dags`` (``b2b airflow``, ``b2b airflow-env``) the DAGs are the catalogue's files
    per bucket of bases in ``$AIRFLOW_HOME/dags`` (written here, rewritten by ``watch_catalogue``
    or ``b2b config check --write-dags`` when the catalogue changes)."""
    from b2b import db

    settings = project_airflow_settings(metadata_url=metadata_url)
    if split_dags:
        settings.update(split_dag_settings(Path(settings["AIRFLOW_HOME"])))
        settings["AIRFLOW__CORE__PARALLELISM"] = default_parallelism()
        write_split_dags(Path(settings["AIRFLOW__CORE__DAGS_FOLDER"]))
    os.environ.update(settings)
    Path(os.environ["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    if quiet:
        os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("B2B_DATABASE_URL", db.database_url())
    migrate_airflow_db()
    return dict(os.environ)


def airflow_cli() -> str:
    return str(venv_bin() / "airflow")


def migrate_airflow_db() -> None:
    """``airflow db migrate`` once per (Airflow home, metadata DB) (a marker file remembers it)."""
    home = Path(os.environ["AIRFLOW_HOME"])
    url = os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    marker = home / f".b2b-migrated-{hashlib.sha256(url.encode()).hexdigest()[:12]}"
    if marker.exists() and (not url.startswith("sqlite") or (home / "airflow.db").exists()):
        return
    proc = subprocess.run([airflow_cli(), "db", "migrate"], capture_output=True, text=True, env=os.environ)
    if proc.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{proc.stderr[-2000:]}")
    marker.write_text("ok\n")


def import_connections(connections: dict[str, dict]) -> Path:
    """Write the connections to ``$AIRFLOW_HOME/connections.json`` (mode 0600) and import them into
    the metadata database (``airflow connections import --overwrite``): the UI lists them."""
    path = Path(os.environ["AIRFLOW_HOME"]) / "connections.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(connections, f, indent=2, sort_keys=True)
    proc = subprocess.run([airflow_cli(), "connections", "import", "--overwrite", str(path)],
                          capture_output=True, text=True, env=os.environ)
    if proc.returncode != 0:
        raise RuntimeError(f"airflow connections import failed:\n{proc.stderr[-2000:]}")
    return path


def password_file() -> Path:
    """Where the simple auth manager keeps the generated passwords (``user: password`` JSON)."""
    return Path(os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
                or Path(os.environ["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated")


def ensure_password_file(users: str = STANDALONE_USERS) -> dict[str, str]:
    """Generate a password for each configured user missing from the passwords file (mode 0600),
    as the simple auth manager would on first start, so it can be printed before the UI is up."""
    import secrets

    path = password_file()
    passwords = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
    for spec in users.split(","):
        user = spec.split(":")[0].strip()
        passwords.setdefault(user, secrets.token_urlsafe(12))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(passwords, f)
    return passwords


def write_split_dags(folder: Path | None = None, catalogue: str | Path | None = None) -> dict[str, int]:
    """(Re)write the catalogue's DAG files in ``folder`` (``b2b.config.dag_files``): only the
    files whose bases changed; an invalid catalogue raises and leaves the files as they were."""
    from b2b.config.dag_files import write_dag_files

    return write_dag_files(catalogue, folder or split_dags_folder())


def watch_catalogue(folder: Path, every: float = 5.0, catalogue: str | Path | None = None) -> Any:
    """A daemon thread that rewrites the changed DAG files whenever the catalogue file changes
    (mtime or size), so an edit shows in the UI at the dag-processor's next loop; an invalid
    edit is reported once and changes nothing. Returns the thread's stop event."""
    import threading

    from b2b.config.catalogue import DEFAULT_PATH, CatalogueError

    path = Path(catalogue or os.environ.get("B2B_CATALOGUE") or DEFAULT_PATH)
    stop = threading.Event()

    def stamp() -> tuple[float, int]:
        st = path.stat()
        return st.st_mtime, st.st_size

    def loop() -> None:
        seen = stamp()
        while not stop.wait(every):
            try:
                now = stamp()
                if now == seen:
                    continue
                seen = now
                counts = write_split_dags(folder, path)
                print(f"B2B: catalogue changed: DAG files {counts['written']} rewritten, "
                      f"{counts['removed']} removed", flush=True)
            except CatalogueError as exc:
                print(f"B2B: catalogue not valid, DAG files left as they were: {exc}", file=sys.stderr, flush=True)
            except OSError as exc:
                print(f"B2B: catalogue not readable ({exc.strerror})", file=sys.stderr, flush=True)

    threading.Thread(target=loop, name="b2b-catalogue-watch", daemon=True).start()
    return stop


def run_standalone(env: dict[str, str], stop_grace: float = 30.0, argv: list[str] | None = None) -> int:
    """``airflow standalone`` in a session of its own; SIGINT / SIGTERM to this process stop it
    and everything under it (scheduler, dag-processor, api-server, triggerer and the task
    processes, which start sessions of their own): nothing is left running after Ctrl-C."""
    import signal

    proc = subprocess.Popen(argv or [airflow_cli(), "standalone"], env=env, start_new_session=True)
    stopping: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop_process_tree(proc.pid, stop_grace)
        proc.wait()
        return 128 + (stopping[0] if stopping else signal.SIGINT)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:
            stop_process_tree(proc.pid, stop_grace)


def stop_process_tree(pid: int, grace: float = 30.0) -> None:
    """SIGTERM ``pid`` and all its descendants, then SIGKILL what is left after ``grace`` seconds."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


def api_server_up(base_url: str) -> bool:
    """Whether the Airflow api-server at ``base_url`` answers ``/api/v2/version``."""
    import requests

    try:
        return requests.get(f"{base_url}/api/v2/version", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 2.0) -> Any:
    """Call ``check`` every ``every`` seconds until it returns something true, and return that;
    :class:`TimeoutError` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
