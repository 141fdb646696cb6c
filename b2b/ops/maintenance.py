"""The maintenance tasks (F18): Clear Conflicts, Clear Cached Data, Delete Files.

Airflow-free; the ``b2b maintenance …`` commands and the maintenance DAGs call these.
"""
from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from b2b.blocks import CONFLICT_FIELDS, same_sql, text_sql

log = logging.getLogger(__name__)


def clear_conflicts(conn, by: str = "maintenance") -> int:
    """Clear Conflicts: drop open conflicts where the LA's data now equals the incoming data."""
    with conn.transaction():
        checks = " OR ".join(f"(c.field = '{f}' AND {same_sql(f, text_sql(f, f'ch.{f}'), 'c.incoming_value')})"
                             for f in CONFLICT_FIELDS)
        n = conn.execute(
            f"""INSERT INTO results.conflict_resolution (person_id, field, la_value, incoming_value, resolution,
                                                       resolved_by)
                SELECT c.person_id, c.field, c.la_value, c.incoming_value, 'cleared', %s
                  FROM results.conflict c JOIN core.child ch ON ch.person_id = c.person_id
                 WHERE {checks}
                ON CONFLICT DO NOTHING""", (by,)).rowcount
    log.info("clear conflicts: %d cleared", n)
    return n


def clear_cached_data(conn, base_id: str | None = None) -> int:
    """Clear Cached Data: flush the hash cache (all bases, or one), so the next import
    processes every block again."""
    with conn.transaction():
        n = conn.execute("DELETE FROM ops.hash_cache WHERE %(b)s::text IS NULL OR base_id = %(b)s",
                         {"b": base_id}).rowcount
    log.info("clear cached data: %d cache entries removed%s", n, f" for base {base_id}" if base_id else "")
    return n


def delete_files(conn, older_than_days: int, now: datetime | None = None) -> int:
    """Delete Files: purge the stored message payloads older than the retention. The parsed
    blocks and everything derived from them stay (tables do not change)."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=older_than_days)
    with conn.transaction():
        n = conn.execute("""UPDATE raw.inbound_file SET payload = NULL
                             WHERE payload IS NOT NULL AND received_at < %s""", (cutoff,)).rowcount
    log.info("delete files: %d payload(s) older than %d days purged", n, older_than_days)
    return n
