"""Load the LA's own child records ("One") into ``core.child`` and its GUID links.

In production the LA's records come from its case-management system; here they come
from the simulator's ``World.la_core()`` or a CSV with the same columns. COPY into a
temporary table, then one upsert: re-loading the same records changes nothing.
"""
from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

CORE_COLUMNS = ("person_id", "upn", "forename", "middle_names", "surname", "gender", "dob", "ethnicity",
                "first_language", "sen_status", "base_id", "paon", "street", "town", "postcode")


def _norm(rec: dict) -> tuple:
    row = dict(rec)
    row.setdefault("base_id", row.get("base_dfe"))
    if not row.get("paon") and row.get("address_line1"):
        row["paon"] = row["address_line1"]
    out = []
    for col in CORE_COLUMNS:
        v = row.get(col)
        out.append(None if v in ("", None) else str(v))
    return tuple(out)


def load_core(conn, records: Iterable[dict]) -> dict:
    """Upsert LA child records; link the MIS GUIDs the LA already knows (``guid`` + ``base_dfe``)."""
    records = list(records)
    with conn.transaction():
        conn.execute(f"CREATE TEMP TABLE core_in ({', '.join(c + ' text' for c in CORE_COLUMNS)}, guid text) "
                     "ON COMMIT DROP")
        with conn.cursor() as cur, cur.copy(f"COPY core_in ({', '.join(CORE_COLUMNS)}, guid) FROM STDIN") as copy:
            for rec in records:
                copy.write_row(_norm(rec) + (rec.get("guid") or None,))
        cols = ", ".join(CORE_COLUMNS)
        casts = ", ".join("dob::date" if c == "dob" else c for c in CORE_COLUMNS)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in CORE_COLUMNS if c != "person_id")
        changed = conn.execute(
            f"""INSERT INTO core.child ({cols}, updated_by) SELECT {casts}, 'la' FROM core_in
                ON CONFLICT (person_id) DO UPDATE SET {updates}, updated_at = now(), updated_by = 'la'
                WHERE ({', '.join('core.child.' + c for c in CORE_COLUMNS if c != 'person_id')})
                      IS DISTINCT FROM ({', '.join('EXCLUDED.' + c for c in CORE_COLUMNS if c != 'person_id')})""",
        ).rowcount
        links = conn.execute(
            """INSERT INTO core.child_link (base_id, student_guid, person_id, linked_by)
               SELECT base_id, guid, person_id, 'la' FROM core_in WHERE guid IS NOT NULL AND base_id IS NOT NULL
               ON CONFLICT (base_id, student_guid) DO NOTHING""").rowcount
    return {"records": len(records), "changed": changed, "new_links": links}


def read_core_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
