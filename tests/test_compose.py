"""docker-compose.yaml checked statically (no Docker engine here): the file parses, images are
pinned, every path it mounts or runs exists, services are wired to each other, it is shaped like
Airflow's official compose (dumb-init entrypoint kept, healthchecks, depends_on conditions), it
holds no working secret, and the `celery` profile scales out. When a `docker compose` client is
installed, `docker compose config` (which needs no daemon) must accept it too."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yaml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
AIRFLOW_SERVICES = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-init", "airflow-worker"]
SECRETS = ("POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_API_SECRET_KEY",
           "B2B_DB_PASSWORD_B2B_PIPELINE", "B2B_DB_PASSWORD_B2B_ANALYST", "B2B_DB_PASSWORD_B2B_OFFICER",
           "B2B_DB_PASSWORD_B2B_UI")


def _command(s) -> str:
    cmd = s.get("command") or []
    return cmd if isinstance(cmd, str) else " ".join(map(str, cmd))


def test_has_the_airflow_3_services_postgres_and_the_simulator():
    commands = {name: _command(s) for name, s in SERVICES.items()}
    for cmd in ("api-server", "scheduler", "dag-processor", "triggerer"):
        assert any(v == cmd or v.endswith(f"exec airflow {cmd}") for v in commands.values()), cmd
    assert "postgres" in SERVICES and "simulator" in SERVICES
    assert "b2b-simulator serve" in commands["simulator"]


def test_images_are_pinned():
    images = [s["image"] for s in SERVICES.values() if "image" in s]
    assert images
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest", image
    base = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.M).group(1)
    assert re.fullmatch(r"apache/airflow:\d+\.\d+\.\d+-python3\.11", base), base


def test_dockerfile_airflow_matches_the_pinned_airflow():
    from importlib.metadata import version

    base = re.search(r"^FROM\s+apache/airflow:(\S+)-python", DOCKERFILE.read_text(), re.M).group(1)
    assert base == version("apache-airflow")


def test_build_contexts_and_dockerfile_copies_exist():
    for s in SERVICES.values():
        if "build" in s:
            ctx = ROOT / s["build"]["context"]
            assert (ctx / s["build"]["dockerfile"]).is_file()
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY") and " . " not in line:
            for src in line.split()[2:-1]:
                assert (ROOT / src).exists(), src


def test_bind_mounts_point_at_files_that_exist():
    named = set(COMPOSE.get("volumes") or {})
    for name, s in SERVICES.items():
        for v in s.get("volumes") or []:
            src = v.split(":")[0]
            if src.startswith("."):
                assert (ROOT / src).exists(), (name, src)
            else:
                assert src in named, (name, src)


def test_the_images_dumb_init_entrypoint_is_kept():
    """No service replaces the image's entrypoint (dumb-init, then Airflow's /entrypoint, which
    waits for the database and runs `bash …` or an airflow subcommand); scripts they run exist."""
    for name, s in SERVICES.items():
        assert "entrypoint" not in s, name
        cmd = s.get("command") or []
        if isinstance(cmd, list) and cmd and cmd[0] == "bash" and cmd[1].startswith("/opt/b2b/"):
            script = ROOT / cmd[1][len("/opt/b2b/"):]
            assert script.is_file() and os.access(script, os.X_OK), (name, script)
    assert "ENTRYPOINT" not in DOCKERFILE.read_text()


def test_dockerignore_keeps_state_secrets_and_the_venv_out_of_the_image():
    ignored = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    for pattern in (".venv", ".b2b", "**/pgdata", ".env", ".git"):
        assert pattern in ignored, pattern
    assert any("passwords" in p or p.endswith(".generated") for p in ignored)


def test_b2b_home_volume_is_writable_by_the_airflow_user():
    text = DOCKERFILE.read_text()
    assert re.search(r"chown -R airflow:root /opt/airflow/b2b", text)
    # the last USER of the image is airflow, and the init service hands the volume to AIRFLOW_UID
    assert re.findall(r"^USER (\S+)", text, re.M)[-1] == "airflow"
    assert "b2b-home:/opt/airflow/b2b" in SERVICES["airflow-scheduler"]["volumes"]
    init = (ROOT / "docker" / "init.sh").read_text()
    assert 'chown -R "${uid}:0" /opt/airflow/b2b' in init


@pytest.mark.parametrize("svc,check", [("airflow-scheduler", "8974/health"),
                                       ("airflow-dag-processor", "--job-type DagProcessorJob"),
                                       ("airflow-triggerer", "--job-type TriggererJob"),
                                       ("airflow-apiserver", "/api/v2/version"),
                                       ("postgres", "pg_isready"), ("simulator", "_sim/health")])
def test_services_have_healthchecks(svc, check):
    assert check in " ".join(SERVICES[svc]["healthcheck"]["test"])
    if svc == "airflow-scheduler":
        assert SERVICES[svc]["environment"]["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "True"


def test_services_wait_on_health_and_init():
    for name in AIRFLOW_SERVICES:
        deps = SERVICES[name].get("depends_on") or {}
        assert isinstance(deps, dict) and deps, name
        for dep, cond in deps.items():
            assert dep in SERVICES, (name, dep)
            assert cond["condition"] in ("service_healthy", "service_completed_successfully"), (name, dep)
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dep], (name, dep)
        assert deps["postgres"]["condition"] == "service_healthy"
        if name != "airflow-init":
            assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
    assert SERVICES["airflow-scheduler"]["depends_on"]["simulator"]["condition"] == "service_healthy"
    assert SERVICES["airflow-worker"]["depends_on"]["airflow-scheduler"]["condition"] == "service_healthy"


def test_mounted_code_is_the_code_that_runs():
    """PLUGINS_FOLDER is the mounted folder, the DAG files are the catalogue's (generated from the
    mounted catalogue onto the shared b2b-home volume, issue 15), and PYTHONPATH has no other copy
    of the plugins ahead of them (the image's copy sits under the same mounts)."""
    env = SERVICES["airflow-scheduler"]["environment"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["airflow-scheduler"]["volumes"]}
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == env["B2B_DAGS_FOLDER"]
    assert env["AIRFLOW__CORE__DAGS_FOLDER"].startswith(next(m for m, v in mounts.items() if v == "b2b-home"))
    assert env["AIRFLOW__DAG_PROCESSOR__FILE_PARSING_SORT_MODE"] == "modified_time"
    assert "--write-dags" in (ROOT / "docker" / "init.sh").read_text()
    assert "--write-dags --watch" in " ".join(SERVICES["airflow-dag-processor"]["command"])
    assert mounts[env["AIRFLOW__CORE__PLUGINS_FOLDER"]] == "./plugins"
    assert mounts["/opt/b2b/b2b"] == "./b2b" and mounts["/opt/b2b/include"] == "./include"
    pythonpath = re.search(r"PYTHONPATH=(\S+)", DOCKERFILE.read_text()).group(1).split(":")
    assert all(p == "/opt/b2b" or p in mounts for p in pythonpath), pythonpath


def test_b2b_commands_in_the_containers_reach_the_warehouse():
    env = SERVICES["airflow-scheduler"]["environment"]
    assert env["B2B_DATABASE_URL"].startswith("postgresql://") and env["B2B_DATABASE_URL"].endswith("@postgres:5432/b2b")
    # DAG runs use the least-privilege pipeline role (F41), the same warehouse database
    warehouse = env["AIRFLOW_CONN_B2B_WAREHOUSE"]
    assert warehouse.startswith("postgresql://b2b_pipeline:${B2B_DB_PASSWORD_B2B_PIPELINE:?")
    assert warehouse.endswith("@postgres:5432/b2b")
    assert "b2b db roles" in (ROOT / "docker" / "init.sh").read_text()


def test_no_working_default_secrets_and_no_all_admins():
    assert "SIMPLE_AUTH_MANAGER_ALL_ADMINS" not in COMPOSE_TEXT
    assert "change-me" not in COMPOSE_TEXT
    for secret in SECRETS:
        uses = re.findall(r"\$\{" + secret + r"(:?[-?=+])?([^}]*)\}", COMPOSE_TEXT)
        assert uses, secret
        for op, _ in uses:
            assert op == ":?", f"{secret} must be required (${{{secret}:?message}}), not defaulted"
    for name, s in SERVICES.items():
        for key, value in (s.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|FERNET", key) and key != "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE":
                assert "${" in str(value), (name, key)
    env = SERVICES["airflow-scheduler"]["environment"]
    assert "AIRFLOW_FERNET_KEY" in env["AIRFLOW__CORE__FERNET_KEY"]
    users = env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"]
    roles = {u.split(":")[1] for u in re.search(r":-([^}]*)\}", users).group(1).split(",")}
    assert roles <= {"viewer", "user", "op", "admin"} and "viewer" in roles


def test_make_env_generates_every_required_secret_and_a_valid_fernet_key():
    out = subprocess.run(["bash", str(ROOT / "docker" / "make-env.sh")], capture_output=True, text=True,
                         check=True).stdout
    values = dict(ln.split("=", 1) for ln in out.splitlines() if ln and not ln.startswith("#"))
    for secret in SECRETS:
        assert len(values[secret]) >= 32, secret
    from cryptography.fernet import Fernet

    Fernet(values["AIRFLOW_FERNET_KEY"].encode())  # raises when not a Fernet key
    again = subprocess.run(["bash", str(ROOT / "docker" / "make-env.sh")], capture_output=True, text=True,
                           check=True).stdout
    assert values["POSTGRES_PASSWORD"] not in again  # fresh secrets every time


def test_celery_profile_scales_out_with_redis_and_workers():
    for name in ("redis", "airflow-worker"):
        assert SERVICES[name]["profiles"] == ["celery"], name
    worker = SERVICES["airflow-worker"]
    assert worker["command"] == "celery worker"
    assert "B2B_CELERY_WORKERS" in str(worker["deploy"]["replicas"])
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    env = SERVICES["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "${AIRFLOW_EXECUTOR:-LocalExecutor}"
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379")
    for svc in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        assert "profiles" not in SERVICES[svc], svc  # the core services run in every profile


def test_connections_and_catalogue_paths_are_usable():
    env = SERVICES["airflow-scheduler"]["environment"]
    assert env["AIRFLOW_CONN_B2B_WAREHOUSE"].startswith("postgresql://")
    cat = env["B2B_CATALOGUE"]
    assert cat.startswith("/opt/b2b/") and (ROOT / cat[len("/opt/b2b/"):]).is_file()
    # airflow-init imports these into the metadata DB: every demo school, pointing at the simulator service
    init = (ROOT / "docker" / "init.sh").read_text()
    assert "airflow connections import" in init and "b2b-simulator connections --format json" in init
    out = subprocess.run([sys.executable, "-m", "simulator", "connections", "--format", "json",
                          "--base-url", env["SIMULATOR_URL"]], capture_output=True, text=True, check=True).stdout
    conns = json.loads(out)
    assert len(conns) == 6
    assert all(c["host"] == "simulator" and c["port"] == 8765 for c in conns.values())


@pytest.mark.parametrize("svc", AIRFLOW_SERVICES)
def test_airflow_services_share_the_metadata_database_and_secrets(svc):
    env = SERVICES[svc]["environment"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY"):
        assert env[key] == SERVICES["airflow-scheduler"]["environment"][key], key


def _compose_cli():
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) and subprocess.run(cmd + ["version"], capture_output=True).returncode == 0:
            return cmd
    return None


def test_docker_compose_config_accepts_the_file_and_refuses_missing_secrets(tmp_path):
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose client installed (Debian: docker-compose package)")
    env = {k: v for k, v in os.environ.items() if k not in SECRETS}
    missing = subprocess.run(cli + ["-f", str(ROOT / "docker-compose.yaml"), "config", "-q"], capture_output=True,
                             text=True, env=env, cwd=tmp_path)
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr + missing.stdout
    env.update({s: "x" * 40 for s in SECRETS})
    for profile in ([], ["--profile", "celery"]):
        ok = subprocess.run(cli + ["-f", str(ROOT / "docker-compose.yaml"), *profile, "config", "-q"],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
        assert ok.returncode == 0, ok.stderr
