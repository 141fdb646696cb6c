"""Shared fixtures: real PostgreSQL (embedded pgserver unless B2B_TEST_DATABASE_URL is set).

Each test that asks for ``db`` gets a brand-new database cloned from a migrated template,
so tests never see each other's rows and never touch the demo's data.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from b2b import PROJECT_ROOT
from b2b import db as b2bdb

TEST_HOME = Path(os.environ.get("B2B_HOME") or PROJECT_ROOT / ".b2b") / "test"

# Airflow reads its configuration when first imported: point it at a test home
# (its own sqlite metadata DB) before any test module imports airflow.
from b2b.cli.airflow_env import project_airflow_settings  # noqa: E402

os.environ.update(project_airflow_settings(TEST_HOME / "airflow"))
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
TEMPLATE = "b2b_test_template"


def _with_db(url: str, dbname: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(url, dbname=dbname)


@pytest.fixture(scope="session")
def pg_admin_url():
    """The test server's URL; an embedded one started here is stopped when the session ends
    (left running only while another live process, e.g. a second pytest, still holds it)."""
    if os.environ.get("B2B_TEST_DATABASE_URL"):
        yield os.environ["B2B_TEST_DATABASE_URL"]
        return
    yield b2bdb.embedded_url(TEST_HOME / "pgdata")
    b2bdb.stop_embedded(TEST_HOME / "pgdata", if_unused=True)


@pytest.fixture(scope="session")
def pg_template(pg_admin_url):
    import psycopg

    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {TEMPLATE}")
    with psycopg.connect(_with_db(pg_admin_url, TEMPLATE)) as conn:
        b2bdb.upgrade(conn)
    return TEMPLATE


@pytest.fixture
def db_url(pg_admin_url, pg_template):
    """URL of a fresh, migrated, empty database for this test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {pg_template}")
    yield _with_db(pg_admin_url, name)
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def db(db_url):
    import psycopg

    with psycopg.connect(db_url) as conn:
        yield conn
