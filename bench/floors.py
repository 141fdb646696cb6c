"""Shared bench helpers: pre-rendered messages, and the floors stages are measured against.

* ``prerender``: the messages a base sends for a window, fetched ONCE through the real
  operator and hooks (simulator over loopback HTTP) before any timing, so the simulator's
  own XML/JSON rendering and HTTP are not counted in the extract figures;
* ``parse_floor``: a bare lxml parse (no schema, no conversion) of the same XML bytes and a
  bare ``json.loads`` of the same JSON pages;
* ``copy_floor``: a bare ``COPY`` of the same block rows, as one buffer, into an unindexed temporary table.
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
    """(seconds, rows) of a bare COPY of these files' block rows into an unindexed temporary table
    (``content`` jsonb, as stored). The rows are read back as COPY text first, so only the COPY
    itself is timed: one buffer, no per-row work in Python (issue 15: until then the floor wrote
    row by row and counted psycopg's per-row adaptation, which made it ~2x too high)."""
    buf = bytearray()
    with conn.cursor() as cur, cur.copy(
            """COPY (SELECT file_id, ordinal, base_id, block_type, student_guid, content FROM raw.inbound_block
                     WHERE file_id = ANY(%s)) TO STDOUT""", (file_ids,)) as copy:
        for chunk in copy:
            buf += chunk
    rows = buf.count(b"\n")
    with conn.transaction():
        conn.execute("DROP TABLE IF EXISTS pg_temp.floor_block")
        conn.execute("""CREATE TEMP TABLE floor_block (file_id bigint, ordinal int, base_id text, block_type text,
                        student_guid text, content jsonb) ON COMMIT DROP""")
        t = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY floor_block FROM STDIN") as copy:
            copy.write(buf)
        dt = time.perf_counter() - t
    return dt, rows
