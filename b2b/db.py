"""The warehouse: where the connection comes from, and the numbered schema migrations.

Resolution order for the database URL (first hit wins):

1. an explicit ``url`` argument (the Airflow ``WarehouseHook`` passes its connection's URI);
2. the environment variable ``B2B_DATABASE_URL``;
3. the **embedded default**: a PostgreSQL started from the ``pgserver`` wheel with its
   data directory in ``$B2B_HOME/pgdata`` (``./.b2b/pgdata``), so a newcomer needs no server.

Migrations are the ``include/sql/NNNN_name.sql`` files, applied in order inside one
transaction each and recorded in ``ops.schema_migrations``; ``upgrade`` is idempotent.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from b2b import INCLUDE, PROJECT_ROOT
from b2b.context import scalar

if TYPE_CHECKING:
    from psycopg import Connection

log = logging.getLogger(__name__)

MIGRATIONS_DIR = INCLUDE / "sql"
_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def b2b_home() -> Path:
    """Runtime state folder (embedded Postgres, Airflow home, reports); never in git."""
    return Path(os.environ.get("B2B_HOME") or PROJECT_ROOT / ".b2b")


def _import_pgserver() -> Any:
    """pgserver, without its chatter (a platformdirs warning, INFO lines on every reuse)."""
    import logging
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver  # imported here: heavy, and unused when a real server is configured
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    return pgserver


def embedded_url(pgdata: Path | None = None) -> str:
    """Start (or reuse) the embedded PostgreSQL and return its URL."""
    pgserver = _import_pgserver()

    pgdata = Path(pgdata or b2b_home() / "pgdata")
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(pgdata), cleanup_mode=None)
    return server.get_uri()


@dataclass(frozen=True)
class StopResult:
    """What ``stop_embedded`` did: ``stopped`` (a server was running and is now down), ``ok``
    (nothing is left running: stopped, or was not running) and a truthful sentence."""

    stopped: bool
    ok: bool
    message: str


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a stopped server whose parent has not reaped it)."""
    import psutil  # a pgserver dependency

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return None


def _handle_pids(pgdata: Path) -> list[int]:
    import json

    try:
        return [int(p) for p in json.loads((pgdata / ".handle_pids.json").read_text())]
    except (FileNotFoundError, ValueError, TypeError):
        return []


def _write_handle_pids(pgdata: Path, pids: list[int]) -> None:
    import json

    path = pgdata / ".handle_pids.json"
    if path.exists():
        path.write_text(json.dumps(pids))


def stop_embedded(pgdata: Path | None = None, *, if_unused: bool = False, timeout: int = 60) -> StopResult:
    """Stop the embedded PostgreSQL of ``pgdata`` with ``pg_ctl stop -m fast`` on its data directory.

    pgserver's own bookkeeping (``.handle_pids.json``: the processes holding a handle) is only a
    hint: handles of processes that died are dropped, so a stale list never keeps a server alive.
    With ``if_unused`` (the test session's teardown) a server that another live process still holds
    is left running, and the result says which processes. The result never claims a stop that
    did not happen: when ``pg_ctl`` fails its reason is returned with ``ok=False``.
    """
    import subprocess

    pgdata = Path(pgdata or b2b_home() / "pgdata")
    pid = _postmaster_pid(pgdata)
    holders = [p for p in _handle_pids(pgdata) if p != os.getpid() and _alive(p)]
    _write_handle_pids(pgdata, holders)
    if pid is None:
        return StopResult(False, True, f"embedded PostgreSQL ({pgdata}) was not running")
    if not _alive(pid):
        (pgdata / "postmaster.pid").unlink(missing_ok=True)
        return StopResult(False, True, f"embedded PostgreSQL ({pgdata}) was not running "
                                       f"(removed the stale postmaster.pid of process {pid})")
    if if_unused and holders:
        return StopResult(False, False, f"embedded PostgreSQL ({pgdata}) left running: still used by "
                                        f"process(es) {', '.join(map(str, holders))}")
    pgserver = _import_pgserver()
    from pgserver._commands import POSTGRES_BIN_PATH

    user = "pgserver" if os.name == "posix" and os.geteuid() == 0 else None  # pgserver's server user under root
    proc = subprocess.run([str(POSTGRES_BIN_PATH / "pg_ctl"), "stop", "-D", str(pgdata), "-m", "fast", "-w",
                           "-t", str(timeout)], capture_output=True, text=True, user=user, check=False)
    if proc.returncode != 0 and _alive(pid):
        reason = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return StopResult(False, False, f"embedded PostgreSQL ({pgdata}, process {pid}) could NOT be stopped: "
                                        f"pg_ctl stop: {reason[0]}")
    _write_handle_pids(pgdata, [])
    getattr(pgserver.PostgresServer, "_instances", {}).pop(pgdata.resolve(), None)
    users = f" (it was in use by process(es) {', '.join(map(str, holders))})" if holders else ""
    return StopResult(True, True, f"embedded PostgreSQL ({pgdata}, process {pid}) stopped{users}")


def embedded_data_dirs(home: Path | None = None) -> list[Path]:
    """Every embedded server data directory under the B2B home (the demo's, the tests', ...)."""
    home = Path(home or b2b_home())
    return sorted({p.parent for p in home.glob("pgdata/postmaster.pid")}
                  | {p.parent for p in home.glob("*/pgdata/postmaster.pid")})


def database_url(url: str | None = None) -> str:
    return url or os.environ.get("B2B_DATABASE_URL") or embedded_url()


