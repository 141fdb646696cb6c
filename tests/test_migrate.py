"""``b2b base migrate`` (issue 4): irreversible, all four settings, watermark, F3 inactive tasks, F4 regrouping."""
import json
import os
import shutil
import stat
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from b2b.config.catalogue import DEFAULT_PATH, check_catalogue, load_catalogue
from b2b.config.windows import extract_window
from b2b.ops.base_migration import MigrationError, migrate_base

SETTINGS = dict(client_id="cid-1", secret="s3cr3t-value", subscription_key="sub-key", org_id="org-9")


@pytest.fixture
def cat(tmp_path):
    p = tmp_path / "catalogue.yaml"
    shutil.copy(DEFAULT_PATH, p)
    return p


def test_migrating_a_sims7_base(cat, tmp_path):
    r = migrate_base(cat, "8862001", migrated_on=date(2026, 11, 2), home=tmp_path, **SETTINGS)
    errors, warnings = check_catalogue(cat)
    assert errors == []
    c = load_catalogue(cat)
    b = c.base("8862001")
    assert (b.kind, b.migrated_on, b.conn_id) == ("sims_primary", date(2026, 11, 2), "sims_primary_8862001")
    specs = {s.dag_id: s for s in c.dag_specs() if s.base.dfe == "8862001"}
    # F3: SIMS 7-only tasks stay on record, inactive; the rest keep running from SIMS Primary
    for key in ("attendance_all", "attainment", "return_to_school"):
        assert not specs[f"b2b__8862001__{key}"].active, key
    for key in ("snapshot", "changed_data", "lac_snapshot"):
        assert specs[f"b2b__8862001__{key}"].active, key
    # F4: no task groups it with SIMS 7 bases any more; it joined the SIMS Primary snapshot task
    for t in c.tasks:
        kinds = {c.base(d).kind for d in t.bases}
        assert len(kinds) == 1, t.key
    snap = next(t for t in c.tasks if t.key == "snapshot" and "8862001" in t.bases)
    assert set(snap.bases) == {"8862001", "8862003", "8862004"}
    assert r.snapshot_dag == "b2b__8862001__snapshot"
    # comments survive the rewrite
    assert "# The demo LA's task catalogue" in cat.read_text()
    # the connection holds the four settings (F1), readable only by its owner, and works with the hook
    mode = stat.S_IMODE(os.stat(r.connection_file).st_mode)
    assert mode == 0o600
    conn = json.loads(r.connection_file.read_text())["sims_primary_8862001"]
    os.environ["AIRFLOW_CONN_SIMS_PRIMARY_8862001"] = json.dumps(conn)
    try:
        from b2b_hooks.sims_primary import SimsPrimaryHook

        got = SimsPrimaryHook(sims_primary_conn_id="sims_primary_8862001").settings()
        assert got == {"login": "cid-1", "password": "s3cr3t-value", "subscription_key": "sub-key",
                       "organisation_id": "org-9"}
    finally:
        del os.environ["AIRFLOW_CONN_SIMS_PRIMARY_8862001"]


def test_migration_date_is_the_changed_data_watermark(cat, tmp_path):
    migrate_base(cat, "8862002", migrated_on=date(2026, 11, 2), home=tmp_path, **SETTINGS)
    b = load_catalogue(cat).base("8862002")
    end = datetime(2026, 11, 3, 18, tzinfo=UTC)
    since, until = extract_window("changed_data", None, end - timedelta(days=7), end, b.migrated_on)
    assert since == datetime(2026, 11, 2, tzinfo=UTC) and until == end
    since, _ = extract_window("changed_data", None, datetime(2026, 1, 1, tzinfo=UTC),
                              datetime(2026, 12, 1, tzinfo=UTC), None)
    assert since == datetime(2026, 12, 1, tzinfo=UTC) - timedelta(days=92)  # never > 3 months (F5)


def test_all_four_settings_are_required(cat, tmp_path):
    before = cat.read_text()
    with pytest.raises(MigrationError, match="missing: Subscription Key, Organisation ID"):
        migrate_base(cat, "8862001", migrated_on=date(2026, 11, 2), home=tmp_path,
                     **dict(SETTINGS, subscription_key="", org_id=" "))
    assert cat.read_text() == before  # nothing changed


def test_migration_is_irreversible_and_names_unknown_bases(cat, tmp_path):
    with pytest.raises(MigrationError, match="already uses SIMS Primary.*irreversible"):
        migrate_base(cat, "8862003", migrated_on=date(2026, 11, 2), home=tmp_path, **SETTINGS)
    with pytest.raises(MigrationError, match="base 8869999 is not in the catalogue"):
        migrate_base(cat, "8869999", migrated_on=date(2026, 11, 2), home=tmp_path, **SETTINGS)


def test_command_line_never_prints_the_secret(cat, tmp_path):
    env = dict(os.environ, B2B_HOME=str(tmp_path))
    res = subprocess.run([sys.executable, "-m", "b2b.cli", "base", "migrate", "8864001", "--client-id", "c",
                          "--secret", "-", "--subscription-key", "k", "--org-id", "o", "--on", "2026-11-02",
                          "--catalogue", str(cat)], input="very-secret-xyz\n", capture_output=True, text=True,
                         env=env)
    assert res.returncode == 0, res.stderr
    assert "very-secret-xyz" not in res.stdout + res.stderr
    assert "airflow dags trigger b2b__8864001__snapshot" in res.stdout
    assert "airflow connections import" in res.stdout
    assert Path(tmp_path, "connections", "sims_primary_8864001.json").exists()
    res = subprocess.run([sys.executable, "-m", "b2b.cli", "base", "migrate", "8864001", "--client-id", "c",
                          "--secret", "x", "--subscription-key", "k", "--org-id", "o", "--catalogue", str(cat)],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 1 and "irreversible" in res.stderr


def test_tasks_locked_for_school_use_cannot_be_changed_from_the_la_side(cat, tmp_path):
    before = cat.read_text()
    with pytest.raises(MigrationError, match="base 8864002: all its tasks are locked for school use only"):
        migrate_base(cat, "8864002", migrated_on=date(2026, 11, 2), home=tmp_path, **SETTINGS)
    text = cat.read_text().replace("  - key: leavers\n", "  - key: leavers\n    lockdown: true\n")
    cat.write_text(text)
    with pytest.raises(MigrationError, match=r"task\(s\) leavers are locked"):
        migrate_base(cat, "8864001", migrated_on=date(2026, 11, 2), home=tmp_path, **SETTINGS)
    assert not (tmp_path / "connections").exists()
    assert "dfe: \"8864002\"" in before and cat.read_text() == text  # nothing rewritten
