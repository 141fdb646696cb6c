"""Schema migrations against real PostgreSQL."""
import pytest

from b2b import db as b2bdb


def test_upgrade_is_idempotent(db):
    # the template was already upgraded: nothing pending
    assert b2bdb.upgrade(db) == []
    versions = [r[0] for r in db.execute("SELECT version FROM ops.schema_migrations ORDER BY 1")]
    assert versions == [m.version for m in b2bdb.migrations()]
    schemas = {r[0] for r in db.execute("SELECT schema_name FROM information_schema.schemata")}
    assert {"raw", "staging", "core", "results", "ops"} <= schemas


def test_edited_migration_is_refused(db, tmp_path):
    for m in b2bdb.migrations():
        (tmp_path / m.path.name).write_text(m.sql)
    first = sorted(tmp_path.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(RuntimeError, match="edited after it was applied"):
        b2bdb.upgrade(db, folder=tmp_path)


def test_new_migration_applies_once(db, tmp_path):
    for m in b2bdb.migrations():
        (tmp_path / m.path.name).write_text(m.sql)
    (tmp_path / "9999_probe.sql").write_text("CREATE TABLE ops.probe (x int);")
    assert b2bdb.upgrade(db, folder=tmp_path) == ["9999"]
    assert b2bdb.upgrade(db, folder=tmp_path) == []
    assert db.execute("SELECT count(*) FROM ops.probe").fetchone()[0] == 0


def test_badly_named_migration_is_refused(tmp_path):
    (tmp_path / "1_x.sql").write_text("select 1")
    with pytest.raises(ValueError, match="NNNN_name.sql"):
        b2bdb.migrations(tmp_path)


@pytest.mark.parametrize("conninfo", [
    "postgresql://u:s3cret@h:5432/d",
    "postgresql://u@h:5432/d?password=s3cret&sslmode=require",
    "postgres://u@h/d?sslmode=require&password=s3cret",
    "host=h port=5432 user=u password=s3cret dbname=d",
    "host=h user=u password='s3cret' dbname=d",
    "postgresql+psycopg2://u:s3cret@h:5432/d",  # SQLAlchemy (Airflow metadata DB)
])
def test_redact_hides_the_password_in_every_conninfo_form(conninfo):
    out = b2bdb.redact(conninfo)
    assert "s3cret" not in out
    assert "password=***" in out and "host=h" in out and "user=u" in out and "dbname=d" in out


def test_redact_keeps_a_passwordless_url_and_never_echoes_an_unparseable_one():
    assert b2bdb.redact("postgresql://u@h/d") == "user=u dbname=d host=h"
    assert "s3cret" not in b2bdb.redact("password=s3cret host='unterminated")