def redact(url: str) -> str:
    """The connection string with any password replaced, safe for logs.

    Parsed by libpq's rules (``psycopg.conninfo``), so every form is covered: a URL with
    ``user:password@``, a URL with ``?password=``, and a ``key=value`` conninfo string. The
    result is a ``key=value`` string with ``password=***``; a string libpq cannot parse is not
    echoed at all.
    """
    import re

    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    # a SQLAlchemy URL (Airflow's metadata DB: postgresql+psycopg2://…): libpq knows no driver suffix
    if url.startswith("sqlite:"):  # a file path, no credentials
        return url
    url = re.sub(r"^(postgres(?:ql)?)\+\w+://", r"\1://", url)
    try:
        params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    except ProgrammingError:
        return "<unparseable connection string>"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo("", **params)


# ------------------------------------------------------------------ roles (F41)
#: the login roles migration 0015 creates; LA staff get personal logins that are members
ROLES = ("b2b_pipeline", "b2b_analyst", "b2b_officer", "b2b_ui")
_HBA_BEGIN = "# >>> b2b roles: password authentication (b2b.db.ensure_roles)"
_HBA_END = "# <<< b2b roles"


def roles_file(home: Path | None = None) -> Path:
    """Where the embedded server's role passwords live: ``$B2B_HOME/secrets/db_roles.json`` (0600)."""
    return (home or b2b_home()) / "secrets" / "db_roles.json"


def role_passwords(home: Path | None = None) -> dict[str, str]:
    """Each role's password: ``$B2B_DB_PASSWORD_<ROLE>`` when set (compose passes them from its
    secrets), else generated once (``secrets.token_urlsafe``) into :func:`roles_file`."""
    import json
    import secrets

    given = {r: os.environ[f"B2B_DB_PASSWORD_{r.upper()}"] for r in ROLES
             if os.environ.get(f"B2B_DB_PASSWORD_{r.upper()}")}
    if len(given) == len(ROLES):
        return given
    path = roles_file(home)
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    missing = [r for r in ROLES if not data.get(r)]
    if missing:
        for r in missing:
            data[r] = secrets.token_urlsafe(24)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        os.replace(tmp, path)
    os.chmod(path, 0o600)
    return {r: given.get(r) or data[r] for r in ROLES}


def ensure_roles(admin_conn: Any, home: Path | None = None, pgdata: Path | None = None) -> list[str]:
    """Give the roles their passwords (sent SCRAM-hashed, never in clear) and, on the embedded
    server (``pgdata``), require password authentication for them and their members in
    ``pg_hba.conf``. Needs an admin connection and migration 0015; returns the roles set."""
    from psycopg import sql

    passwords = role_passwords(home)
    done = []
    for role in ROLES:
        if admin_conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
            continue
        hashed = admin_conn.pgconn.encrypt_password(passwords[role].encode(), role.encode(), b"scram-sha-256")
        admin_conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(hashed.decode())))
        done.append(role)
    if pgdata is not None:
        hba = Path(pgdata) / "pg_hba.conf"
        text = hba.read_text(encoding="utf-8")
        if _HBA_BEGIN not in text:
            who = ",".join("+" + r for r in ROLES)
            block = "\n".join([_HBA_BEGIN, f"local all {who} scram-sha-256",
                               f"host  all {who} 127.0.0.1/32 scram-sha-256",
                               f"host  all {who} ::1/128 scram-sha-256", _HBA_END, ""])
            with open(hba, "w", encoding="utf-8") as fh:  # in place: keeps the file's owner
                fh.write(block + text)
        admin_conn.execute("SELECT pg_reload_conf()")
    if not admin_conn.autocommit:
        admin_conn.commit()
    return done


def role_url(role: str, url: str | None = None, home: Path | None = None) -> str:
    """The warehouse URL as one of the roles (its password from :func:`role_passwords`)."""
    from psycopg.conninfo import make_conninfo

    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    return make_conninfo(database_url(url), user=role, password=role_passwords(home)[role])


def connect(url: str | None = None, **kwargs: Any) -> Any:
    """A psycopg 3 connection to the warehouse (autocommit off)."""
    import psycopg

    return psycopg.connect(database_url(url), **kwargs)


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(folder.glob("*.sql")):
        m = _MIGRATION_RE.match(path.name)
        if not m:
            raise ValueError(f"migration file {path.name} does not match NNNN_name.sql")
        found.append(Migration(m.group(1), m.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {folder}")
    return found


def upgrade(conn: Connection, folder: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; return the versions applied (empty when up to date).

    A migration that was applied and has since been edited is an error: fix forward
    with a new numbered file instead.
    """
    with conn.transaction():
        # One upgrader at a time (two DAG runs starting together).
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('b2b.schema_migrations'))")
        if scalar(conn, "SELECT to_regclass('ops.schema_migrations')") is None:
            # (only on an empty database: b2b_pipeline need not be able to create schemas)
            conn.execute("CREATE SCHEMA IF NOT EXISTS ops")
            conn.execute(
                """CREATE TABLE IF NOT EXISTS ops.schema_migrations (
                       version text PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
        done: dict[str, Any] = dict(conn.execute("SELECT version, checksum FROM ops.schema_migrations").fetchall())
        applied = []
        for mig in migrations(folder):
            if mig.version in done:
                if done[mig.version] != mig.checksum:
                    raise RuntimeError(
                        f"migration {mig.path.name} was edited after it was applied; "
                        "add a new numbered migration instead"
                    )
                continue
            conn.execute(mig.sql)
            conn.execute(
                "INSERT INTO ops.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (mig.version, mig.name, mig.checksum),
            )
            applied.append(mig.version)
        if applied and scalar(conn, "SELECT to_regprocedure('ops.apply_role_grants()')"):
            # every object of the five schemas owned by b2b_pipeline, read rights per role (F41)
            conn.execute("SELECT ops.apply_role_grants()")
    for version in applied:
        log.info("applied migration %s", version)
    return applied
