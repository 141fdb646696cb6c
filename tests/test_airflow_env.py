"""The project's Airflow environment (`b2b airflow`, `b2b airflow-env`): PATH, connections, login."""
import json
import os
import stat

from b2b.cli import airflow_env as af


def test_venv_bin_comes_first_on_path_so_standalone_finds_its_components(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    path = af.project_airflow_settings()["PATH"].split(os.pathsep)
    assert path[0] == str(af.venv_bin()) and (af.venv_bin() / "airflow").exists()
    assert path[1:] == ["/usr/bin", "/bin"]


def test_warehouse_connection_from_socket_and_tcp_urls():
    sock = af.warehouse_connection("postgresql://postgres:@/postgres?host=/srv/b2b/pgdata")
    assert sock == {"conn_type": "postgres", "host": "/srv/b2b/pgdata", "schema": "postgres", "login": "postgres"}
    tcp = af.warehouse_connection("postgresql://b2b_pipeline:s3cret@db.example:6432/b2b")
    assert tcp == {"conn_type": "postgres", "host": "db.example", "port": 6432, "schema": "b2b",
                   "login": "b2b_pipeline", "password": "s3cret"}


def test_password_file_is_private_and_keeps_existing_passwords(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", raising=False)
    first = af.ensure_password_file("admin:admin")
    path = tmp_path / "simple_auth_manager_passwords.json.generated"
    assert af.password_file() == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first["admin"]) >= 16
    again = af.ensure_password_file("admin:admin,analyst:viewer")
    assert again["admin"] == first["admin"] and again["analyst"] != first["admin"]
    assert json.loads(path.read_text()) == again


def test_metadata_url_on_the_embedded_server_uses_its_socket(pg_admin_url):
    import psycopg

    url = af.embedded_metadata_url(pg_admin_url, dbname="airflow_meta_probe")
    try:
        assert url.startswith("postgresql+psycopg2://") and "/airflow_meta_probe" in url
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        with engine.connect() as c:
            assert c.execute(text("SELECT current_database()")).scalar() == "airflow_meta_probe"
        engine.dispose()
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS airflow_meta_probe WITH (FORCE)")
