"""``b2b base migrate``: make a SIMS 7 base a SIMS Primary base (issue 4; F1, F3, F4, F5).

What it does, in the catalogue file (comments and layout kept, written only if the result
passes every catalogue check):

* the base becomes ``kind: sims_primary`` with ``migrated_on`` (the changed-data watermark:
  no changed-data window reaches back before it, F5) and its SIMS Primary connection id;
* tasks that grouped it with SIMS 7 bases no longer do (F4): it joins the SIMS Primary task
  with the same key when there is one, else keeps a copy of the task for itself alone;
* SIMS 7-only tasks (attendance other than changed data, attainment, return to school)
  stay on record for the base but are inactive (F3) — ``b2b config check`` lists them;
* the four SIMS Primary settings (F1) — all required — are written as an Airflow
  connection file (mode 0600, under ``$B2B_HOME/connections/``, never printed) to import
  with ``airflow connections import``.

Migration is irreversible: a SIMS Primary base cannot be migrated (back) again. A snapshot
run is advised (the command prints the DAG to trigger).
"""
from __future__ import annotations

import copy
import io
import json
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from b2b.errors import OpsError


class MigrationError(OpsError):
    """The migration cannot be done; nothing was changed."""


@dataclass
class MigrationResult:
    dfe: str
    migrated_on: date
    conn_id: str
    connection_file: Path
    moved: list[str] = field(default_factory=list)      # task keys the base joined or kept
    inactive: list[str] = field(default_factory=list)   # task keys now inactive for it (F3)
    snapshot_dag: str | None = None


def _yaml() -> Any:
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 120
    return y


def migrate_base(path: Path, dfe: str, *, client_id: str, secret: str, subscription_key: str, org_id: str,
                 migrated_on: date, conn_id: str | None = None, home: Path | None = None) -> MigrationResult:
    from b2b.config import catalogue as cat_mod

    settings = {"Client ID": client_id, "Secret": secret, "Subscription Key": subscription_key,
                "Organisation ID": org_id}
    missing = [k for k, v in settings.items() if not (v or "").strip()]
    if missing:
        raise MigrationError(f"base {dfe}: SIMS Primary needs all four settings (F1); missing: {', '.join(missing)}")
    y = _yaml()
    data = y.load(path.read_text())
    base = next((b for b in data["bases"] if str(b["dfe"]) == dfe), None)
    if base is None:
        raise MigrationError(f"base {dfe} is not in the catalogue {path}")
    if base.get("kind") == "sims_primary":
        raise MigrationError(f"base {dfe} already uses SIMS Primary (migrated {base.get('migrated_on')}); "
                             "migration is irreversible (F1)")
    locked = [str(t["key"]) for t in data["tasks"] if dfe in [str(b) for b in t.get("bases", [])] and t.get("lockdown")]
    if base.get("lockdown") or locked:
        what = "all its tasks are" if base.get("lockdown") else f"task(s) {', '.join(locked)} are"
        raise MigrationError(f"base {dfe}: {what} locked for school use only (F10); the school must release "
                             "them before the LA can change them")
    kinds = {str(b["dfe"]): b.get("kind") for b in data["bases"]}
    conn_id = conn_id or f"sims_primary_{dfe}"
    base["kind"] = "sims_primary"
    base["conn_id"] = conn_id
    base["migrated_on"] = migrated_on
    kinds[dfe] = "sims_primary"
    result = MigrationResult(dfe, migrated_on, conn_id, Path())
    new_tasks = []
    for t in list(data["tasks"]):
        bases = [str(b) for b in t.get("bases", [])]
        if dfe not in bases:
            continue
        others = [b for b in bases if b != dfe]
        task = cat_mod._task_from(cat_mod._plain(dict(t)) | {"bases": [dfe]})
        f3 = cat_mod.inactive_reason(cat_mod._base_from(cat_mod._plain(dict(base))), task)
        if f3:
            result.inactive.append(t["key"])
        if not others or all(kinds.get(b) == "sims_primary" for b in others):
            result.moved.append(t["key"])
            continue  # a task of its own (or of SIMS Primary bases only): nothing to regroup
        t["bases"].remove(next(b for b in t["bases"] if str(b) == dfe))
        target = None
        if not f3:
            target = next((o for o in data["tasks"] if o is not t and o.get("key") == t["key"]
                           and o.get("filter") == t.get("filter") and o.get("bases")
                           and all(kinds.get(str(b)) == "sims_primary" for b in o["bases"])), None)
        if target is not None:
            target["bases"].append(dfe)
        else:
            mine = copy.deepcopy(t)
            mine["bases"] = [dfe]
            mine["name"] = f"{t.get('name', t['key'])} ({dfe}, SIMS Primary)" if not f3 else \
                f"{t.get('name', t['key'])} ({dfe}, before migration)"
            new_tasks.append(mine)
        result.moved.append(t["key"])
    data["tasks"].extend(new_tasks)
    plain = cat_mod._plain(json.loads(json.dumps(_to_builtin(data), default=str)))
    errors = cat_mod.schema_problems(plain)
    if not errors:
        errors, _ = cat_mod.rule_problems(plain)
    if errors:
        raise MigrationError(f"base {dfe}: the migrated catalogue would be invalid: " + "; ".join(errors))
    result.connection_file = _write_connection(home, conn_id, client_id, secret, subscription_key, org_id)
    buf = io.StringIO()
    y.dump(data, buf)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(buf.getvalue())
    tmp.replace(path)
    built = cat_mod.build(plain)
    snap = [s.dag_id for s in built.dag_specs(include_inactive=False)
            if s.base.dfe == dfe and s.task.filter == "snapshot" and s.task.group_type == "ncy"]
    result.snapshot_dag = snap[0] if snap else None
    return result


def _to_builtin(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_builtin(v) for v in obj]
    if isinstance(obj, date):
        return obj.isoformat()
    if isinstance(obj, bool) or obj is None:
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj)
    return str(obj)


def connection(client_id: str, secret: str, subscription_key: str, org_id: str, host: str = "sims-primary.example",
               schema: str = "https") -> dict:
    """The Airflow connection SimsPrimaryHook reads (docs/connections.md)."""
    return {"conn_type": "http", "host": host, "schema": schema, "login": client_id, "password": secret,
            "extra": json.dumps({"subscription_key": subscription_key, "organisation_id": org_id})}


def _write_connection(home: Path | None, conn_id: str, *args: Any) -> Path:
    from b2b import db

    folder = Path(home or db.b2b_home()) / "connections"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{conn_id}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({conn_id: connection(*args)}, f, indent=2)
    return path
