"""Shared bench helpers: pre-rendered messages, and the floors stages are measured against.

* ``prerender``: the messages a base sends for a window, fetched ONCE through the real
  operator and hooks (simulator over loopback HTTP) before any timing, so the simulator's
  own XML/JSON rendering and HTTP are not counted in the extract figures;
* ``parse_floor``: a bare lxml parse (no schema, no conversion) of the same XML bytes and a
  bare ``json.loads`` of the same JSON pages;
* ``copy_floor``: a bare ``COPY`` of the same block rows into an unindexed temporary table.
"""
from __future__ import annotations

import json
import time


def prerender(world, base, data_filter: str, start, end) -> list:
    from b2b_operators.extract import ExtractOperator

    conn_id = f"{'sims7' if base.kind == 'sims7' else 'sims_primary'}_{base.dfe}"
    op = ExtractOperator(task_id="extract", base_id=base.dfe, base_kind=base.kind, conn_id=conn_id,
                         task_key=data_filter, data_filter=data_filter)
    return list(op.messages(start, end))


def parse_floor(messages) -> float:
    """Seconds for a bare lxml parse / json.loads of the messages' bytes."""
    from lxml import etree

    t = time.perf_counter()
    for m in messages:
        if m.content_type == "application/xml":
            etree.fromstring(m.content)
        else:
            json.loads(m.content)
    return time.perf_counter() - t


def copy_floor(conn, file_ids: list[int]) -> tuple[float, int]:
    """(seconds, rows) of a bare COPY of these files' block rows into a temporary table."""
    rows = conn.execute("""SELECT file_id, ordinal, base_id, block_type, student_guid, content::text
                             FROM raw.inbound_block WHERE file_id = ANY(%s)""", (file_ids,)).fetchall()
    with conn.transaction():
        conn.execute("DROP TABLE IF EXISTS pg_temp.floor_block")
        conn.execute("""CREATE TEMP TABLE floor_block (file_id bigint, ordinal int, base_id text, block_type text,
                        student_guid text, content jsonb) ON COMMIT DROP""")
        t = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY floor_block FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        dt = time.perf_counter() - t
    return dt, len(rows)
