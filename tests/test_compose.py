"""docker-compose.yaml checked statically (no Docker engine here): the file parses, images are
pinned, every path it mounts or runs exists, services are wired to each other."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def test_has_the_airflow_3_services_postgres_and_the_simulator():
    commands = {name: " ".join(map(str, s.get("command") or [])) for name, s in SERVICES.items()}
    for cmd in ("airflow api-server", "airflow scheduler", "airflow dag-processor", "airflow triggerer"):
        assert any(c == cmd for c in commands.values()), cmd
    assert "postgres" in SERVICES and "simulator" in SERVICES
    assert "serve" in commands["simulator"]


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


def test_entrypoints_exist_and_are_executable():
    for name, s in SERVICES.items():
        ep = s.get("entrypoint") or []
        if ep and ep[0].startswith("/opt/b2b/"):
            script = ROOT / ep[0][len("/opt/b2b/"):]
            assert script.is_file() and os.access(script, os.X_OK), (name, script)


def test_depends_on_existing_services():
    for name, s in SERVICES.items():
        for dep in s.get("depends_on") or {}:
            assert dep in SERVICES, (name, dep)


def test_connections_and_catalogue_paths_are_usable():
    env = SERVICES["airflow-scheduler"]["environment"]
    assert env["AIRFLOW_CONN_B2B_WAREHOUSE"].startswith("postgresql://")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    cat = env["B2B_CATALOGUE"]
    assert cat.startswith("/opt/b2b/") and (ROOT / cat[len("/opt/b2b/"):]).is_file()
    # the connection wrapper's command gives every demo school a connection for the simulator service
    out = subprocess.run([sys.executable, "-m", "simulator", "connections", "--format", "env",
                          "--base-url", env["SIMULATOR_URL"]], capture_output=True, text=True, check=True).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("export AIRFLOW_CONN_")]
    assert len(lines) == 6
    conn = json.loads(lines[0].split("=", 1)[1].strip("'"))
    assert conn["host"] == "simulator" and conn["port"] == 8765


@pytest.mark.parametrize("svc", ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                                 "airflow-triggerer", "airflow-init"])
def test_airflow_services_share_the_metadata_database_and_secret(svc):
    env = SERVICES[svc]["environment"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres:5432/airflow")
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == SERVICES["airflow-scheduler"]["environment"][
        "AIRFLOW__API_AUTH__JWT_SECRET"]
