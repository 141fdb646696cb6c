"""Alerts ops can route (issue 4; F19b): a school changed one of its tasks.

Each run of a task records the task's definition; when it differs from the last one
recorded for that base and task, an ``ops.alert`` row is written and a warning goes to the
``b2b.alerts`` logger (route it with Airflow's logging config, or read the table).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psycopg import Connection

import hashlib
import json
import logging

alert_log = logging.getLogger("b2b.alerts")


def check_task_definition(conn: Connection, base_id: str, task_key: str, definition: dict) -> dict | None:
    """Record the definition; return the alert (changed fields) when it differs from the last one."""
    text = json.dumps(definition, sort_keys=True, default=str)
    fingerprint = hashlib.sha256(text.encode()).hexdigest()
    with conn.transaction():
        row = conn.execute("SELECT fingerprint, definition FROM ops.task_definition WHERE base_id = %s "
                           "AND task_key = %s FOR UPDATE", (base_id, task_key)).fetchone()
        conn.execute(
            """INSERT INTO ops.task_definition (base_id, task_key, fingerprint, definition)
               VALUES (%s, %s, %s, %s)
               ON CONFLICT (base_id, task_key) DO UPDATE
                  SET fingerprint = EXCLUDED.fingerprint, definition = EXCLUDED.definition, seen_at = now()""",
            (base_id, task_key, fingerprint, text))
        if row is None or row[0] == fingerprint:
            return None
        old = row[1]
        new = json.loads(text)
        changed = {k: {"was": old.get(k), "now": new.get(k)} for k in sorted(set(old) | set(new))
                   if old.get(k) != new.get(k)}
        conn.execute("INSERT INTO ops.alert (kind, base_id, task_key, details) VALUES ('task_changed', %s, %s, %s)",
                     (base_id, task_key, json.dumps({"changed": changed})))
    alert_log.warning("base %s: task %s changed (%s)", base_id, task_key, ", ".join(changed))
    return {"base_id": base_id, "task_key": task_key, "changed": changed}
